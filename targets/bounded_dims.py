"""Bounded dynamic dims: a dim only the data decides, compiled at its static upper bound with a
run-time count of the entries that are real (XLA's "dynamic padder").

TVM compiles static shapes; NonZero's count and NonMaxSuppression's rows are known only when
the model runs. Here, before TVM's frontend, every such tensor becomes its static upper bound
along one axis plus a count (int64 [1]) of the leading entries that are real; the padding
after them holds in-range values and never reaches a real entry. The rules, node by node in
graph order (subgraphs of If inlined):

- NonZero: its indices packed to the front in row-major order (a stable TopK), numel columns,
  the count of non-zeros;
- NonMaxSuppression: ``detection.static_nms``, the padding of its inputs never selected;
- Shape of a bounded tensor: the count at the bounded axis, at run time; Gather, Unsqueeze,
  Squeeze, Reshape, Concat and the reductions of such shape values are followed with their
  static upper bounds, so that TopK's k and ConstantOfShape's shape compile at that bound;
- TopK along the bounded axis: the padding gets the value that sorts last (-inf when largest),
  TopK's own tie rule (the lower index) keeps the real entries first; count min(k, count);
- Concat along the bounded axis: the real entries of each input packed to the front, in order
  (a stable TopK), the counts summed; along another axis the inputs must share the count;
- Slice of the bounded axis from a start >= 0 with step 1: the count clamped to it;
- reductions over the bounded axis: the padding replaced by the reduction's identity;
- If on a run-time condition: both branches inlined, each output the selected branch's
  (padded to the larger bound) with the selected count;
- elementwise ops, Cast, Transpose, Unsqueeze, Squeeze of another axis, Split of another axis,
  Gather and GatherND keep the count, Gather of the bounded axis only by indices that are
  themselves bounded and non-negative (NonZero's, TopK's, NMS's).

Graph outputs that are bounded are cut to their count by the runtimes (the manifest's
``valid_rows``); a count of -1 means the static NMS could not settle within its bound and
the runtimes refuse the result. Any other use of a bounded tensor is refused, naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgec.errors import CompileError

from .detection import reduce, rows_needed, static_nms
from .onnx_rewrites import FLOATS, Steps, _reduce_to_infinity, label

COUNT_SUFFIX = ".valid_rows"
EXACT_FLOAT_POSITIONS = 1 << 24
"""Positions up to this are exact in float32, the keys of the packing TopKs."""
ELEMENTWISE = {"Cast", "Neg", "Abs", "Identity", "Add", "Sub", "Mul", "Div", "Clip", "Relu", "Sigmoid", "Exp", "Log",
               "Sqrt", "Floor", "Ceil", "Round", "Min", "Max", "Where", "Equal", "Less", "Greater", "LessOrEqual",
               "GreaterOrEqual", "Not", "And", "Or", "Xor", "Sign", "Tanh", "HardSigmoid", "HardSwish", "Softplus"}
NON_NEGATIVE_KEEPERS = {"Gather", "GatherND", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Identity", "Split",
                        "Concat", "Reshape", "Flatten"}
FOLDED = {"Unsqueeze", "Squeeze", "Reshape", "Concat", "Gather", "Cast", "Identity", "Slice", "Add", "Sub", "Mul"}
"""Ops of constants the walk evaluates (edgec folded the main graph's; If branches keep theirs)."""
REDUCE_IDENTITY = {"ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceSum": 0.0}


@dataclass(frozen=True)
class Bound:
    axis: int
    count: str
    """An int64 [1] tensor: how many leading entries along ``axis`` are real."""
    size: int


@dataclass(frozen=True)
class Dyn:
    """One element of a shape value that the data decides: its value in ``tensor`` (one element)."""
    tensor: str
    upper: int


def has_bounded_dims(proto: onnx.ModelProto) -> bool:
    """An NMS, or a NonZero some node reads (one that is only a graph output stays TVM's, sized at run time)."""
    users = _users(proto.graph)
    return any(n.op_type == "NonMaxSuppression" or n.op_type == "NonZero" and users.get(n.output[0])
               for n in _all_nodes(proto.graph))


def bound_dims(proto: onnx.ModelProto) -> dict[str, str]:
    """Rewrite the graph in place to static shapes; {graph output cut to a count: the count output}."""
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    padder = Padder(opset, inferred, graph)
    nodes = padder.run(list(graph.node))
    del graph.node[:]
    graph.node.extend(nodes)
    cut, named = {}, {}
    for output in graph.output:
        bound = padder.bounds.get(output.name)
        if bound is None:
            if output.name in padder.dims:
                raise CompileError(f"graph output '{output.name}' is a shape only the data decides; edgec returns "
                                   "tensors of a static upper bound with a count of their rows")
            continue
        if bound.axis != 0:
            raise CompileError(f"graph output '{output.name}' has a dim only the data decides on axis {bound.axis}; "
                               "edgec cuts outputs to a count of rows (axis 0) only")
        if bound.count not in named:
            named[bound.count] = bound.count if bound.count.endswith(COUNT_SUFFIX) else f"{output.name}{COUNT_SUFFIX}"
            if named[bound.count] != bound.count:
                graph.node.append(onnx.helper.make_node("Identity", [bound.count], [named[bound.count]],
                                                        name=named[bound.count]))
        cut[output.name] = named[bound.count]
    for count in dict.fromkeys(cut.values()):  # in the order of the outputs, as the manifest lists the counts
        graph.output.append(onnx.helper.make_tensor_value_info(count, onnx.TensorProto.INT64, [1]))
    static = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v for v in [*static.value_info, *static.output]}
    for output in graph.output:  # the static upper bounds, as TVM will see them
        if output.name in types:
            output.type.CopyFrom(types[output.name].type)
    return cut


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)


def attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class Padder:
    """The rules, applied node by node; ``bounds`` and ``dims`` say what each value became."""

    def __init__(self, opset: int, inferred: onnx.GraphProto, graph: onnx.GraphProto):
        self.opset = opset
        self.shapes: dict[str, list[int]] = {}
        self.elems: dict[str, int] = {}
        for v in _typed_values(inferred):
            tensor = v.type.tensor_type
            self.elems[v.name] = tensor.elem_type
            if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
                self.shapes[v.name] = [d.dim_value for d in tensor.shape.dim]
        self.constants: dict[str, np.ndarray] = {}
        for t in graph.initializer:
            self.constants[t.name] = onnx.numpy_helper.to_array(t)
            self.shapes[t.name], self.elems[t.name] = list(t.dims), t.data_type
        for node in _all_nodes(graph):  # the look-ahead of rows_needed reads constants further on
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        self.bounds: dict[str, Bound] = {}
        self.dims: dict[str, tuple[list, int]] = {}
        """Shape values the data decides: (elements, each an int or a Dyn; the value's rank)."""
        self.non_negative: set[str] = set()
        self.users = _users(graph)
        self.cache: dict = {}

    # -- helpers ---------------------------------------------------------------------------
    def steps(self, node: onnx.NodeProto) -> Steps:
        return Steps(f"{node.output[0]}.pad", self.opset)

    def refuse(self, node: onnx.NodeProto, why: str):
        raise CompileError(f"{label(node)}: {why}; edgec compiles a dim only the data decides at its static upper "
                           "bound and cannot follow it through this node")

    def shape(self, node: onnx.NodeProto, name: str) -> list[int]:
        if name not in self.shapes:
            self.refuse(node, f"the shape of its input '{name}' is not static")
        return self.shapes[name]

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def count_tensor(self, s: Steps, element) -> str:
        """An int64 [1] tensor holding ``element`` (an int or a Dyn)."""
        if isinstance(element, Dyn):
            return element.tensor
        return s.ints(element)

    # -- the walk --------------------------------------------------------------------------
    def run(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        out: list[onnx.NodeProto] = []
        for node in nodes:
            if node.op_type == "NonZero" and not self.users.get(node.output[0]):
                out.append(node)  # a graph output only: TVM's own NonZero, its size decided at run time
                continue
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                value = onnx.numpy_helper.to_array(node.attribute[0].t)
                self.constants[node.output[0]] = value
                self.shapes[node.output[0]] = list(value.shape)
                self.elems[node.output[0]] = node.attribute[0].t.data_type
                out.append(node)
                continue
            if node.input and all(name in self.constants for name in node.input if name) and \
                    node.op_type in FOLDED and sum(self.constants[n].size for n in node.input if n) <= 64:
                self.fold(node)
            touched = any(name in self.bounds or name in self.dims for name in node.input) or (
                node.op_type == "If" and self.branches_touch(node))
            if node.op_type in ("NonZero", "NonMaxSuppression") or touched:
                out.extend(self.rewrite(node))
            else:
                out.append(node)
            for name in node.output:  # a value the rewrite made static keeps the shape inference gave it
                if name in self.bounds:
                    shape = self.shapes.get(name)
                    if shape is None or shape[self.bounds[name].axis] != self.bounds[name].size:
                        raise AssertionError(f"bounded value '{name}' lost its static shape")
        return out

    def fold(self, node: onnx.NodeProto) -> None:
        """A small node of constants (a branch's axes, say) evaluated, so the rules can read its value."""
        from onnx.reference import ReferenceEvaluator

        inputs = [name for name in node.input if name]
        graph = onnx.helper.make_graph(
            [node], "fold", [], [onnx.helper.make_value_info(name, onnx.TypeProto()) for name in node.output],
            [onnx.numpy_helper.from_array(self.constants[name], name) for name in inputs])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", self.opset)])
        for name, value in zip(node.output, ReferenceEvaluator(model).run(None, {})):
            value = np.asarray(value)
            self.constants[name], self.shapes[name] = value, list(value.shape)
            self.elems[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)

    def branches_touch(self, node: onnx.NodeProto) -> bool:
        """Whether an If's branches meet a bounded value or make one (an If that does not stays TVM's)."""
        return any(n.op_type in ("NonZero", "NonMaxSuppression")
                   or any(name in self.bounds or name in self.dims for name in n.input)
                   for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in _all_nodes(a.g))

    def rewrite(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        rule = getattr(self, f"_{node.op_type.lower()}", None)
        if node.op_type in ELEMENTWISE:
            rule = self._elementwise
        if rule is None or node.domain not in ("", "ai.onnx"):
            bounded = next(name for name in node.input if name in self.bounds or name in self.dims)
            self.refuse(node, f"its input '{bounded}' has a dim only the data decides")
        return rule(node)

    # -- sources ---------------------------------------------------------------------------
    def _nonzero(self, node):
        x = node.input[0]
        shape = self.shape(node, x)
        total = int(np.prod(shape))
        if total >= EXACT_FLOAT_POSITIONS:
            self.refuse(node, f"{total} elements; the packing key is exact up to {EXACT_FLOAT_POSITIONS}")
        s = self.steps(node)
        if x in self.cache:  # the same mask again (torchvision asks twice): the same indices
            first = self.cache[x]
            s("Identity", [first], node.output[0])
            self.bounds[node.output[0]] = self.bounds[first]
        else:
            flat = s("Reshape", [x, s.ints(-1)]) if len(shape) > 1 else x
            if self.elems.get(x) == onnx.TensorProto.BOOL:
                nonzero = flat
            else:
                zero = s.const(np.zeros((), onnx.helper.tensor_dtype_to_np_dtype(self.elems[x])))
                nonzero = s("Not", [s("Equal", [flat, zero])])
            count = reduce(s, "ReduceSum", s("Cast", [nonzero], to=onnx.TensorProto.INT64), 0)
            order = self.pack(s, nonzero, total)
            if len(shape) == 1:
                s("Unsqueeze", [order, s.ints(0)], node.output[0]) if s.opset >= 13 else \
                    s("Unsqueeze", [order], node.output[0], axes=[0])
            else:
                rows = [s.unsqueeze(s("Mod", [s("Div", [order, s.ints(int(np.prod(shape[axis + 1:])))]),
                                              s.ints(shape[axis])]), 0) for axis in range(len(shape))]
                s("Concat", rows, node.output[0], axis=0)
            self.bounds[node.output[0]] = Bound(1, count, total)
            self.cache[x] = node.output[0]
        self.shapes[node.output[0]] = [len(shape), total]
        self.elems[node.output[0]] = onnx.TensorProto.INT64
        self.non_negative.add(node.output[0])
        return s.nodes

    def pack(self, s: Steps, real: str, total: int) -> str:
        """int64 [total]: the positions where ``real`` (bool [total]) holds, in order, then the others."""
        positions = np.arange(total, dtype=np.float32)
        key = s("Where", [real, s.const(-positions), s.const(-positions - total)])
        s("TopK", [key, s.ints(total)], axis=0, largest=1, sorted=1)
        s.nodes[-1].output.append(f"{s.nodes[-1].output[0]}.indices")
        return s.nodes[-1].output[1]

    def _nonmaxsuppression(self, node):

        inputs = list(node.input) + [""] * (5 - len(node.input))
        boxes, scores = self.bounds.get(inputs[0]), self.bounds.get(inputs[1])
        if any(name in self.bounds or name in self.dims for name in inputs[2:]):
            self.refuse(node, "its limits are decided by the data")
        if (boxes is None) != (scores is None) or (boxes and (boxes.axis, scores.axis, boxes.count) !=
                                                      (1, 2, scores.count)):
            self.refuse(node, "its boxes and scores must share one count of boxes")
        s = self.steps(node)
        count = f"{node.output[0]}{COUNT_SUFFIX}"
        shapes = {inputs[0]: self.shape(node, inputs[0]), inputs[1]: self.shape(node, inputs[1])}
        valid = None
        if boxes is not None:
            positions = s.const(np.arange(boxes.size, dtype=np.int64).reshape(1, 1, -1))
            valid = s("Less", [positions, boxes.count])
        rows = static_nms(s, node, label(node), shapes, self.constants, count, valid,
                          rows_needed(self.users, node.output[0], self.constants))
        self.bounds[node.output[0]] = Bound(0, count, rows)
        self.shapes[node.output[0]] = [rows, 3]
        self.elems[node.output[0]] = onnx.TensorProto.INT64
        self.non_negative.add(node.output[0])
        return s.nodes

    # -- shape values ----------------------------------------------------------------------
    def _shape(self, node):
        x = node.input[0]
        bound = self.bounds.get(x)
        if bound is None:
            self.refuse(node, f"its input '{x}' is a shape only the data decides")
        shape = self.shape(node, x)
        elements = [Dyn(bound.count, bound.size) if axis == bound.axis else size for axis, size in enumerate(shape)]
        rank = len(shape)
        start, end = attr(node, "start", 0), attr(node, "end", rank)
        elements = elements[slice(start, end)]
        s = self.steps(node)
        parts = [e.tensor if isinstance(e, Dyn) else s.ints(e) for e in elements]
        s("Concat", parts, node.output[0], axis=0) if len(parts) > 1 else s("Identity", parts, node.output[0])
        self.set_dims(node.output[0], elements, 1)
        return s.nodes

    def set_dims(self, name: str, elements: list, rank: int) -> None:
        self.dims[name] = (elements, rank)
        self.shapes[name] = [len(elements)] * rank
        self.elems[name] = onnx.TensorProto.INT64

    def dims_of(self, node, name: str) -> tuple[list, int] | None:
        """A shape value's elements, or a small int constant's."""
        if name in self.dims:
            return self.dims[name]
        value = self.const(name)
        if value is not None and value.dtype.kind in "iu" and value.ndim <= 1:
            return [int(v) for v in value.reshape(-1)], value.ndim
        return None

    def as_dyn(self, s: Steps, name: str, upper: int) -> Dyn:
        """``name`` (one int64 element computed at run time) as a count tensor."""
        return Dyn(s("Reshape", [name, s.ints(1)]), upper)

    def shape_value_op(self, node) -> list[onnx.NodeProto] | None:
        """Gather, Unsqueeze, Squeeze, Reshape, Concat and reductions of shape values, followed."""
        op = node.op_type
        data = self.dims.get(node.input[0])
        if op == "Concat" and all(self.dims_of(node, name) is not None for name in node.input):
            elements = [e for name in node.input for e in self.dims_of(node, name)[0]]
            self.set_dims(node.output[0], elements, 1)
            return [node]
        if data is None:
            return None
        elements, rank = data
        if op == "Gather" and self.const(node.input[1]) is not None:
            index = self.const(node.input[1])
            picked = [elements[int(i)] for i in index.reshape(-1)]
            self.set_dims(node.output[0], picked, index.ndim)
            return [node]
        if op in ("Unsqueeze", "Squeeze", "Reshape", "Identity") and len(elements) == 1:
            new_rank = {"Unsqueeze": rank + 1, "Squeeze": 0, "Identity": rank}.get(op)
            if op == "Reshape":
                target = self.const(node.input[1])
                if target is None:
                    return None
                new_rank = len(target)
            if new_rank > 1:
                return None
            self.set_dims(node.output[0], elements, new_rank)
            return [node]
        if op in ("ReduceMin", "ReduceMax", "ReduceProd", "ReduceSum") and rank == 1:
            uppers = [e.upper if isinstance(e, Dyn) else e for e in elements]
            upper = {"ReduceMin": min, "ReduceMax": max, "ReduceProd": lambda u: int(np.prod(u)),
                     "ReduceSum": sum}[op](uppers)
            if all(isinstance(e, int) for e in elements):
                value = {"ReduceMin": min, "ReduceMax": max, "ReduceProd": lambda u: int(np.prod(u)),
                         "ReduceSum": sum}[op](elements)
                self.set_dims(node.output[0], [value], attr(node, "keepdims", 1))
                return [node]
            s = self.steps(node)
            dyn = self.as_dyn(s, node.output[0], upper)
            self.set_dims(node.output[0], [dyn], attr(node, "keepdims", 1))
            return [node, *s.nodes]
        return None

    def _constantofshape(self, node):
        data = self.dims.get(node.input[0])
        elements, _ = data
        dynamic = [axis for axis, e in enumerate(elements) if isinstance(e, Dyn)]
        if len(dynamic) > 1:
            self.refuse(node, "more than one dim of its shape is decided by the data")
        static = [e.upper if isinstance(e, Dyn) else e for e in elements]
        s = self.steps(node)
        rewritten = onnx.NodeProto()
        rewritten.CopyFrom(node)
        rewritten.input[0] = s.ints(*static)
        s.nodes.append(rewritten)
        self.shapes[node.output[0]] = static
        value = attr(node, "value", None)
        elem = value.data_type if value is not None else onnx.TensorProto.FLOAT
        self.elems[node.output[0]] = elem
        if dynamic:
            # Zeros after the count, so the value depends on it: TVM's frontend takes a Concat of
            # int64 constants for a shape, and 90 x 300 of them crash its legalization.
            axis = dynamic[0]
            filled = f"{node.output[0]}.filled"
            rewritten.output[0] = filled
            positions = np.arange(static[axis], dtype=np.int64).reshape([-1] + [1] * (len(static) - axis - 1))
            real = s("Less", [s.const(positions), elements[axis].tensor])
            zero = s.const(np.zeros((), onnx.helper.tensor_dtype_to_np_dtype(elem)))
            s("Where", [real, filled, zero], node.output[0])
            self.bounds[node.output[0]] = Bound(axis, elements[axis].tensor, static[axis])
        return s.nodes

    # -- ops that move or keep the count ---------------------------------------------------
    def _gather(self, node):
        followed = self.shape_value_op(node)
        if followed is not None:
            return followed
        data, indices = node.input[0], node.input[1]
        if data in self.dims or indices in self.dims:
            self.refuse(node, "a shape only the data decides is used as data")
        rank = len(self.shape(node, data))
        axis = attr(node, "axis", 0) % rank
        index_shape = self.shape(node, indices)
        data_bound, index_bound = self.bounds.get(data), self.bounds.get(indices)
        if data_bound is not None and index_bound is not None:
            if data_bound.axis != axis or indices not in self.non_negative:
                self.refuse(node, "it gathers a tensor with a count by indices that are not that count's own")
            bound = Bound(axis + index_bound.axis, index_bound.count, index_bound.size)
        elif index_bound is not None:
            bound = Bound(axis + index_bound.axis, index_bound.count, index_bound.size)
        elif data_bound.axis == axis:
            self.refuse(node, "it picks entries of the axis the data decides by fixed indices")
        else:
            shift = 0 if data_bound.axis < axis else len(index_shape) - 1
            bound = Bound(data_bound.axis + shift, data_bound.count, data_bound.size)
        shape = self.shape(node, data)
        self.keep(node, bound, shape[:axis] + index_shape + shape[axis + 1:], self.elems.get(data))
        if data in self.non_negative:
            self.non_negative.add(node.output[0])
        return [node]

    def keep(self, node, bound: Bound, shape: list[int], elem, output: str | None = None) -> None:
        output = output or node.output[0]
        self.bounds[output] = bound
        self.shapes[output] = shape
        if elem is not None:
            self.elems[output] = elem

    def _gathernd(self, node):
        data, indices = node.input[0], node.input[1]
        bound = self.bounds.get(indices)
        index_shape = self.shape(node, indices)
        if (data in self.bounds or bound is None or attr(node, "batch_dims", 0) != 0
                or bound.axis == len(index_shape) - 1):
            self.refuse(node, "only a tensor of static shape gathered by indices with a count of rows is followed")
        shape = self.shape(node, data)
        self.keep(node, bound, index_shape[:-1] + shape[index_shape[-1]:], self.elems.get(data))
        if data in self.non_negative:
            self.non_negative.add(node.output[0])
        return [node]

    def _transpose(self, node):
        bound = self.bounds[node.input[0]]
        shape = self.shape(node, node.input[0])
        perm = list(attr(node, "perm", list(reversed(range(len(shape))))))
        self.keep(node, Bound(perm.index(bound.axis), bound.count, bound.size), [shape[p] for p in perm],
                  self.elems.get(node.input[0]))
        self.carry_non_negative(node)
        return [node]

    def carry_non_negative(self, node) -> None:
        if node.input[0] in self.non_negative and node.op_type in NON_NEGATIVE_KEEPERS:
            self.non_negative.update(node.output)

    def axes(self, node, rank: int) -> list[int] | None:
        value = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        axes = value.tolist() if value is not None else attr(node, "axes", None)
        return None if axes is None else [a % rank for a in axes]

    def _unsqueeze(self, node):
        followed = self.shape_value_op(node)
        if followed is not None:
            return followed
        bound = self.bounds[node.input[0]]
        shape = self.shape(node, node.input[0])
        value = self.const(node.input[1]) if len(node.input) > 1 else np.array(attr(node, "axes", []))
        if value is None:
            self.refuse(node, "its axes are not constant")
        axes = [a % (len(shape) + value.size) for a in value.reshape(-1).tolist()]
        out, source, axis = [], iter(range(len(shape))), None
        for position in range(len(shape) + len(axes)):
            if position in axes:
                out.append(1)
                continue
            original = next(source)
            out.append(shape[original])
            if original == bound.axis:
                axis = position
        self.keep(node, Bound(axis, bound.count, bound.size), out, self.elems.get(node.input[0]))
        self.carry_non_negative(node)
        return [node]

    def _squeeze(self, node):
        followed = self.shape_value_op(node)
        if followed is not None:
            return followed
        bound = self.bounds[node.input[0]]
        shape = self.shape(node, node.input[0])
        axes = self.axes(node, len(shape))
        if axes is None or bound.axis in axes:
            self.refuse(node, "it may squeeze the axis the data decides")
        kept = [a for a in range(len(shape)) if a not in axes]
        self.keep(node, Bound(kept.index(bound.axis), bound.count, bound.size), [shape[a] for a in kept],
                  self.elems.get(node.input[0]))
        self.carry_non_negative(node)
        return [node]

    def _reshape(self, node):
        followed = self.shape_value_op(node)
        if followed is not None:
            return followed
        self.refuse(node, "a reshape mixes the entries the data decides with the others")

    def _identity(self, node):
        followed = self.shape_value_op(node)
        return followed if followed is not None else self._elementwise(node)

    def _elementwise(self, node):
        if any(name in self.dims for name in node.input):  # plain arithmetic on a shape value: computed at run time
            if node.op_type in ("Cast", "Equal", "Less", "Greater", "Not", "And", "Or"):
                return [node]
            self.refuse(node, "arithmetic on a shape only the data decides")
        shapes = [self.shape(node, name) if name else None for name in node.input]
        rank = max(len(shape) for shape in shapes if shape is not None)
        found = {(self.bounds[name].axis + rank - len(shape), self.bounds[name].count, self.bounds[name].size)
                 for name, shape in zip(node.input, shapes) if name in self.bounds}
        if len(found) != 1:
            self.refuse(node, "its operands have different counts the data decides")
        axis, count, size = found.pop()
        for name, shape in zip(node.input, shapes):
            at = axis - (rank - len(shape)) if shape is not None else -1
            if name and name not in self.bounds and at >= 0 and shape[at] != 1:
                self.refuse(node, f"its operand '{name}' has a fixed size along the axis the data decides")
        out = [max((shape[d - (rank - len(shape))] for shape in shapes if shape is not None
                    and d - (rank - len(shape)) >= 0), default=1) for d in range(rank)]
        elem = attr(node, "to", None) if node.op_type == "Cast" else (
            onnx.TensorProto.BOOL if node.op_type in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                                                      "Not", "And", "Or", "Xor")
            else self.elems.get(node.input[-1] if node.op_type == "Where" else node.input[0]))
        self.keep(node, Bound(axis, count, size), out, elem)
        if node.op_type == "Identity":
            self.carry_non_negative(node)
        return [node]

    def _split(self, node):
        bound = self.bounds[node.input[0]]
        shape = self.shape(node, node.input[0])
        axis = attr(node, "axis", 0) % len(shape)
        if axis == bound.axis:
            self.refuse(node, "it splits the axis the data decides")
        split = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        sizes = (split.tolist() if split is not None else attr(node, "split", None)
                 or [shape[axis] // len(node.output)] * len(node.output))
        for output, size in zip(node.output, sizes):
            self.keep(node, bound, shape[:axis] + [size] + shape[axis + 1:], self.elems.get(node.input[0]), output)
        return [node]

    def _slice(self, node):
        x = node.input[0]
        bound = self.bounds[x]
        shape = self.shape(node, x)
        inputs = list(node.input) + [""] * (5 - len(node.input))
        starts, ends = self.const(inputs[1]), self.const(inputs[2])
        axes = self.const(inputs[3]) if inputs[3] else np.arange(len(shape) if starts is None else len(starts))
        steps = self.const(inputs[4]) if inputs[4] else np.ones(len(axes), np.int64)
        if starts is None or ends is None or axes is None or steps is None:
            self.refuse(node, "its starts, ends, axes and steps must be constants")
        out, count, s = list(shape), bound.count, self.steps(node)
        for start, end, axis, step in zip(starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist()):
            axis %= len(shape)
            size = len(range(*slice(start, end, step).indices(shape[axis])))
            if axis == bound.axis and not (start == 0 and step == 1 and end >= shape[axis]):
                if step != 1 or start < 0 or end < 0:
                    self.refuse(node, "it slices the axis the data decides other than from a start >= 0 by step 1")
                clamped = s("Max", [s("Sub", [s("Min", [count, s.ints(min(end, shape[axis]))]), s.ints(start)]),
                                    s.ints(0)])
                count = s("Where", [s("Less", [count, s.ints(0)]), count, clamped])  # -1 (unsettled) stays
            out[axis] = size
        self.keep(node, Bound(bound.axis, count, out[bound.axis]), out, self.elems.get(x))
        self.carry_non_negative(node)
        return [node, *s.nodes]

    def _topk(self, node):
        x, k = node.input[0], node.input[1]
        shape = self.shape(node, x)
        axis = attr(node, "axis", -1) % len(shape)
        bound = self.bounds.get(x)
        k_value = self.dims_of(node, k)
        if k_value is None or len(k_value[0]) != 1:
            self.refuse(node, "its k is neither a constant nor a shape it can bound")
        k_element = k_value[0][0]
        static_k = k_element.upper if isinstance(k_element, Dyn) else k_element
        s = self.steps(node)
        if bound is None or bound.axis != axis:
            if isinstance(k_element, Dyn):
                self.refuse(node, "its k is decided by the data along an axis of fixed size")
            s("TopK", [x, s.ints(static_k)], node.output[0], **{a.name: onnx.helper.get_attribute_value(a)
                                                                for a in node.attribute})
            s.nodes[-1].output.append(node.output[1])
            out = shape[:axis] + [static_k] + shape[axis + 1:]
            for output in node.output:
                self.keep(node, bound, out, self.elems.get(x) if output == node.output[0] else onnx.TensorProto.INT64,
                          output)
            self.non_negative.add(node.output[1])
            return s.nodes
        static_k = min(static_k, bound.size)
        largest = attr(node, "largest", 1)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(self.elems[x])
        if dtype.kind == "f":
            last = -np.inf if largest else np.inf
        else:
            info = np.iinfo(dtype)
            last = info.min if largest else info.max
        positions = np.arange(shape[axis], dtype=np.int64).reshape([-1] + [1] * (len(shape) - axis - 1))
        real = s("Less", [s.const(positions), bound.count])
        padded = s("Where", [real, x, s.const(np.array(last, dtype))])
        rewritten = onnx.NodeProto()
        rewritten.CopyFrom(node)
        rewritten.input[0], rewritten.input[1] = padded, s.ints(static_k)
        s.nodes.append(rewritten)
        count = s("Min", [bound.count, self.count_tensor(s, k_element)])
        out = shape[:axis] + [static_k] + shape[axis + 1:]
        self.keep(node, Bound(axis, count, static_k), out, self.elems[x])
        self.keep(node, Bound(axis, count, static_k), out, onnx.TensorProto.INT64, node.output[1])
        self.non_negative.add(node.output[1])
        return s.nodes

    def _concat(self, node):
        followed = self.shape_value_op(node)
        if followed is not None:
            return followed
        shapes = [self.shape(node, name) for name in node.input]
        axis = attr(node, "axis", 0) % len(shapes[0])
        bounds = [self.bounds.get(name) for name in node.input]
        out = list(shapes[0])
        out[axis] = sum(shape[axis] for shape in shapes)
        elem = self.elems.get(node.input[0])
        if any(b is not None and b.axis != axis for b in bounds):
            if len({(b.axis, b.count) if b else None for b in bounds}) != 1:
                self.refuse(node, "it joins tensors that do not share one count the data decides")
            self.keep(node, bounds[0], out, elem)
            self.carry_all_non_negative(node)
            return [node]
        s = self.steps(node)
        counts = [b.count if b else s.ints(shape[axis]) for b, shape in zip(bounds, shapes)]
        key = tuple((c if b else None, shape[axis]) for c, b, shape in zip(counts, bounds, shapes))
        total = out[axis]
        if total >= EXACT_FLOAT_POSITIONS:
            self.refuse(node, f"{total} entries; the packing key is exact up to {EXACT_FLOAT_POSITIONS}")
        if key not in self.cache:
            real = s("Concat", [s("Less", [s.const(np.arange(shape[axis], dtype=np.int64)), c])
                                for c, shape in zip(counts, shapes)], axis=0)
            summed = counts[0]
            for c in counts[1:]:
                summed = s("Add", [summed, c])
            unsettled = counts[0]
            for c in counts[1:]:
                unsettled = s("Min", [unsettled, c])
            count = s("Where", [s("Less", [unsettled, s.ints(0)]), s.ints(-1), summed])
            self.cache[key] = (self.pack(s, real, total), count)
        order, count = self.cache[key]
        joined = s("Concat", list(node.input), axis=axis)
        s("Gather", [joined, order], node.output[0], axis=axis)
        self.keep(node, Bound(axis, count, total), out, elem)
        self.carry_all_non_negative(node)
        return s.nodes

    def is_non_negative(self, name: str) -> bool:
        value = self.const(name)
        return name in self.non_negative or (value is not None and value.dtype.kind in "iu" and
                                             bool((value >= 0).all()))

    def carry_all_non_negative(self, node) -> None:
        if all(name in self.non_negative for name in node.input):
            self.non_negative.add(node.output[0])

    def _reduce(self, node):
        followed = self.shape_value_op(node)
        if followed is not None:
            return followed
        x = node.input[0]
        bound = self.bounds[x]
        shape = self.shape(node, x)
        axes = self.axes(node, len(shape))
        axes = list(range(len(shape))) if axes is None else axes
        keepdims = attr(node, "keepdims", 1)
        kept = [a for a in range(len(shape)) if a not in axes]
        out = [1 if a in axes else shape[a] for a in range(len(shape))] if keepdims else [shape[a] for a in kept]
        elem = self.elems.get(x)
        if bound.axis not in axes:
            axis = bound.axis if keepdims else kept.index(bound.axis)
            self.keep(node, Bound(axis, bound.count, bound.size), out, elem)
            return [node]
        if node.op_type not in REDUCE_IDENTITY or elem not in FLOATS:
            self.refuse(node, "it reduces over the axis the data decides (float ReduceMax, ReduceMin and ReduceSum "
                              "only)")
        s = self.steps(node)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        positions = np.arange(shape[bound.axis], dtype=np.int64).reshape([-1] + [1] * (len(shape) - bound.axis - 1))
        real = s("Less", [s.const(positions), bound.count])
        padded = s("Where", [real, x, s.const(np.array(REDUCE_IDENTITY[node.op_type], dtype))])
        rewritten = onnx.NodeProto()
        rewritten.CopyFrom(node)
        rewritten.input[0] = padded
        self.shapes[node.output[0]], self.elems[node.output[0]] = out, elem
        if node.op_type == "ReduceSum":
            return [*s.nodes, rewritten]
        # TVM's max (min) starts from the lowest (highest) finite value: only padding gave that, not -inf (+inf)
        self.elems[padded], self.shapes[padded] = elem, shape
        return [*s.nodes, *_reduce_to_infinity(rewritten, {}, self.elems.get, self.shapes.get)]

    _reducemax = _reducemin = _reducesum = _reduce

    def _reduceprod(self, node):
        followed = self.shape_value_op(node)
        if followed is None:
            self.refuse(node, "it multiplies entries the data decides")
        return followed

    def _if(self, node):
        condition = node.input[0]
        if condition in self.bounds:
            self.refuse(node, "its condition has a dim the data decides")
        branches = {a.name: a.g for a in node.attribute}
        nodes: list[onnx.NodeProto] = []
        results = []
        for name in ("then_branch", "else_branch"):
            graph = branches[name]
            nodes.extend(self.run([*(onnx.helper.make_node("Constant", [], [t.name], value=t)
                                     for t in graph.initializer), *graph.node]))
            results.append([v.name for v in graph.output])
        s = self.steps(node)
        for output, then_value, else_value in zip(node.output, *results):
            self.select(node, s, condition, output, then_value, else_value)
        return [*nodes, *s.nodes]

    def select(self, node, s: Steps, condition: str, output: str, then_value: str, else_value: str) -> None:
        """``output`` is ``then_value`` where ``condition`` holds, else ``else_value``: both padded to one bound."""
        shapes = [self.shape(node, then_value), self.shape(node, else_value)]
        bounds = [self.bounds.get(then_value), self.bounds.get(else_value)]
        elem = self.elems.get(else_value) or self.elems.get(then_value)
        if bounds == [None, None]:
            if shapes[0] != shapes[1]:
                self.refuse(node, "its branches give different static shapes")
            s("Where", [condition, then_value, else_value], output)
            self.shapes[output], self.elems[output] = shapes[0], elem
            return
        axes = {b.axis for b in bounds if b is not None}
        axis = axes.pop()
        if axes or len(shapes[0]) != len(shapes[1]) or any(
                a != b for d, (a, b) in enumerate(zip(*shapes)) if d != axis):
            self.refuse(node, "its branches give shapes that differ beyond one dim the data decides")
        size = max(shape[axis] for shape in shapes)
        values, counts = [], []
        for value, bound, shape in zip((then_value, else_value), bounds, shapes):
            if shape[axis] < size:
                filler = list(shape)
                filler[axis] = size - shape[axis]
                zeros = s.const(np.zeros(filler, onnx.helper.tensor_dtype_to_np_dtype(elem)))
                value = s("Concat", [value, zeros], axis=axis)
            values.append(value)
            counts.append(bound.count if bound else s.ints(shape[axis]))
        s("Where", [condition, *values], output)
        if all(self.is_non_negative(value) for value in (then_value, else_value)):
            self.non_negative.add(output)
        count = s("Where", [s("Reshape", [condition, s.ints(1)]), *counts])
        self.keep(node, Bound(axis, count, size), [size if d == axis else n for d, n in enumerate(shapes[0])], elem,
                  output)


def _typed_values(graph: onnx.GraphProto):
    """Every value shape inference typed, If branches' included."""
    yield from (*graph.input, *graph.value_info, *graph.output)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _typed_values(attribute.g)


def _users(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, str | None]]]:
    """{value: [(node using it, the If output it becomes when it is a branch's output)]}, subgraphs included."""
    users: dict[str, list] = {}

    def visit(g: onnx.GraphProto) -> None:
        for node in g.node:
            for name in node.input:
                users.setdefault(name, []).append((node, None))
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    for position, value in enumerate(attribute.g.output):  # an If's branch outputs are its outputs
                        becomes = node.output[position] if node.op_type == "If" else None
                        users.setdefault(value.name, []).append((node, becomes))
                    visit(attribute.g)
    visit(graph)
    return users
