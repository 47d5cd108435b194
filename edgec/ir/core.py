"""edgec's graph IR: values, nodes, graphs and models.

The IR mirrors ONNX closely so that export back to ONNX is exact, but it is a
mutable, linked structure (each value knows its producer and its users) so that
passes can rewrite it without rebuilding protobufs.

Invariants the verifier checks:
- every value has exactly one definition: a graph input, an initializer or a node output;
- ``Graph.nodes`` is kept in topological order;
- each initializer's data matches its declared dtype and shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import onnx

Dim = int | str | None
"""A dimension: a fixed size, a symbolic name, or None when unknown."""

# ONNX element types by their edgec spelling: numpy's, and ml_dtypes' for float8 (what str(array.dtype) says).
DTYPES: dict[str, int] = {
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
    "bfloat16": onnx.TensorProto.BFLOAT16,
    "float64": onnx.TensorProto.DOUBLE,
    "int8": onnx.TensorProto.INT8,
    "int16": onnx.TensorProto.INT16,
    "int32": onnx.TensorProto.INT32,
    "int64": onnx.TensorProto.INT64,
    "uint8": onnx.TensorProto.UINT8,
    "uint16": onnx.TensorProto.UINT16,
    "uint32": onnx.TensorProto.UINT32,
    "uint64": onnx.TensorProto.UINT64,
    "bool": onnx.TensorProto.BOOL,
    "string": onnx.TensorProto.STRING,
    "complex64": onnx.TensorProto.COMPLEX64,
    "complex128": onnx.TensorProto.COMPLEX128,
    "float8_e4m3fn": onnx.TensorProto.FLOAT8E4M3FN,
    "float8_e4m3fnuz": onnx.TensorProto.FLOAT8E4M3FNUZ,
    "float8_e5m2": onnx.TensorProto.FLOAT8E5M2,
    "float8_e5m2fnuz": onnx.TensorProto.FLOAT8E5M2FNUZ,
    "float8_e8m0fnu": onnx.TensorProto.FLOAT8E8M0,
    "float4_e2m1fn": onnx.TensorProto.FLOAT4E2M1,
    "int2": onnx.TensorProto.INT2,
    "uint2": onnx.TensorProto.UINT2,
    "uint4": onnx.TensorProto.UINT4,
    "int4": onnx.TensorProto.INT4,
}
DTYPE_NAMES: dict[int, str] = {code: name for name, code in DTYPES.items()}


def dtype_of_array(array: np.ndarray) -> str:
    """The edgec dtype name of a numpy array (ml_dtypes types included)."""
    code = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    return DTYPE_NAMES[code]


def numpy_dtype(dtype: str) -> np.dtype:
    return onnx.helper.tensor_dtype_to_np_dtype(DTYPES[dtype])


@dataclass(eq=False)
class Value:
    """A tensor-valued edge: produced once, used by any number of nodes.

    ``const`` holds the data of an initializer; it is None for everything else.
    """

    name: str
    dtype: str | None = None
    shape: tuple[Dim, ...] | None = None
    const: np.ndarray | None = None
    producer: Node | None = field(default=None, repr=False)
    uses: list[Node] = field(default_factory=list, repr=False)

    @property
    def is_constant(self) -> bool:
        return self.const is not None

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def nbytes(self) -> int | None:
        """Size in bytes when dtype and shape are fully known."""
        if self.dtype is None or not self.is_static or self.dtype == "string":
            return None
        itemsize = numpy_dtype(self.dtype).itemsize
        return itemsize * int(np.prod(self.shape, dtype=np.int64))


@dataclass(eq=False)
class Attr:
    """A node attribute: its ONNX attribute type and a plain Python value.

    Graph-valued attributes (If/Loop bodies) keep their ``onnx.GraphProto``:
    edgec treats control flow as opaque.
    """

    type: int
    value: Any


@dataclass(eq=False)
class Node:
    op_type: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Attr] = field(default_factory=dict)
    domain: str = ""
    name: str = ""
    implicit_inputs: list[Value] = field(default_factory=list)
    """Outer-scope values that a subgraph attribute (If/Loop body) reads by name."""

    @property
    def qualified_op(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain not in ("", "ai.onnx") else self.op_type

    def attr(self, name: str, default: Any = None) -> Any:
        found = self.attrs.get(name)
        return default if found is None else found.value

    def describe(self) -> str:
        """How diagnostics name a node: its name if it has one, else its first output."""
        label = self.name or (self.outputs[0].name if self.outputs else "?")
        return f"node '{label}' ({self.qualified_op})"


class Graph:
    """An ordered list of nodes plus its inputs, outputs and initializers."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.initializers: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self._fresh = 0

    # -- construction -------------------------------------------------------
    def fresh_name(self, hint: str = "v") -> str:
        """A value or node name unused in this graph, deterministic across runs."""
        taken = self.value_names()
        while True:
            candidate = f"{hint}{self._fresh}"
            self._fresh += 1
            if candidate not in taken:
                return candidate

    def add_input(self, value: Value) -> Value:
        self.inputs.append(value)
        return value

    def add_initializer(self, name: str, data: np.ndarray) -> Value:
        value = Value(name, dtype_of_array(data), tuple(int(d) for d in data.shape), const=data)
        self.initializers[name] = value
        return value

    def make_node(
        self,
        op_type: str,
        inputs: Iterable[Value | None],
        outputs: Iterable[Value],
        attrs: dict[str, Attr] | None = None,
        domain: str = "",
        name: str = "",
        before: Node | None = None,
    ) -> Node:
        """Create a node, link its uses, and insert it (at the end, or before ``before``)."""
        node = Node(op_type, list(inputs), list(outputs), dict(attrs or {}), domain, name)
        for value in node.inputs:
            if value is not None:
                value.uses.append(node)
        for value in node.outputs:
            value.producer = node
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    # -- rewriting ----------------------------------------------------------
    def remove_node(self, node: Node) -> None:
        """Unlink and drop a node. Its outputs must be unused or rerouted first."""
        for value in [*node.inputs, *node.implicit_inputs]:
            if value is not None and node in value.uses:
                value.uses.remove(node)
        for value in node.outputs:
            value.producer = None
        self.nodes.remove(node)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Reroute every use of ``old`` (graph outputs included) to ``new``.

        Subgraphs read outer values by name, so an implicit use can only move to a
        value of the same name (as when a folded constant replaces its node output).
        """
        for user in list(old.uses):
            if old in user.implicit_inputs:
                if new.name != old.name:
                    raise ValueError(f"{user.describe()} reads '{old.name}' inside a subgraph; it cannot be renamed")
                user.implicit_inputs = [new if v is old else v for v in user.implicit_inputs]
            user.inputs = [new if v is old else v for v in user.inputs]
            new.uses.append(user)
        old.uses.clear()
        self.outputs = [new if v is old else v for v in self.outputs]

    def forward(self, old: Value, new: Value) -> bool:
        """Make ``old`` redundant by routing its uses to ``new``.

        Graph outputs keep their names, because callers address outputs by name:
        when ``old`` is a graph output, ``new`` takes over its name. That is only
        possible when ``new`` is a plain node output; otherwise nothing changes and
        this returns False.
        """
        if any(old in user.implicit_inputs for user in old.uses):
            return False
        if self.is_graph_output(old):
            renamable = new.producer is not None and not self.is_graph_output(new)
            if not renamable:
                return False
            new.name, old.name = old.name, self.fresh_name(old.name + "_")
        self.replace_all_uses(old, new)
        return True

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        old = node.inputs[index]
        if old is not None:
            old.uses.remove(node)
        node.inputs[index] = value
        if value is not None:
            value.uses.append(node)

    # -- queries ------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        """Every defined value: inputs, initializers, then node outputs in order."""
        yield from self.inputs
        yield from self.initializers.values()
        for node in self.nodes:
            yield from node.outputs

    def value_names(self) -> set[str]:
        return {v.name for v in self.values()}

    def find_value(self, name: str) -> Value | None:
        for value in self.values():
            if value.name == name:
                return value
        return None

    def is_graph_output(self, value: Value) -> bool:
        return any(v is value for v in self.outputs)


@dataclass
class Model:
    """A graph plus the ONNX model-level fields that export must reproduce."""

    graph: Graph
    ir_version: int = 8
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 17})
    producer_name: str = ""
    producer_version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[onnx.FunctionProto] = field(default_factory=list)
    initializers_as_inputs: bool = False
    """IR < 4 requires initializers to be listed as graph inputs; export repeats that."""
    source_files: list[Path] = field(default_factory=list)
    """The files this model was read from (the .onnx and its external data), for depfiles and caches."""
    dim_bindings: list = field(default_factory=list)
    """The symbolic input dims the import fixed (``importer.DimBinding``), for the manifest and the notice."""

    @property
    def opset(self) -> int:
        return self.opset_imports.get("", self.opset_imports.get("ai.onnx", 1))
