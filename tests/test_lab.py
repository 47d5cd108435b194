"""The emulated arm64 lab device: cross-compiled artifacts run over a real TVM RPC
tracker and server under qemu, match onnxruntime, and every failure is a clear error.

The lab is started once for the module (from scratch about a minute: sysroot and
wheels are cached under $EDGEC_LAB_DIR or ~/.cache/edgec/lab) and stopped at the
end, unless it was already running. The module is skipped, with the reason, only
where qemu cannot be installed (not root and not installed).
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import onnx
import pytest

from edgec import api
from edgec.cli import main
from edgec.deploy import lab
from edgec.deploy.remote import Device, load_remote, parse_device
from edgec.errors import ArtifactError, DeviceError, UsageError
from tests.conftest import assert_close
from tests.models import make_model, ort_run, random_feeds, small_cnn, zoo_model


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None. Only qemu (or the sysroot) being out of reach counts."""
    if os.geteuid() == 0 and lab.find_tool("apt-get"):
        return None  # lab.start installs what is missing
    if not lab.find_tool("qemu-aarch64-static"):
        return "the emulated lab needs qemu-aarch64-static (Debian qemu-user-static); installing it needs root"
    if not any(lab.lab_dir().glob("sysroot-*/.complete")):
        return "the lab's arm64 sysroot is not built, and building it needs root (debootstrap)"
    return None


@pytest.fixture(scope="module")
def lab_device():
    reason = lab_unavailable()
    if reason:
        warnings.warn(f"tests/test_lab.py skipped: {reason}", stacklevel=1)
        pytest.skip(reason)
    already_running = lab.status()["running"]
    state = lab.start("arm64-a72")
    yield state.device
    if not already_running:
        lab.stop()


def compile_for(model: onnx.ModelProto, target: str, directory) -> str:
    source = directory / "model.onnx"
    onnx.save(model, source)
    output = directory / f"model-{target}.edgec"
    api.compile(source, target, output=output)
    return str(output)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """small_cnn as an ONNX model and its artifacts, compiled on this (x86) host."""
    model = small_cnn()
    directory = tmp_path_factory.mktemp("cnn")
    return model, {target: compile_for(model, target, directory) for target in ("arm64-a72", "arm64-a76", "x86-64")}


@pytest.mark.parametrize("which", ["small_cnn", "squeezenet"])
def test_arm64_artifact_matches_onnxruntime_through_the_tracker(which, lab_device, cnn, tmp_path):
    model, artifacts = cnn
    if which == "squeezenet":
        model = zoo_model("squeezenet")
        artifact = compile_for(model, "arm64-a72", tmp_path)
    else:
        artifact = artifacts["arm64-a72"]
    feeds = random_feeds(model)
    with load_remote(artifact, lab_device, timeout=120) as remote:
        assert remote.emulated and remote.device_info["machine"] == "aarch64"
        actual = remote.run(feeds)
    expected = ort_run(model, feeds)
    assert_close(actual, expected, rtol=0, atol=1e-4)
    assert all(np.ptp(value) > 0 for value in expected.values())


def test_timings_are_labelled_emulated(lab_device, cnn):
    model, artifacts = cnn
    with load_remote(artifacts["arm64-a72"], lab_device) as remote:
        timing = remote.time(remote.random_inputs(seed=3), repeat=3, number=2)
    assert timing.emulated
    assert timing.first > 0 and len(timing.runs) == 3 and all(run > 0 for run in timing.runs)


def test_remote_inputs_are_checked_like_local_ones(lab_device, cnn):
    _, artifacts = cnn
    with load_remote(artifacts["arm64-a72"], lab_device) as remote:
        with pytest.raises(ArtifactError, match="input 'x' must have shape"):
            remote.run({"x": np.zeros((1, 3, 8, 8), np.float32)})
        with pytest.raises(ArtifactError, match="unknown input"):
            remote.run({**remote.random_inputs(), "y": np.zeros(1)})


def test_a76_artifact_on_the_a72_names_the_missing_feature(lab_device, cnn):
    _, artifacts = cnn
    with pytest.raises(ArtifactError, match=r"lacks CPU features? asimddp \(dotprod\).* required by target arm64-a76"):
        load_remote(artifacts["arm64-a76"], lab_device)


def test_x86_artifact_on_the_arm64_device_is_refused(lab_device, cnn):
    _, artifacts = cnn
    with pytest.raises(ArtifactError, match="built for x86_64.*but device rpc://.* is aarch64"):
        load_remote(artifacts["x86-64"], lab_device)


NATIVE_RUN = """
import sys
import numpy as np
from edgec import runtime
from edgec.errors import ArtifactError
feeds = dict(np.load(sys.argv[1]))
np.savez(sys.argv[2], **runtime.load(sys.argv[3]).run(feeds))
try:
    runtime.load(sys.argv[4])
except ArtifactError as exc:
    print(exc)
"""


def test_native_aarch64_run_checks_the_cpu_features(lab_device, cnn, tmp_path):
    """edgec.runtime run on the (emulated) A72 itself: the A72 build runs, the A76 build is refused."""
    model, artifacts = cnn
    feeds = random_feeds(model)
    np.savez(tmp_path / "inputs.npz", **feeds)
    command, env = lab.device_python(lab.load_state(lab.lab_dir()), "arm64-a72")
    done = subprocess.run([*command, "-c", NATIVE_RUN, str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz"),
                           artifacts["arm64-a72"], artifacts["arm64-a76"]], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("this machine lacks CPU features asimddp (dotprod), asimdhp (fullfp16) required by target arm64-a76"
            in done.stdout)
    with np.load(tmp_path / "out.npz") as out:
        assert_close({key: out[key] for key in out.files}, ort_run(model, feeds), rtol=0, atol=1e-4)


def test_busy_device_fails_within_the_timeout(lab_device, cnn):
    _, artifacts = cnn
    with load_remote(artifacts["arm64-a72"], lab_device):
        start = time.monotonic()
        with pytest.raises(DeviceError, match="stayed busy for 2 s"):
            load_remote(artifacts["arm64-a72"], lab_device, timeout=2)
        assert time.monotonic() - start < 10


def test_unknown_key_and_unreachable_tracker(lab_device, cnn):
    _, artifacts = cnn
    with pytest.raises(DeviceError, match="no server is registered under key 'no-such-board'"):
        load_remote(artifacts["arm64-a72"], lab_device.rsplit("/", 1)[0] + "/no-such-board", timeout=5)
    with pytest.raises(DeviceError, match=r"tracker 127\.0\.0\.1:\d+ is unreachable"):
        load_remote(artifacts["arm64-a72"], f"rpc://127.0.0.1:{lab.free_port()}/arm64-a72", timeout=5)


def test_killed_server_gives_a_device_error_within_the_timeout(lab_device, cnn):
    """A second device, killed (its whole process group) while it runs: the client must not hang."""
    _, artifacts = cnn
    state = lab.start("arm64-a72", key="arm64-a72-victim")
    victim = next(server for server in state.servers if server.key == "arm64-a72-victim")
    remote = load_remote(artifacts["arm64-a72"], state.device_for(victim), timeout=30)
    feeds = remote.random_inputs()
    threading.Timer(1.0, os.killpg, (victim.pid, signal.SIGKILL)).start()
    start = time.monotonic()
    # The kill lands in the minutes of timed runs, or (on a stalled machine) the run before them.
    with pytest.raises(DeviceError, match="arm64-a72-victim: (run|timed runs) failed: the connection was lost"):
        remote.time(feeds, repeat=1, number=100_000)  # minutes of work, unless killed
    assert time.monotonic() - start < 30
    with pytest.raises(DeviceError, match="session is unusable"):
        remote.run(feeds)


def heavy_cnn() -> onnx.ModelProto:
    """Four 3x3 convs over 256 channels at 128x128: about 39 GMAC, minutes of emulated work
    (two at 64x64 once finished inside the test's 15 s on a quiet host)."""
    rng = np.random.default_rng(0)
    weights = [onnx.numpy_helper.from_array((rng.standard_normal((256, 256, 3, 3)) * 0.02).astype(np.float32), f"w{i}")
               for i in range(4)]
    names = ["x", "h0", "h1", "h2", "y"]
    nodes = [onnx.helper.make_node("Conv", [names[i], f"w{i}"], [names[i + 1]], pads=[1, 1, 1, 1], name=f"conv{i}")
             for i in range(4)]
    return make_model(nodes, [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 256, 128, 128])],
                      [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 256, 128, 128])], weights)


def test_killing_the_server_during_edgec_run_is_a_clear_error_within_the_timeout(lab_device, tmp_path):
    """``edgec run --device`` in its own process, its server killed mid-run: exit 1, one line, no hang."""
    artifact = compile_for(heavy_cnn(), "arm64-a72", tmp_path)
    state = lab.start("arm64-a72", key="arm64-a72-run-victim")
    victim = next(server for server in state.servers if server.key == "arm64-a72-run-victim")
    command = [sys.executable, "-m", "edgec.cli", "run", artifact, "--device", state.device_for(victim),
               "--random-inputs", "--timeout", "60"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # connected, loaded, and inside the emulated run (which takes far longer)
    assert run.poll() is None, "the run ended before the server was killed: make heavy_cnn heavier"
    os.killpg(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    _, err = run.communicate(timeout=90)
    assert time.monotonic() - killed < 60
    assert run.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith("edgec: error: device rpc://")
    assert "arm64-a72-run-victim: " in err and "failed: the connection was lost" in err


def test_a_server_that_never_answers_times_out_clearly(cnn):
    """A port that accepts connections and then says nothing: the client gives up at its timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(DeviceError, match=rf"rpc-direct://127\.0\.0\.1:{port}: connect: no answer within 3 s"):
            load_remote(cnn[1]["x86-64"], f"rpc-direct://127.0.0.1:{port}", timeout=3)
        assert time.monotonic() - start < 15


def test_status_reports_the_emulated_device(lab_device):
    servers = {server["key"]: server for server in lab.status()["servers"]}
    device = servers["arm64-a72"]
    assert device["alive"] and device["registered"] and device["emulated"]
    assert device["device"] == lab_device


@pytest.fixture
def stock_server():
    """TVM's own RPC server on this host: no edgec.device_info, so nothing is checked before loading."""
    port = lab.free_port()
    server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert server.poll() is None and time.monotonic() < deadline, "tvm.exec.rpc_server did not start"
            time.sleep(0.2)
        yield f"rpc-direct://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_stock_server_runs_host_artifacts_and_explains_a_failed_load(stock_server, cnn):
    if platform.machine() != "x86_64":
        pytest.skip(f"the host artifact here is built for x86-64, this machine is {platform.machine()}")
    model, artifacts = cnn
    feeds = random_feeds(model)
    with load_remote(artifacts["x86-64"], stock_server, timeout=60) as remote:
        assert remote.device_info is None and not remote.emulated
        assert_close(remote.run(feeds), ort_run(model, feeds), atol=1e-4)
    with pytest.raises(DeviceError, match="loading the model failed: .*the device may not be aarch64 or may lack CPU "
                                          r"features \(asimd\) required by target arm64-a72"):
        load_remote(artifacts["arm64-a72"], stock_server, timeout=60)


@pytest.mark.parametrize(
    "text, message",
    [
        ("rpc://127.0.0.1:9190", "needs a device key"),
        ("tcp://127.0.0.1:9190/k", "unknown scheme 'tcp'"),
        ("rpc://127.0.0.1/k", "missing HOST:PORT"),
        ("rpc://127.0.0.1:port/k", "Port could not be cast"),
        ("rpc://127.0.0.1:9190/a/b", "must be one word"),
        ("rpc-direct://", "missing HOST:PORT"),
    ],
)
def test_bad_device_string_is_a_usage_error(text, message):
    with pytest.raises(UsageError, match=message):
        parse_device(text)


def test_device_strings_round_trip():
    assert parse_device("rpc://127.0.0.1:9190/arm64-a72") == Device("rpc", "127.0.0.1", 9190, "arm64-a72")
    for text in ("rpc://lab.local:9190/rpi4", "rpc-direct://10.0.0.2:9090", "rpc-direct://[::1]:9090/k"):
        assert str(parse_device(text)) == text


def test_command_line_runs_checks_and_benches_on_the_device(lab_device, cnn, tmp_path, capsys):
    model, artifacts = cnn
    onnx.save(model, tmp_path / "cnn.onnx")
    assert main(["run", str(artifacts["arm64-a72"]), "--device", lab_device, "--random-inputs"]) == 0
    assert capsys.readouterr().out.startswith("logits: float32[1, 10]")
    assert main(["check", str(artifacts["arm64-a72"]), "--model", str(tmp_path / "cnn.onnx"), "--device", lab_device]) == 0
    assert capsys.readouterr().out.rstrip().endswith(": ok")
    assert main(["bench", str(artifacts["arm64-a72"]), "--device", lab_device, "--repeat", "3"]) == 0
    assert "EMULATED" in capsys.readouterr().out
    assert main(["run", str(artifacts["arm64-a76"]), "--device", lab_device, "--random-inputs"]) == 1
    assert "lacks CPU features asimddp (dotprod)" in capsys.readouterr().err


def test_a76_int8_convs_run_on_sdot_and_match_onnxruntime(lab_device, tmp_path):
    """On arm64-a76 (+dotprod) the integer convs are scheduled on sdot (exact for 8-bit weights,
    so the default quantization), and the artifact, on an emulated Cortex-A76 behind the
    tracker, matches onnxruntime running the QDQ graph op by op."""
    import onnxruntime as ort
    from edgec.targets import get_target
    from edgec.targets.cpu_schedules import schedule_for_cpu
    from edgec.targets.int8 import lower_integer_kernels
    from edgec.targets.int8_schedules import dot_product_for

    from tests.test_int8 import dot_product_cnn, imported

    onnx.save(dot_product_cnn(), tmp_path / "m.onnx")
    rng = np.random.default_rng(9)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 3, 14, 14)).astype(np.float32))
    api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", output=tmp_path / "q.onnx")
    a76 = get_target("arm64-a76")
    mod, report = lower_integer_kernels(imported(tmp_path / "q.onnx"), dot_product_for(a76))
    assert report.lowered == ["conv2d+bias"] * 4
    scheduled, _ = schedule_for_cpu(mod, a76)
    assert sum("llvm.aarch64.neon.sdot" in f.script() for _, f in scheduled.functions_items()) == 4

    api.compile(tmp_path / "q.onnx", "arm64-a76", output=tmp_path / "q.edgec")
    state = lab.start("arm64-a76")
    server = next(server for server in state.servers if server.target == "arm64-a76")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    feeds = {"x": rng.standard_normal((1, 3, 14, 14)).astype(np.float32)}
    with load_remote(str(tmp_path / "q.edgec"), state.device_for(server), timeout=120) as remote:
        actual = remote.run(feeds)["c4.r"]
    expected = session.run(None, feeds)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
