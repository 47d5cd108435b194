"""The command line end to end: compile, run, inspect, targets, opt, and every kind of
bad input giving one clear line, the right exit code and no output file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import click
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.cli import main
from tests.conftest import assert_close, without_progress
from tests.models import make_model, ort_run, random_feeds, small_cnn


def edgec(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def cnn_artifact(tmp_path_factory):
    """small_cnn compiled once for the tests that only read an artifact."""
    directory = tmp_path_factory.mktemp("cnn")
    onnx.save(small_cnn(), directory / "cnn.onnx")
    assert main(["compile", str(directory / "cnn.onnx"), "--target", "x86-64", "-o", str(directory / "cnn.edgec"), "-q"]) == 0
    return directory


def test_compile_and_run_match_onnxruntime(cnn_artifact, tmp_path, capsys):
    feeds = random_feeds(small_cnn())
    np.savez(tmp_path / "in.npz", **feeds)
    code, _, err = edgec(capsys, "run", cnn_artifact / "cnn.edgec", "--inputs", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    assert code == 0, err
    with np.load(tmp_path / "out.npz") as out:
        assert_close({k: out[k] for k in out.files}, ort_run(small_cnn(), feeds))


def test_run_prints_outputs_and_takes_npy_inputs(cnn_artifact, tmp_path, capsys):
    np.save(tmp_path / "x.npy", random_feeds(small_cnn())["x"])
    code, out, err = edgec(capsys, "run", cnn_artifact / "cnn.edgec", "--input", f"x={tmp_path / 'x.npy'}")
    assert code == 0, err
    assert out.startswith("logits: float32[1, 10] [")
    code, out, _ = edgec(capsys, "run", cnn_artifact / "cnn.edgec", "--random-inputs", "--seed", "3")
    assert code == 0 and out.startswith("logits:")


def test_run_rejects_bad_inputs_clearly(cnn_artifact, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    code, _, err = edgec(capsys, "run", cnn_artifact / "cnn.edgec", "--inputs", tmp_path / "bad.npz")
    assert (code, err) == (1, "edgec: error: input 'x' must have shape [1, 3, 16, 16], got [1, 3, 8, 8]\n")
    np.savez(tmp_path / "bad.npz", y=np.zeros((1, 3, 16, 16), np.float32))
    code, _, err = edgec(capsys, "run", cnn_artifact / "cnn.edgec", "--inputs", tmp_path / "bad.npz")
    assert (code, err) == (1, "edgec: error: missing input 'x'; the model takes x\n")
    code, _, err = edgec(capsys, "run", cnn_artifact / "cnn.edgec")
    assert code == 2 and "give exactly one of --inputs" in err


def test_inspect_shows_the_manifest(cnn_artifact, capsys):
    code, out, _ = edgec(capsys, "inspect", cnn_artifact / "cnn.edgec", "--json")
    manifest = json.loads(out)
    assert code == 0
    assert manifest["format_version"] == 1
    assert manifest["pipeline"] == "remove-identity,fold-constants,fold-batchnorm,fold-conv-affine,eliminate-dead,reorder-for-memory"
    assert manifest["signature"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 16, 16]}]
    assert manifest["target"]["tvm_target"]["kind"] == "llvm"
    assert set(manifest["members"]) == {"model.so", "weights.bin"}
    assert len(manifest["source"]["sha256"]) == 64
    code, out, _ = edgec(capsys, "inspect", cnn_artifact / "cnn.edgec")
    assert code == 0 and "target     x86-64" in out and "input      x: float32[1, 3, 16, 16]" in out


def test_same_inputs_give_the_same_bytes(cnn_artifact, capsys):
    again = cnn_artifact / "again.edgec"
    assert edgec(capsys, "compile", cnn_artifact / "cnn.onnx", "-t", "x86-64", "-o", again, "-q")[0] == 0
    assert again.read_bytes() == (cnn_artifact / "cnn.edgec").read_bytes()


def test_progress_is_a_line_per_step_off_a_terminal(tmp_path, capsys):
    """A CI log gets each compile step as it starts (the spinner is for terminals), and -q none."""
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    code, _, err = edgec(capsys, "compile", tmp_path / "cnn.onnx", "-t", "x86-64", "-o", tmp_path / "c.edgec")
    assert code == 0, err
    lines = err.splitlines()
    steps = [line.split("] ", 1)[1] for line in lines if line.startswith("edgec: [")]
    assert steps == ["importing", "running passes", "lowering for x86-64 with TVM", "writing artifact"]
    assert lines[-1].startswith(f"wrote {tmp_path / 'c.edgec'}")
    code, _, err = edgec(capsys, "compile", tmp_path / "cnn.onnx", "-t", "x86-64", "-o", tmp_path / "c.edgec", "-q")
    assert (code, err) == (0, "")


def test_instrument_flags(tmp_path, capsys):
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    code, _, err = edgec(capsys, "compile", tmp_path / "cnn.onnx", "-t", "x86-64", "-o", tmp_path / "c.edgec", "-q",
                         "--print-ir-after-all", "--timing", "--pass-statistics", "--dump-ir-dir", tmp_path / "ir",
                         "--passes", "remove-identity,fold-batchnorm,eliminate-dead")
    assert code == 0, err
    assert err.count("// -----// IR Dump After") == 3
    assert "Execution time report" in err and "(S)      1 folded-into-conv" in err
    assert sorted(p.name for p in (tmp_path / "ir").iterdir())[0] == "000_input.txt"


def test_opt_prints_ir_and_writes_onnx(tmp_path, capsys):
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    code, out, _ = edgec(capsys, "opt", tmp_path / "cnn.onnx", "--passes", "remove-identity")
    assert code == 0 and out.startswith("model ir_version=8") and "Identity" not in out
    assert edgec(capsys, "opt", tmp_path / "cnn.onnx", "-o", tmp_path / "out.onnx")[0] == 0
    feeds = random_feeds(small_cnn())
    assert_close(ort_run(tmp_path / "out.onnx", feeds), ort_run(small_cnn(), feeds))


def test_json_on_run_passes_opt_and_quantize(cnn_artifact, tmp_path, capsys):
    feeds = random_feeds(small_cnn())
    np.savez(tmp_path / "in.npz", **feeds)
    code, out, err = edgec(capsys, "run", cnn_artifact / "cnn.edgec", "--inputs", tmp_path / "in.npz", "--json")
    assert code == 0, err
    logits = json.loads(out)["logits"]
    assert (logits["dtype"], logits["shape"]) == ("float32", [1, 10])
    assert_close({"logits": np.array(logits["values"], np.float32)}, ort_run(small_cnn(), feeds))

    code, out, _ = edgec(capsys, "passes", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["passes"]["fold-constants"]["options"]["size-limit"] == "1GiB"
    assert ",".join(listed["pipelines"]["default"]) == "remove-identity,fold-constants,fold-batchnorm,fold-conv-affine," \
                                                      "eliminate-dead,reorder-for-memory"

    code, out, _ = edgec(capsys, "opt", cnn_artifact / "cnn.onnx", "--passes", "remove-identity,eliminate-dead", "--json")
    summary = json.loads(out)
    assert code == 0 and [p["pass"] for p in summary["passes"]] == ["remove-identity", "eliminate-dead"]
    assert summary["passes"][0]["modified"] and summary["nodes_after"] < summary["nodes_before"]
    assert summary["ir"].startswith("model ir_version=8") and "Identity" not in summary["ir"]
    code, out, _ = edgec(capsys, "opt", cnn_artifact / "cnn.onnx", "-o", tmp_path / "o.txt", "--json")
    assert code == 0 and "ir" not in json.loads(out) and (tmp_path / "o.txt").read_text().startswith("model ")

    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    code, out, err = edgec(capsys, "quantize", cnn_artifact / "cnn.onnx", "--calib", tmp_path / "calib.npz", "--report",
                           "--json", "-o", tmp_path / "q.onnx")
    assert code == 0, err
    result = json.loads(out)
    assert result["output"] == str(tmp_path / "q.onnx") and result["activation_pairs"] > 0
    assert {layer["op"] for layer in result["layers"]} == {"Conv", "Gemm"}


def test_targets_lists_x86(capsys):
    code, out, _ = edgec(capsys, "targets", "--json")
    targets = {t["name"]: t for t in json.loads(out)}
    assert code == 0 and targets["x86-64"]["runs_here"] is True
    assert targets["x86-64"]["tvm_target"]["num-cores"] >= 1


def test_help_everywhere(capsys):
    for command in ([], ["compile"], ["run"], ["inspect"], ["targets"], ["opt"], ["passes"]):
        code, out, _ = edgec(capsys, *command, "--help")
        assert code == 0 and "Usage:" in out
    assert "Exit codes" in edgec(capsys, "compile", "--help")[1]


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "edgec.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "edgec, version" in result.stdout


# -- bad input ------------------------------------------------------------------------


def write_onnx(path: Path, model: onnx.ModelProto) -> Path:
    onnx.save(model, path)
    return path


def add_model(opset=17, shape=(2, 3)):
    return make_model(
        [helper.make_node("Add", ["x", "b"], ["y"], name="add")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
        [numpy_helper.from_array(np.ones(3, np.float32), "b")],
        opset=opset,
    )


def missing_external(tmp: Path) -> list:
    onnx.save(add_model(), tmp / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp / "w.bin").unlink()
    return [tmp / "m.onnx"]


def unknown_domain(tmp: Path) -> list:
    model = add_model()
    model.graph.node.append(helper.make_node("Frob", ["y"], ["z"], domain="com.example", name="frob"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return [write_onnx(tmp / "m.onnx", model)]


def truncated(tmp: Path) -> list:
    data = small_cnn().SerializeToString()
    (tmp / "m.onnx").write_bytes(data[: len(data) // 2])
    return [tmp / "m.onnx"]


def not_onnx(tmp: Path) -> list:
    (tmp / "m.onnx").write_text("name,score\nalice,3\n" * 50)
    return [tmp / "m.onnx"]


BAD_INPUTS = {
    "missing file": (lambda tmp: [tmp / "absent.onnx"], 2, "absent.onnx: no such file"),
    "not onnx": (not_onnx, 1, "m.onnx: "),
    "truncated": (truncated, 1, "m.onnx: cannot parse the ONNX model (it looks truncated"),
    "opset onnx cannot load": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model(opset=99))], 1, "opset 99 is newer than this onnx supports"),
    "missing external data": (missing_external, 1, "external data file 'w.bin' for initializer 'b' not found"),
    "unknown domain": (unknown_domain, 1, "node 'frob' (Frob) uses unknown op domain 'com.example'"),
    "symbolic dim": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model(shape=(2, "n")))], 1,
                     "input 'x' dim 1 is symbolic ('n'); bind it with --dim n=N or --input-shape x=2xN"),
    "unknown dim name": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model(shape=("n", 3))), "--dim", "seq=4"], 2,
                         "--dim seq: no input of the model has a dim named 'seq' (symbolic dims: n)"),
    "bad dim": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model()), "--dim", "n=0"], 2, "--dim 'n=0': expected NAME=VALUE"),
    "unknown target": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model()), "--target", "z80"], 2, "--target z80: unknown target"),
    "output dir missing": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model()), "-o", tmp / "no" / "o.edgec"], 2, "does not exist"),
    "output under a file": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model()), "-o", tmp / "m.onnx" / "o.edgec"], 2, "is not a directory"),
    "bad flag": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model()), "--frobnicate"], 2, "No such option '--frobnicate'"),
    "bad pipeline": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model()), "--passes", "fold-everything"], 2, "unknown pass 'fold-everything'"),
    "bad input shape": (lambda tmp: [write_onnx(tmp / "m.onnx", add_model()), "--input-shape", "x=2by3"], 2, "expected NAME=DxDx"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_clear_line_and_no_output(case, tmp_path, capsys):
    make_args, expected_code, expected_text = BAD_INPUTS[case]
    (work := tmp_path / "work").mkdir()
    args = make_args(work)
    if "--target" not in args:
        args += ["--target", "x86-64"]
    if "-o" not in args:
        args += ["-o", work / "out.edgec"]
    before = set(work.iterdir())
    code, out, err = edgec(capsys, "compile", *args)
    assert code == expected_code, err
    assert expected_text in err
    err = without_progress(err)
    assert err.count("\n") == 1 and "error:" in err and out == ""
    assert set(work.iterdir()) == before  # nothing written, not even a temp file


def test_check_compares_with_onnxruntime(cnn_artifact, tmp_path, capsys):
    code, out, err = edgec(capsys, "check", cnn_artifact / "cnn.edgec", "--model", cnn_artifact / "cnn.onnx")
    assert code == 0, err
    assert out.startswith("logits: max|diff| ") and out.rstrip().endswith(": ok")
    # The same artifact checked against a model with other weights must fail.
    onnx.save(small_cnn(seed=5), tmp_path / "other.onnx")
    code, out, err = edgec(capsys, "check", cnn_artifact / "cnn.edgec", "--model", tmp_path / "other.onnx")
    assert code == 1 and "MISMATCH" in out and "outputs differ from onnxruntime" in err


def test_bench_reports_first_time_and_steady_state(cnn_artifact, capsys):
    code, out, err = edgec(capsys, "bench", cnn_artifact / "cnn.edgec", "--repeat", "5", "--json")
    timing = json.loads(out)
    assert code == 0, err
    assert timing["runs"] == 5 and timing["emulated"] is False
    assert timing["first_ms"] > 0 and timing["p10_ms"] <= timing["median_ms"] <= timing["p90_ms"]
    code, out, _ = edgec(capsys, "bench", cnn_artifact / "cnn.edgec", "--repeat", "0")
    assert code == 2


def test_profiles_list_and_show(capsys):
    code, out, _ = edgec(capsys, "profiles", "list", "--json")
    profiles = json.loads(out)
    assert code == 0 and {"mobile", "smart-device", "infra-edge", "mcu", "basic-2d-image", "advanced-2d-image",
                          "basic-audio", "advanced-audio"} <= set(profiles)
    code, out, _ = edgec(capsys, "profiles", "show", "mcu", "--set", "memory.working_set=256KiB", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["memory"]["working_set"] == "256KiB" and shown["sources"][-1] == "--set memory.working_set=256KiB"
    code, out, _ = edgec(capsys, "profiles", "show", "mobile")
    assert code == 0 and "[latency]" in out
    code, _, err = edgec(capsys, "profiles", "show", "no-such-profile")
    assert code == 2 and "no-such-profile" in err


def test_compile_warns_when_a_fixed_batch_is_not_the_profiles(capsys, caplog, tmp_path):
    """The bundled MLP's batch is fixed at 10; mobile measures latency at batch 1: said at compile
    time, once, with the way out."""
    example = Path(__file__).resolve().parent.parent / "examples" / "digits_mlp.onnx"
    code, _, _ = edgec(capsys, "compile", example, "-t", "x86-64", "--profile", "mobile", "-o", tmp_path / "m.edgec", "-q")
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "fixed batch" in r.getMessage()]
    assert warnings == [f"{example}: input 'image' has a fixed batch of 10, and profile mobile's latency.batch_size "
                        "is 1: latency is measured per batch of 10; export the model with a symbolic batch dim to "
                        "compile it at the profile's batch size"]
    caplog.clear()
    code, _, _ = edgec(capsys, "compile", example, "-t", "x86-64", "--profile", "mobile", "--set",
                       "latency.batch_size=10", "-o", tmp_path / "m10.edgec", "-q")
    assert code == 0 and not any("fixed batch" in r.getMessage() for r in caplog.records)


def test_every_command_takes_verbose_and_quiet(capsys, tmp_path):
    """-v and -q after the command name set logging as they do before it."""
    import logging

    from edgec.cli import main_group

    for name, command in main_group.commands.items():
        opts = {opt for param in command.params for opt in param.opts}
        assert isinstance(command, click.Group) or {"-v", "-q"} <= opts, name
    example = Path(__file__).resolve().parent.parent / "examples" / "digits_mlp.onnx"
    root, before = logging.getLogger(), logging.getLogger().level
    try:
        assert edgec(capsys, "inspect", example, "-v")[0] != 0  # not an artifact: refused, after -v took effect
        assert root.level == logging.INFO
        assert edgec(capsys, "targets", "-q")[0] == 0
        assert root.level == logging.ERROR
    finally:
        root.setLevel(before)
