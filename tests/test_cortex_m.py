"""The Cortex-M targets: the digits CNN compiled to bare-metal firmware (TVM's C kernels,
edgec's call sequence, arm-none-eabi-gcc) and run under qemu-system-arm: fp32 matches
onnxruntime, int8 matches edgec's host run of the same QDQ graph; the exported C
project builds on its own."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest

import edgec.runtime
from edgec import api
from edgec.cli import main
from edgec.deploy.artifact import FIRMWARE, open_artifact
from edgec.errors import ArtifactError
from tests.conftest import without_progress
from tests.models import ort_run, random_feeds, small_cnn
from tests.test_manifest import assert_matches_schema

NEEDS = {"arm-none-eabi-gcc": "gcc-arm-none-eabi and libnewlib-arm-none-eabi", "qemu-system-arm": "qemu-system-arm",
         "make": "make"}
missing = [f"{tool} (Debian {package})" for tool, package in NEEDS.items() if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"the Cortex-M targets need {', '.join(missing)}")


@pytest.fixture(scope="module")
def digits(request, tmp_path_factory):
    """(float .onnx, held-out images, calibration .npz of 300 training images)."""
    from tests.digits_cnn import INPUT, digits_fixture, digits_split

    model_path, data_path = digits_fixture(request, tmp_path_factory)
    calib = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(calib, **{INPUT: digits_split()[0][:300]})
    return model_path, np.load(data_path)[INPUT][:6], calib


@pytest.fixture(scope="module")
def compiled(digits, tmp_path_factory):
    """The digits CNN for cortex-m7 in fp32 and int8, and int8 for this host (both 8-bit weights)."""
    model_path, _, calib = digits
    work = tmp_path_factory.mktemp("cortex-m")
    out = {}
    for name, target, flags in (("fp32", "cortex-m7", ()), ("int8", "cortex-m7", ("--calib", calib, "--full-range")),
                                ("host-int8", "x86-64", ("--calib", calib, "--full-range"))):
        out[name] = work / f"{name}.edgec"
        assert main(["compile", str(model_path), "--target", target, "-o", str(out[name]), "-q",
                     *map(str, flags)]) == 0
    return out


def test_cortex_m_targets_are_listed(capsys):
    assert main(["targets", "--json"]) == 0
    targets = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    for name in ("cortex-m7", "cortex-m4", "cortex-m55"):
        assert targets[name]["family"] == "cortex-m" and targets[name]["cross_compiler"] == "arm-none-eabi-gcc"


def test_fp32_digits_on_qemu_match_onnxruntime(digits, compiled, tmp_path, capsys):
    model_path, images, _ = digits
    artifact = compiled["fp32"]
    manifest = open_artifact(artifact).manifest
    assert manifest["format_version"] == 3 and manifest["target"]["board"] == "mps2-an500"
    assert sorted(manifest["members"]) == ["firmware.elf", "project.tar", "weights.bin"]
    assert_matches_schema(manifest)
    # The command line, as a user runs it.
    np.savez(tmp_path / "x.npz", image=images[:1])
    assert main(["run", str(artifact), "--inputs", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz")]) == 0
    want = ort_run(onnx.load(model_path), {"image": images[:1]})["logits"]
    got = np.load(tmp_path / "y.npz")["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # And the Python API on more images.
    firmware = edgec.runtime.load(artifact)
    for i in range(1, len(images)):
        want = ort_run(onnx.load(model_path), {"image": images[i:i + 1]})["logits"]
        np.testing.assert_allclose(firmware.run({"image": images[i:i + 1]})["logits"], want, rtol=1e-4,
                                   atol=1e-4 * np.abs(want).max(), err_msg=f"image {i}")


def test_int8_digits_on_qemu_within_one_lsb_of_the_host_run(digits, compiled, tmp_path):
    """Same QDQ graph, same 8-bit weights: the firmware's logits are within one step of the last
    layer's int32 accumulator (input scale x largest weight scale) of edgec's x86-64 run."""
    _, images, _ = digits
    np.savez(tmp_path / "x.npz", image=images[:1])
    for name in ("int8", "host-int8"):
        assert main(["run", str(compiled[name]), "--inputs", str(tmp_path / "x.npz"),
                     "--output", str(tmp_path / f"{name}.npz")]) == 0
    manifest = open_artifact(compiled["int8"]).manifest
    assert manifest["target"]["integer_kernels"]["lowered"] == ["conv2d+bias", "conv2d+bias", "matmul+bias"]
    last = manifest["quantization"]["layers"][-1]
    lsb = last["activation_scale"] * max(last["weight_scales"][:2])
    cli = np.abs(np.load(tmp_path / "int8.npz")["logits"] - np.load(tmp_path / "host-int8.npz")["logits"]).max()
    assert cli <= lsb, f"edgec run: {cli} > 1 LSB ({lsb})"
    firmware, host = edgec.runtime.load(compiled["int8"]), edgec.runtime.load(compiled["host-int8"])
    for i in range(len(images)):
        feeds = {"image": images[i:i + 1]}
        difference = np.abs(firmware.run(feeds)["logits"] - host.run(feeds)["logits"]).max()
        assert difference <= lsb, f"image {i}: {difference} > 1 LSB ({lsb})"


@pytest.mark.parametrize(("target", "board"), [("cortex-m4", "mps2-an386"), ("cortex-m55", "mps3-an547")])
def test_other_cores_run_on_their_boards(tmp_path, target, board):
    model = small_cnn()
    onnx.save(model, tmp_path / "cnn.onnx")
    api.compile(tmp_path / "cnn.onnx", target, output=tmp_path / "m.edgec")
    assert open_artifact(tmp_path / "m.edgec").manifest["target"]["board"] == board
    feeds = random_feeds(model)
    want = ort_run(model, feeds)["logits"]
    np.testing.assert_allclose(edgec.runtime.load(tmp_path / "m.edgec").run(feeds)["logits"], want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())


def test_export_c_writes_a_project_that_builds_and_runs(digits, compiled, tmp_path, capsys):
    project = tmp_path / "fw"
    assert main(["export-c", str(compiled["int8"]), str(project)]) == 0
    header = (project / "include" / "digits_cnn.h").read_text()
    assert "int digits_cnn_init(void);" in header and "int digits_cnn_run(const float* image, float* output0);" in header
    assert "malloc" not in (project / "model.c").read_text()
    done = subprocess.run(["make", "-s", "-C", str(project), "-j2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (project / "libdigits_cnn.a").is_file()
    assert (project / "firmware.elf").read_bytes()[:4] == b"\x7fELF"
    # Its own 'make run' on the emulated board gives what 'edgec run' gives.
    image = digits[1][:1]
    (project / "in0.bin").write_bytes(image.tobytes())
    done = subprocess.run(["make", "-s", "-C", str(project), "run"], capture_output=True, text=True)
    assert done.returncode == 0 and "edgec-harness: ok" in done.stdout, done.stdout + done.stderr
    logits = np.frombuffer((project / "out0.bin").read_bytes(), np.float32).reshape(1, 10)
    assert np.array_equal(logits, edgec.runtime.load(compiled["int8"]).run({"image": image})["logits"])
    capsys.readouterr()
    assert main(["export-c", str(compiled["int8"]), str(project)]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert main(["export-c", str(compiled["host-int8"]), str(tmp_path / "other")]) == 2
    assert "is not microcontroller firmware" in capsys.readouterr().err


def test_tampered_firmware_is_refused(compiled, tmp_path):
    opened = open_artifact(compiled["fp32"])
    data = bytearray(compiled["fp32"].read_bytes())
    offset, size = opened.offsets[FIRMWARE]
    data[offset + size // 2] ^= 0x01
    (tmp_path / "t.edgec").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="member 'firmware.elf' is corrupt"):
        edgec.runtime.load(tmp_path / "t.edgec")


def test_firmware_is_not_sent_to_a_lab_device(compiled, capsys):
    assert main(["run", str(compiled["fp32"]), "--random-inputs", "--device", "rpc://127.0.0.1:9190/x"]) == 2
    assert "is microcontroller firmware" in capsys.readouterr().err


def test_report_shows_flash_and_ram_from_the_elf(compiled, capsys):
    assert main(["report", str(compiled["int8"]), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    memory = open_artifact(compiled["int8"]).manifest["target"]["mcu_memory"]
    sections = memory["model_sections"]
    assert totals["flash_bytes"] == sections["text"] + sections["rodata"] + sections["data"]
    assert totals["ram_bytes"] == sections["data"] + sections["bss"] + memory["stack_bytes"]
    assert sections["bss"] >= memory["arena_bytes"] + memory["workspace_bytes"]  # both are static arrays
    assert sections["rodata"] >= totals["weight_bytes"] - 200  # weights in flash (small scalars are folded into code)
    assert main(["report", str(compiled["int8"])]) == 0
    text = capsys.readouterr().out
    assert "\nflash " in text and "\nRAM " in text


def test_check_profile_mcu_passes_for_the_digits_cnn(compiled, capsys):
    assert main(["check", str(compiled["int8"]), "--profile", "mcu", "--json"]) == 0
    certificate = json.loads(capsys.readouterr().out)
    status = {m["attribute"]: m["status"] for m in certificate["measurements"]}
    assert certificate["ok"] and status["latency.steady_state"] == "emulated" and status["latency.first_time"] == "emulated"
    for attribute in ("memory.working_set", "memory.flash", "memory.weights", "ops", "dtypes.compute", "dtypes.storage",
                      "data_locality"):
        assert status[attribute] == "pass", attribute


def test_check_profile_mcu_fails_naming_the_budget_for_a_too_large_model(tmp_path, capsys):
    """1 MiB of activations on a 512 KiB microcontroller."""
    from onnx import TensorProto, helper

    from tests.models import make_model

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "r"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 128, 128])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 128, 128])])
    onnx.save(model, tmp_path / "big.onnx")
    api.compile(tmp_path / "big.onnx", "cortex-m7", output=tmp_path / "big.edgec")
    capsys.readouterr()
    assert main(["check", str(tmp_path / "big.edgec"), "--profile", "mcu"]) == 3
    captured = capsys.readouterr()
    assert "FAIL         memory.working_set: required <= 512KiB" in captured.out
    assert "does not comply with profile mcu" in captured.err


def test_partitioning_a_firmware_is_a_usage_error(tmp_path, capsys):
    from edgec.compiler.pipelines import DEFAULT_PIPELINE

    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    code = main(["compile", str(tmp_path / "cnn.onnx"), "-t", "cortex-m7", "-o", str(tmp_path / "p.edgec"), "--passes",
                 f"{DEFAULT_PIPELINE},partition{{target=x86-64,device=cpu-test-double}}"])
    assert code == 2 and "builds one firmware image for one core" in capsys.readouterr().err
    assert not (tmp_path / "p.edgec").exists()


def test_tuning_a_firmware_target_is_a_usage_error(tmp_path, capsys):
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    assert main(["tune", str(tmp_path / "cnn.onnx"), "--target", "cortex-m7", "--db", str(tmp_path / "db")]) == 2
    assert "is bare-metal firmware" in capsys.readouterr().err


def activations_and_concat() -> onnx.ModelProto:
    """Two outputs, libm functions (exp, tanh) and a Concat."""
    from onnx import TensorProto, helper

    from tests.models import make_model

    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Concat", ["x", "s"], ["c"], axis=1),
             helper.make_node("Softmax", ["c"], ["y"], axis=1), helper.make_node("Tanh", ["x"], ["t"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10]),
                       helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 5])])


@pytest.mark.parametrize("name", ["names", "activations"])
def test_multi_output_and_int64_models_match_onnxruntime(tmp_path, name):
    from tests.test_cpp_consumer import names_and_dtypes

    model = names_and_dtypes() if name == "names" else activations_and_concat()
    onnx.save(model, tmp_path / "m.onnx")
    api.compile(tmp_path / "m.onnx", "cortex-m7", output=tmp_path / "m.edgec")
    feeds = random_feeds(model)
    if name == "names":
        feeds["ids"] = np.arange(6, dtype=np.int64).reshape(2, 3) * 1000003
    got = edgec.runtime.load(tmp_path / "m.edgec").run(feeds)
    for out_name, want in ort_run(model, feeds).items():
        assert got[out_name].dtype == want.dtype and got[out_name].shape == want.shape, out_name
        np.testing.assert_allclose(got[out_name], want, rtol=1e-4, atol=1e-6, err_msg=out_name)


@pytest.mark.parametrize("channels, message", [
    (16, "the activation arena needs 8.0 MiB, more than target cortex-m7's memory (4.0 MiB)"),
    (8, "the model does not fit mps2-an500's memory (flash 4 MiB, RAM 4 MiB): region `RAM' overflowed by"),
])
def test_a_model_too_large_for_the_board_is_one_clear_error(tmp_path, capsys, channels, message):
    """An arena over the board's 4 MiB of RAM is refused after planning; one that fits but
    leaves no room for the stack is the link's overflow, named. One line either way."""
    from onnx import TensorProto, helper

    from tests.models import make_model

    model = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 256, 256])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 256, 256])])
    onnx.save(model, tmp_path / "huge.onnx")
    assert main(["compile", str(tmp_path / "huge.onnx"), "-t", "cortex-m7", "-o", str(tmp_path / "h.edgec")]) == 1
    err = without_progress(capsys.readouterr().err)
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "h.edgec").exists()


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m55"])
def test_int8_on_other_cores_equals_the_host_run(tmp_path, target):
    """The integer kernels on the M4 and M55 too: same QDQ graph, same 8-bit weights, the same
    logits as edgec's x86-64 run (to within one accumulator step of the last layer)."""
    model = small_cnn()
    onnx.save(model, tmp_path / "cnn.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32))
    for name, where in (("mcu", target), ("host", "x86-64")):
        assert main(["compile", str(tmp_path / "cnn.onnx"), "-t", where, "--calib", str(tmp_path / "calib.npz"),
                     "--full-range", "-o", str(tmp_path / f"{name}.edgec"), "-q"]) == 0
    manifest = open_artifact(tmp_path / "mcu.edgec").manifest
    assert manifest["target"]["integer_kernels"]["lowered"]
    last = manifest["quantization"]["layers"][-1]
    lsb = last["activation_scale"] * max(last["weight_scales"][:2])
    feeds = random_feeds(model)
    got = edgec.runtime.load(tmp_path / "mcu.edgec").run(feeds)["logits"]
    want = edgec.runtime.load(tmp_path / "host.edgec").run(feeds)["logits"]
    assert np.abs(got - want).max() <= lsb


def mobile_block() -> onnx.ModelProto:
    """A MobileNet-style block: strided conv, ReLU6, depthwise conv, pointwise conv, residual
    add, global average pool, a MatMul head."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.models import make_model

    rng = np.random.default_rng(0)
    weights = {"w1": [16, 3, 3, 3], "b1": [16], "dw": [16, 1, 3, 3], "pw": [16, 16, 1, 1], "fc": [16, 10]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["a6"]),
             helper.make_node("Conv", ["a6", "dw"], ["d"], pads=[1, 1, 1, 1], group=16),
             helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
             helper.make_node("Conv", ["d6", "pw"], ["p"]),
             helper.make_node("Add", ["p", "a6"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    model.graph.initializer.extend(
        [numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
         for name, shape in weights.items()]
        + [numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")])
    return model


def test_mobile_block_fp32_and_int8(tmp_path):
    model = mobile_block()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32))
    api.compile(tmp_path / "m.onnx", "cortex-m7", output=tmp_path / "fp.edgec")
    for name, where in (("mcu", "cortex-m7"), ("host", "x86-64")):
        assert main(["compile", str(tmp_path / "m.onnx"), "-t", where, "--calib", str(tmp_path / "calib.npz"),
                     "--full-range", "-o", str(tmp_path / f"{name}.edgec"), "-q"]) == 0
    feeds = random_feeds(model)
    want = ort_run(model, feeds)["y"]
    np.testing.assert_allclose(edgec.runtime.load(tmp_path / "fp.edgec").run(feeds)["y"], want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())
    last = open_artifact(tmp_path / "mcu.edgec").manifest["quantization"]["layers"][-1]
    lsb = last["activation_scale"] * max(last["weight_scales"][:2])
    got = edgec.runtime.load(tmp_path / "mcu.edgec").run(feeds)["y"]
    assert np.abs(got - edgec.runtime.load(tmp_path / "host.edgec").run(feeds)["y"]).max() <= lsb


def test_check_profile_mcu_fails_naming_the_flash_budget_for_too_many_weights(tmp_path, capsys):
    """2.3 MiB of float weights for 2 MiB of flash (the board itself has 4 MiB, so it links)."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.models import make_model

    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 600])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])])
    model.graph.initializer.append(
        numpy_helper.from_array(np.random.default_rng(0).standard_normal((600, 1024)).astype(np.float32), "w"))
    onnx.save(model, tmp_path / "wide.onnx")
    api.compile(tmp_path / "wide.onnx", "cortex-m7", output=tmp_path / "w.edgec")
    capsys.readouterr()
    assert main(["check", str(tmp_path / "w.edgec"), "--profile", "mcu"]) == 3
    out = capsys.readouterr().out
    assert "FAIL         memory.flash: required <= 2MiB; measured 2.3 MiB" in out
    assert "PASS         memory.working_set" in out
