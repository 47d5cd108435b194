"""Graph inputs that are not plain data tensors, as ONNX's conformance tests and exporters
write them: a shape fed as an input (Expand, ConstantOfShape), an optional tensor input,
and function ops that leave an attribute to its default (MeanVarianceNormalization)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgec
from edgec.deploy.artifact import open_artifact
from edgec.errors import ArtifactError, CompileError, ModelError
from edgec.runtime import load
from tests.conftest import assert_close
from tests.models import make_model, ort_run
from tests.test_artifact_trust import craft, listed
from tests.test_c_runtime import c_run, run_c  # noqa: F401  (c_run is a fixture)


def expand_model(output_shape: list[int]) -> onnx.ModelProto:
    """y = Expand(x, shape) and y + 1, the shape a graph input; the model declares y's shape."""
    return make_model(
        [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand"),
         helper.make_node("Add", ["y", "one"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [len(output_shape)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, output_shape)],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )


def compiled(model: onnx.ModelProto, tmp_path, name: str = "m"):
    onnx.save(model, tmp_path / f"{name}.onnx")
    return edgec.compile(tmp_path / f"{name}.onnx", "x86-64", output=tmp_path / f"{name}.edgec").output


@pytest.fixture(scope="module")
def expand_artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("expand")
    model = expand_model([2, 3, 6])
    return model, compiled(model, directory)


def test_shape_input_compiles_to_the_declared_shape_and_matches_onnxruntime(expand_artifact):
    model, artifact = expand_artifact
    assert open_artifact(artifact).manifest["target"]["shape_inputs"] == [
        {"input": "shape", "node": "expand", "op": "Expand", "data_shape": [3, 1], "shape": [2, 3, 6]}]
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    runtime = load(artifact)
    for value in ([2, 3, 6], [2, 1, 6]):  # both broadcast [3, 1] to [2, 3, 6]
        feeds = {"x": x, "shape": np.array(value, np.int64)}
        assert_close(runtime.run(feeds), ort_run(model, feeds))
    assert runtime.run(runtime.random_inputs())["y"].shape == (2, 3, 6)


def test_shape_input_with_another_value_is_refused_naming_it(expand_artifact):
    _, artifact = expand_artifact
    runtime = load(artifact)
    x = np.zeros((3, 1), np.float32)
    with pytest.raises(ArtifactError, match=r"input 'shape' = \[2, 3, 7\] gives Expand node 'expand' shape "
                                            r"\[2, 3, 7\]; this artifact was compiled for shape \[2, 3, 6\]"):
        runtime.run({"x": x, "shape": np.array([2, 3, 7], np.int64)})
    with pytest.raises(ArtifactError, match=r"\[2, 2, 6\] does not broadcast with Expand node 'expand''s input \[3, 1\]"):
        runtime.run({"x": x, "shape": np.array([2, 2, 6], np.int64)})


def test_c_runtime_checks_a_shape_input_as_the_python_runtime_does(c_run, expand_artifact, tmp_path):  # noqa: F811
    model, artifact = expand_artifact
    manifest = open_artifact(artifact).manifest
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    good = {"x": x, "shape": np.array([2, 1, 6], np.int64)}
    result, outputs = run_c(c_run, "file", artifact, manifest, good, tmp_path)
    assert result.returncode == 0, result.stderr
    assert_close(outputs, ort_run(model, good))
    bad = {"x": x, "shape": np.array([2, 3, 7], np.int64)}
    with pytest.raises(ArtifactError) as caught:
        load(artifact).run(bad)
    result, _ = run_c(c_run, "file", artifact, manifest, bad, tmp_path)
    assert result.returncode != 0 and str(caught.value) in result.stderr


def test_shape_input_record_of_another_input_is_refused_on_load(expand_artifact, tmp_path):
    _, artifact = expand_artifact
    source = open_artifact(artifact)
    manifest = json.loads(json.dumps(source.manifest))
    manifest["target"]["shape_inputs"][0]["input"] = "x.nope"
    members = {name: source.read_member(name) for name in source.manifest["members"]}
    with pytest.raises(ArtifactError, match="field 'target.shape_inputs' is missing or invalid"):
        load(craft(tmp_path / "bad.edgec", listed(manifest, members), list(members.items())))


def test_shape_computed_from_an_input_is_refused_naming_the_node(tmp_path):
    model = make_model(
        [helper.make_node("Add", ["shape", "zero"], ["s"]),
         helper.make_node("Expand", ["x", "s"], ["y"], name="expand")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor("zero", TensorProto.INT64, [2], [0, 0])],
    )
    with pytest.raises(CompileError, match="Expand node 'expand': its output shape is the value of 's', decided at run time"):
        compiled(model, tmp_path)


def optional_model() -> onnx.ModelProto:
    tensor = helper.make_tensor_type_proto(TensorProto.FLOAT, [4])
    return make_model(
        [helper.make_node("OptionalHasElement", ["o"], ["has"]),
         helper.make_node("OptionalGetElement", ["o"], ["x"]),
         helper.make_node("Mul", ["x", "x"], ["y"])],
        [helper.make_value_info("o", helper.make_optional_type_proto(tensor))],
        [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        opset=18,
    )


def test_optional_tensor_input_compiles_as_a_required_input(tmp_path):
    runtime = load(compiled(optional_model(), tmp_path))
    assert runtime.inputs == [{"name": "o", "dtype": "float32", "shape": [4]}]
    outputs = runtime.run({"o": np.array([1, 2, 3, 4], np.float32)})
    assert outputs["has"].shape == () and bool(outputs["has"])
    np.testing.assert_array_equal(outputs["y"], [1, 4, 9, 16])
    with pytest.raises(ArtifactError, match="missing input 'o'"):
        runtime.run({"o": None})


def test_sequence_input_is_refused_naming_it(tmp_path):
    sequence = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    model = make_model([helper.make_node("SequenceLength", ["seq"], ["n"])],
                       [helper.make_value_info("seq", sequence)],
                       [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    with pytest.raises(ModelError, match="input 'seq' is a sequence; edgec compiles"):
        compiled(model, tmp_path)


def test_function_op_with_a_default_attribute_matches_onnxruntime(tmp_path):
    """MeanVarianceNormalization leaves ``axes`` to its default, which its ONNX function body
    refers to; strict shape inference failed on that body until the default is spelled out."""
    model = make_model([helper.make_node("MeanVarianceNormalization", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 1])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5, 1])], opset=13)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 1)).astype(np.float32)}
    assert_close(load(compiled(model, tmp_path)).run(feeds), ort_run(model, feeds))
