"""What build systems rely on: depfiles, a cache safe under make -j, machine-readable output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import edgec
from edgec.cli import main
from tests.models import add_external_weights, small_cnn

EXAMPLES = Path(__file__).parent.parent / "examples"


def compile_json(*args) -> dict:
    result = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", *map(str, args), "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_depfile_lists_the_model_and_its_external_data(tmp_path, capsys):
    model = add_external_weights(small_cnn(), tmp_path / "my model.onnx", "my weights.bin")
    code = main(["compile", str(model), "-t", "x86-64", "-o", str(tmp_path / "out.edgec"), "-q",
                 "--depfile", str(tmp_path / "out.d")])
    assert code == 0, capsys.readouterr().err
    text = (tmp_path / "out.d").read_text()
    target, _, deps = text.partition(": ")
    assert target == str(tmp_path / "out.edgec")
    assert str(tmp_path / "my\\ model.onnx") in deps and str(tmp_path / "my\\ weights.bin") in deps


def test_custom_target_file_is_a_dependency(tmp_path, capsys):
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    (tmp_path / "board.toml").write_text('base = "x86-64"\ncores = 1\n')
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", str(tmp_path / "board.toml"), "-o", str(tmp_path / "o.edgec"),
                 "-q", "--depfile", str(tmp_path / "o.d")]) == 0
    assert str(tmp_path / "board.toml") in (tmp_path / "o.d").read_text()


def test_cache_reuses_identical_compiles_and_is_safe_in_parallel(tmp_path):
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen([sys.executable, "-m", "edgec.cli", "compile", str(tmp_path / "m.onnx"), "-t", "x86-64",
                          "-o", str(tmp_path / f"o{i}.edgec"), "--cache-dir", str(cache), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["cached"] for r in results) == [False, True, True]  # compiled once, then reused
    assert len({r["sha256"] for r in results}) == 1
    assert not [p for p in cache.iterdir() if p.suffix == ".tmp"]

    # Another input (other weights) is another key.
    onnx.save(small_cnn(seed=1), tmp_path / "m.onnx")
    other = compile_json(tmp_path / "m.onnx", "-t", "x86-64", "-o", tmp_path / "o3.edgec", "--cache-dir", cache)
    assert other["cached"] is False and other["sha256"] != results[0]["sha256"]


def build_env() -> dict:
    """PATH with this interpreter's bin first, so the builds find this edgec."""
    import os

    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def run(*command, cwd=None) -> str:
    result = subprocess.run(command, cwd=cwd, env=build_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake (CI installs it from Debian)")
def test_cmake_module_rebuilds_exactly_when_an_input_changes(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(EXAMPLES / "cmake", source / "cmake")
    shutil.copy(EXAMPLES / "digits_mlp.onnx", source / "digits_mlp.onnx")
    build = tmp_path / "build"
    run("cmake", "-S", source / "cmake", "-B", build)

    # Two models sharing the cache, built in parallel: one compile, one cache copy, same bytes.
    assert run("cmake", "--build", build, "-j", "2").count("edgec: compiling") == 2
    artifact, spare = build / "digits-x86-64.edgec", build / "spare" / "digits-x86-64.edgec"
    assert artifact.read_bytes() == spare.read_bytes()
    assert len(list((build / "edgec-cache").glob("*.edgec"))) == 1
    depfile = (build / "digits-x86-64.edgec.d").read_text()
    assert "digits_mlp.onnx" in depfile and "board-profile.toml" in depfile and "mcu.toml" in depfile

    assert "edgec: compiling" not in run("cmake", "--build", build)  # nothing changed
    (source / "cmake" / "unrelated.txt").write_text("x")
    assert "edgec: compiling" not in run("cmake", "--build", build)
    touch_later(source / "cmake" / "board-profile.toml")
    assert run("cmake", "--build", build).count("edgec: compiling") == 2
    touch_later(source / "digits_mlp.onnx")
    assert run("cmake", "--build", build).count("edgec: compiling") == 2


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake (CI installs it from Debian)")
def test_cmake_module_refuses_an_unknown_keyword(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.20)\nproject(p NONE)\n"
        f"include({Path(edgec.__file__).parent / 'cmake' / 'edgec.cmake'})\n"
        "edgec_add_model(m MODEL m.onnx TARGET x86-64 CALIB data.npz)\n")
    done = subprocess.run(["cmake", "-S", tmp_path, "-B", tmp_path / "build"], env=build_env(), capture_output=True,
                          text=True)
    assert done.returncode != 0
    assert "edgec_add_model(m): unknown arguments: CALIB;data.npz" in done.stderr.replace("\n", "")


def test_quiet_compile_prints_nothing(tmp_path):
    shutil.copy(EXAMPLES / "digits_mlp.onnx", tmp_path / "m.onnx")
    done = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", tmp_path / "m.onnx", "-t", "x86-64",
                           "-o", tmp_path / "m.edgec", "-q"], capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "m.edgec").is_file()
    assert (done.stdout, done.stderr) == ("", "")


def test_compiles_from_clean_states_are_byte_identical(tmp_path):
    outputs = []
    for attempt in ("one", "two"):
        workdir = tmp_path / attempt
        workdir.mkdir()
        shutil.copy(EXAMPLES / "digits_mlp.onnx", workdir / "model.onnx")
        outputs.append(compile_json(workdir / "model.onnx", "-t", "x86-64", "-o", workdir / "out.edgec", "--profile", "mobile"))
    assert outputs[0]["sha256"] == outputs[1]["sha256"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make (CI installs it from Debian)")
def test_makefile_example_uses_the_depfile(tmp_path):
    shutil.copytree(EXAMPLES / "make", tmp_path / "make")
    shutil.copy(EXAMPLES / "digits_mlp.onnx", tmp_path / "digits_mlp.onnx")
    assert "edgec compile" in run("make", "-C", tmp_path / "make", "-j2")
    assert "edgec compile" not in run("make", "-C", tmp_path / "make")
    touch_later(tmp_path / "digits_mlp.onnx")
    assert "edgec compile" in run("make", "-C", tmp_path / "make")


def touch_later(path: Path) -> None:
    """Bump mtime past the outputs' (coarse filesystem clocks otherwise tie)."""
    import os
    import time

    later = time.time() + 5
    os.utime(path, (later, later))
