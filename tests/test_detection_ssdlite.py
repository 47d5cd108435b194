"""torchvision's whole SSD-lite export (network, per-class NonZero and TopK of min(300, count),
batched NMS, keep[:300]) compiles, and its boxes, scores and labels, cut to their count,
equal onnxruntime's: on random images and a constant one, and on a model whose score
threshold no box clears. The compile time is recorded by benchmarks/rnn_detect.py, not here."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import edgec
from tests.models import ort_run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                 reason="torchvision is not installed (pip install --no-deps torchvision)")]


NETWORK_RTOL = 1e-4


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.random((3, 320, 320), dtype=np.float32), rng.random((3, 320, 320), dtype=np.float32),
            np.full((3, 320, 320), 0.5, np.float32)]


def compiled(tmp_path, **options):
    from tests.torchvision_ssdlite import export_ssdlite

    source = export_ssdlite(tmp_path / "ssdlite.onnx", calibrated=True, **options)
    edgec.compile(source, "x86-64", output=tmp_path / "ssdlite.edgec")
    return source, edgec.load(tmp_path / "ssdlite.edgec")


def check(source, model, image) -> int:
    expected, actual = ort_run(source, {"image": image}), model.run({"image": image})
    assert list(actual) == list(expected) == ["boxes", "scores", "labels"]
    for name in expected:
        assert actual[name].shape == expected[name].shape and actual[name].dtype == expected[name].dtype, name
    # The network's scores are onnxruntime's to ~3e-5 relative, not bit for bit (edgec's CPU
    # kernels approximate exp as MLAS does): detections whose scores are that close may come in
    # either order. Everywhere else the post-processing keeps onnxruntime's rows, row for row.
    np.testing.assert_allclose(actual["scores"], expected["scores"], rtol=NETWORK_RTOL)
    differ = (actual["labels"] != expected["labels"]) | ~np.isclose(actual["boxes"], expected["boxes"],
                                                                      rtol=NETWORK_RTOL, atol=1e-3).all(axis=1)
    for start, end in _runs(differ):
        group = expected["scores"][start:end]
        assert end - start > 1 and np.ptp(group) <= NETWORK_RTOL * group.max(), f"rows {start}:{end} differ"
        assert sorted(actual["labels"][start:end]) == sorted(expected["labels"][start:end])
    assert differ.sum() <= 0.05 * len(differ)
    return len(expected["labels"])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_ssdlite_equals_onnxruntime(tmp_path):
    source, model = compiled(tmp_path)
    assert [s.get("valid_rows") for s in model.manifest["signature"]["outputs"]] == [
        "boxes.valid_rows", "boxes.valid_rows", "boxes.valid_rows", None]
    rows = [check(source, model, image) for image in images()]
    assert min(rows) > 0


def test_ssdlite_with_no_box_above_the_threshold_returns_none(tmp_path):
    source, model = compiled(tmp_path, score_thresh=0.99)  # class scores of random weights stay far below
    assert [check(source, model, image) for image in images()[:2]] == [0, 0]
