"""NonMaxSuppression at a static upper bound, with a count of the rows that are real.

NMS returns as many rows as boxes survive, a number only the data decides. TVM's own
lowering of it does not compile, and its converter silently uses default limits when they are
graph inputs. Here each NonMaxSuppression node becomes static ONNX, before TVM's frontend
(``bounded_dims`` walks the graph and calls ``static_nms``):

- its limits (``max_output_boxes_per_class``, ``iou_threshold``, ``score_threshold``) must
  be constants; a graph input is refused, naming it;
- boxes with a count of their own (NonZero's, TopK's, a Concat of them) take part only up to
  that count: the padding after it is never selected and suppresses nothing;
- rounds per batch and class: ``min(max_output_boxes_per_class, boxes)``, and no more than
  the rows a ``Slice [0:n]`` after it keeps (torchvision's ``keep[:detections_per_img]``);
- up to ``UNROLLED_ROUNDS`` rounds, greedily: take the highest-scoring box still alive (the
  lowest index on a tie, as onnxruntime), then drop it and every alive box whose IoU with it
  is above the threshold, in onnxruntime's arithmetic (corners in either order, or centres
  with ``center_point_box``; empty boxes suppress nothing);
- more rounds (each unrolled round costs about a second of compile time on 27,000 boxes):
  the ``PREFIX`` best boxes in onnxruntime's order (a stable TopK), their pairwise IoU test,
  and ``SETTLE_STEPS`` steps that decide boxes: a box is dropped once a kept box before it
  overlaps it, kept once every box before it that overlaps it is dropped. Every decision is
  the greedy one; the rows are the kept boxes before the first undecided one, and they are
  the answer when they are enough rows or every box was decided. Otherwise the count is -1
  and the runtimes refuse the result rather than return a wrong one;
- the rows, [batch, class, box] in onnxruntime's order, are packed to the front of a
  [batch x classes x rounds, 3] tensor, zeros after them, and their count is
  ``<output>.valid_rows`` (int64 [1]).
"""

from __future__ import annotations

import numpy as np
import onnx

from edgec.errors import CompileError

UNROLLED_ROUNDS = 16
"""Rounds per class up to which NMS is unrolled round by round."""
PREFIX = 2048
"""Boxes per batch and class the settled form looks at, in score order."""
SETTLE_STEPS = 48


def bound_detections(proto: onnx.ModelProto) -> dict[str, str]:
    """Rewrite every NonZero and NonMaxSuppression in place; {graph output cut to a count: the count output}."""
    from .bounded_dims import bound_dims, has_bounded_dims

    if not has_bounded_dims(proto):
        return {}
    return bound_dims(proto)


def rows_needed(users: dict, start: str, constants: dict) -> int | None:
    """The rows of NMS output ``start`` that any use can see: the largest end of the ``Slice [0:end]``
    on axis 0 that every path from it passes first; None when some path has none."""
    seen, pending, ends = set(), [start], []
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        for node, if_output in users.get(value, []):
            if if_output is not None:
                pending.append(if_output)
                continue
            if node.op_type == "Slice" and list(node.input).index(value) == 0:
                inputs = list(node.input) + [""] * (5 - len(node.input))
                starts, stops = constants.get(inputs[1]), constants.get(inputs[2])
                axes = constants.get(inputs[3]) if inputs[3] else np.zeros(1, np.int64)
                steps = constants.get(inputs[4]) if inputs[4] else np.ones(1, np.int64)
                if all(v is not None for v in (starts, stops, axes, steps)) and 0 in axes.reshape(-1).tolist():
                    at = axes.reshape(-1).tolist().index(0)
                    if starts.reshape(-1)[at] == 0 and steps.reshape(-1)[at] == 1 and stops.reshape(-1)[at] >= 0:
                        ends.append(int(stops.reshape(-1)[at]))
                        continue
                return None
            if node.op_type in ("Gather", "Squeeze", "Unsqueeze", "Cast", "Identity") and \
                    list(node.input).index(value) == 0 and _keeps_axis_0(node, constants):
                pending.extend(node.output[:1])
                continue
            return None
    return max(ends) if ends else None


def _keeps_axis_0(node: onnx.NodeProto, constants: dict) -> bool:
    if node.op_type == "Gather":
        return node_attr(node, "axis", 0) > 0
    if node.op_type in ("Squeeze", "Unsqueeze"):
        axes = constants.get(node.input[1]) if len(node.input) > 1 else np.array(node_attr(node, "axes", []))
        return axes is not None and axes.size > 0 and min(axes.tolist()) > 0
    return True


def static_nms(s, node, where: str, shapes: dict, constants: dict, count: str, real: str | None,
               needed: int | None) -> int:
    """Emit ``node`` as static ONNX into ``s``; ``real`` (bool [1, 1, boxes]) marks the boxes that
    take part, ``needed`` caps the rows any use sees. Returns the rows' static upper bound."""
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
    rounds = min(max_out, count_boxes, needed if needed is not None else count_boxes)
    if rounds <= 0:
        raise CompileError(f"{where}: at most {rounds} rows (max_output_boxes_per_class {max_out}, rows used "
                           f"{needed}): the output is always empty, which an edgec artifact cannot return")
    dtype = np.float32  # ONNX's NonMaxSuppression takes float boxes and scores only
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
    alive = s("Greater", [scores, s.const(np.array(score_threshold, dtype))]) if score_threshold is not None \
        else s("Expand", [s.const(np.array(True)), shape_bcn])
    if real is not None:
        alive = s("And", [alive, real])
    settled = None
    if rounds <= UNROLLED_ROUNDS:
        box_index, is_row = _unrolled(s, scores, per_class, alive, iou, (batch, classes, count_boxes), rounds)
    else:
        rounds = min(rounds, PREFIX)
        box_index, is_row, settled = _settled(s, scores, per_class, alive, iou, (batch, classes, count_boxes), rounds)
    total = batch * classes * rounds
    shape_bcr = s.ints(batch, classes, rounds)
    batch_index = s("Expand", [s.const(np.arange(batch, dtype=np.int64).reshape(-1, 1, 1)), shape_bcr])
    class_index = s("Expand", [s.const(np.arange(classes, dtype=np.int64).reshape(1, -1, 1)), shape_bcr])
    rows = s("Reshape", [s("Concat", [s.unsqueeze(v, 3) for v in (batch_index, class_index, box_index)], axis=3),
                         s.ints(total, 3)])
    is_row = s("Reshape", [is_row, s.ints(total)])  # [M]
    # Real rows first, in order: the largest key is the first real row.
    order = np.arange(total, dtype=np.float32)
    key = s("Where", [is_row, s.const(-order), s.const(-order - total)])
    first = s("TopK", [key, s.ints(total)], axis=0, largest=1, sorted=1)
    s.nodes[-1].output.append(f"{first}.indices")
    moved = s("Gather", [rows, f"{first}.indices"], axis=0)
    kept = s.unsqueeze(s("Gather", [is_row, f"{first}.indices"], axis=0), 1)
    s("Where", [kept, moved, s.const(np.zeros((), np.int64))], node.output[0])
    counted = reduce(s, "ReduceSum", s("Cast", [is_row], to=onnx.TensorProto.INT64), 0, None if settled else count)
    if settled:
        s("Where", [settled, counted, s.ints(-1)], count)
    return total


def _pair_suppresses(s, chosen: dict, others: dict, iou: float) -> str:
    """Whether a box in ``chosen`` drops one in ``others`` (broadcast): onnxruntime's IoU test."""
    zero = s.const(np.array(0, np.float32))
    width = s("Sub", [s("Min", [chosen["x_max"], others["x_max"]]), s("Max", [chosen["x_min"], others["x_min"]])])
    height = s("Sub", [s("Min", [chosen["y_max"], others["y_max"]]), s("Max", [chosen["y_min"], others["y_min"]])])
    inter = s("Mul", [width, height])
    union = s("Sub", [s("Add", [chosen["area"], others["area"]]), inter])
    checks = [s("Greater", [width, zero]), s("Greater", [height, zero]), s("Greater", [inter, zero]),
              s("Greater", [chosen["area"], zero]), s("Greater", [others["area"], zero]),
              s("Greater", [union, zero]),
              s("Greater", [s("Div", [inter, union]), s.const(np.array(iou, np.float32))])]
    suppressed = checks[0]
    for check in checks[1:]:
        suppressed = s("And", [suppressed, check])
    return suppressed


def _unrolled(s, scores: str, per_class: dict, alive: str, iou: float, shape: tuple, rounds: int):
    """One greedy round after another: ([B, C, R] box index, [B, C, R] whether the round picked one)."""
    batch, classes, count_boxes = shape
    flat = {name: s("Reshape", [value, s.ints(-1)]) for name, value in per_class.items()}
    # best [B, C, 1] -> its place in a flat [B * C * N] (Gather: GatherElements needs opset 11)
    starts = s.const((np.arange(batch * classes, dtype=np.int64) * count_boxes).reshape(batch, classes, 1))
    positions = s.const(np.arange(count_boxes, dtype=np.int64).reshape(1, 1, -1))
    minus_inf = s.const(np.array(-np.inf, np.float32))
    picked, valid = [], []
    for _ in range(rounds):
        best = s("ArgMax", [s("Where", [alive, scores, minus_inf])], axis=2, keepdims=1)  # [B, C, 1]
        any_alive = reduce(s, "ReduceMax", s("Cast", [alive], to=onnx.TensorProto.INT32), 2)
        valid.append(s("Greater", [any_alive, s.const(np.array(0, np.int32))]))
        picked.append(best)
        place = s("Add", [best, starts])
        chosen = {k: s("Gather", [v, place], axis=0) for k, v in flat.items()}
        suppressed = s("Or", [_pair_suppresses(s, chosen, per_class, iou), s("Equal", [positions, best])])
        alive = s("And", [alive, s("Not", [suppressed])])
    return s("Concat", picked, axis=2), s("Concat", valid, axis=2)


def _settled(s, scores: str, per_class: dict, alive: str, iou: float, shape: tuple, rounds: int):
    """The PREFIX best boxes decided together: ([B, C, R] box index, [B, C, R] real, bool [1]
    whether those rows are the greedy answer)."""
    batch, classes, count_boxes = shape
    prefix = min(count_boxes, PREFIX)
    ranked = s("TopK", [s("Where", [alive, scores, s.const(np.array(-np.inf, np.float32))]), s.ints(prefix)],
               axis=2, largest=1, sorted=1)
    order = f"{ranked}.indices"  # [B, C, P]: onnxruntime's order, alive boxes first, the lower index on a tie
    s.nodes[-1].output.append(order)
    alive_count = reduce(s, "ReduceSum", s("Cast", [alive], to=onnx.TensorProto.INT64), 2)  # [B, C, 1]
    slot = s.const(np.arange(prefix, dtype=np.int64).reshape(1, 1, -1))
    candidate = s("Less", [slot, alive_count])
    box = {k: s("GatherElements", [v, order], axis=2) for k, v in per_class.items()}
    earlier = {k: s.unsqueeze(v, 3) for k, v in box.items()}  # i, [B, C, P, 1]
    later = {k: s.unsqueeze(v, 2) for k, v in box.items()}  # j, [B, C, 1, P]
    before = s.const(np.triu(np.ones((prefix, prefix), bool), 1))
    drops = s("And", [s("And", [_pair_suppresses(s, earlier, later, iou), before]), s.unsqueeze(candidate, 3)])
    bcp = s.ints(batch, classes, prefix)

    def any_earlier(mask: str) -> str:  # [B, C, P]: some i before j with drops[i, j] and mask[i]
        hits = s("Cast", [s("And", [drops, s.unsqueeze(mask, 3)])], to=onnx.TensorProto.INT32)
        return s("Greater", [s("Reshape", [reduce(s, "ReduceMax", hits, 2), bcp]), s.const(np.array(0, np.int32))])

    kept, dropped = s("Expand", [s.const(np.array(False)), bcp]), s("Not", [candidate])
    for _ in range(SETTLE_STEPS):
        kept, dropped = (s("Or", [kept, s("And", [candidate, s("Not", [any_earlier(s("Not", [dropped]))])])]),
                         s("Or", [dropped, any_earlier(kept)]))
    undecided = s("Not", [s("Or", [kept, dropped])])
    first_open = reduce(s, "ReduceMin", s("Where", [undecided, slot, s.const(np.array(prefix, np.int64))]), 2)
    answer = s("And", [kept, s("Less", [slot, first_open])])
    kept_count = reduce(s, "ReduceSum", s("Cast", [answer], to=onnx.TensorProto.INT64), 2)  # [B, C, 1]
    enough = s("Not", [s("Less", [kept_count, s.const(np.array(rounds, np.int64))])])
    all_decided = s("And", [s("Equal", [first_open, s.const(np.array(prefix, np.int64))]),
                            s("Not", [s("Greater", [alive_count, s.const(np.array(prefix, np.int64))])])])
    fine = s("Cast", [s("Reshape", [s("Or", [enough, all_decided]), s.ints(-1)])], to=onnx.TensorProto.INT32)
    settled = s("Greater", [reduce(s, "ReduceMin", fine, 0), s.const(np.array(0, np.int32))])  # [1]
    positions = np.arange(prefix, dtype=np.float32)
    s("TopK", [s("Where", [answer, s.const(-positions), s.const(-positions - prefix)]), s.ints(rounds)],
      axis=2, largest=1, sorted=1)
    picked = f"{s.nodes[-1].output[0]}.indices"
    s.nodes[-1].output.append(picked)
    box_index = s("GatherElements", [order, picked], axis=2)
    is_row = s("Less", [s.const(np.arange(rounds, dtype=np.int64).reshape(1, 1, -1)), kept_count])
    return box_index, is_row, settled


def reduce(s, op: str, x: str, axis: int, output: str | None = None) -> str:
    """``op`` over ``axis``, kept; the axes an input from the opset that made them one (ReduceSum 13, the rest 18)."""
    if s.opset >= (13 if op == "ReduceSum" else 18):
        return s(op, [x, s.ints(axis)], output, keepdims=1)
    return s(op, [x], output, axes=[axis], keepdims=1)


def node_attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)
