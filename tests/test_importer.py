"""Import and export: exactness on the model zoo, old IR and opsets, external data,
shape binding, and one clear error per kind of bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import ModelError, UsageError
from edgec.frontend.exporter import export_model
from edgec.frontend.importer import ensure_static, load_model, parse_input_shape
from tests.models import ZOO, make_model, ort_run, random_feeds, zoo_model


@pytest.mark.parametrize("name", sorted(ZOO))
def test_import_export_is_exact_on_the_zoo(name, tmp_path):
    original = zoo_model(name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(original, path)
    exported = export_model(load_model(path))
    assert exported.ir_version == original.ir_version == 3
    feeds = random_feeds(original)
    expected, actual = ort_run(original, feeds), ort_run(exported, feeds)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key])
    assert np.ptp(expected[next(iter(expected))]) > 0  # random weights: outputs really vary


def add_model(opset: int, ir_version: int, shape=(2, 3)) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.arange(3, dtype=np.float32), "b")],
        opset=opset,
        ir_version=ir_version,
    )


def test_old_opset_is_converted_up(tmp_path):
    bias = np.arange(6, dtype=np.float32).reshape(2, 3)
    old = make_model(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        # IR 3 lists initializers as graph inputs too.
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("x", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(bias, "b")],
        opset=6,
        ir_version=3,
    )
    path = tmp_path / "old.onnx"
    onnx.save(old, path)
    model = load_model(path)
    assert model.opset == 7 and model.initializers_as_inputs
    assert [v.name for v in model.graph.inputs] == ["x"]
    feeds = {"x": np.ones((2, 3), np.float32)}
    np.testing.assert_array_equal(ort_run(export_model(model), feeds)["y"], feeds["x"] + bias)


@pytest.mark.parametrize("opset", [6, 9])
def test_ir3_initializers_left_out_of_the_inputs_are_constants(tmp_path, opset):
    """Old converters wrote IR 3 files without listing the initializers as inputs; onnxruntime runs them."""
    from edgec.compiler.driver import CompileRequest, compile_model
    from edgec.runtime import load

    bias = np.arange(6, dtype=np.float32).reshape(2, 3)
    old = make_model(
        [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Reshape", ["s", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(bias, "b"), numpy_helper.from_array(np.array([3, 2], np.int64), "shape")],
        opset=opset,
        ir_version=3,
    )
    path = tmp_path / "old.onnx"
    onnx.save(old, path)
    model = load_model(path)
    assert [v.name for v in model.graph.inputs] == ["x"] and model.initializers_as_inputs
    assert [n.outputs[0].shape for n in model.graph.nodes] == [(2, 3), (3, 2)]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}
    expected = {"y": (feeds["x"] + bias).reshape(3, 2)}
    if opset >= 7:  # onnxruntime has no kernels for opset 6's Add
        np.testing.assert_array_equal(ort_run(old, feeds)["y"], expected["y"])
    np.testing.assert_array_equal(ort_run(export_model(model), feeds)["y"], expected["y"])
    compile_model(CompileRequest(path, "x86-64", tmp_path / "old.edgec"))
    np.testing.assert_allclose(load(tmp_path / "old.edgec").run(feeds)["y"], expected["y"], rtol=1e-6)


def test_shape_inference_fills_intermediate_types(tmp_path):
    path = tmp_path / "add.onnx"
    onnx.save(add_model(opset=13, ir_version=7), path)
    model = load_model(path)
    assert (model.graph.outputs[0].dtype, model.graph.outputs[0].shape) == ("float32", (2, 3))


def test_a_value_error_from_shape_inference_is_a_model_error_below_2_gib(tmp_path, monkeypatch):
    """Only a model protobuf cannot serialize skips inference; any other failure is the model's."""
    path = tmp_path / "add.onnx"
    onnx.save(add_model(opset=13, ir_version=7), path)

    def fails(*args, **kwargs):
        raise ValueError("inference\nbroke")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", fails)
    with pytest.raises(ModelError, match=rf"^{path}: shape inference failed: inference broke$"):
        load_model(path)


def test_external_data_weights_load(tmp_path):
    model = add_model(opset=13, ir_version=8)
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.weights", size_threshold=0)
    imported = load_model(tmp_path / "ext.onnx")
    np.testing.assert_array_equal(imported.graph.initializers["b"].const, np.arange(3, dtype=np.float32))


def test_input_shape_binds_symbolic_dims(tmp_path):
    path = tmp_path / "sym.onnx"
    onnx.save(add_model(opset=13, ir_version=8, shape=("batch", 3)), path)
    with pytest.raises(ModelError, match=r"input 'x' dim 0 is symbolic \('batch'\); bind it with --dim batch=N or --input-shape x=Nx3"):
        ensure_static(load_model(path), str(path))
    model = load_model(path, {"x": (4, 3)})
    ensure_static(model, str(path))
    assert model.graph.outputs[0].shape == (4, 3)
    with pytest.raises(UsageError, match="dim 1 is fixed at 3, got 5"):
        load_model(path, {"x": (4, 5)})
    with pytest.raises(UsageError, match="the model has no input 'y'"):
        load_model(path, {"y": (4, 3)})


def test_parse_input_shape():
    assert parse_input_shape("gpu_0/data_0=1x3x224x224") == ("gpu_0/data_0", (1, 3, 224, 224))
    with pytest.raises(UsageError, match="expected NAME=DxDx"):
        parse_input_shape("x=1xAx3")


# -- bad input: one clear error each --------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match=r"nope.onnx: no such file"):
        load_model(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n" * 20)
    with pytest.raises(ModelError, match=r"notes.onnx: (cannot parse the ONNX model|not an ONNX model)"):
        load_model(path)


def test_truncated_onnx(tmp_path):
    data = zoo_model("squeezenet").SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"cut.onnx: cannot parse the ONNX model \(it looks truncated"):
        load_model(path)


def test_opset_onnx_cannot_load(tmp_path):
    path = tmp_path / "future.onnx"
    onnx.save(add_model(opset=99, ir_version=8), path)
    with pytest.raises(ModelError, match=r"future.onnx: opset 99 is newer than this onnx supports"):
        load_model(path)


def test_missing_external_data(tmp_path):
    onnx.save(add_model(opset=13, ir_version=8), tmp_path / "ext.onnx", save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError, match=r"external data file 'weights.bin' for initializer 'b' not found"):
        load_model(tmp_path / "ext.onnx")


def test_unknown_domain(tmp_path):
    model = add_model(opset=13, ir_version=8)
    model.graph.node.append(helper.make_node("Frobnicate", ["y"], ["z"], domain="com.example", name="frob"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"node 'frob' \(Frobnicate\) uses unknown op domain 'com.example'"):
        load_model(path)


def test_unknown_op_in_default_domain(tmp_path):
    model = add_model(opset=13, ir_version=8)
    model.graph.node.append(helper.make_node("Frobnicate", ["y"], ["z"], name="frob"))
    path = tmp_path / "unknown.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"node 'frob': op 'Frobnicate' does not exist in opset 13"):
        load_model(path)


def test_control_flow_subgraphs_are_kept_opaque_and_export_exactly(tmp_path):
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])]
    )
    model = make_model(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["cond"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="branch"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )
    path = tmp_path / "if.onnx"
    onnx.save(model, path)
    imported = load_model(path)
    node = imported.graph.nodes[-1]
    assert node.op_type == "If" and node.attrs["then_branch"].value.name == "then"
    from edgec.ir import print_model

    assert 'then_branch=graph<then, 1 nodes>' in print_model(imported)
    for sign in (1, -1):
        feeds = {"x": sign * np.arange(6, dtype=np.float32).reshape(2, 3)}
        np.testing.assert_array_equal(ort_run(export_model(imported), feeds)["y"], ort_run(model, feeds)["y"])


def test_values_read_inside_subgraphs_count_as_uses(tmp_path):
    from edgec.compiler.pass_manager import PassManager, Pipeline

    branch = helper.make_graph([helper.make_node("Neg", ["hidden"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])])
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["hidden"]),
            helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
            helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(model, tmp_path / "m.onnx")
    imported = load_model(tmp_path / "m.onnx")
    assert [v.name for v in imported.graph.nodes[-1].implicit_inputs] == ["hidden"]
    result = PassManager(Pipeline.parse("fold-constants,eliminate-dead")).run(imported)
    assert [n.op_type for n in result.graph.nodes] == ["Relu", "If"]  # Relu is read only by the subgraph
    feeds = {"x": np.array([-1.0, 2.0], np.float32)}
    np.testing.assert_array_equal(ort_run(export_model(result), feeds)["y"], [-0.0, -2.0])
