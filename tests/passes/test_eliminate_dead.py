from __future__ import annotations

import numpy as np

from edgec.frontend.importer import import_proto
from edgec.ir import parse_model
from tests.models import small_cnn
from tests.passes.helpers import assert_golden, assert_idempotent, assert_same_numbers

BEFORE = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[4]
  init %unused: float32[4] = [1.0, 2.0, 3.0, 4.0]
  init %one: float32[] = [1.0]
  %a = Add(%x, %one) : float32[4]
  %dead1 = Exp(%x) : float32[4]
  %dead2 = Neg(%dead1) : float32[4]
  %b = Relu(%a) : float32[4]
  output %b
}
"""

AFTER = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[4]
  init %one: float32[] = [1.0]
  %a = Add(%x, %one) : float32[4]
  %b = Relu(%a) : float32[4]
  output %b
}
"""


def test_golden_and_idempotent():
    result = assert_idempotent("eliminate-dead", parse_model(BEFORE))
    assert_golden(result.model, AFTER)
    assert result.stats == {"removed-nodes": 2, "removed-initializers": 1}


def test_numbers_match_onnxruntime():
    onnx_model = small_cnn()
    model = import_proto(onnx_model)
    extra = model.graph.initializers["conv1.w"]
    model.graph.make_node("Neg", [extra], [type(extra)("dangling", "float32", extra.shape)])
    result = assert_idempotent("eliminate-dead", model)
    assert "Neg" not in [n.op_type for n in result.model.graph.nodes]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    assert_same_numbers(onnx_model, result.model, feeds, rtol=0, atol=0)
