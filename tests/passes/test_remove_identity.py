from __future__ import annotations

import numpy as np

from edgec.frontend.exporter import export_model
from edgec.frontend.importer import import_proto
from edgec.ir import parse_model
from tests.models import small_cnn
from tests.passes.helpers import assert_golden, assert_idempotent, assert_same_numbers, run_pass

BEFORE = """\
model ir_version=8 opset_import={"": 13} {
  input %x: float32[2,3]
  init %t: bool[] = [0]
  %a = Identity(%x) : float32[2,3]
  %b = Relu(%a) : float32[2,3]
  %c = Dropout(%b, _, %t) {seed=1} : float32[2,3]
  %d = Identity(%c) : float32[2,3]
  %e = Identity(%x) : float32[2,3]
  output %d
  output %e
}
"""

AFTER = """\
model ir_version=8 opset_import={"": 13} {
  input %x: float32[2,3]
  init %t: bool[] = [0]
  %d = Relu(%x) : float32[2,3]
  %e = Identity(%x) : float32[2,3]
  output %d
  output %e
}
"""


def test_golden_and_idempotent():
    model = parse_model(BEFORE)
    result = assert_idempotent("remove-identity", model)
    assert_golden(result.model, AFTER)
    assert result.stats == {"removed-identity": 2, "removed-dropout": 1}
    # %e forwards a graph input to a graph output under another name: it must stay.
    assert any("kept" in d.message for d in result.diagnostics)


def test_training_dropout_and_used_masks_stay():
    model = parse_model(BEFORE.replace("init %t: bool[] = [0]", "init %t: bool[] = [1]"))
    result = run_pass("remove-identity", model)
    assert "Dropout" in [n.op_type for n in result.model.graph.nodes]
    assert any("training mode" in d.message for d in result.diagnostics)


def test_numbers_match_onnxruntime():
    onnx_model = small_cnn()
    result = run_pass("remove-identity", import_proto(onnx_model))
    assert {n.op_type for n in result.model.graph.nodes}.isdisjoint({"Identity", "Dropout"})
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    assert_same_numbers(onnx_model, result.model, feeds, rtol=0, atol=0)
    assert export_model(result.model).graph.output[0].name == "logits"
