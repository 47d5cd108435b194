"""Holding models to profiles: static checks on the IR, and certificates measured on a trained CNN."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec import api
from edgec.profiles.compliance import (
    FAIL,
    NOT_REQUIRED,
    PASS,
    UNVERIFIED,
    certify,
    check_static,
    elf_imports,
    estimate_arena,
)
from edgec.errors import UsageError
from edgec.frontend.importer import import_proto
from edgec.ir import parse_model
from edgec.profiles.profile import load_profile
from edgec.targets import get_target
from tests.models import ort_run, small_cnn

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits_mlp.onnx"

DIGITS_PROFILE = """\
schema = 1
name = "digits"
extends = "mcu"
description = "the held-out digits, on this machine"

[accuracy]
dataset = "sklearn digits, 30% held out"
metric = "top1"
min = 0.95

[memory]
# a host process with the TVM runtime in it, not an MCU
working_set = "4GiB"

[latency]
first_time = "30s"
steady_state = "100ms"
"""


@pytest.fixture(scope="module")
def host():
    return get_target("x86-64")


@pytest.fixture(scope="module")
def digits(request, tmp_path_factory):
    """(onnx path, held-out .npz, compiled artifact), trained once and cached across runs."""
    pytest.importorskip("torch", reason="the digits CNN is trained with torch==2.13.0 (pip install torch==2.13.0)")
    pytest.importorskip("sklearn", reason="the digits data set comes from scikit-learn")
    from tests.digits_cnn import trained_digits

    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    folder = cache.mkdir("edgec-digits") if cache is not None else tmp_path_factory.mktemp("digits-cache")
    model_path, data_path = trained_digits(folder)
    work = tmp_path_factory.mktemp("digits")
    (work / "digits.toml").write_text(DIGITS_PROFILE)
    artifact = work / "digits.edgec"
    api.compile(model_path, "x86-64", profile=str(work / "digits.toml"), output=artifact)
    return model_path, data_path, artifact


@pytest.fixture
def digits_profile(tmp_path):
    path = tmp_path / "digits.toml"
    path.write_text(DIGITS_PROFILE)
    return path


def by_attribute(certificate) -> dict:
    return {m.attribute: m for m in certificate.measurements}


def loader(artifact):
    from edgec.runtime import load

    return lambda: load(artifact)


# -- acceptance: the trained CNN ------------------------------------------------------------------

def test_certificate_passes_for_the_trained_cnn(digits, digits_profile, host):
    _, data_path, artifact = digits
    certificate = certify(artifact, loader(artifact), load_profile(digits_profile), data_path, None, host)
    found = by_attribute(certificate)
    assert certificate.ok, certificate.format()
    assert found["accuracy"].status == PASS and found["accuracy"].values["value"] >= 0.95
    assert found["accuracy"].values["samples"] == 540  # 30% of 1797
    assert found["latency.first_time"].status == PASS
    assert found["latency.steady_state"].status == PASS
    assert found["memory.working_set"].status == PASS and found["memory.working_set"].values["bytes"] > 0
    assert found["memory.weights"].status == PASS  # under the mcu's 2 MiB of flash
    assert found["data_locality"].status == PASS
    assert found["power"].status == NOT_REQUIRED
    # mcu's op subset and dtypes, as the compile under this profile checked them
    assert found["ops"].status == PASS and found["dtypes.compute"].status == PASS
    assert "at compile time" in found["ops"].how
    document = json.loads(json.dumps(certificate.to_dict()))
    assert document["ok"] is True and document["profile"]["name"] == "digits"
    assert re.fullmatch(r"[0-9a-f]{64}", document["artifact"]["sha256"])
    assert document["environment"]["target"] == "x86-64"
    assert "COMPLIANT" in certificate.format()


def test_a_1us_steady_state_fails_and_shows_the_measured_latency(digits, digits_profile, host):
    _, data_path, artifact = digits
    profile = load_profile(digits_profile, ["latency.steady_state=1us"])
    certificate = certify(artifact, loader(artifact), profile, data_path, None, host)
    steady = by_attribute(certificate)["latency.steady_state"]
    assert not certificate.ok
    assert steady.status == FAIL and steady.values["median_seconds"] > 1e-6
    assert re.search(r"FAIL +latency\.steady_state: required <= 1us per batch of 1; measured [\d.]+ (µs|ms) per batch of 1",
                     certificate.format())
    assert "NOT COMPLIANT" in certificate.format()


def test_static_rules_are_unverified_unless_the_compile_checked_the_same_ones(digits, host, tmp_path):
    """A certificate never passes ops or dtypes nobody checked: they hold for the compiled graph, or not."""
    model_path, data_path, artifact = digits
    stricter = load_profile("mcu", ["ops.allowed=[\"Conv\"]", "latency.first_time=60s", "latency.steady_state=1s",
                                    "memory.working_set=4GiB"])
    found = by_attribute(certify(artifact, loader(artifact), stricter, None, None, host))
    assert found["ops"].status == UNVERIFIED and "recompile it with --profile mcu" in found["ops"].how
    assert found["dtypes.compute"].status == UNVERIFIED  # not proven for this artifact either

    unprofiled = tmp_path / "plain.edgec"
    api.compile(model_path, "x86-64", output=unprofiled)
    found = by_attribute(certify(unprofiled, loader(unprofiled), load_profile("mcu"), None, None, host))
    assert found["ops"].status == UNVERIFIED and "compiled without a profile" in found["ops"].how


def test_a_violation_allowed_at_compile_time_fails_the_certificate(digits, host, tmp_path):
    model_path, _, _ = digits
    artifact = tmp_path / "violating.edgec"
    overrides = ['ops.allowed=["Conv"]', "memory.working_set=4GiB"]
    api.compile(model_path, "x86-64", profile="mcu", overrides=overrides, allow_violations=True, output=artifact)
    certificate = certify(artifact, loader(artifact), load_profile("mcu", overrides), None, None, host)
    found = by_attribute(certificate)
    assert not certificate.ok
    assert found["ops"].status == FAIL and "Relu" in found["ops"].measured
    assert "--allow-violations" in found["ops"].how


def test_activation_arena_is_judged_by_the_compiled_plan(digits, host):
    _, _, artifact = digits
    from edgec.deploy.artifact import open_artifact

    runtime = open_artifact(artifact).manifest["runtime_memory"]
    assert runtime["runs_in_arena"]
    arena = runtime["arena_bytes"]
    for budget, status in ((arena, PASS), (arena - 1, FAIL)):
        profile = load_profile("mcu", [f"memory.activation_arena={budget}"])
        found = by_attribute(certify(artifact, loader(artifact), profile, None, None, host))["memory.activation_arena"]
        assert found.status == status and found.values["bytes"] == arena and "compile time" in found.how


def test_accuracy_drop_against_the_float_model(digits, host):
    model_path, data_path, artifact = digits
    profile = load_profile("mcu", ["accuracy.metric=top1", "accuracy.max_drop=0.005"])
    certificate = certify(artifact, loader(artifact), profile, data_path, model_path, host)
    accuracy = by_attribute(certificate)["accuracy"]
    assert accuracy.status == PASS
    assert accuracy.values["drop"] == pytest.approx(0.0, abs=0.002)  # TVM and onnxruntime agree on argmax
    assert "float model" in accuracy.how
    without_float = certify(artifact, loader(artifact), profile, data_path, None, host)
    assert by_attribute(without_float)["accuracy"].status == UNVERIFIED


def test_mse_against_expected_outputs(digits, host, tmp_path):
    model_path, data_path, artifact = digits
    data = dict(np.load(data_path))
    data["expected_logits"] = np.concatenate([ort_run(model_path, {"image": x[None]})["logits"] for x in data["image"]])
    profile = load_profile("mcu", ["accuracy.metric=mse", "accuracy.max=1e-6"])
    accuracy = by_attribute(certify(artifact, loader(artifact), profile, data, None, host))["accuracy"]
    assert accuracy.status == PASS and accuracy.values["value"] < 1e-6
    assert "'expected_logits'" in accuracy.how


def test_power_is_estimated_from_the_declared_figure(digits, host):
    _, _, artifact = digits
    rated = dataclasses.replace(host, power_watts=65.0, power_source="a test figure")
    profile = load_profile("mcu", ["power.min_ips_per_watt=1.0"])
    power = by_attribute(certify(artifact, loader(artifact), profile, None, None, rated))["power"]
    assert power.status == PASS and power.estimated
    assert power.values["ips_per_watt"] == pytest.approx(power.values["inferences_per_s"] / 65.0)
    assert "65 W (a test figure)" in power.how
    unrated = by_attribute(certify(artifact, loader(artifact), profile, None, None, host))["power"]
    assert unrated.status == UNVERIFIED and "declares no power figure" in unrated.how


class Emulated:
    """A stand-in for a model on an emulated lab device: same surface, ``emulated`` set."""

    emulated = True

    def __init__(self, model):
        self.model = model
        self.inputs, self.outputs = model.inputs, model.outputs

    def run(self, feeds):
        return self.model.run(feeds)

    def random_inputs(self, seed=0):
        return self.model.random_inputs(seed)


def test_emulated_timings_prove_nothing(digits, digits_profile, host):
    from edgec.runtime import load

    _, data_path, artifact = digits
    model = Emulated(load(artifact))
    certificate = certify(artifact, model, load_profile(digits_profile), data_path, None, host, first_time_s=0.5)
    found = by_attribute(certificate)
    assert found["latency.steady_state"].status == UNVERIFIED and "EMULATED" in found["latency.steady_state"].how
    assert found["accuracy"].status == PASS
    assert found["memory.working_set"].status == PASS  # the whole process's peak is an upper bound under 4 GiB
    assert "upper bound" in found["memory.working_set"].how
    assert certificate.environment["emulated"] is True and not certificate.ok


def test_a_preloaded_model_without_first_time_is_unverified(digits, digits_profile, host):
    from edgec.runtime import load

    _, _, artifact = digits
    first = by_attribute(certify(artifact, load(artifact), load_profile(digits_profile), None, None, host))
    assert first["latency.first_time"].status == UNVERIFIED
    assert first["accuracy"].status == UNVERIFIED and first["accuracy"].how == "no --data given"


def test_batch_size_other_than_the_artifacts_fails(digits, digits_profile, host):
    _, _, artifact = digits
    profile = load_profile(digits_profile, ["latency.batch_size=8"])
    found = by_attribute(certify(artifact, loader(artifact), profile, None, None, host))
    for attribute in ("latency.first_time", "latency.steady_state"):
        assert found[attribute].status == FAIL and "batch of 8" in found[attribute].required
        assert "batch of 1" in found[attribute].measured and "the model fixes its batch at 1" in found[attribute].how


def test_a_batch_the_model_fixes_is_named_with_advice_that_can_be_followed(host, tmp_path):
    """The bundled example fixes its batch at 10; under mobile (batch 1) both latency lines fail
    naming both batches, and neither advises a recompile, which cannot change a fixed batch."""
    artifact = api.compile(EXAMPLE, "x86-64", output=tmp_path / "d.edgec").output
    certificate = certify(artifact, loader(artifact), load_profile("mobile"), None, None, host)
    found = by_attribute(certificate)
    for attribute in ("latency.first_time", "latency.steady_state"):
        line = found[attribute]
        assert line.status == FAIL and "batch of 1" in line.required and "batch of 10" in line.measured
        assert "the model fixes its batch at 10" in line.how and "recompile" not in line.how
    for line in certificate.measurements:  # a verdict never contradicts the line it is on
        assert (line.status == NOT_REQUIRED) == (line.required is None), line
        assert line.status != FAIL or line.measured is not None, line


def test_int8_weights_compiled_into_the_library_count_against_memory_weights(host, tmp_path):
    """The int8 kernels compile their weights in as constants: weights.bin is empty, yet the
    weights are there and are what memory.weights limits."""
    calib = EXAMPLE.parent / "digits_sample.npz"
    artifact = api.compile(EXAMPLE, "x86-64", output=tmp_path / "q.edgec", calib=calib).output
    weights = by_attribute(certify(artifact, loader(artifact), load_profile("mobile", ["memory.weights=1KiB"]),
                                   None, None, host))["memory.weights"]
    from edgec.deploy.artifact import open_artifact

    manifest = open_artifact(artifact).manifest
    assert manifest["weights"] == [] and weights.values["bytes"] == manifest["report"]["totals"]["weight_bytes"]
    assert weights.values["bytes"] > 6000 and weights.status == FAIL and "compiled into the library" in weights.how


def test_a_batch_bound_at_compile_is_advised_a_recompile(host, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from tests.models import make_model

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.ones(8, np.float32))
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [weight])
    onnx.save(model, tmp_path / "m.onnx")
    artifact = api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec").output
    steady = by_attribute(certify(artifact, loader(artifact), load_profile("mobile", ["latency.batch_size=4"]),
                                  None, None, host))["latency.steady_state"]
    assert steady.status == FAIL and "per batch of 1" in steady.measured
    assert "bound at compile from" in steady.how and "recompile it with --profile mobile" in steady.how


def test_bad_data_is_a_usage_error(digits, digits_profile, host, tmp_path):
    _, data_path, artifact = digits
    profile = load_profile(digits_profile)
    with pytest.raises(UsageError, match=r"--data: no array 'image' for the model's input \(arrays: pixels, labels\)"):
        certify(artifact, loader(artifact), profile, {"pixels": np.zeros((3, 1, 8, 8), np.float32),
                                                      "labels": np.zeros(3)}, None, host)
    with pytest.raises(UsageError, match=r"'image' has shape \[3, 8, 8\]; expected \[N, 1, 8, 8\]"):
        certify(artifact, loader(artifact), profile, {"image": np.zeros((3, 8, 8), np.float32)}, None, host)
    with pytest.raises(UsageError, match="metric top1 needs a 'labels' array"):
        certify(artifact, loader(artifact), profile, {"image": np.zeros((3, 1, 8, 8), np.float32)}, None, host)
    with pytest.raises(UsageError, match="no such file"):
        certify(artifact, loader(artifact), profile, tmp_path / "missing.npz", None, host)


def test_static_checks_name_the_nodes_of_the_trained_cnn(digits, host):
    from edgec.frontend.importer import load_model

    model_path, _, _ = digits
    model = load_model(model_path, {})
    assert check_static(load_profile("mcu"), model, host).ok
    strict = load_profile("mcu", ['ops.allowed=["Conv", "Relu", "MaxPool", "Flatten"]', 'dtypes.storage=["int8"]'])
    report = check_static(strict, model, host)
    violations = {v.attribute: v for v in report.violations}
    assert set(violations) == {"ops", "dtypes.storage"}
    gemm = [n for n in model.graph.nodes if n.op_type == "Gemm"][0]
    assert violations["ops"].where == [f"{gemm.name} (Gemm)"]
    assert "float32" in violations["dtypes.storage"].found
    assert f"FAIL ops: required only Conv, Relu, MaxPool, Flatten; found Gemm (1 node) at {gemm.name} (Gemm)" in report.format()


# -- static checks on small graphs (no torch needed) ----------------------------------------------

ARENA = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,256]
  %a = Relu(%x) : float32[1,256] @first
  %b = Relu(%a) : float32[1,256] @second
  %c = Add(%a, %b) : float32[1,256] @add
  output %c
}
"""


def test_arena_estimate_is_the_peak_of_live_bytes():
    estimate = estimate_arena(parse_model(ARENA).graph)
    # first: x, a live (2 KiB); second: a, b (x is dead); add: a, b, c = 3 KiB
    assert estimate.peak == 3 * 1024
    assert estimate.at == "node add"
    assert estimate.where == ["a (1.0 KiB)", "b (1.0 KiB)", "c (1.0 KiB)"]
    assert estimate.unknown == 0


def test_memory_budgets_say_estimated_and_how(host):
    profile = load_profile("mcu", ["memory.activation_arena=2KiB", "memory.weights=1KiB"])
    report = check_static(profile, import_proto(small_cnn()), host)
    violations = {v.attribute: v for v in report.violations}
    assert set(violations) == {"memory.weights", "memory.activation_arena", "ops"}  # Identity, Dropout are not in mcu
    arena = violations["memory.activation_arena"]
    assert arena.estimated and "without a memory plan" in arena.how
    assert violations["memory.weights"].where[0].startswith("conv2.w (")  # the largest first
    text = report.format()
    assert "FAIL memory.activation_arena: required <= 2KiB; found" in text and "(estimated)" in text
    assert "how: estimated without a memory plan" in text
    assert set(violations["ops"].where) == {"identity (Identity)", "dropout (Dropout)"}


def test_working_set_over_the_target_memory(host):
    small = dataclasses.replace(host, memory_bytes=1024)
    report = check_static(load_profile("basic-audio"), import_proto(small_cnn()), small)
    assert [v.attribute for v in report.violations] == ["target x86-64 memory"]
    assert report.to_dict()["checks"][0]["estimated"] is True


QUANTIZED = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,4]
  init %wq: int8[4,2] = [1, -2, 3, -4, 5, -6, 7, -8]
  init %scale: float32[] = [0.5]
  init %zero: int8[] = [0]
  init %wf: float32[2,2] = [1.0, 0.0, 0.0, 1.0]
  %w = DequantizeLinear(%wq, %scale, %zero) : float32[4,2] @dq
  %y = MatMul(%x, %w) : float32[1,2] @quantized
  %z = MatMul(%y, %wf) : float32[1,2] @float
  output %z
}
"""


def test_quantization_checks_name_float_weights_and_schemes(host):
    model = parse_model(QUANTIZED)
    profile = load_profile("mobile", ["quantization.required=true", "quantization.scheme=per-channel",
                                      "quantization.symmetric=true"])
    found = {f.attribute: f for f in check_static(profile, model, host).checks}
    assert not found["quantization.required"].ok and found["quantization.required"].where == ["float (MatMul)"]
    assert not found["quantization.scheme"].ok and found["quantization.scheme"].where == ["wq (dq)"]
    assert found["quantization.symmetric"].ok
    per_tensor = load_profile("mobile", ["quantization.scheme=per-tensor", "quantization.symmetric=false"])
    found = {f.attribute: f for f in check_static(per_tensor, model, host).checks}
    assert found["quantization.scheme"].ok and not found["quantization.symmetric"].ok


def test_compute_dtypes_name_the_producing_node(host):
    profile = load_profile("mcu", ['dtypes.compute=["int8"]'])
    report = check_static(profile, parse_model(ARENA), host)
    compute = report.violations[0]
    assert compute.attribute == "dtypes.compute" and compute.found == "float32"
    assert compute.where[:2] == ["x (float32, from the graph input)", "a (float32, from first)"]


# -- data locality: the ELF dynamic symbol table ------------------------------------------------

@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a library that opens a socket")
def test_elf_imports_find_socket_calls(tmp_path):
    source = tmp_path / "net.c"
    source.write_text("#include <sys/socket.h>\nint phone_home(void) { return connect(socket(2, 1, 0), 0, 0); }\n")
    library = tmp_path / "libnet.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", library, source], check=True)
    symbols, needed = elf_imports(library.read_bytes())
    assert {"socket", "connect"} <= symbols
    assert any(lib.startswith("libc.so") for lib in needed)


def test_elf_imports_of_the_artifact(digits):
    from edgec.deploy.artifact import LIBRARY, open_artifact

    _, _, artifact = digits
    symbols, _ = elf_imports(open_artifact(artifact).read_member(LIBRARY))
    assert symbols and not symbols & {"socket", "connect", "getaddrinfo"}


# -- the command line ---------------------------------------------------------------------


def test_command_line_certificate_passes_then_fails_on_a_1us_latency(digits, digits_profile, tmp_path, capsys):
    from edgec.cli import main

    model_path, data_path, _ = digits
    artifact = tmp_path / "digits.edgec"
    api.compile(model_path, "x86-64", output=artifact, profile=digits_profile)
    capsys.readouterr()
    assert main(["check", str(artifact), "--data", str(data_path), "-o", str(tmp_path / "cert.json")]) == 0
    assert "COMPLIANT" in capsys.readouterr().out
    certificate = json.loads((tmp_path / "cert.json").read_text())
    assert certificate["ok"] is True
    accuracy = next(m for m in certificate["measurements"] if m["attribute"] == "accuracy")
    assert accuracy["status"] == "pass" and accuracy["values"]["value"] >= 0.95

    code = main(["check", str(artifact), "--data", str(data_path), "--profile", str(digits_profile),
                 "--set", "latency.steady_state=1us", "--json"])
    captured = capsys.readouterr()
    assert code == 3 and "does not comply with profile digits" in captured.err
    failing = json.loads(captured.out)
    latency = next(m for m in failing["measurements"] if m["attribute"] == "latency.steady_state")
    assert failing["ok"] is False and latency["status"] == "fail" and latency["measured"]


def test_annotated_model_carries_its_profile_into_the_compile(tmp_path, capsys):
    import onnx

    from edgec.cli import main
    from edgec.deploy.artifact import open_artifact

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    assert main(["annotate", str(tmp_path / "m.onnx"), "--profile", "smart-device", "-o", str(tmp_path / "a.onnx")]) == 0
    props = {p.key: p.value for p in onnx.load(tmp_path / "a.onnx").metadata_props}
    assert props["edge.profile.name"] == "smart-device"
    api.compile(tmp_path / "a.onnx", "x86-64", output=tmp_path / "a.edgec")
    manifest = open_artifact(tmp_path / "a.edgec").manifest
    assert manifest["profile"]["name"] == "smart-device" and manifest["compliance"]["ok"] is True


def test_command_line_profile_errors_exit_2_and_violations_exit_3(tmp_path, capsys):
    import onnx

    from edgec.cli import main

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    (tmp_path / "bad.toml").write_text('schema = 1\n[memory]\nweights = "lots"\n')
    out = tmp_path / "m.edgec"
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(out), "--profile", str(tmp_path / "bad.toml")]) == 2
    assert "bad.toml:3: field 'memory.weights'" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(out), "--profile", "mcu",
                 "--set", "memory.weights=1KiB"]) == 3
    err = capsys.readouterr().err
    assert "cannot meet its profile" in err and "FAIL memory.weights: required <= 1KiB" in err and "conv1.w" in err
    assert not out.exists()
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(out), "-q", "--profile", "mcu",
                 "--set", "memory.weights=1KiB", "--allow-violations"]) == 0
    from edgec.deploy.artifact import open_artifact

    compliance = open_artifact(out).manifest["compliance"]
    assert compliance["ok"] is False and compliance["violations_allowed"] is True


def test_planned_arena_budget_fails_just_below_the_plan_and_passes_at_it(tmp_path, capsys):
    import onnx

    from edgec.cli import main
    from edgec.deploy.artifact import open_artifact

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    out = tmp_path / "m.edgec"
    api.compile(tmp_path / "m.onnx", "x86-64", output=out)
    manifest = open_artifact(out).manifest
    planned = manifest["memory_plan"]["arena_bytes"]
    assert manifest["runtime_memory"]["arena_bytes"] == planned  # lowering keeps this model's tensors
    out.unlink()
    code = main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(out), "-q", "--profile", "infra-edge",
                 "--set", f"memory.activation_arena={planned - 1}"])
    err = capsys.readouterr().err
    assert code == 3 and not out.exists()
    assert "FAIL memory.activation_arena" in err and "lower bound" in err
    assert "largest live set:" in err and "over the budget" in err  # the step, its tensors, and what would help
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(out), "-q", "--profile", "infra-edge",
                 "--set", f"memory.activation_arena={planned}"]) == 0
