"""The bad-input corpus: small ONNX models, each broken in one way a crafted file, a
fuzzer or a broken exporter breaks them, with what ``edgec compile`` must say.

Each case is (id, build, expected exit code, text the one-line error must contain).
``build(directory)`` writes the model (and any side files) and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.models import make_model


def gemm(transB=None, weight: np.ndarray | None = None) -> onnx.ModelProto:
    """y = x @ W^T: x [1,4], W [3,4]."""
    w = numpy_helper.from_array(weight if weight is not None else np.ones((3, 4), np.float32), "W")
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)
    if transB is not None:
        node.attribute[0].CopyFrom(transB)
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w])


def relu(shape=(1, 4), elem=TensorProto.FLOAT) -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="act")],
                      [helper.make_tensor_value_info("x", elem, list(shape))],
                      [helper.make_tensor_value_info("y", elem, list(shape))])


def saved(model: onnx.ModelProto, name: str = "bad.onnx"):
    def build(directory: Path) -> Path:
        path = directory / name
        path.write_bytes(model.SerializeToString())
        return path
    return build


def edited(edit, base=gemm):
    model = base()
    edit(model)
    return saved(model)


def set_ir(model):
    model.ir_version = 99


def set_opset(model):
    model.opset_import[0].version = 99


def no_outputs(model):
    del model.graph.output[:]


def short_initializer(model):
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]


def retyped_initializer(model):
    model.graph.initializer[0].data_type = TensorProto.STRING  # the bytes stay float32's


def undefined_initializer(model):
    model.graph.initializer[0].data_type = 0


def tensor_attribute_without_tensor(model):
    model.graph.node[0].attribute.add(name="value", type=onnx.AttributeProto.TENSOR)


def undefined_attribute(model):
    model.graph.node[0].attribute.add(name="alpha", type=onnx.AttributeProto.UNDEFINED)


def cycle(directory: Path) -> Path:
    nodes = [helper.make_node("Add", ["x", "c"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Relu", ["b"], ["c"], name="third"),
             helper.make_node("Relu", ["b"], ["y"], name="out")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return saved(model)(directory)


def external(location: str):
    def build(directory: Path) -> Path:
        model = gemm()
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=location)
        return saved(model)(directory)
    return build


def invalid_utf8(old: bytes, new: bytes, base=gemm):
    def build(directory: Path) -> Path:
        path = directory / "bad.onnx"
        data = base().SerializeToString()
        assert old in data
        path.write_bytes(data.replace(old, new, 1))
        return path
    return build


def loop_without_body(model):
    model.graph.node.append(helper.make_node("Loop", ["", ""], ["unused"], name="loop"))


def undefined_input(model):
    model.graph.node[0].input[0] = "nowhere"


def arena(directory: Path) -> Path:
    """Six 256 MiB tensors (five negations and their sum): each fits arm64-a53's 1 GiB, the arena does not."""
    shape = [1 << 26]
    nodes = [helper.make_node("Neg", ["x"], [f"n{i}"], name=f"neg{i}") for i in range(5)]
    nodes.append(helper.make_node("Sum", [f"n{i}" for i in range(5)], ["y"], name="sum"))
    return saved(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]))(directory)


def with_producer():
    model = gemm()
    model.producer_name = "exporter"
    return model


CASES = [
    ("ir-version-99", edited(set_ir), 1, "ir_version 99"),
    ("opset-99", edited(set_opset), 1, "opset 99"),
    ("wrong-attribute-type", saved(gemm(helper.make_attribute("transB", 1.0))), 1, "'transB' must be INT, got FLOAT"),
    ("no-outputs", edited(no_outputs), 1, "no outputs"),
    ("short-initializer", edited(short_initializer), 1, "initializer 'W' has 44 bytes"),
    ("retyped-initializer", edited(retyped_initializer), 1, "initializer 'W' is a string tensor"),
    ("undefined-initializer-type", edited(undefined_initializer), 1, "initializer 'W' has invalid data_type 0"),
    ("tensor-attribute-without-tensor", edited(tensor_attribute_without_tensor), 1, "'value' is of type TENSOR but holds no tensor"),
    ("undefined-attribute-type", edited(undefined_attribute), 1, "attribute 'alpha' has no valid type"),
    ("cycle", cycle, 1, "cycle: 'first' -> 'second' -> 'third' -> 'first'"),
    ("external-data-outside", external("../weights.bin"), 1, "'../weights.bin' is outside the model's folder"),
    ("external-data-absolute", external("/etc/passwd"), 1, "'/etc/passwd' is outside the model's folder"),
    ("string-input", saved(relu(elem=TensorProto.STRING)), 1, "input 'x' is a string tensor"),
    ("invalid-utf8-op-type", invalid_utf8(b"Gemm", b"G\xffmm"), 1, "op_type b'G\\xffmm' is not valid UTF-8"),
    ("control-character-in-a-name", invalid_utf8(b"\x12\x01y", b"\x12\x01\n"), 1, "tensor name '\\n' contains a control character"),
    ("invalid-utf8-attribute-name", invalid_utf8(b"transB", b"tr\xffnsB"), 1, "attribute name b'tr\\xffnsB' is not valid UTF-8"),
    ("invalid-utf8-producer", invalid_utf8(b"exporter", b"exp\xffrter", with_producer), 1, "producer_name b'exp\\xffrter' is not valid UTF-8"),
    ("missing-required-attribute", edited(loop_without_body), 1, "'loop' (Loop): required attribute 'body' is missing"),
    ("undefined-tensor", edited(undefined_input), 1, "node 'fc' (Gemm) uses 'nowhere', which nothing defines"),
    ("huge-input", saved(relu((1 << 40, 64))), 1, "tensor 'x' float32[1099511627776, 64] needs"),
]
