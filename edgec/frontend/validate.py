"""Checks on untrusted ONNX models, before anything is built from them.

The importer and the passes assume a well-formed model; these checks turn every way a
model can break that assumption (a crafted file, a fuzzer's mutation, a broken
exporter) into one ModelError naming the model and the node, attribute, initializer or
input at fault, instead of a crash deep in onnx, numpy or TVM.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx
from onnx import AttributeProto, TensorProto

from ..errors import ModelError, ProfileViolation
from ..ir.core import numpy_dtype
from ..units import human_size

A = AttributeProto
ATTRIBUTE_TYPES = {value: name for name, value in A.AttributeType.items()}
PACKED = {getattr(TensorProto, n): per for n, per in (("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4),
                                                     ("UINT2", 4)) if hasattr(TensorProto, n)}
"""Sub-byte element types: elements per byte of raw data, or per entry of int32_data."""
UNSUPPORTED = {TensorProto.STRING: "a string", TensorProto.COMPLEX64: "a complex", TensorProto.COMPLEX128: "a complex"}


def check_proto(proto: onnx.ModelProto, source: str) -> None:
    """Everything the importer relies on, checked on the raw proto (weights loaded)."""
    if proto.ir_version > onnx.IR_VERSION:
        raise ModelError(f"{source}: ir_version {proto.ir_version} is newer than this onnx supports "
                         f"(onnx {onnx.__version__} reads IR versions up to {onnx.IR_VERSION})")
    check_text(source, "producer_name", proto.producer_name, name=False)
    check_text(source, "producer_version", proto.producer_version, name=False)
    check_text(source, "domain", proto.domain)
    for opset in proto.opset_import:
        check_text(source, "opset_import domain", opset.domain)
    for prop in proto.metadata_props:
        check_text(source, "metadata_props key", prop.key)
        check_text(source, f"metadata_props '{prop.key}' value", prop.value, name=False)
    graph = proto.graph
    if not graph.output:
        raise ModelError(f"{source}: the graph has no outputs; a model must produce at least one")
    opsets = {o.domain or "": o.version for o in proto.opset_import if isinstance(o.domain, str)}
    check_graph(graph, source, opsets)
    initializer_names = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in initializer_names:
            continue
        kind = value.type.WhichOneof("value")
        if kind in ("sequence_type", "map_type", "sparse_tensor_type") or (
                kind == "optional_type" and not value.type.optional_type.elem_type.HasField("tensor_type")):
            what = {"sequence_type": "a sequence", "map_type": "a map", "sparse_tensor_type": "a sparse tensor"}.get(kind, "an optional sequence")
            raise ModelError(f"{source}: input '{value.name}' is {what}; edgec compiles (optional) dense tensors only")
        if kind != "tensor_type":
            continue
        elem = value.type.tensor_type.elem_type
        if elem == TensorProto.STRING:
            raise ModelError(f"{source}: input '{value.name}' is a string tensor; edgec compiles numeric tensors only")
        if elem not in TensorProto.DataType.values() or elem == TensorProto.UNDEFINED:
            raise ModelError(f"{source}: input '{value.name}' has invalid element type {elem}")
    check_defined(graph, source)
    check_acyclic(graph, source)


def check_defined(graph: onnx.GraphProto, source: str) -> None:
    """Every tensor a top-level node reads is a graph input, an initializer or some node's output."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {out for node in graph.node for out in node.output}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in defined:
                label = node.name or (node.output[0] if node.output else f"#{index}")
                raise ModelError(f"{source}: node '{label}' ({node.op_type}) uses '{name}', which nothing defines")


def check_text(source: str, what: str, text, name: bool = True) -> None:
    """protobuf hands back bytes, not str, for a string field that is not UTF-8; a name
    with a control character (a newline...) would break every message that shows it."""
    if not isinstance(text, str):
        raise ModelError(f"{source}: {what} {text!r} is not valid UTF-8")
    if name and any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ModelError(f"{source}: {what} {text!r} contains a control character")


def check_graph(graph: onnx.GraphProto, source: str, opsets: dict[str, int]) -> None:
    """Names, initializers and attributes of a graph and of its subgraphs."""
    check_text(source, "graph name", graph.name)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        check_text(source, "value name", value.name)
    for tensor in graph.initializer:
        check_initializer(tensor, source)
    for index, node in enumerate(graph.node):
        for what in ("op_type", "name", "domain"):
            check_text(source, f"node #{index} {what}", getattr(node, what))
        for name in [*node.input, *node.output]:  # before the label shows one
            check_text(source, f"node #{index} tensor name", name)
        label = f"node '{node.name or (node.output[0] if node.output else f'#{index}')}' ({node.op_type})"
        for attr in node.attribute:
            check_text(source, f"{label} attribute name", attr.name)
            check_attribute(attr, node, label, source, opsets)
            for subgraph in [attr.g] if attr.type == A.GRAPH else list(attr.graphs):
                check_graph(subgraph, source, opsets)
        schema = schema_of(node, opsets)
        if schema is not None:
            given = {a.name for a in node.attribute}
            missing = sorted(name for name, attr in schema.attributes.items() if attr.required and name not in given)
            if missing:
                raise ModelError(f"{source}: {label}: required attribute '{missing[0]}' is missing")


def check_attribute(attr: AttributeProto, node: onnx.NodeProto, label: str, source: str, opsets: dict[str, int]) -> None:
    where = f"{source}: {label}: attribute '{attr.name}'"
    if attr.type == A.UNDEFINED or attr.type not in ATTRIBUTE_TYPES:
        raise ModelError(f"{where} has no valid type ({attr.type})")
    if attr.type == A.TENSOR:
        if not attr.HasField("t"):
            raise ModelError(f"{where} is of type TENSOR but holds no tensor")
        check_initializer(attr.t, source, f"{label}: attribute '{attr.name}' tensor")
    if attr.type == A.GRAPH and not attr.HasField("g"):
        raise ModelError(f"{where} is of type GRAPH but holds no graph")
    for tensor in attr.tensors:
        check_initializer(tensor, source, f"{label}: attribute '{attr.name}' tensor")
    schema = schema_of(node, opsets)
    if schema is None:
        return  # check_opsets names unknown ops
    expected = schema.attributes.get(attr.name)
    if expected is not None and int(expected.type) != attr.type:
        raise ModelError(f"{where} must be {ATTRIBUTE_TYPES[int(expected.type)]}, got {ATTRIBUTE_TYPES[attr.type]}")


def schema_of(node: onnx.NodeProto, opsets: dict[str, int]):
    """The op's schema in the model's opset, or None for an op onnx does not define there."""
    default = node.domain in ("", "ai.onnx")
    version = opsets.get("", opsets.get("ai.onnx")) if default else opsets.get(node.domain)
    if version is None or not onnx.defs.has(node.op_type, version, node.domain):
        return None
    return onnx.defs.get_schema(node.op_type, version, node.domain)


def check_initializer(tensor: TensorProto, source: str, what: str | None = None) -> None:
    """The tensor's element type is numeric and its data holds exactly its shape's elements."""
    check_text(source, "initializer name", tensor.name)
    what = what or f"initializer '{tensor.name}'"
    where = f"{source}: {what}"
    if tensor.data_type in UNSUPPORTED:
        raise ModelError(f"{where} is {UNSUPPORTED[tensor.data_type]} tensor; edgec compiles real numeric tensors only")
    if tensor.data_type == TensorProto.UNDEFINED or tensor.data_type not in TensorProto.DataType.values():
        raise ModelError(f"{where} has invalid data_type {tensor.data_type}")
    if any(d < 0 for d in tensor.dims):
        raise ModelError(f"{where} has a negative dim in {list(tensor.dims)}")
    if tensor.data_location == TensorProto.EXTERNAL:
        return  # load_weights reads it in before the checks run
    count = math.prod(tensor.dims)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{where} has data_type {tensor.data_type}, which this onnx cannot read") from None
    per = PACKED.get(tensor.data_type)
    if tensor.HasField("raw_data"):
        expected = -(-count // per) if per else count * itemsize
        if len(tensor.raw_data) != expected:
            raise ModelError(f"{where} has {len(tensor.raw_data)} bytes of raw data; shape {list(tensor.dims)} of "
                             f"{TensorProto.DataType.Name(tensor.data_type)} needs {expected}")
    else:
        field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        have, expected = len(getattr(tensor, field)), -(-count // per) if per else count
        if have != expected:
            raise ModelError(f"{where} has {have} values in {field}; shape {list(tensor.dims)} of "
                             f"{TensorProto.DataType.Name(tensor.data_type)} needs {expected}")


def check_acyclic(graph: onnx.GraphProto, source: str) -> None:
    """Report a cycle as a cycle, naming its nodes, before shape inference trips over it."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    state = [0] * len(graph.node)  # 0 unvisited, 1 on the current path, 2 done

    def label(i: int) -> str:
        node = graph.node[i]
        return node.name or (node.output[0] if node.output else f"#{i}")

    for start in range(len(graph.node)):
        if state[start]:
            continue
        path, stack = [], [(start, iter(graph.node[start].input))]
        state[start] = 1
        path.append(start)
        while stack:  # iterative DFS: a long chain must not exhaust Python's stack
            node, inputs = stack[-1]
            nxt = next((producer[n] for n in inputs if n in producer), None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
            elif state[nxt] == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise ModelError(f"{source}: the graph has a cycle: "
                                 + " -> ".join(f"'{label(i)}'" for i in reversed(cycle)))
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(graph.node[nxt].input)))


def check_external_location(model_path: Path, tensor: TensorProto, location: str) -> None:
    """External data must be a file inside the model's folder: onnx refuses anything else."""
    check_text(str(model_path), f"initializer '{tensor.name}' external data location", location)
    if not location or os.path.isabs(location) or ".." in Path(location).parts or "\\" in location:
        raise ModelError(f"{model_path}: initializer '{tensor.name}': external data location {location!r} "
                         "is outside the model's folder (it must be a relative path below it)")


def check_declared_sizes(model, memory_bytes: int | None, target_name: str, source: str, profiled: bool) -> None:
    """Refuse a tensor that cannot fit in the target's memory, before any pass or lowering
    tries to allocate it: exit 3 when compiling against a profile, else 1."""
    if memory_bytes is None:
        return
    graph = model.graph
    values = [*graph.inputs, *graph.initializers.values(), *(v for n in graph.nodes for v in n.outputs if v is not None)]
    for value in values:
        if value.dtype is None or value.dtype == "string" or value.shape is None:
            continue
        if not all(isinstance(d, int) for d in value.shape):
            continue
        size = math.prod(value.shape) * numpy_dtype(value.dtype).itemsize
        if size > memory_bytes:
            error = ProfileViolation if profiled else ModelError
            raise error(f"{source}: tensor '{value.name}' {value.dtype}{list(value.shape)} needs {human_size(size)}, "
                        f"more than target {target_name}'s memory ({human_size(memory_bytes)})")


def check_arena_size(arena_bytes: int, memory_bytes: int | None, target_name: str, source: str, profiled: bool) -> None:
    """The planned activation arena, whose tensors each fit, must fit too."""
    if memory_bytes is not None and arena_bytes > memory_bytes:
        error = ProfileViolation if profiled else ModelError
        raise error(f"{source}: the activation arena needs {human_size(arena_bytes)}, more than target "
                    f"{target_name}'s memory ({human_size(memory_bytes)})")
