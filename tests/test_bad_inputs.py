"""The bad-input corpus through the CLI: each case exits with its documented code and
one line naming the culprit, and leaves no file behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec import api
from edgec.cli import main
from tests.bad_models import CASES, arena, relu, saved
from tests.conftest import without_progress


def one_line_error(capfd, code: int, argv: list[str], culprit: str) -> str:
    capfd.readouterr()
    assert main(argv) == code
    err = without_progress(capfd.readouterr().err)
    assert err.count("\n") == 1 and err.startswith("edgec") and "internal error" not in err, err
    assert culprit in err, err
    return err


@pytest.mark.parametrize("build, code, culprit", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_model_is_refused_in_one_line(tmp_path, capfd, build, code, culprit):
    model = build(tmp_path)
    before = set(tmp_path.iterdir())
    err = one_line_error(capfd, code, ["compile", str(model), "-t", "x86-64", "-o", str(tmp_path / "m.edgec")], culprit)
    assert str(model) in err
    assert set(tmp_path.iterdir()) == before


def test_huge_input_under_a_profile_is_a_profile_violation(tmp_path, capfd):
    model = saved(relu((1 << 40, 64)))(tmp_path)
    one_line_error(capfd, 3, ["compile", str(model), "-t", "x86-64", "--profile", "infra-edge",
                              "-o", str(tmp_path / "m.edgec")], "tensor 'x'")
    assert not (tmp_path / "m.edgec").exists()


def test_arena_larger_than_the_target_memory_is_refused(tmp_path, capfd):
    model = arena(tmp_path)
    one_line_error(capfd, 1, ["compile", str(model), "-t", "arm64-a53", "-o", str(tmp_path / "m.edgec")],
                   "the activation arena needs 1.5 GiB, more than target arm64-a53's memory (1.0 GiB)")
    assert not (tmp_path / "m.edgec").exists()


@pytest.mark.parametrize("argv", [
    ["run", "{garbage}", "--random-inputs", "--output", "{missing}/out.npz"],
    ["check", "{garbage}", "--profile", "mcu", "-o", "{missing}/cert.json"],
    ["annotate", "{garbage}", "--profile", "mcu", "-o", "{missing}/a.onnx"],
    ["opt", "{garbage}", "-o", "{missing}/o.onnx"],
], ids=["run", "check", "annotate", "opt"])
def test_output_path_is_checked_before_any_work(tmp_path, capfd, argv):
    """The input is garbage, so any work before the check would fail differently (exit 1)."""
    (tmp_path / "garbage").write_bytes(b"\x08garbage")
    argv = [a.format(garbage=tmp_path / "garbage", missing=tmp_path / "missing") for a in argv]
    one_line_error(capfd, 2, argv, f"{tmp_path / 'missing'} does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage"]


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad-inputs")
    saved(relu())(directory)
    api.compile(directory / "bad.onnx", "x86-64", output=directory / "m.edgec")
    return directory / "m.edgec"


def test_pickled_inputs_are_refused(small_artifact, tmp_path, capfd):
    np.savez(tmp_path / "p.npz", x=np.array([object()], dtype=object))
    one_line_error(capfd, 2, ["run", str(small_artifact), "--inputs", str(tmp_path / "p.npz")], "pickled objects")
    np.save(tmp_path / "p.npy", np.array([object()], dtype=object))
    one_line_error(capfd, 2, ["run", str(small_artifact), "--input", f"x={tmp_path / 'p.npy'}"], "pickled objects")
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04 not a zip")
    one_line_error(capfd, 2, ["run", str(small_artifact), "--inputs", str(tmp_path / "z.npz")], "not a NumPy file")


def test_stale_temporary_of_a_killed_compile_is_removed(small_artifact, tmp_path):
    """A dead process's temp file goes; a live one's (this process) stays."""
    model = saved(relu())(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".m.edgec.{int(dead.stdout)}-abc123.tmp"
    live = tmp_path / f".m.edgec.{__import__('os').getpid()}-def456.tmp"
    stale.write_bytes(b"half an artifact")
    live.write_bytes(b"being written")
    api.compile(model, "x86-64", output=tmp_path / "m.edgec")
    assert not stale.exists() and live.exists()


def test_ctrl_c_during_startup_imports_is_one_line(tmp_path):
    """A KeyboardInterrupt raised while the CLI's modules import, as a Ctrl-C there would."""
    script = textwrap.dedent("""
        import sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "click":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        from edgec.entry import main
        sys.exit(main())
    """)
    done = subprocess.run([sys.executable, "-c", script, "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (130, "edgec: aborted\n")


@pytest.mark.parametrize("shape, loads", [((2, 0), False), ((1, 0, 3), False), ((0,), True), ((0, 2), True)])
def test_empty_constant_output_is_refused_where_tvm_cannot_load_it(tmp_path, capfd, shape, loads):
    """TVM writes a constant with no elements whose first dim is not 0 into the library in a
    form its loader rejects; that compile refuses, naming the output, instead of writing an
    artifact that never loads. The empty constants TVM does load still compile and run."""
    from onnx import TensorProto, helper, numpy_helper

    from edgec import runtime

    empty = numpy_helper.from_array(np.zeros(shape, np.float32), "e")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["state"], value=empty), helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, list(shape))])
    model = tmp_path / "empty_state.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    argv = ["compile", str(model), "-t", "x86-64", "-o", str(tmp_path / "m.edgec")]
    if loads:
        assert main(argv) == 0
        outputs = runtime.load(tmp_path / "m.edgec").run({"x": np.ones((2, 3), np.float32)})
        assert outputs["state"].shape == shape
        return
    one_line_error(capfd, 1, argv, f"graph output 'state' is an empty constant (shape {'x'.join(map(str, shape))})")
    assert not (tmp_path / "m.edgec").exists()
