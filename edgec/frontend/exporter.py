"""IR -> ONNX. Export is exact: a model imported and exported unchanged runs
bit-identically in onnxruntime (same ops, attributes, weights and IR version)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..ir.core import DTYPES, Attr, Model, Value

SHAPE_DATA_BYTES = 4096
"""Without weights, initializers up to this size still travel: shape inference needs
the values of small shape-like constants (Reshape targets, Slice bounds)."""


def tensor_proto(name: str, data: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(data), name)


def value_info(value: Value) -> onnx.ValueInfoProto:
    if value.dtype is None:
        return onnx.helper.make_empty_tensor_value_info(value.name)
    dims = None if value.shape is None else list(value.shape)
    return onnx.helper.make_tensor_value_info(value.name, DTYPES[value.dtype], dims)


def attribute_proto(key: str, attr: Attr) -> onnx.AttributeProto:
    A = onnx.AttributeProto
    value = attr.value
    if attr.type == A.STRING:
        value = value.encode("utf-8", "surrogateescape")
    elif attr.type == A.STRINGS:
        value = [v.encode("utf-8", "surrogateescape") for v in value]
    elif attr.type == A.TENSOR:
        value = tensor_proto("", value)
    if attr.type in (A.GRAPHS, A.SPARSE_TENSOR, A.SPARSE_TENSORS, A.TYPE_PROTO, A.TYPE_PROTOS, A.TENSORS):
        proto = onnx.AttributeProto()
        proto.CopyFrom(value)  # rare kinds are kept as the whole AttributeProto from import
        return proto
    return onnx.helper.make_attribute(key, value, attr_type=attr.type)


def export_model(model: Model, with_weights: bool = True) -> onnx.ModelProto:
    """Build the ONNX model. ``with_weights=False`` turns large initializers into
    typed graph inputs: the verifier's shape inference then runs without copying weights."""
    graph = model.graph
    nodes = []
    for node in graph.nodes:
        proto = onnx.helper.make_node(
            node.op_type,
            ["" if v is None else v.name for v in node.inputs],
            [v.name for v in node.outputs],
            name=node.name or None,
            domain=node.domain or None,
        )
        proto.attribute.extend(attribute_proto(key, node.attrs[key]) for key in node.attrs)
        nodes.append(proto)

    initializers, weight_inputs = [], []
    for value in graph.initializers.values():
        if with_weights or value.const.nbytes <= SHAPE_DATA_BYTES:
            initializers.append(tensor_proto(value.name, value.const))
        else:
            weight_inputs.append(value_info(value))
    inputs = [value_info(v) for v in graph.inputs] + weight_inputs
    if model.initializers_as_inputs:
        inputs += [value_info(graph.initializers[t.name]) for t in initializers]

    outputs = [value_info(v) for v in graph.outputs]
    output_names = {v.name for v in graph.outputs}
    intermediates = [
        value_info(v) for node in graph.nodes for v in node.outputs if v.name not in output_names and v.dtype is not None
    ]
    onnx_graph = onnx.helper.make_graph(nodes, graph.name, inputs, outputs, initializers, value_info=intermediates)
    proto = onnx.helper.make_model(
        onnx_graph,
        opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()],
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        functions=list(model.functions),
    )
    proto.ir_version = model.ir_version
    for key, text in model.metadata.items():
        proto.metadata_props.add(key=key, value=text)
    return proto
