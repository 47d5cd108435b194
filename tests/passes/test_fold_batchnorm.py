from __future__ import annotations

import numpy as np
import pytest

from edgec.frontend.importer import import_proto
from edgec.ir import parse_model
from tests.models import random_feeds, small_cnn, zoo_model
from tests.passes.helpers import assert_golden, assert_idempotent, assert_same_numbers, run_pass

BEFORE = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,1,3,3]
  init %w: float32[2,1,1,1] = [2.0, -1.0]
  init %scale: float32[2] = [0.5, 2.0]
  init %bias: float32[2] = [1.0, 0.0]
  init %mean: float32[2] = [0.0, 1.0]
  init %var: float32[2] = [3.0, 0.0]
  %c = Conv(%x, %w) {kernel_shape=[1, 1]} : float32[1,2,3,3] @conv
  %y = BatchNormalization(%c, %scale, %bias, %mean, %var) {epsilon=1.0} : float32[1,2,3,3] @bn
  output %y
}
"""

# s = scale / sqrt(var + eps) = [0.25, 2.0]; W' = W * s; b' = bias - mean * s = [1.0, -2.0]
AFTER = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,1,3,3]
  init %w: float32[2,1,1,1] = [0.5, -2.0]
  init %scale: float32[2] = [0.5, 2.0]
  init %bias: float32[2] = [1.0, 0.0]
  init %mean: float32[2] = [0.0, 1.0]
  init %var: float32[2] = [3.0, 0.0]
  init %bn_bias0: float32[2] = [1.0, -2.0]
  %y = Conv(%x, %w, %bn_bias0) {kernel_shape=[1, 1]} : float32[1,2,3,3] @conv
  output %y
}
"""


def test_golden_and_idempotent():
    result = assert_idempotent("fold-batchnorm", parse_model(BEFORE))
    assert_golden(result.model, AFTER)
    assert result.stats == {"folded-into-conv": 1, "folded-into-gemm": 0, "not-foldable": 0}


def test_gemm_folds_with_alpha_beta():
    text = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[2,3]
  init %w: float32[4,3] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
  init %b: float32[4] = [0.5, 0.25, -1.0, 2.0]
  init %scale: float32[4] = [0.5, 2.0, 1.0, 1.5]
  init %bias: float32[4] = [1.0, 0.0, -1.0, 0.5]
  init %mean: float32[4] = [0.0, 1.0, 2.0, 3.0]
  init %var: float32[4] = [1.0, 4.0, 0.25, 2.0]
  %g = Gemm(%x, %w, %b) {alpha=0.5, beta=2.0, transB=1} : float32[2,4]
  %y = BatchNormalization(%g, %scale, %bias, %mean, %var) : float32[2,4]
  output %y
}
"""
    before = parse_model(text)
    from edgec.frontend.exporter import export_model

    onnx_before = export_model(before)
    result = assert_idempotent("fold-batchnorm", before)
    assert [n.op_type for n in result.model.graph.nodes] == ["Gemm"]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}
    assert_same_numbers(onnx_before, result.model, feeds)


def test_bn_not_after_conv_stays_with_a_reason():
    text = BEFORE.replace("%c = Conv(%x, %w) {kernel_shape=[1, 1]} : float32[1,2,3,3] @conv",
                          "%c = Concat(%x, %x) {axis=1} : float32[1,2,3,3] @cat")
    result = run_pass("fold-batchnorm", parse_model(text))
    assert not result.modified
    assert [str(d) for d in result.diagnostics] == [
        "note: node 'bn' (BatchNormalization): not folded: its input is not produced by a Conv or Gemm"
    ]


def test_small_cnn_numbers_match_onnxruntime():
    onnx_model = small_cnn()
    result = run_pass("fold-batchnorm", import_proto(onnx_model))
    assert "BatchNormalization" not in {n.op_type for n in result.model.graph.nodes}
    assert_same_numbers(onnx_model, result.model, random_feeds(onnx_model))


@pytest.mark.parametrize("name", ["resnet50", "inception_v2"])
def test_zoo_numbers_match_onnxruntime(name):
    onnx_model = zoo_model(name)
    result = run_pass("fold-batchnorm", import_proto(onnx_model))
    assert result.stats["folded-into-conv"] > 50
    assert_same_numbers(onnx_model, result.model, random_feeds(onnx_model), rtol=1e-3, atol=1e-4)
