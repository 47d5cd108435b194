"""Checks the IR's invariants; run before and after every pass by default.

Rules:
- every value is defined once (graph input, initializer or node output);
- every use refers to a value defined earlier in ``Graph.nodes`` (so the order is
  topological), and a failure here is reported as a cycle when the graph has one;
- producer/use links agree with the node lists;
- every graph output is defined;
- initializer data matches the declared dtype and shape;
- the recorded dtypes and shapes agree with what ONNX shape inference derives
  (strict mode, so an op given inputs of the wrong type is caught too).
"""

from __future__ import annotations

import networkx as nx
import onnx

from ..errors import CompileError
from .core import DTYPE_NAMES, Model, Node, dtype_of_array


class VerificationError(CompileError):
    pass


def verify(model: Model, check_types: bool = True) -> None:
    """Raise VerificationError naming the first broken invariant."""
    graph = model.graph
    defined: set[int] = set()
    names: set[str] = set()

    def define(value, where: str) -> None:
        if value.name in names:
            raise VerificationError(f"value '{value.name}' is defined twice ({where})")
        names.add(value.name)
        defined.add(id(value))

    for value in graph.inputs:
        define(value, "graph input")
    for name, value in graph.initializers.items():
        if name != value.name:
            raise VerificationError(f"initializer '{name}' is registered under the wrong name '{value.name}'")
        define(value, "initializer")
        if dtype_of_array(value.const) != value.dtype or tuple(value.const.shape) != tuple(value.shape or ()):
            raise VerificationError(
                f"initializer '{name}' is declared {value.dtype}{list(value.shape or ())} but holds "
                f"{dtype_of_array(value.const)}{list(value.const.shape)}"
            )

    for node in graph.nodes:
        for value in [*node.inputs, *node.implicit_inputs]:
            if value is None:
                continue
            if id(value) not in defined:
                raise VerificationError(f"{node.describe()} uses '{value.name}' before it is defined{cycle_note(model)}")
            if node not in value.uses:
                raise VerificationError(f"{node.describe()} is missing from the uses of '{value.name}'")
        for value in node.outputs:
            define(value, node.describe())
            if value.producer is not node:
                raise VerificationError(f"'{value.name}' does not record {node.describe()} as its producer")
    for value in graph.outputs:
        if id(value) not in defined:
            raise VerificationError(f"graph output '{value.name}' is not defined")
    if check_types:
        verify_types(model)


def cycle_note(model: Model) -> str:
    """Tell a genuine cycle apart from a merely misordered node list."""
    graph = nx.DiGraph()
    for node in model.graph.nodes:
        graph.add_node(id(node))
        for value in node.inputs:
            if value is not None and value.producer is not None:
                graph.add_edge(id(value.producer), id(node))
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return " (the node list is not in topological order)"
    lookup = {id(n): n for n in model.graph.nodes}
    return " (the graph has a cycle: " + " -> ".join(lookup[u].describe() for u, _ in cycle) + ")"


def verify_types(model: Model) -> None:
    from ..frontend.exporter import export_model  # deferred: the exporter itself imports this package

    proto = export_model(model, with_weights=False)
    del proto.graph.value_info[:]  # infer from scratch, then compare with what the IR records
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise VerificationError(f"type check failed: {' '.join(str(exc).split())}") from None  # one line
    found = {vi.name: vi.type.tensor_type for vi in inferred.graph.value_info}
    for node in model.graph.nodes:
        for value in node.outputs:
            tensor = found.get(value.name)
            if tensor is None or value.dtype is None:
                continue
            check_value_type(node, value, tensor)


def check_value_type(node: Node, value, tensor: onnx.TypeProto.Tensor) -> None:
    inferred_dtype = DTYPE_NAMES.get(tensor.elem_type)
    if inferred_dtype and inferred_dtype != value.dtype:
        raise VerificationError(
            f"{node.describe()}: output '{value.name}' is recorded as {value.dtype} but the op yields {inferred_dtype}"
        )
    if value.shape is None or not tensor.HasField("shape"):
        return
    dims = tensor.shape.dim
    if len(dims) != len(value.shape):
        raise VerificationError(
            f"{node.describe()}: output '{value.name}' is recorded with rank {len(value.shape)} but the op yields rank {len(dims)}"
        )
    for axis, (dim, recorded) in enumerate(zip(dims, value.shape)):
        if dim.HasField("dim_value") and isinstance(recorded, int) and dim.dim_value != recorded:
            raise VerificationError(
                f"{node.describe()}: output '{value.name}' dim {axis} is recorded as {recorded} but the op yields {dim.dim_value}"
            )
