"""NonMaxSuppression at a static upper bound, with a count of the rows that are real.

NMS returns as many rows as boxes survive, a number only the data decides. TVM's own
lowering of it does not compile, and its converter silently uses default limits when they are
graph inputs. Here each NonMaxSuppression node becomes static ONNX, before TVM's frontend:

- its limits (``max_output_boxes_per_class``, ``iou_threshold``, ``score_threshold``) must
  be constants; a graph input is refused, naming it;
- per batch and class, ``min(max_output_boxes_per_class, boxes)`` greedy rounds: take the
  highest-scoring box still alive (the lowest index on a tie, as onnxruntime), then drop it
  and every alive box whose IoU with it is above the threshold, in onnxruntime's arithmetic
  (corners in either order, or centres with ``center_point_box``; empty boxes suppress nothing);
- the rows, [batch, class, box] in onnxruntime's order, are packed to the front of a
  [batch x classes x rounds, 3] tensor, zeros after them, and their count is a new graph
  output (``<output>.valid_rows``, int64 [1]);
- the rows may reach graph outputs through ops that keep them rows (a column picked, a
  cast, an elementwise op with a broadcast operand, Concat beside them, Gather or GatherND of
  another tensor by them); each such output is cut to the count, recorded in the manifest's
  ``valid_rows`` for the runtimes. Any other use (a Reshape, a reduction...) is refused.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgec.errors import CompileError

MAX_ROUNDS = 256
"""Greedy rounds per class this unrolled form accepts; each is a few dozen small kernels."""
COUNT_SUFFIX = ".valid_rows"
ELEMENTWISE = {"Cast", "Neg", "Abs", "Identity", "Add", "Sub", "Mul", "Div", "Clip", "Relu", "Sigmoid", "Exp",
               "Floor", "Ceil", "Round", "Min", "Max", "Where", "Equal", "Less", "Greater", "Not", "And", "Or"}


def bound_detections(proto: onnx.ModelProto) -> dict[str, str]:
    """Rewrite every NonMaxSuppression in place; {graph output cut to a count: the count output}."""
    from .onnx_rewrites import Steps, label

    graph = proto.graph
    if not any(n.op_type == "NonMaxSuppression" and n.domain in ("", "ai.onnx") for n in graph.node):
        return {}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.input, *inferred.value_info, *inferred.output]
              if v.type.tensor_type.HasField("shape")}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    constants = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    constants.update({t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer})
    rewritten, cut = [], {}
    for node in graph.node:
        if node.op_type != "NonMaxSuppression" or node.domain not in ("", "ai.onnx"):
            rewritten.append(node)
            continue
        s = Steps(f"{node.output[0]}.nms", opset)
        count = f"{node.output[0]}{COUNT_SUFFIX}"
        _static_nms(s, node, label(node), shapes, constants, count)
        rewritten.extend(s.nodes)
        outputs = _row_outputs(graph, node.output[0], constants, label(node))
        cut.update(dict.fromkeys(outputs, count))
        if outputs:  # appended in the order of the nodes, as the manifest lists the counts
            graph.output.append(onnx.helper.make_tensor_value_info(count, onnx.TensorProto.INT64, [1]))
    del graph.node[:]
    graph.node.extend(rewritten)
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    static = {v.name: v for v in [*inferred.value_info, *inferred.output]}
    for output in graph.output:  # the cut outputs' static upper bounds, as TVM will see them
        if output.name in static:
            output.type.CopyFrom(static[output.name].type)
    return cut


def _static_nms(s, node, where: str, shapes: dict, constants: dict, count: str) -> None:
    inputs = list(node.input) + [""] * (5 - len(node.input))
    boxes, scores = inputs[0], inputs[1]

    def limit(index: int, what: str, default):
        name = inputs[index]
        if not name:
            return default
        if name not in constants:
            raise CompileError(f"{where}: {what} is '{name}', computed at run time; edgec compiles NMS at its static "
                               "upper bound and needs the limits as constants")
        return constants[name].reshape(-1)[0].item()

    max_out = int(limit(2, "max_output_boxes_per_class", 0))
    iou = float(limit(3, "iou_threshold", 0.0))
    score_threshold = limit(4, "score_threshold", None)
    box_shape, score_shape = shapes.get(boxes), shapes.get(scores)
    if not box_shape or not score_shape or None in box_shape + score_shape:
        raise CompileError(f"{where}: the boxes' and scores' shapes must be static")
    batch, classes, count_boxes = score_shape
    rounds = min(max_out, count_boxes)
    if rounds <= 0:
        raise CompileError(f"{where}: max_output_boxes_per_class is {max_out}: the output is always empty, "
                           "which an edgec artifact cannot return")
    if rounds > MAX_ROUNDS:
        raise CompileError(f"{where}: {rounds} boxes per class at most (max_output_boxes_per_class {max_out}, "
                           f"{count_boxes} boxes); edgec unrolls NMS up to {MAX_ROUNDS}: lower the limit or TopK first")
    dtype = np.float32  # ONNX's NonMaxSuppression takes float boxes and scores only
    zero = s.const(np.array(0, dtype))
    shape_bcn = s.ints(batch, classes, count_boxes)

    def coordinate(index: int) -> str:  # [B, N]
        column = s.cut(boxes, index, index + 1, 2)
        return s("Squeeze", [column, s.ints(2)]) if s.opset >= 13 else s("Squeeze", [column], axes=[2])

    if node_attr(node, "center_point_box", 0):
        xc, yc, w, h = (coordinate(i) for i in range(4))
        half_w, half_h = s("Div", [w, s.const(np.array(2, dtype))]), s("Div", [h, s.const(np.array(2, dtype))])
        x_min, x_max, y_min, y_max = s("Sub", [xc, half_w]), s("Add", [xc, half_w]), s("Sub", [yc, half_h]), \
            s("Add", [yc, half_h])
    else:
        y1, x1, y2, x2 = (coordinate(i) for i in range(4))
        y_min, y_max, x_min, x_max = s("Min", [y1, y2]), s("Max", [y1, y2]), s("Min", [x1, x2]), s("Max", [x1, x2])
    area = s("Mul", [s("Sub", [x_max, x_min]), s("Sub", [y_max, y_min])])
    per_class = {name: s("Expand", [s.unsqueeze(value, 1), shape_bcn])
                 for name, value in (("x_min", x_min), ("x_max", x_max), ("y_min", y_min), ("y_max", y_max),
                                     ("area", area))}  # [B, C, N]
    flat = {name: s("Reshape", [value, s.ints(-1)]) for name, value in per_class.items()}
    # best [B, C, 1] -> its place in a flat [B * C * N] (Gather: GatherElements needs opset 11)
    starts = s.const((np.arange(batch * classes, dtype=np.int64) * count_boxes).reshape(batch, classes, 1))
    positions = s.const(np.arange(count_boxes, dtype=np.int64).reshape(1, 1, -1))
    alive = s("Greater", [scores, s.const(np.array(score_threshold, dtype))]) if score_threshold is not None \
        else s("Expand", [s.const(np.array(True)), shape_bcn])
    minus_inf = s.const(np.array(-np.inf, dtype))
    picked, valid = [], []
    for _ in range(rounds):
        best = s("ArgMax", [s("Where", [alive, scores, minus_inf])], axis=2, keepdims=1)  # [B, C, 1]
        any_alive = reduce(s, "ReduceMax", s("Cast", [alive], to=onnx.TensorProto.INT32), 2)
        valid.append(s("Greater", [any_alive, s.const(np.array(0, np.int32))]))
        picked.append(best)
        place = s("Add", [best, starts])
        chosen = {k: s("Gather", [v, place], axis=0) for k, v in flat.items()}
        width = s("Sub", [s("Min", [chosen["x_max"], per_class["x_max"]]), s("Max", [chosen["x_min"], per_class["x_min"]])])
        height = s("Sub", [s("Min", [chosen["y_max"], per_class["y_max"]]), s("Max", [chosen["y_min"], per_class["y_min"]])])
        inter = s("Mul", [width, height])
        union = s("Sub", [s("Add", [chosen["area"], per_class["area"]]), inter])
        checks = [s("Greater", [width, zero]), s("Greater", [height, zero]), s("Greater", [inter, zero]),
                  s("Greater", [chosen["area"], zero]), s("Greater", [per_class["area"], zero]),
                  s("Greater", [union, zero]),
                  s("Greater", [s("Div", [inter, union]), s.const(np.array(iou, dtype))])]
        suppressed = checks[0]
        for check in checks[1:]:
            suppressed = s("And", [suppressed, check])
        suppressed = s("Or", [suppressed, s("Equal", [positions, best])])
        alive = s("And", [alive, s("Not", [suppressed])])
    total = batch * classes * rounds
    box_index = s("Concat", picked, axis=2)  # [B, C, R]
    shape_bcr = s.ints(batch, classes, rounds)
    batch_index = s("Expand", [s.const(np.arange(batch, dtype=np.int64).reshape(-1, 1, 1)), shape_bcr])
    class_index = s("Expand", [s.const(np.arange(classes, dtype=np.int64).reshape(1, -1, 1)), shape_bcr])
    rows = s("Reshape", [s("Concat", [s.unsqueeze(v, 3) for v in (batch_index, class_index, box_index)], axis=3),
                         s.ints(total, 3)])
    is_row = s("Reshape", [s("Concat", valid, axis=2), s.ints(total)])  # [M]
    # Real rows first, in order: the largest key is the first real row.
    order = np.arange(total, dtype=np.float32)
    key = s("Where", [is_row, s.const(-order), s.const(-order - total)])
    first = s("TopK", [key, s.ints(total)], axis=0, largest=1, sorted=1)
    s.nodes[-1].output.append(f"{first}.indices")
    moved = s("Gather", [rows, f"{first}.indices"], axis=0)
    kept = s.unsqueeze(s("Gather", [is_row, f"{first}.indices"], axis=0), 1)
    s("Where", [kept, moved, s.const(np.zeros((), np.int64))], node.output[0])
    reduce(s, "ReduceSum", s("Cast", [is_row], to=onnx.TensorProto.INT64), 0, count)


def reduce(s, op: str, x: str, axis: int, output: str | None = None) -> str:
    """``op`` over ``axis``, kept; the axes an input from the opset that made them one (ReduceSum 13, the rest 18)."""
    if s.opset >= (13 if op == "ReduceSum" else 18):
        return s(op, [x, s.ints(axis)], output, keepdims=1)
    return s(op, [x], output, axes=[axis], keepdims=1)


def node_attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _row_outputs(graph: onnx.GraphProto, start: str, constants: dict, where: str) -> list[str]:
    """The graph outputs whose first axis are ``start``'s rows; refuses any use that mixes them."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {v.name for v in graph.output}
    rows, pending, found = {start}, [start], []
    while pending:
        value = pending.pop()
        if value in outputs:
            found.append(value)
        for user in users.get(value, []):
            position = list(user.input).index(value)
            if not _keeps_rows(user, position, rows, constants):
                raise CompileError(f"{where}: its rows (a count only the data decides) reach {user.op_type} node "
                                   f"'{user.name or user.output[0]}', whose result edgec cannot cut to that count")
            for out in user.output[:1]:
                if out not in rows:
                    rows.add(out)
                    pending.append(out)
    return sorted(found)


def _keeps_rows(node: onnx.NodeProto, position: int, rows: set, constants: dict) -> bool:
    """Whether ``node``'s output keeps the rows of its input at ``position`` on axis 0, each row
    depending on its own row only."""
    op, axis = node.op_type, node_attr(node, "axis", 0)
    if op in ELEMENTWISE:
        return True  # a non-row operand of rank 2+ with M rows cannot exist: M is this rewrite's own
    if op == "Gather":
        return (position == 0 and axis > 0) or (position == 1 and axis == 0)
    if op == "GatherND":
        return position == 1 and node_attr(node, "batch_dims", 0) == 0
    if op == "Slice":
        axes = constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        return position == 0 and axes is not None and min(axes.tolist()) > 0
    if op in ("Squeeze", "Unsqueeze"):
        axes = constants.get(node.input[1]) if len(node.input) > 1 else np.array(node_attr(node, "axes", []))
        return position == 0 and axes is not None and len(axes) > 0 and min(axes.tolist()) > 0
    if op == "Concat":
        return axis > 0 and all(name in rows for name in node.input)
    return False
