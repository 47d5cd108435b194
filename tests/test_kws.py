"""Keyword spotting exported by torch: LSTM and GRU models over [1, 49, 10] MFCC-like frames
against onnxruntime (<= 1e-4 relative), their streaming twins step by step against the whole
sequence, ``edgec check`` timing one step under ``basic-audio``, and arm64 on the emulated lab."""

from __future__ import annotations

import numpy as np
import pytest

import edgec
from edgec.cli import main
from tests import kws_models
from tests.models import ort_run
from tests.test_lab import lab_device  # noqa: F401 - the emulated lab fixture, shared

pytest.importorskip("torch", reason="the keyword-spotting models are exported by torch==2.13.0 (pip install -e '.[test]')")

RTOL, ATOL = 1e-4, 1e-6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(cell, streaming) -> the exported ONNX path, exported on first use."""
    directory = tmp_path_factory.mktemp("kws")
    paths = {}

    def get(cell: str, streaming: bool):
        key = (cell, streaming)
        if key not in paths:
            paths[key] = kws_models.export(cell, streaming, directory / f"{cell}-{'stream' if streaming else 'whole'}.onnx")
        return paths[key]

    return get


def compiled(exported, cell: str, streaming: bool, target: str = "x86-64"):
    source = exported(cell, streaming)
    artifact = source.with_name(f"{source.stem}-{target}.edgec")
    if not artifact.exists():
        edgec.compile(source, target, output=artifact)
    return artifact


def stream(run, cell: str, frames: np.ndarray) -> tuple[np.ndarray, dict]:
    """Logits after every frame, one call per frame, the state carried by the caller."""
    names = kws_models.state_names(cell)
    state = {name: np.zeros((1, 1, kws_models.HIDDEN), np.float32) for name in names}
    logits = []
    for t in range(frames.shape[1]):
        outputs = run({"x": frames[:, t:t + 1], **state})
        logits.append(outputs["logits"])
        state = {name: outputs[f"{name}_out"] for name in names}
    return np.stack(logits, axis=1), state


@pytest.mark.parametrize("cell", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_whole_sequence_matches_onnxruntime(exported, cell):
    model = edgec.load(compiled(exported, cell, False))
    for seed in (0, 1):
        feeds = {"x": kws_models.mfcc_like(seed)}
        expected = ort_run(exported(cell, False), feeds)["logits"]
        np.testing.assert_allclose(model.run(feeds)["logits"], expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_streaming_steps_equal_the_whole_sequence(exported, cell):
    frames = kws_models.mfcc_like(2)
    whole = ort_run(exported(cell, False), {"x": frames})["logits"]
    edgec_logits, edgec_state = stream(edgec.load(compiled(exported, cell, True)).run, cell, frames)
    ort_logits, ort_state = stream(lambda feeds: ort_run(exported(cell, True), feeds), cell, frames)
    np.testing.assert_allclose(edgec_logits, whole, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(edgec_logits, ort_logits, rtol=RTOL, atol=ATOL)
    for name in edgec_state:
        np.testing.assert_allclose(edgec_state[name], ort_state[name], rtol=RTOL, atol=ATOL)
    assert np.ptp(whole) > 0.1  # the logits move with the frames


def test_check_times_one_step_under_basic_audio(exported, capsys):
    main(["check", str(compiled(exported, "lstm", True)), "-p", "basic-audio"])
    streaming = capsys.readouterr().out
    assert "latency.steady_state: required <= 20ms per step; measured" in streaming
    assert "per step (one call, the caller keeping the recurrent state)" in streaming
    assert main(["check", str(compiled(exported, "lstm", False)), "-p", "basic-audio"]) == 3
    whole = capsys.readouterr().out
    assert "per call of 49 steps" in whole and "compile the streaming form" in whole
    assert "FAIL         latency.steady_state" in whole


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_arm64_matches_onnxruntime_on_the_emulated_lab(exported, cell, lab_device):
    from edgec.deploy.remote import load_remote

    frames = kws_models.mfcc_like(3)
    whole = ort_run(exported(cell, False), {"x": frames})["logits"]
    with load_remote(str(compiled(exported, cell, False, "arm64-a72")), lab_device, timeout=300) as remote:
        assert remote.emulated and remote.device_info["machine"] == "aarch64"
        np.testing.assert_allclose(remote.run({"x": frames})["logits"], whole, rtol=RTOL, atol=ATOL)
    with load_remote(str(compiled(exported, cell, True, "arm64-a72")), lab_device, timeout=300) as remote:
        np.testing.assert_allclose(stream(remote.run, cell, frames)[0], whole, rtol=RTOL, atol=ATOL)
