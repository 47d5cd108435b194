"""The nine model-zoo architectures bundled with onnx compile with ``edgec compile``,
run with ``edgec run``, and match onnxruntime (rtol 1e-3, atol 1e-4).

They get seeded random weights and lose their final Softmax (see tests/models.py), so
the comparison is meaningful. The slowest to compile or run untuned are marked ``slow``
and run with ``pytest -m slow`` (CI runs them)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgec import api
from edgec.cli import main
from tests.conftest import assert_close
from tests.models import ZOO, ort_run, random_feeds, zoo_model

SLOW = {"densenet121", "resnet50", "inception_v2", "vgg19"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(ZOO)])
def test_zoo_model_compiles_runs_and_matches_onnxruntime(name, tmp_path):
    model = zoo_model(name)
    onnx.save(model, tmp_path / "model.onnx")
    feeds = random_feeds(model)
    np.savez(tmp_path / "inputs.npz", **feeds)

    api.compile(tmp_path / "model.onnx", "x86-64", output=tmp_path / "m.edgec")
    assert main(["run", str(tmp_path / "m.edgec"), "--inputs", str(tmp_path / "inputs.npz"),
                 "--output", str(tmp_path / "out.npz")]) == 0

    expected = ort_run(model, feeds)
    with np.load(tmp_path / "out.npz") as out:
        actual = {key: out[key] for key in out.files}
    assert_close(actual, expected, rtol=1e-3, atol=1e-4)
    assert all(np.ptp(v) > 0 for v in expected.values())
