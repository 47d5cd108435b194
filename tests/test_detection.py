"""TopK and NonMaxSuppression against onnxruntime at odd sizes, every attribute, and a small
SSD-lite-style detector (box decoding from anchors, sigmoid scores, TopK, NMS, the kept boxes
gathered) whose outputs equal onnxruntime's row for row, also when no box clears the threshold."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.conformance.backend import EdgecBackend
from edgec.errors import CompileError
from tests.models import make_model, ort_run

BATCH, BOXES, CLASSES = 2, 9, 3


def nms_model(max_out=4, iou=0.35, score=0.3, center=0, limits_as_inputs=False):
    """One NonMaxSuppression; ``score`` None leaves score_threshold out."""
    limits = [numpy_helper.from_array(np.array([max_out], np.int64), "max_out"),
              numpy_helper.from_array(np.array([iou], np.float32), "iou")]
    if score is not None:
        limits.append(numpy_helper.from_array(np.array([score], np.float32), "score"))
    names = ["boxes", "scores", *(t.name for t in limits)]
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [BATCH, BOXES, 4]),
              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [BATCH, CLASSES, BOXES])]
    if limits_as_inputs:
        inputs.append(helper.make_tensor_value_info("max_out", TensorProto.INT64, [1]))
        limits = limits[1:]
    node = helper.make_node("NonMaxSuppression", names, ["selected"], name="nms", center_point_box=center)
    return make_model([node], inputs, [helper.make_tensor_value_info("selected", TensorProto.INT64, None)], limits,
                      opset=13)


def nms_feeds(seed: int, center: int = 0) -> dict[str, np.ndarray]:
    """Overlapping boxes on a 4x4 field, corners in either order (or centres and sizes)."""
    rng = np.random.default_rng(seed)
    if center:
        boxes = np.concatenate([rng.uniform(0, 4, (BATCH, BOXES, 2)), rng.uniform(0.5, 2, (BATCH, BOXES, 2))], axis=2)
    else:
        boxes = rng.uniform(0, 4, (BATCH, BOXES, 4))
    boxes[0, 3] = boxes[0, 2]  # identical boxes
    boxes[1, 4, 2:] = boxes[1, 4, :2]  # an empty box
    scores = rng.uniform(0, 1, (BATCH, CLASSES, BOXES))
    scores[0, 1, 5] = scores[0, 1, 6]  # a tie
    return {"boxes": boxes.astype(np.float32), "scores": scores.astype(np.float32)}


@pytest.mark.parametrize("attrs", [
    pytest.param({}, id="corners"), pytest.param({"center": 1}, id="centers"),
    pytest.param({"score": None, "iou": 0.0}, id="no-score-threshold", marks=pytest.mark.slow),
    pytest.param({"max_out": 20, "iou": 0.6}, id="more-than-boxes", marks=pytest.mark.slow)])
def test_nms_equals_onnxruntime(attrs):
    model = nms_model(**attrs)
    rep = EdgecBackend.prepare(model)
    counts = []
    for seed in range(3):
        feeds = nms_feeds(seed, attrs.get("center", 0))
        expected = ort_run(model, feeds)["selected"]
        actual = rep.run([feeds["boxes"], feeds["scores"]])[0]
        np.testing.assert_array_equal(actual, expected)
        counts.append(len(expected))
    assert len(set(counts)) > 1 or attrs.get("max_out") == 20  # the count follows the data


def test_nms_refuses_limits_given_at_run_time(tmp_path):
    import onnx

    onnx.save(nms_model(limits_as_inputs=True), tmp_path / "nms.onnx")
    with pytest.raises(CompileError, match="max_output_boxes_per_class is 'max_out', computed at run time"):
        edgec.compile(tmp_path / "nms.onnx", "x86-64", output=tmp_path / "nms.edgec")


@pytest.mark.slow  # the default run's conformance sample binds them too (test_top_k, test_nonmaxsuppression_*)
def test_backend_binds_limits_given_as_inputs():
    """onnx's node tests feed NMS's limits as inputs: the backend compiles with their values, again when they change."""
    model = nms_model(limits_as_inputs=True)
    rep = EdgecBackend.prepare(model)
    feeds = nms_feeds(0)
    for max_out in (2, 3):
        limit = np.array([max_out], np.int64)
        expected = ort_run(model, {**feeds, "max_out": limit})["selected"]
        np.testing.assert_array_equal(rep.run([feeds["boxes"], feeds["scores"], limit])[0], expected)


def test_nms_rows_mixed_by_a_reshape_are_refused():
    model = nms_model()
    model.graph.node.append(helper.make_node("Reshape", ["selected", "flat"], ["flat_out"], name="mix"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "flat"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("flat_out", TensorProto.INT64, None))
    with pytest.raises(CompileError, match="Reshape node 'mix': a reshape mixes the entries the data decides"):
        EdgecBackend.prepare(model)


@pytest.mark.parametrize(("k", "axis", "largest", "dtype"), [
    (3, -1, 1, np.float32), (2, 0, 0, np.float32), (4, 1, 1, np.int32), (5, -1, 0, np.int64)])
def test_topk_equals_onnxruntime(k, axis, largest, dtype):
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=axis, largest=largest, sorted=1)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = make_model([node], [helper.make_tensor_value_info("x", elem, [3, 7, 5])],
                       [helper.make_tensor_value_info("values", elem, None),
                        helper.make_tensor_value_info("indices", TensorProto.INT64, None)],
                       [numpy_helper.from_array(np.array([k], np.int64), "k")], opset=11)
    x = np.random.default_rng(k).integers(-4, 5, (3, 7, 5)).astype(dtype)  # ties: the lower index first
    expected = ort_run(model, {"x": x})
    actual = EdgecBackend.prepare(model).run([x])
    np.testing.assert_array_equal(actual[0], expected["values"])
    np.testing.assert_array_equal(actual[1], expected["indices"])


ANCHORS, FEATURES, CANDIDATES, KEEP = 45, 8, 12, 5


def detector(seed: int = 0):
    """SSD-lite-style head over a [1, 8, 3, 3] feature map with 5 anchors a cell: 1x1 convs to box
    deltas and class logits, deltas decoded against the anchors (centre, size), sigmoid scores,
    the 12 best anchors by their top class (TopK), NMS per class, the kept boxes and scores gathered."""
    rng = np.random.default_rng(seed)

    def tensor(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    anchors = np.concatenate([rng.uniform(0.1, 0.9, (ANCHORS, 2)), rng.uniform(0.1, 0.4, (ANCHORS, 2))], axis=1)
    inits = [
        tensor("box_w", (rng.standard_normal((20, FEATURES, 1, 1)) * 0.5).astype(np.float32)),
        tensor("cls_w", (rng.standard_normal((5 * CLASSES, FEATURES, 1, 1)) * 1.2).astype(np.float32)),
        tensor("cls_b", np.full(5 * CLASSES, -3.0, np.float32)),
        tensor("anchor_xy", anchors[:, :2].astype(np.float32)), tensor("anchor_wh", anchors[:, 2:].astype(np.float32)),
        tensor("box_shape", np.array([1, ANCHORS, 4], np.int64)),
        tensor("cls_shape", np.array([1, ANCHORS, CLASSES], np.int64)),
        tensor("variance", np.array([0.1], np.float32)), tensor("half", np.array([0.5], np.float32)),
        tensor("k", np.array([CANDIDATES], np.int64)), tensor("keep", np.array([KEEP], np.int64)),
        tensor("iou", np.array([0.4], np.float32)), tensor("threshold", np.array([0.5], np.float32)),
        tensor("s0", np.array([0], np.int64)), tensor("s2", np.array([2], np.int64)),
        tensor("s4", np.array([4], np.int64)), tensor("ax2", np.array([2], np.int64)),
        tensor("box_col", np.array(2, np.int64)),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["features", "box_w"], ["box_raw"]), n("Conv", ["features", "cls_w", "cls_b"], ["cls_raw"]),
        n("Transpose", ["box_raw"], ["box_t"], perm=[0, 2, 3, 1]), n("Reshape", ["box_t", "box_shape"], ["deltas"]),
        n("Transpose", ["cls_raw"], ["cls_t"], perm=[0, 2, 3, 1]), n("Reshape", ["cls_t", "cls_shape"], ["logits"]),
        # decode: centre = anchor centre + delta * variance * anchor size; size = anchor size * exp(delta * variance)
        n("Slice", ["deltas", "s0", "s2", "ax2"], ["d_xy"]), n("Slice", ["deltas", "s2", "s4", "ax2"], ["d_wh"]),
        n("Mul", ["d_xy", "variance"], ["d_xy_v"]), n("Mul", ["d_xy_v", "anchor_wh"], ["shift"]),
        n("Add", ["shift", "anchor_xy"], ["centre"]),
        n("Mul", ["d_wh", "variance"], ["d_wh_v"]), n("Exp", ["d_wh_v"], ["scale"]),
        n("Mul", ["scale", "anchor_wh"], ["size"]), n("Mul", ["size", "half"], ["half_size"]),
        n("Sub", ["centre", "half_size"], ["top_left"]), n("Add", ["centre", "half_size"], ["bottom_right"]),
        n("Concat", ["top_left", "bottom_right"], ["boxes_xy"], axis=2),  # [x1, y1, x2, y2]: NMS takes either order
        n("Sigmoid", ["logits"], ["probs"]),
        n("ReduceMax", ["probs"], ["best"], axes=[2], keepdims=0),
        n("TopK", ["best", "k"], ["top_scores", "top_index"], axis=1),
        n("Squeeze", ["top_index", "s0"], ["top_flat"]),
        n("Gather", ["boxes_xy", "top_flat"], ["cand_boxes"], axis=1),  # [1, 12, 4]
        n("Gather", ["probs", "top_flat"], ["cand_probs"], axis=1),  # [1, 12, classes]
        n("Transpose", ["cand_probs"], ["cand_scores"], perm=[0, 2, 1]),  # [1, classes, 12]
        n("NonMaxSuppression", ["cand_boxes", "cand_scores", "keep", "iou", "threshold"], ["selected"], name="nms"),
        n("Gather", ["selected", "box_col"], ["kept"], axis=1),  # [rows]
        n("Squeeze", ["cand_boxes", "s0"], ["cand_flat"]),
        n("Gather", ["cand_flat", "kept"], ["detected_boxes"], axis=0),  # [rows, 4]
        n("GatherND", ["cand_scores", "selected"], ["detected_scores"]),  # [rows]
    ]
    outputs = [helper.make_tensor_value_info(name, elem, None) for name, elem in (
        ("selected", TensorProto.INT64), ("detected_boxes", TensorProto.FLOAT), ("detected_scores", TensorProto.FLOAT),
        ("top_scores", TensorProto.FLOAT))]
    return make_model(nodes, [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, FEATURES, 3, 3])],
                      outputs, inits, opset=13)


@pytest.fixture(scope="module")
def detector_artifact(tmp_path_factory):
    import onnx

    path = tmp_path_factory.mktemp("detector") / "detector.onnx"
    onnx.save(detector(), path)
    artifact = path.with_suffix(".edgec")
    edgec.compile(path, "x86-64", output=artifact)
    return path, artifact


def test_detector_equals_onnxruntime_row_for_row(detector_artifact):
    path, artifact = detector_artifact
    model = edgec.load(artifact)
    assert {s["name"]: s.get("valid_rows") for s in model.manifest["signature"]["outputs"]} == {
        "selected": "selected.valid_rows", "detected_boxes": "selected.valid_rows",
        "detected_scores": "selected.valid_rows", "top_scores": None, "selected.valid_rows": None}
    rng = np.random.default_rng(7)
    rows = []
    for features in [rng.standard_normal((1, FEATURES, 3, 3)) * scale for scale in (0.7, 1.0, 1.3)] + [
            np.zeros((1, FEATURES, 3, 3))]:  # zeros: every score sigmoid(-3), none above the threshold
        feeds = {"features": features.astype(np.float32)}
        expected, actual = ort_run(path, feeds), model.run(feeds)
        assert list(actual) == list(expected)
        np.testing.assert_array_equal(actual["selected"], expected["selected"])
        for name in ("detected_boxes", "detected_scores", "top_scores"):
            np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
        rows.append(len(expected["selected"]))
    assert rows[-1] == 0 and min(rows[:-1]) > 0 and len(set(rows)) > 1


def test_detector_runs_on_the_runtime_library_alone(detector_artifact, tmp_path):
    """``edgec run`` loads TVM's runtime libraries only: TopK's sort kernels must be there too,
    and the rows come back cut."""
    import subprocess
    import sys

    path, artifact = detector_artifact
    features = (np.random.default_rng(7).standard_normal((1, FEATURES, 3, 3)) * 0.7).astype(np.float32)
    np.save(tmp_path / "features.npy", features)
    done = subprocess.run([sys.executable, "-c", "import sys; from edgec.cli import main; sys.exit(main(sys.argv[1:]))",
                           "run", str(artifact), "--input", f"features={tmp_path / 'features.npy'}",
                           "--output", str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = ort_run(path, {"features": features})
    with np.load(tmp_path / "out.npz") as written:
        assert sorted(written.files) == sorted(expected)
        np.testing.assert_array_equal(written["selected"], expected["selected"])
        assert len(expected["selected"]) > 0
