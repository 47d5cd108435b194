"""ONNX -> IR.

Accepts every IR version from 3 and every opset from 7 that the installed onnx
loads. Models below opset 7 are converted up with onnx's version converter.
External-data weights are loaded from beside the model. Initializers that old
models (IR < 4) also list as graph inputs are treated as constants, as
onnxruntime does; IR < 4 files that leave some out get them listed. Symbolic input
dims are bound before shape inference, which then fills in every intermediate type.
onnxruntime's QOperator ops (QLinearConv, com.microsoft's QLinearAdd...) are translated
to standard ONNX first (``qoperator``).
An optional tensor input compiles as a tensor the caller must give (the IR has no
optional type): ``OptionalHasElement`` of it is true, ``OptionalGetElement`` is the tensor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from ..errors import ModelError, UsageError
from ..ir.core import DTYPE_NAMES, Attr, Dim, Graph, Model, Value
from .qoperator import translate as translate_qoperator
from .validate import check_external_location, check_proto

logger = logging.getLogger(__name__)

MIN_OPSET = 7
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"}


def parse_input_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``name=1x3x224x224`` (the ``--input-shape`` flag)."""
    name, sep, dims = spec.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split("x")) if dims else ()
    except ValueError:
        shape = None
    if not sep or not name or shape is None or any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape {spec!r}: expected NAME=DxDx..., e.g. input=1x3x224x224")
    return name, shape


def load_model(
    path: str | os.PathLike,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    dims: dict[str, int] | None = None,
    batch: Callable[[dict[str, str]], tuple[int, str]] | None = None,
) -> Model:
    """Read, check and import an ONNX file, binding symbolic input dims if asked.

    ``dims`` binds named dims everywhere (``--dim``); ``batch``, given the model's metadata,
    says what a still-symbolic leading input dim becomes and why (the compile's profile)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not an ONNX file")
    proto = read_proto(path)
    weight_files = load_weights(proto, path)
    batch_size = batch({p.key: p.value for p in proto.metadata_props}) if batch else None
    model = import_proto(proto, str(path), input_shapes or {}, dims or {}, batch_size)
    model.source_files = [path, *weight_files]
    return model


def read_proto(path: Path) -> onnx.ModelProto:
    data = path.read_bytes()
    if not data:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        hint = "it looks truncated" if data[:1] == b"\x08" else "it is not an ONNX protobuf"
        raise ModelError(f"{path}: cannot parse the ONNX model ({hint}: {exc})") from None
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelError(f"{path}: not an ONNX model (no IR version or graph)")
    return proto


def load_weights(proto: onnx.ModelProto, path: Path) -> list[Path]:
    """Load external-data initializers from beside the model, naming what is missing.

    Returns the files read, in first-use order: build systems depend on them too."""
    base = path.parent
    files: dict[Path, None] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        check_external_location(path, tensor, location)
        if not (base / location).is_file():
            raise ModelError(f"{path}: external data file '{location}' for initializer '{tensor.name}' not found in {base}")
        files[base / location] = None
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(base))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load external data: {exc}") from None
    return list(files)


def check_opsets(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    latest = onnx.defs.onnx_opset_version()
    local_domains = {f.domain for f in proto.functions}
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if opset.version > latest:
                raise ModelError(
                    f"{source}: opset {opset.version} is newer than this onnx supports "
                    f"(onnx {onnx.__version__} knows opsets up to {latest})"
                )
            if opset.version < 1:
                raise ModelError(f"{source}: invalid opset version {opset.version}")
    for node in proto.graph.node:
        if node.domain in local_domains:
            continue
        label = node.name or (node.output[0] if node.output else "?")
        if node.domain not in KNOWN_DOMAINS:
            raise ModelError(
                f"{source}: node '{label}' ({node.op_type}) uses unknown op domain '{node.domain}'; "
                f"edgec knows {', '.join(repr(d) for d in sorted(KNOWN_DOMAINS) if d)} and the default domain"
            )
        version = next((o.version for o in proto.opset_import if o.domain == node.domain), None)
        if version is None or not onnx.defs.has(node.op_type, version, node.domain):
            raise ModelError(f"{source}: node '{label}': op '{node.op_type}' does not exist in opset {version} of domain '{node.domain or 'ai.onnx'}'")
    default = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if default is not None and default < MIN_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, MIN_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors
            raise ModelError(f"{source}: opset {default} cannot be converted to opset {MIN_OPSET}: {exc}") from None
        logger.info("%s: converted from opset %d to %d", source, default, MIN_OPSET)
    return proto


def list_initializers_as_inputs(proto: onnx.ModelProto) -> None:
    """IR < 4 types initializers only through the graph inputs; old converters that left them
    out there get them listed (in place), so shape inference and the opset converter see their
    types. Like every initializer of IR < 4, they import as constants, as onnxruntime runs them."""
    if proto.ir_version >= 4:
        return
    listed = {i.name for i in proto.graph.input}
    for tensor in proto.graph.initializer:
        if tensor.name not in listed:
            proto.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))


def require_optional_inputs(proto: onnx.ModelProto) -> None:
    """Type each optional-tensor graph input as its tensor, in place: the artifact takes it
    like any input and the runtime refuses a run without it, rather than compiling both cases."""
    for value_info in proto.graph.input:
        optional = value_info.type.optional_type
        if value_info.type.HasField("optional_type") and optional.elem_type.HasField("tensor_type"):
            value_info.type.CopyFrom(optional.elem_type)
            logger.info("input '%s' is an optional tensor; edgec compiles it as a required input", value_info.name)


def infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Strict shape inference; where it fails, once more with function ops' defaults spelled out."""
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError:
        if not spell_out_function_defaults(proto):
            raise
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)


def spell_out_function_defaults(proto: onnx.ModelProto) -> bool:
    """Write the schema's default values of missing attributes into nodes of ops that ONNX
    defines as functions, in place. A body that refers to an attribute (``value_ints = @axes``)
    fails strict shape inference when the node leaves it to the default
    (MeanVarianceNormalization's ``axes``); an explicit default means the same op. Returns
    whether any node changed."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    changed = False
    if opset is None:
        return changed
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type, opset, node.domain):
            continue
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        if not schema.has_function:
            continue
        given = {a.name for a in node.attribute}
        for name, attribute in schema.attributes.items():
            if name not in given and attribute.default_value.type != onnx.AttributeProto.UNDEFINED:
                node.attribute.append(attribute.default_value)
                changed = True
    return changed


def parse_dim(spec: str) -> tuple[str, int]:
    """Parse ``NAME=VALUE`` (the ``--dim`` flag)."""
    name, sep, value = spec.partition("=")
    if not sep or not name or not value.isdigit() or int(value) <= 0:
        raise UsageError(f"--dim {spec!r}: expected NAME=VALUE with a positive size, e.g. batch=1")
    return name, int(value)


@dataclass(frozen=True)
class DimBinding:
    """A symbolic input dim given a size, and what gave it: the manifest's record of it."""

    input: str
    axis: int
    dim: str | None
    """Its symbolic name, None when the model leaves it unnamed."""
    value: int
    source: str

    def describe(self) -> str:
        name = f" ({self.dim!r})" if self.dim else ""
        return f"{self.input} dim {self.axis}{name} = {self.value} from {self.source}"

    def to_dict(self) -> dict:
        return asdict(self)


def bind_dims(proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], dims: dict[str, int],
              batch: tuple[int, str] | None) -> list[DimBinding]:
    """Fix the symbolic dims of the graph inputs, in place: a named dim by ``dims`` (everywhere it
    appears, as onnxruntime's free-dimension override does), an input by ``shapes``, and a leading
    dim still free by ``batch`` (size, source). A name bound once has that size on every input."""
    initializer_names = {t.name for t in proto.graph.initializer}
    inputs = {i.name: i for i in proto.graph.input if i.name not in initializer_names}
    named = {name: (value, f"--dim {name}={value}") for name, value in dims.items()}
    free = {d.dim_param for i in inputs.values() for d in i.type.tensor_type.shape.dim if not d.HasField("dim_value")}
    for name in dims:
        if name not in free:
            known = ", ".join(sorted(n for n in free if n)) or "none"
            raise UsageError(f"--dim {name}: no input of the model has a dim named '{name}' (symbolic dims: {known})")
    for name, shape in shapes.items():
        if name not in inputs:
            raise UsageError(f"--input-shape {name}: the model has no input '{name}' (inputs: {', '.join(inputs)})")
        input_dims = inputs[name].type.tensor_type.shape.dim
        if len(input_dims) != len(shape):
            raise UsageError(f"--input-shape {name}: the input has rank {len(input_dims)}, got {len(shape)} dims")
        for axis, (dim, size) in enumerate(zip(input_dims, shape)):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise UsageError(f"--input-shape {name}: dim {axis} is fixed at {dim.dim_value}, got {size}")
            if dim.dim_param and named.get(dim.dim_param, (size,))[0] != size:
                raise UsageError(f"--input-shape {name}: dim {axis} ('{dim.dim_param}') is {size} here but "
                                 f"{named[dim.dim_param][0]} by {named[dim.dim_param][1]}")
            if dim.dim_param:
                named.setdefault(dim.dim_param, (size, f"--input-shape {name}"))
    bindings = []
    for value_info in inputs.values():
        for axis, dim in enumerate(value_info.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and value_info.name not in shapes:
                continue
            if value_info.name in shapes:
                size, source = shapes[value_info.name][axis], f"--input-shape {value_info.name}"
            elif dim.dim_param in named:
                size, source = named[dim.dim_param]
            elif axis == 0 and batch is not None:
                size, source = batch
            else:
                continue
            if not dim.HasField("dim_value"):
                bindings.append(DimBinding(value_info.name, axis, dim.dim_param or None, size, source))
            if dim.dim_param:
                named.setdefault(dim.dim_param, (size, source))
            dim.Clear()
            dim.dim_value = size
    # The same name in declared outputs and value_info means the same size.
    for value_info in [*proto.graph.output, *proto.graph.value_info]:
        for dim in value_info.type.tensor_type.shape.dim:
            if dim.dim_param in named:
                dim.dim_value = named[dim.dim_param][0]
    return bindings


PROTOBUF_LIMIT = 2**31
"""Bytes: a larger ModelProto cannot be serialized, which onnx's in-memory shape inference needs."""


def import_proto(proto: onnx.ModelProto, source: str = "<model>", input_shapes: dict | None = None,
                 dims: dict[str, int] | None = None, batch: tuple[int, str] | None = None) -> Model:
    """Check an in-memory ModelProto (weights loaded) and convert it to the IR."""
    check_proto(proto, source)
    list_initializers_as_inputs(proto)
    proto = translate_qoperator(proto, source)
    proto = check_opsets(proto, source)
    require_optional_inputs(proto)
    bindings = bind_dims(proto, input_shapes or {}, dims or {}, batch)
    try:
        inferred = infer_shapes(proto)
    except onnx.shape_inference.InferenceError as exc:
        raise ModelError(f"{source}: shape inference failed: {' '.join(str(exc).split())}") from None  # one line
    except ValueError as exc:
        if proto.ByteSize() < PROTOBUF_LIMIT:
            raise ModelError(f"{source}: shape inference failed: {' '.join(str(exc).split())}") from None
        inferred = proto  # protobuf cannot serialize it for onnx's inference: the declared shapes stand
    model = convert_model(inferred)
    model.dim_bindings = bindings
    return model


def dims_of(type_proto: onnx.TypeProto) -> tuple[str | None, tuple[Dim, ...] | None]:
    if not type_proto.HasField("tensor_type"):
        return None, None
    tensor = type_proto.tensor_type
    dtype = DTYPE_NAMES.get(tensor.elem_type) if tensor.elem_type else None
    if not tensor.HasField("shape"):
        return dtype, None
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        dims.append(dim.dim_value if dim.HasField("dim_value") else dim.dim_param if dim.HasField("dim_param") else None)
    return dtype, tuple(dims)


def attr_from_proto(proto: onnx.AttributeProto) -> Attr:
    A = onnx.AttributeProto
    if proto.type == A.STRING:
        return Attr(A.STRING, proto.s.decode("utf-8", "surrogateescape"))
    if proto.type == A.STRINGS:
        return Attr(A.STRINGS, [s.decode("utf-8", "surrogateescape") for s in proto.strings])
    if proto.type == A.TENSOR:
        return Attr(A.TENSOR, numpy_helper.to_array(proto.t))
    if proto.type in (A.INT, A.FLOAT, A.INTS, A.FLOATS):
        return Attr(proto.type, onnx.helper.get_attribute_value(proto))
    kept = onnx.AttributeProto()
    kept.CopyFrom(proto)
    # The exporter copies these verbatim; the printer shows a GRAPH's name and size.
    return Attr(proto.type, kept.g if proto.type == A.GRAPH else kept)


def outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read without defining them (their outer-scope inputs)."""
    found: set[str] = set()
    for attr in node.attribute:
        for subgraph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            defined = {v.name for v in subgraph.input} | {t.name for t in subgraph.initializer}
            for inner in subgraph.node:
                found |= ({n for n in inner.input if n} | outer_names(inner)) - defined
                defined |= set(inner.output)
            found |= {v.name for v in subgraph.output} - defined
    return found


def convert_model(proto: onnx.ModelProto) -> Model:
    onnx_graph = proto.graph
    graph = Graph(onnx_graph.name or "main")
    values: dict[str, Value] = {}
    types = {vi.name: vi.type for vi in list(onnx_graph.value_info) + list(onnx_graph.output) + list(onnx_graph.input)}

    for tensor in onnx_graph.initializer:
        values[tensor.name] = graph.add_initializer(tensor.name, numpy_helper.to_array(tensor))
    listed_as_input = False
    for value_info in onnx_graph.input:
        if value_info.name in values:
            listed_as_input = True
            continue
        dtype, shape = dims_of(value_info.type)
        values[value_info.name] = graph.add_input(Value(value_info.name, dtype, shape))

    for node_proto in onnx_graph.node:
        inputs = []
        for name in node_proto.input:
            if not name:
                inputs.append(None)
            elif name in values:
                inputs.append(values[name])
            else:
                raise ModelError(f"node '{node_proto.name or node_proto.output[0]}' uses '{name}', which nothing defines")
        outputs = []
        present = list(node_proto.output)
        while present and not present[-1]:
            present.pop()  # omitted trailing optional outputs
        for position, name in enumerate(present):
            # An omitted output before a present one still has a position: give it a name of its own.
            name = name or f"{node_proto.name or present[-1]}.unused{position}"
            dtype, shape = dims_of(types[name]) if name in types else (None, None)
            value = Value(name, dtype, shape)
            values[name] = value
            outputs.append(value)
        attrs = {a.name: attr_from_proto(a) for a in node_proto.attribute}
        node = graph.make_node(node_proto.op_type, inputs, outputs, attrs, node_proto.domain, node_proto.name)
        for name in sorted(outer_names(node_proto) & values.keys()):
            node.implicit_inputs.append(values[name])
            values[name].uses.append(node)

    for value_info in onnx_graph.output:
        if value_info.name not in values:
            raise ModelError(f"graph output '{value_info.name}' is not produced by any node")
        value = values[value_info.name]
        if value.dtype is None:
            value.dtype, value.shape = dims_of(value_info.type)
        graph.outputs.append(value)

    model = Model(
        graph,
        ir_version=proto.ir_version,
        opset_imports={o.domain: o.version for o in proto.opset_import},
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        metadata={p.key: p.value for p in proto.metadata_props},
        functions=list(proto.functions),
        initializers_as_inputs=listed_as_input,
    )
    return model


def symbolic_inputs(model: Model) -> list[tuple[Value, int, Dim]]:
    """Every graph-input dim that is not a fixed size: (input, axis, dim)."""
    found = []
    for value in model.graph.inputs:
        if value.shape is None:
            found.append((value, -1, None))
            continue
        found.extend((value, axis, dim) for axis, dim in enumerate(value.shape) if not isinstance(dim, int))
    return found


def ensure_static(model: Model, source: str) -> None:
    """Compiling needs fixed input shapes: name the first free dim and the flags that bind it."""
    for value, axis, dim in symbolic_inputs(model):
        example = "x".join(str(d) if isinstance(d, int) else "N" for d in (value.shape or ()))
        what = "has an unknown shape" if axis < 0 else f"dim {axis} is symbolic ({dim!r})" if dim else f"dim {axis} is unknown"
        flags = f"--dim {dim}=N or " if isinstance(dim, str) and dim else ""
        raise ModelError(f"{source}: input '{value.name}' {what}; bind it with {flags}--input-shape {value.name}={example or 'DxD'}")
