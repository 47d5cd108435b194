"""Resize with constant scales and sizes, as exporters write it (targets/resize.py): the forms
TVM gets right stay TVM's Resize, the others become exact per-axis interpolation; both match
onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgec import api
from edgec.errors import EdgecError
from edgec.runtime import load
from targets.onnx_rewrites import prepare_for_tvm
from tests.models import make_model, ort_run

F32 = TensorProto.FLOAT


def resize_model(x_shape, out_shape, *, scales=None, sizes=None, opset=19, **attrs) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(np.array(scales, np.float32), "scales")] if scales is not None else []
    if sizes is not None:
        initializers.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
    inputs = ["x", "", "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
    node = helper.make_node("Resize", inputs, ["y"], name="resize", **attrs)
    return make_model([node], [helper.make_tensor_value_info("x", F32, x_shape)],
                      [helper.make_tensor_value_info("y", F32, out_shape)], initializers, opset=opset)


def ops_after_rewrite(model: onnx.ModelProto) -> list[str]:
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    prepare_for_tvm(proto)
    return [node.op_type for node in proto.graph.node if node.op_type != "Constant"]


CASES = {
    "linear downsample by 0.6 (ONNX's scale, not TVM's size ratio)":
        (resize_model([1, 2, 5, 7], [1, 2, 3, 4], scales=[1, 1, 0.6, 0.6], mode="linear"), "MatMul"),
    "cubic antialiased downsample":
        (resize_model([1, 1, 8, 9], [1, 1, 4, 4], sizes=[1, 1, 4, 4], mode="cubic", antialias=1), "MatMul"),
    "nearest keeping the aspect ratio, over axes 2 and 3: TVM's Resize with every size":
        (resize_model([1, 3, 4, 6], [1, 3, 2, 3], sizes=[2, 4], axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
         "Resize"),
    "nearest downsample by 0.6": (resize_model([1, 2, 7, 10], [1, 2, 4, 6], scales=[1, 1, 0.6, 0.6]), "Gather"),
    "linear align_corners into one row":
        (resize_model([1, 1, 4, 4], [1, 1, 1, 2], scales=[1, 1, 0.3, 0.6], mode="linear",
                      coordinate_transformation_mode="align_corners"), "MatMul"),
    "nearest 2x upsampling (a detector's FPN): TVM's own Resize":
        (resize_model([1, 4, 5, 6], [1, 4, 10, 12], scales=[1, 1, 2, 2]), "Resize"),
    "linear 2x upsampling over axes 2 and 3: TVM's Resize with every size":
        (resize_model([1, 4, 5, 6], [1, 4, 10, 12], scales=[2, 2], axes=[2, 3], mode="linear"), "Resize"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_resize_matches_onnxruntime(name, tmp_path):
    model, kernel = CASES[name]
    assert kernel in ops_after_rewrite(model)
    onnx.save(model, tmp_path / "resize.onnx")
    artifact = api.compile(tmp_path / "resize.onnx", "x86-64", output=tmp_path / "resize.edgec").output
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    if "align_corners" in name:  # onnxruntime divides by the whole output length; onnx's reference (and its
        expected = ReferenceEvaluator(model).run(None, {"x": x})[0]  # test_resize_downsample_scales_linear_align_corners) by in x scale
    else:
        expected = ort_run(model, {"x": x})["y"]
    actual = load(artifact).run({"x": x})["y"]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_a_run_time_scale_is_left_to_tvm_which_refuses_it_in_one_line(tmp_path):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")
    model = make_model([node], [helper.make_tensor_value_info("x", F32, [1, 1, 4, 4]),
                                helper.make_tensor_value_info("scales", F32, [4])],
                       [helper.make_tensor_value_info("y", F32, None)], opset=19)
    assert ops_after_rewrite(model) == ["Resize"]
    onnx.save(model, tmp_path / "dynamic.onnx")
    with pytest.raises(EdgecError) as error:
        api.compile(tmp_path / "dynamic.onnx", "x86-64", output=tmp_path / "d.edgec")
    assert "\n" not in str(error.value) and not (tmp_path / "d.edgec").exists()
