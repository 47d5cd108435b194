from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgec.frontend.importer import import_proto
from edgec.ir import parse_model
from tests.models import make_model, random_feeds
from tests.passes.helpers import assert_golden, assert_idempotent, assert_same_numbers, run_pass

BEFORE = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,1,3,3]
  init %w: float32[2,1,1,1] = [2.0, -1.0]
  init %b: float32[2] = [1.0, 0.5]
  init %s: float32[2,1,1] = [3.0, -2.0]
  init %t: float32[1,2,1,1] = [0.25, 1.0]
  %c = Conv(%x, %w, %b) {kernel_shape=[1, 1]} : float32[1,2,3,3] @conv
  %m = Mul(%c, %s) : float32[1,2,3,3] @scale
  %y = Add(%t, %m) : float32[1,2,3,3] @shift
  output %y
}
"""

# W' = W * s = [6, 2]; b' = b * s + t = [3.25, 0.0]
AFTER = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,1,3,3]
  init %w: float32[2,1,1,1] = [6.0, 2.0]
  init %b: float32[2] = [3.25, 0.0]
  init %s: float32[2,1,1] = [3.0, -2.0]
  init %t: float32[1,2,1,1] = [0.25, 1.0]
  %y = Conv(%x, %w, %b) {kernel_shape=[1, 1]} : float32[1,2,3,3] @conv
  output %y
}
"""


def test_golden_and_idempotent():
    result = assert_idempotent("fold-conv-affine", parse_model(BEFORE))
    assert_golden(result.model, AFTER)
    assert result.stats == {"muls-folded": 1, "adds-folded": 1}


def conv_then(ops: list[tuple[str, np.ndarray]], shared_output: bool = False):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")]
    nodes, last = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])], "c"
    for i, (op, constant) in enumerate(ops):
        inits.append(numpy_helper.from_array(constant.astype(np.float32), f"k{i}"))
        nodes.append(helper.make_node(op, [last, f"k{i}"], [f"o{i}"]))
        last = f"o{i}"
    outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)]
    if shared_output:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])], outputs, inits)


def test_a_per_channel_chain_folds_and_keeps_the_numbers():
    rng = np.random.default_rng(1)
    model = conv_then([("Mul", rng.uniform(0.5, 2, (8, 1, 1))), ("Add", rng.standard_normal((1, 8, 1, 1))),
                       ("Mul", np.array(0.5))])
    result = run_pass("fold-conv-affine", import_proto(model))
    assert [n.op_type for n in result.model.graph.nodes] == ["Conv"]
    assert_same_numbers(model, result.model, random_feeds(model))


def test_what_does_not_fold_stays_with_a_reason():
    rng = np.random.default_rng(2)
    cases = {
        "not per output channel": conv_then([("Mul", rng.standard_normal((1, 1, 6, 1)))]),
        "has other users": conv_then([("Add", rng.standard_normal((8, 1, 1)))], shared_output=True),
    }
    for reason, model in cases.items():
        result = run_pass("fold-conv-affine", import_proto(model))
        assert not result.modified
        assert any(reason in str(d) for d in result.diagnostics), result.diagnostics
        assert_same_numbers(model, result.model, random_feeds(model))
