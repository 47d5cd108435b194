"""``edgec tune`` on lab devices end to end: two emulated Cortex-A72s serving under one key
of the lab's tracker (a board farm of two), a tuning run killed after its first records and
resumed, measurements on both devices, then ``compile --tuning-db`` for arm64 with the
records and the artifact run on the lab device against onnxruntime. Emulated timings mean
nothing; the flow is what is checked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
import pytest

from edgec import api
from edgec.deploy import lab
from edgec.deploy.artifact import open_artifact
from edgec.deploy.remote import load_remote
from tests.conftest import assert_close
from tests.models import ort_run, random_feeds
from tests.test_lab import lab_unavailable
from tests.test_tuning import RECORDS, edgec_command, kill_after_first_records, one_kernel_model, record_lines

KEY = "arm64-a72-farm"


def measurements(log: str) -> int:
    """Kernels a lab server loaded to time them (its log has one line per upload)."""
    path = Path(log)
    text = path.read_text(errors="replace") if path.exists() else ""
    return sum(1 for line in text.splitlines() if "load_module" in line and "kernel.so" in line)


@pytest.fixture(scope="module")
def farm():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    already_running = lab.status()["running"]
    state = lab.start("arm64-a72", key=KEY, servers=2)
    servers = [s for s in state.servers if s.key == KEY]
    assert len(servers) == 2 and len({s.port for s in servers}) == 2
    yield state.device_for(servers[0]), servers
    if not already_running:
        lab.stop()


@pytest.mark.slow
def test_tune_on_two_lab_devices_resumes_and_the_records_compile(farm, tmp_path):
    device, servers = farm
    before = [measurements(s.log) for s in servers]
    model_path, db = tmp_path / "conv.onnx", tmp_path / "records"
    onnx.save(one_kernel_model(), model_path)
    tune = edgec_command("tune", str(model_path), "--target", "arm64-a72", "--device", device, "--db", str(db),
                         "--trials", "4", "--json")

    kept = kill_after_first_records(tune, db, timeout=600)

    second = subprocess.run(tune, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["trials_before"] == len(kept) and summary["trials_before"] + summary["trials_run"] >= 4
    assert record_lines(db)[: len(kept)] == kept
    (kernel,) = summary["kernels"]
    assert kernel["best_us"] is not None and kernel["best_us"] > 0
    after = [measurements(s.log) for s in servers]
    assert all(a > b for a, b in zip(after, before)), f"kernels timed per device: before {before}, after {after}"

    # The record is taken when the rules' recorded time is worse (set so: emulated times mean
    # nothing), and the tuned arm64 artifact runs on the lab device like onnxruntime.
    meta_path = db / "edgec-tuning.json"
    meta = json.loads(meta_path.read_text())
    meta["rule_seconds"] = dict.fromkeys(meta["rule_seconds"], 1.0)
    meta_path.write_text(json.dumps(meta))
    artifact = tmp_path / "conv.edgec"
    api.compile(model_path, "arm64-a72", tuning_db=db, output=artifact)
    assert open_artifact(artifact).manifest["target"]["tuned_kernels"] == [kernel["name"]]
    feeds = random_feeds(one_kernel_model())
    with load_remote(artifact, device, timeout=300) as remote:
        actual = remote.run(feeds)
    assert_close(actual, ort_run(one_kernel_model(), feeds), rtol=0, atol=1e-4)
    assert (db / RECORDS).exists()
