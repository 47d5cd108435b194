"""Tuning records (targets/tuning.py): ``edgec tune`` measures over a real TVM RPC
tracker and server on 127.0.0.1, a killed run keeps every record it wrote and the
rerun finishes the budget, and ``compile --tuning-db`` uses the records and still
matches onnxruntime. Trial budgets are tiny: this checks the flow, not speed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.cli import main
from edgec.deploy import lab
from edgec.deploy.remote import registered_keys, tracker_summary
from tests.conftest import assert_close
from tests.models import make_model, ort_run, random_feeds

pytest.importorskip("tvm")

KEY = "edgec-test-host"
RECORDS = "database_tuning_record.json"


def one_kernel_model() -> onnx.ModelProto:
    """A single conv + bias + relu: one tuning task."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")
    return make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])],
        [w, b],
    )


def spawn(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def tracker():
    """A TVM RPC tracker and one server of this host registered under KEY, loopback only."""
    tracker_port, server_port = lab.free_port(), lab.free_port()
    processes = [spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                        "--port", str(tracker_port), "--port-end", str(tracker_port + 1)])]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                tracker_summary("127.0.0.1", tracker_port, timeout=2.0)
                break
            except Exception:
                assert time.monotonic() < deadline, "the RPC tracker did not start"
                time.sleep(0.3)
        processes.append(spawn([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                "--port", str(server_port), "--port-end", str(server_port + 1),
                                "--tracker", f"127.0.0.1:{tracker_port}", "--key", KEY]))
        while KEY not in registered_keys(tracker_summary("127.0.0.1", tracker_port, timeout=2.0)):
            assert processes[1].poll() is None and time.monotonic() < deadline, "the RPC server did not register"
            time.sleep(0.3)
        yield f"rpc://127.0.0.1:{tracker_port}/{KEY}"
    finally:
        for process in reversed(processes):
            stop(process)


def edgec_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from edgec.cli import console_main; sys.exit(console_main())", *args]


def record_lines(db: Path) -> list[str]:
    path = db / RECORDS
    return path.read_text().splitlines() if path.exists() else []


def kill_after_first_records(tune: list[str], db: Path, timeout: float) -> list[str]:
    """Run ``tune`` and kill it as soon as its first round of measurements is on disk; the
    records it kept (at least one round, less than the 4-trial budget)."""
    first = subprocess.Popen(tune, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not record_lines(db) and first.poll() is None:
        assert time.monotonic() < deadline, "no tuning record was written"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    kept = record_lines(db)
    assert 1 <= len(kept) < 4, f"the first run should stop after one round, it recorded {len(kept)}"
    return kept


@pytest.mark.slow
def test_tuning_over_rpc_survives_a_kill_and_the_records_compile(tracker, tmp_path):
    model_path, db = tmp_path / "conv.onnx", tmp_path / "records"
    onnx.save(one_kernel_model(), model_path)
    tune = edgec_command("tune", str(model_path), "--target", "x86-64", "--device", tracker, "--db", str(db),
                         "--trials", "4", "--json")

    kept = kill_after_first_records(tune, db, timeout=400)

    # The rerun keeps those records and measures only the rest of the budget.
    second = subprocess.run(tune, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["trials_before"] == len(kept)
    assert summary["trials_before"] + summary["trials_run"] >= 4
    assert summary["threads"] >= 1
    assert record_lines(db)[: len(kept)] == kept
    (kernel,) = summary["kernels"]
    assert kernel["best_us"] is not None and kernel["best_us"] > 0

    # A compile takes the record where it beat the rules' measured time, else the rules; both
    # match onnxruntime. Whether four random trials beat the rules is up to the machine, so the
    # rules' recorded time is set to each side of the record's instead of trusting either.
    from edgec.deploy.artifact import open_artifact
    from edgec.runtime import load

    meta_path = db / "edgec-tuning.json"
    meta = json.loads(meta_path.read_text())
    assert len(meta["rule_seconds"]) == 1, "tune timed the rules' schedule of the one kernel"
    feeds = random_feeds(one_kernel_model())
    for rule_seconds, tuned in ((1.0, [kernel["name"]]), (1e-9, [])):
        meta["rule_seconds"] = dict.fromkeys(meta["rule_seconds"], rule_seconds)
        meta_path.write_text(json.dumps(meta))
        artifact = tmp_path / f"conv-{rule_seconds}.edgec"
        assert main(["compile", str(model_path), "-t", "x86-64", "--tuning-db", str(db), "-o", str(artifact),
                     "-q"]) == 0
        assert open_artifact(artifact).manifest["target"]["tuned_kernels"] == tuned
        assert_close(load(artifact).run(feeds), ort_run(one_kernel_model(), feeds))


def test_records_for_another_target_are_refused(tmp_path):
    from edgec.errors import UsageError
    from edgec.targets import get_target
    from edgec.targets.tuning import open_database

    open_database(tmp_path / "db", get_target("x86-64"), create=True)
    with pytest.raises(UsageError, match="holds records for target x86-64.*not arm64-a72"):
        open_database(tmp_path / "db", get_target("arm64-a72"))


def test_a_directory_without_records_is_refused(tmp_path, capsys):
    model_path = tmp_path / "conv.onnx"
    onnx.save(one_kernel_model(), model_path)
    (tmp_path / "empty").mkdir()
    code = main(["compile", str(model_path), "-t", "x86-64", "--tuning-db", str(tmp_path / "empty"),
                 "-o", str(tmp_path / "out.edgec")])
    assert code == 2
    assert "no edgec-tuning.json; create one with 'edgec tune'" in capsys.readouterr().err
    assert not (tmp_path / "out.edgec").exists()


@pytest.mark.parametrize("args, message", [
    (["--device", "rpc-direct://127.0.0.1:9"], "tuning needs a tracker"),
    (["--trials", "0"], "--trials"),
    (["--target", "cuda"], "tunes CPU kernels; target cuda runs on cuda"),
])
def test_bad_tuning_requests_are_usage_errors(tmp_path, capsys, args, message):
    model_path = tmp_path / "conv.onnx"
    onnx.save(one_kernel_model(), model_path)
    target = [] if "--target" in args else ["--target", "x86-64"]
    code = main(["tune", str(model_path), *target, "--db", str(tmp_path / "db"), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_tracker_fails_before_any_work(tmp_path, capsys):
    model_path = tmp_path / "conv.onnx"
    onnx.save(one_kernel_model(), model_path)
    port = lab.free_port()  # nothing listens there
    code = main(["tune", str(model_path), "--target", "x86-64", "--db", str(tmp_path / "db"),
                 "--device", f"rpc://127.0.0.1:{port}/{KEY}"])
    assert code == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()


@pytest.mark.slow
def test_an_unknown_key_is_named_with_the_registered_ones(tracker, tmp_path, capsys):
    model_path = tmp_path / "conv.onnx"
    onnx.save(one_kernel_model(), model_path)
    device = tracker.rsplit("/", 1)[0] + "/no-such-board"
    code = main(["tune", str(model_path), "--target", "x86-64", "--db", str(tmp_path / "db"), "--device", device])
    assert code == 1
    err = capsys.readouterr().err
    assert "no server is registered under key 'no-such-board'" in err and KEY in err
    assert not (tmp_path / "db").exists()
