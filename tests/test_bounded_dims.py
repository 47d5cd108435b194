"""Bounded dynamic dims (targets/bounded_dims.py): torchvision's detection post-processing in
small (per class NonZero -> Gather -> TopK(min(k, count)) -> ConstantOfShape labels; Concat over
classes; If no box then nothing else batched NMS; Slice [:keep]; Gather) compiled at static upper
bounds, its outputs cut to their counts equal onnxruntime's, also when no box clears the threshold;
what the rewrite cannot follow is refused naming the node, and an NMS that cannot settle within its
bound refuses its result at run time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.errors import ArtifactError, CompileError
from tests.models import make_model, ort_run

THRESHOLD = 0.3


def postprocess(boxes: int, classes: int, candidates: int, keep: int) -> onnx.ModelProto:
    """torchvision's SSD post-processing on inputs ``scores`` [classes, boxes] and ``boxes`` [boxes, 4]."""
    n = helper.make_node
    consts = {"thr": np.array(THRESHOLD, np.float32), "k": np.array([candidates], np.int64),
              "zero": np.array(0, np.int64), "one_d": np.array([0], np.int64), "as1": np.array([1], np.int64),
              "col": np.array([2], np.int64), "ax1": np.array([1], np.int64), "ax0": np.array([0], np.int64),
              "keep": np.array([keep], np.int64), "big": np.array([1 << 62], np.int64),
              "iou": np.array([0.5], np.float32), "one_f": np.array(1.0, np.float32),
              "empty_num": np.array(0, np.int64)}
    nodes, per_class = [], {"boxes": [], "scores": [], "labels": []}
    for c in range(classes):
        p = f"c{c}"
        nodes += [
            n("Constant", [], [f"{p}.index"], value=numpy_helper.from_array(np.array(c, np.int64))),
            n("Gather", ["scores", f"{p}.index"], [f"{p}.s"], axis=0),
            n("Greater", [f"{p}.s", "thr"], [f"{p}.mask"]),
            n("NonZero", [f"{p}.mask"], [f"{p}.nz"]),
            n("Transpose", [f"{p}.nz"], [f"{p}.idx"], perm=[1, 0]),
            n("GatherND", [f"{p}.s", f"{p}.idx"], [f"{p}.sc"]),
            n("NonZero", [f"{p}.mask"], [f"{p}.nz2"]),  # torchvision asks twice
            n("Squeeze", [f"{p}.nz2", "ax0"], [f"{p}.flat"]),
            n("Gather", ["boxes", f"{p}.flat"], [f"{p}.bx"], axis=0),
            n("Shape", [f"{p}.sc"], [f"{p}.shape"]),
            n("Gather", [f"{p}.shape", "zero"], [f"{p}.num"], axis=0),
            n("Unsqueeze", [f"{p}.num", "ax0"], [f"{p}.num1"]),
            n("Concat", ["k", f"{p}.num1"], [f"{p}.both"], axis=0),
            n("ReduceMin", [f"{p}.both"], [f"{p}.kmin"], keepdims=0),
            n("Reshape", [f"{p}.kmin", "as1"], [f"{p}.k"]),
            n("TopK", [f"{p}.sc", f"{p}.k"], [f"{p}.top", f"{p}.top_i"], axis=-1, largest=1, sorted=1),
            n("Gather", [f"{p}.bx", f"{p}.top_i"], [f"{p}.top_b"], axis=0),
            n("Shape", [f"{p}.top"], [f"{p}.top_shape"]),
            n("ConstantOfShape", [f"{p}.top_shape"], [f"{p}.label"],
              value=numpy_helper.from_array(np.array([c + 1], np.int64))),
        ]
        per_class["boxes"].append(f"{p}.top_b")
        per_class["scores"].append(f"{p}.top")
        per_class["labels"].append(f"{p}.label")
    nodes += [n("Concat", names, [f"all_{what}"], axis=0) for what, names in per_class.items()]
    # torchvision's batched NMS: boxes offset by label x (largest coordinate + 1), then one class
    else_nodes = [
        n("ReduceMax", ["all_boxes"], ["max_coord"], keepdims=0),
        n("Add", ["max_coord", "one_f"], ["span"]),
        n("Cast", ["all_labels"], ["label_f"], to=TensorProto.FLOAT),
        n("Mul", ["label_f", "span"], ["offsets"]),
        n("Unsqueeze", ["offsets", "ax1"], ["offsets2"]),
        n("Add", ["all_boxes", "offsets2"], ["for_nms"]),
        n("Unsqueeze", ["for_nms", "ax0"], ["nms_boxes"]),
        n("Unsqueeze", ["all_scores", "ax0"], ["s1"]),
        n("Unsqueeze", ["s1", "ax0"], ["nms_scores"]),
        n("NonMaxSuppression", ["nms_boxes", "nms_scores", "big", "iou"], ["selected"], name="nms"),
        n("Gather", ["selected", "col"], ["sel_col"], axis=1),
        n("Squeeze", ["sel_col", "ax1"], ["kept"]),
    ]
    then_nodes = [n("Constant", [], ["nothing"], value=numpy_helper.from_array(np.zeros(0, np.int64)))]
    int_out = [helper.make_tensor_value_info(name, TensorProto.INT64, [None]) for name in ("nothing", "kept")]
    nodes += [
        n("Shape", ["all_boxes"], ["all_shape"]),
        n("ReduceProd", ["all_shape"], ["numel"], keepdims=0),
        n("Equal", ["numel", "empty_num"], ["none"]),
        n("If", ["none"], ["order"], then_branch=helper.make_graph(then_nodes, "then", [], int_out[:1]),
          else_branch=helper.make_graph(else_nodes, "else", [], int_out[1:])),
        n("Slice", ["order", "one_d", "keep", "ax0"], ["top_order"]),
        n("Gather", ["all_boxes", "top_order"], ["det_boxes"], axis=0),
        n("Gather", ["all_scores", "top_order"], ["det_scores"], axis=0),
        n("Gather", ["all_labels", "top_order"], ["det_labels"], axis=0),
    ]
    inits = [numpy_helper.from_array(value, name) for name, value in consts.items()]
    return make_model(nodes, [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [classes, boxes]),
                              helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [boxes, 4])],
                      [helper.make_tensor_value_info(name, elem, None) for name, elem in (
                          ("det_boxes", TensorProto.FLOAT), ("det_scores", TensorProto.FLOAT),
                          ("det_labels", TensorProto.INT64))], inits)


def feeds(seed: int, classes: int, boxes: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Boxes on a 10x10 field that overlap often; scores with ties; ``scale`` 0 puts every score below the threshold."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 8, (boxes, 2))
    box = np.concatenate([corner, corner + rng.uniform(1, 3, (boxes, 2))], axis=1)
    scores = rng.uniform(0, 1, (classes, boxes)) * scale
    scores[:, 1] = scores[:, 2]  # ties inside a class
    return {"scores": scores.astype(np.float32), "boxes": box.astype(np.float32)}


@pytest.mark.parametrize(("boxes", "classes", "candidates", "keep"), [
    pytest.param(12, 2, 4, 5, id="nms-unrolled"),  # 5 rounds
    pytest.param(40, 2, 20, 30, id="nms-settled")])  # 30 rounds: the pairwise form
def test_postprocessing_equals_onnxruntime(tmp_path, boxes, classes, candidates, keep):
    model = postprocess(boxes, classes, candidates, keep)
    onnx.save(model, tmp_path / "post.onnx")
    edgec.compile(tmp_path / "post.onnx", "x86-64", output=tmp_path / "post.edgec")
    compiled = edgec.load(tmp_path / "post.edgec")
    assert {s["name"]: s.get("valid_rows") for s in compiled.manifest["signature"]["outputs"]} == {
        "det_boxes": "det_boxes.valid_rows", "det_scores": "det_boxes.valid_rows",
        "det_labels": "det_boxes.valid_rows", "det_boxes.valid_rows": None}
    rows = []
    for seed, scale in ((0, 1.0), (1, 1.0), (2, 0.5), (3, 0.0)):
        inputs = feeds(seed, classes, boxes, scale)
        expected, actual = ort_run(model, inputs), compiled.run(inputs)
        assert list(actual) == list(expected)
        for name in expected:
            assert actual[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(actual[name], expected[name], err_msg=f"{name}, seed {seed}")
        rows.append(len(expected["det_scores"]))
    assert rows[-1] == 0 and min(rows[:-1]) > 0 and len(set(rows)) > 1


def test_nonzero_alone_equals_onnxruntime(tmp_path):
    """A 2-D mask: the indices in row-major order, the count of them; none at all too."""
    model = make_model([helper.make_node("Greater", ["x", "t"], ["m"]), helper.make_node("NonZero", ["m"], ["nz"]),
                        helper.make_node("Transpose", ["nz"], ["rows"], perm=[1, 0])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                       [helper.make_tensor_value_info("rows", TensorProto.INT64, None)],
                       [numpy_helper.from_array(np.array(0.6, np.float32), "t")])
    onnx.save(model, tmp_path / "nz.onnx")
    edgec.compile(tmp_path / "nz.onnx", "x86-64", output=tmp_path / "nz.edgec")
    compiled = edgec.load(tmp_path / "nz.edgec")
    for x in (np.random.default_rng(0).uniform(0, 1, (3, 5)), np.zeros((3, 5)), np.ones((3, 5))):
        x = {"x": x.astype(np.float32)}
        np.testing.assert_array_equal(compiled.run(x)["rows"], ort_run(model, x)["rows"])


def test_what_the_rewrite_cannot_follow_is_refused_naming_the_node(tmp_path):
    model = make_model([helper.make_node("Greater", ["x", "t"], ["m"]), helper.make_node("NonZero", ["m"], ["nz"]),
                        helper.make_node("ReduceMean", ["nz"], ["mean"], name="average", keepdims=0)],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                       [helper.make_tensor_value_info("mean", TensorProto.INT64, None)],
                       [numpy_helper.from_array(np.array(0.5, np.float32), "t")])
    onnx.save(model, tmp_path / "mean.onnx")
    with pytest.raises(CompileError, match="ReduceMean node 'average': its input 'nz' has a dim only the data decides"):
        edgec.compile(tmp_path / "mean.onnx", "x86-64", output=tmp_path / "mean.edgec")


def test_nms_that_cannot_settle_refuses_its_result(tmp_path):
    """A chain of boxes, each overlapping the next only, best first: each decision waits on the one
    before it, more than the settled form's steps; the run refuses rather than return rows."""
    from edgec.targets.detection import SETTLE_STEPS

    count = SETTLE_STEPS + 12
    model = make_model([helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou"], ["selected"])],
                       [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, count, 4]),
                        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, count])],
                       [helper.make_tensor_value_info("selected", TensorProto.INT64, None)],
                       [numpy_helper.from_array(np.array([count], np.int64), "max"),
                        numpy_helper.from_array(np.array([0.5], np.float32), "iou")])
    onnx.save(model, tmp_path / "chain.onnx")
    edgec.compile(tmp_path / "chain.onnx", "x86-64", output=tmp_path / "chain.edgec")
    compiled = edgec.load(tmp_path / "chain.edgec")
    start = np.arange(count, dtype=np.float32)
    chain = {"boxes": np.stack([np.zeros(count), start, np.ones(count), start + 4], axis=1)[None].astype(np.float32),
             "scores": np.linspace(1, 0.1, count, dtype=np.float32)[None, None]}
    assert len(ort_run(model, chain)["selected"]) == count // 2
    with pytest.raises(ArtifactError, match="could not decide its boxes within its static bound"):
        compiled.run(chain)
    spread = np.stack([np.zeros(count), start * 10, np.ones(count), start * 10 + 4], axis=1)
    apart = {**chain, "boxes": spread[None].astype(np.float32)}  # none overlaps: every box decided at once
    np.testing.assert_array_equal(compiled.run(apart)["selected"], ort_run(model, apart)["selected"])
