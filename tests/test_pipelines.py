"""Named pipelines (edgec/compiler/pipelines.py): one definition that compile, ``compile --calib``,
``edgec quantize`` and partitioning all build on."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec import api
from edgec.compiler.pass_manager import PassManager, PassSpec, Pipeline
from edgec.frontend.importer import load_model
from edgec.ir import print_model
from edgec.passes.quantize import QuantizeOptions, with_quantize
from edgec.compiler.pipelines import (
    DEFAULT_PIPELINE,
    PIPELINES,
    append_at_partition_point,
    get_pipeline,
    insert_at_quantize_point,
)
from tests.models import make_model


def conv_affine_model() -> onnx.ModelProto:
    """Conv, then a per-channel Mul and Add (what fold-conv-affine folds), then Relu."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, 4, 1, 1)).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "gamma"], ["m"]),
        helper.make_node("Add", ["m", "beta"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)


def test_default_pipeline_is_the_named_one_and_round_trips():
    assert str(get_pipeline("default")) == DEFAULT_PIPELINE
    assert str(Pipeline.parse(DEFAULT_PIPELINE)) == DEFAULT_PIPELINE
    assert PIPELINES["default"][: len(PIPELINES["quantize-prepare"])] == PIPELINES["quantize-prepare"]


def test_steps_insert_themselves_at_named_points():
    base = Pipeline.parse("fold-constants,reorder-for-memory")
    quantized = insert_at_quantize_point(base, PassSpec("eliminate-dead", Pipeline.parse("eliminate-dead").passes[0].options))
    assert str(quantized) == "fold-constants,eliminate-dead,reorder-for-memory"
    assert str(insert_at_quantize_point(Pipeline.parse("fold-constants"), quantized.passes[1])) == "fold-constants,eliminate-dead"
    assert str(append_at_partition_point(base, quantized.passes[1])) == "fold-constants,reorder-for-memory,eliminate-dead"


def test_quantize_then_compile_runs_the_same_graph_as_compile_calib(tmp_path):
    """``edgec quantize`` then the default pipeline on its QDQ file gives the graph that
    ``compile --calib`` lowers, on a model fold-conv-affine changes (the two had drifted)."""
    model_path, calib, qdq = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "m.qdq.onnx"
    onnx.save(conv_affine_model(), model_path)
    np.savez(calib, x=np.random.default_rng(1).standard_normal((8, 1, 3, 8, 8)).astype(np.float32))

    options = QuantizeOptions(calib=str(calib))
    with_calib = PassManager(Pipeline.parse(with_quantize(DEFAULT_PIPELINE, options))).run(load_model(model_path))
    api.quantize(model_path, calib=calib, output=qdq)
    two_steps = PassManager(Pipeline.parse(DEFAULT_PIPELINE)).run(load_model(qdq))

    assert "Mul" not in {node.op_type for node in with_calib.graph.nodes}
    assert print_model(two_steps, elide=False).split("\n")[1:] == print_model(with_calib, elide=False).split("\n")[1:]
