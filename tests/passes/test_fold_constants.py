from __future__ import annotations

import numpy as np
import onnx

from edgec.frontend.exporter import export_model
from edgec.frontend.importer import import_proto
from edgec.ir import parse_model
from tests.models import ZOO_DIR, ort_run, random_feeds, zoo_model
from tests.passes.helpers import assert_golden, assert_idempotent, assert_same_numbers, run_pass

BEFORE = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[2,2]
  init %shape: int64[2] = [2, 2]
  init %two: float32[] = [2.0]
  %c = ConstantOfShape(%shape) {value=tensor<float32[1]> [0.5]} : float32[2,2]
  %d = Mul(%c, %two) : float32[2,2]
  %k = Constant() {value=tensor<float32[2]> [1.0, -1.0]} : float32[2]
  %y = Add(%x, %d) : float32[2,2]
  %z = Mul(%y, %k) : float32[2,2]
  output %z
}
"""

# Inputs left unused (%shape, %two, %c) are eliminate-dead's job.
AFTER = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[2,2]
  init %shape: int64[2] = [2, 2]
  init %two: float32[] = [2.0]
  init %c: float32[2,2] = [0.5, 0.5, 0.5, 0.5]
  init %d: float32[2,2] = [1.0, 1.0, 1.0, 1.0]
  init %k: float32[2] = [1.0, -1.0]
  %y = Add(%x, %d) : float32[2,2]
  %z = Mul(%y, %k) : float32[2,2]
  output %z
}
"""


def test_golden_and_idempotent():
    result = assert_idempotent("fold-constants", parse_model(BEFORE))
    assert_golden(result.model, AFTER)
    assert result.stats == {"folded-nodes": 3, "skipped-too-large": 0, "shape-refinements": 0}


# An exporter's size arithmetic: Shape of a bound input, a 0-d Gather, a Range over it.
SHAPES_BEFORE = """\
model ir_version=8 opset_import={"": 17} {
  input %x: int64[1,8]
  init %zero: int64[] = [0]
  init %one: int64[] = [1]
  %s = Shape(%x) : int64[2]
  %n = Gather(%s, %one) {axis=0} : int64[]
  %r = Range(%zero, %n, %one) : int64[len]
  %y = Mul(%x, %r) : int64[1,len]
  output %y
}
"""

# %n stays 0-d; the Range's length, unknown to the first inference, is 8 once it folded.
SHAPES_AFTER = """\
model ir_version=8 opset_import={"": 17} {
  input %x: int64[1,8]
  init %zero: int64[] = [0]
  init %one: int64[] = [1]
  init %s: int64[2] = [1, 8]
  init %n: int64[] = [8]
  init %r: int64[8] = [0, 1, 2, 3, 4, 5, 6, 7]
  %y = Mul(%x, %r) : int64[1,8]
  output %y
}
"""


def test_shape_of_a_static_value_folds_and_shapes_are_refined():
    result = assert_idempotent("fold-constants", parse_model(SHAPES_BEFORE))
    assert_golden(result.model, SHAPES_AFTER)
    assert result.stats == {"folded-nodes": 3, "skipped-too-large": 0, "shape-refinements": 1}
    assert result.model.graph.initializers["n"].const.shape == ()
    feeds = {"x": np.arange(8, dtype=np.int64).reshape(1, 8)}
    np.testing.assert_array_equal(ort_run(export_model(result.model), feeds)["y"], feeds["x"] * np.arange(8))


def test_shape_of_a_symbolic_value_stays():
    model = parse_model(SHAPES_BEFORE.replace("int64[1,8]", "int64[1,seq]"))
    result = run_pass("fold-constants", model)
    assert [n.op_type for n in result.model.graph.nodes] == ["Shape", "Gather", "Range", "Mul"]
    assert not result.modified


def test_size_limit_keeps_big_results_and_says_why():
    result = run_pass("fold-constants{size-limit=8}", parse_model(BEFORE))
    ops = [n.op_type for n in result.model.graph.nodes]
    # The 16-byte ConstantOfShape stays (so the Mul reading it cannot fold); the 8-byte Constant folds.
    assert ops == ["ConstantOfShape", "Mul", "Add", "Mul"]
    assert result.stats == {"folded-nodes": 1, "skipped-too-large": 1, "shape-refinements": 0}
    assert any("over size-limit 8 B" in d.message for d in result.diagnostics)


def test_zoo_weights_stored_as_constant_of_shape_fold_and_match_onnxruntime(tmp_path):
    original = onnx.load(ZOO_DIR / "light_squeezenet.onnx")
    model = import_proto(original)
    result = run_pass("fold-constants", model)
    assert "ConstantOfShape" not in {n.op_type for n in result.model.graph.nodes}
    feeds = random_feeds(original)
    assert_same_numbers(original, result.model, feeds, rtol=0, atol=0)


def test_random_weight_model_folds_nothing_and_keeps_numbers():
    onnx_model = zoo_model("resnet50")
    result = run_pass("fold-constants", import_proto(onnx_model))
    assert not result.modified
    feeds = random_feeds(onnx_model)
    np.testing.assert_array_equal(ort_run(export_model(result.model), feeds)["gpu_0/softmax_1"],
                                  ort_run(onnx_model, feeds)["gpu_0/softmax_1"])
