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
import edgec.deploy.artifact
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


def test_depfile_lists_the_calibration_data_and_the_tuning_records(tmp_path, capsys):
    """Editing calibration data or re-tuning changes the artifact, so a build must watch those files."""
    from edgec.targets import get_target
    from edgec.targets.tuning import TUNING_META, open_database, record_files

    shutil.copy(EXAMPLES / "digits_mlp.onnx", tmp_path / "m.onnx")
    shutil.copy(EXAMPLES / "digits_sample.npz", tmp_path / "calib data.npz")
    db = tmp_path / "tuning"
    open_database(db, get_target("x86-64"), create=True)
    records = [path for path in record_files(db) if path.is_file()]
    # edgec's target file and MetaSchedule's two JSON-lines files all exist once a database is made.
    assert sorted(p.name for p in records) == sorted(p.name for p in db.iterdir())
    assert {TUNING_META, "database_workload.json", "database_tuning_record.json"} <= {p.name for p in records}

    code = main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(tmp_path / "o.edgec"), "-q",
                 "--calib", str(tmp_path / "calib data.npz"), "--tuning-db", str(db), "--depfile", str(tmp_path / "o.d")])
    assert code == 0, capsys.readouterr().err
    deps = (tmp_path / "o.d").read_text().partition(": ")[2].split(" \\\n  ")
    assert [d.strip() for d in deps] == [str(tmp_path / "m.onnx"), str(tmp_path / "calib\\ data.npz"),
                                         *(str(p) for p in records)]


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


CMAKE = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake (CI installs it from Debian)")


def rebuilt(build: Path, artifacts: list[Path]) -> list[str]:
    """Run the build; the names of the artifacts it wrote again (compiled or copied from the cache)."""
    before = {path: path.stat().st_mtime_ns for path in artifacts}
    run("cmake", "--build", build)
    return [path.name for path in artifacts if path.stat().st_mtime_ns != before[path]]


@CMAKE
def test_cmake_module_rebuilds_exactly_when_an_input_changes(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(EXAMPLES / "cmake", source / "cmake")
    shutil.copy(EXAMPLES / "digits_mlp.onnx", source / "digits_mlp.onnx")
    shutil.copy(EXAMPLES / "digits_sample.npz", source / "digits_sample.npz")
    build = tmp_path / "build"
    run("cmake", "-S", source / "cmake", "-B", build)

    # Two float models sharing the cache, built in parallel: one compile, one cache copy, same bytes;
    # and one quantized with CALIB, its own cache entry.
    assert run("cmake", "--build", build, "-j", "2").count("edgec: compiling") == 3
    artifact, spare, int8 = (build / "digits-x86-64.edgec", build / "spare" / "digits-x86-64.edgec",
                             build / "digits-x86-64-int8.edgec")
    assert artifact.read_bytes() == spare.read_bytes()
    assert len(list((build / "edgec-cache").glob("*.edgec"))) == 2
    depfile = (build / "digits-x86-64.edgec.d").read_text()
    assert "digits_mlp.onnx" in depfile and "board-profile.toml" in depfile and "mcu.toml" in depfile
    assert "digits_sample.npz" not in depfile
    int8_depfile = (build / "digits-x86-64-int8.edgec.d").read_text()
    assert str(source / "digits_sample.npz") in int8_depfile and "board-profile.toml" in int8_depfile
    manifest = edgec.deploy.artifact.open_artifact(int8).manifest
    assert manifest["pipeline"].count("quantize{calib=digits_sample.npz") == 1
    assert manifest["target"]["integer_kernels"]["lowered"]  # CALIB really reached the compile

    artifacts = [artifact, spare, int8]
    assert rebuilt(build, artifacts) == []  # nothing changed
    (source / "cmake" / "unrelated.txt").write_text("x")
    assert rebuilt(build, artifacts) == []
    touch_later(source / "digits_sample.npz")
    assert rebuilt(build, artifacts) == [int8.name]  # the calibration data: only the model quantized with it
    assert rebuilt(build, artifacts) == []
    touch_later(source / "cmake" / "board-profile.toml")
    assert run("cmake", "--build", build).count("edgec: compiling") == 3
    touch_later(source / "digits_mlp.onnx")
    assert run("cmake", "--build", build).count("edgec: compiling") == 3


@CMAKE
def test_cmake_tuning_db_records_are_dependencies(tmp_path):
    """A re-tune appends to the record files, and the model compiled with them must follow."""
    from edgec.targets import get_target
    from edgec.targets.tuning import open_database

    shutil.copy(EXAMPLES / "digits_mlp.onnx", tmp_path / "m.onnx")
    open_database(tmp_path / "tuning", get_target("x86-64"), create=True)
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.20)\nproject(p NONE)\n"
        f"include({Path(edgec.__file__).parent / 'cmake' / 'edgec.cmake'})\n"
        "edgec_add_model(tuned MODEL m.onnx TARGET x86-64 TUNING_DB tuning OUTPUT tuned.edgec)\n"
        "edgec_add_model(plain MODEL m.onnx TARGET x86-64 OUTPUT plain.edgec)\n")
    build = tmp_path / "build"
    run("cmake", "-S", tmp_path, "-B", build)
    assert run("cmake", "--build", build).count("edgec: compiling") == 2
    assert str(tmp_path / "tuning" / "database_tuning_record.json") in (build / "tuned.edgec.d").read_text()

    artifacts = [build / "tuned.edgec", build / "plain.edgec"]
    assert rebuilt(build, artifacts) == []
    touch_later(tmp_path / "tuning" / "database_tuning_record.json")
    assert rebuilt(build, artifacts) == ["tuned.edgec"]
    assert rebuilt(build, artifacts) == []


@CMAKE
def test_cmake_module_refuses_an_unknown_keyword(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.20)\nproject(p NONE)\n"
        f"include({Path(edgec.__file__).parent / 'cmake' / 'edgec.cmake'})\n"
        "edgec_add_model(m MODEL m.onnx TARGET x86-64 CALIBRATION data.npz)\n")
    done = subprocess.run(["cmake", "-S", tmp_path, "-B", tmp_path / "build"], env=build_env(), capture_output=True,
                          text=True)
    assert done.returncode != 0
    assert "edgec_add_model(m): unknown arguments: CALIBRATION;data.npz" in done.stderr.replace("\n", "")


def test_quiet_compile_prints_nothing(tmp_path):
    shutil.copy(EXAMPLES / "digits_mlp.onnx", tmp_path / "m.onnx")
    done = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", tmp_path / "m.onnx", "-t", "x86-64",
                           "-o", tmp_path / "m.edgec", "-q"], capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "m.edgec").is_file()
    assert (done.stdout, done.stderr) == ("", "")


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "calib"])
def test_compiles_from_clean_states_are_byte_identical(tmp_path, quantized):
    """Two build trees in different directories must produce the same bytes, calibration data included."""
    outputs = []
    for attempt in ("one", "two"):
        workdir = tmp_path / attempt
        workdir.mkdir()
        shutil.copy(EXAMPLES / "digits_mlp.onnx", workdir / "model.onnx")
        shutil.copy(EXAMPLES / "digits_sample.npz", workdir / "calib.npz")
        calib = ["--calib", workdir / "calib.npz"] if quantized else []
        outputs.append(compile_json(workdir / "model.onnx", "-t", "x86-64", "-o", workdir / "out.edgec", "--profile", "mobile",
                                    *calib))
    assert outputs[0]["sha256"] == outputs[1]["sha256"]
    if quantized:  # the int8 path really ran, so the equality covers it
        manifest = edgec.deploy.artifact.open_artifact(tmp_path / "one" / "out.edgec").manifest
        assert "quantize{calib=" in manifest["pipeline"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make (CI installs it from Debian)")
def test_makefile_example_uses_the_depfile(tmp_path):
    shutil.copytree(EXAMPLES / "make", tmp_path / "make")
    shutil.copy(EXAMPLES / "digits_mlp.onnx", tmp_path / "digits_mlp.onnx")
    assert "edgec compile" in run("make", "-C", tmp_path / "make", "-j2")
    assert "edgec compile" not in run("make", "-C", tmp_path / "make")
    touch_later(tmp_path / "digits_mlp.onnx")
    assert "edgec compile" in run("make", "-C", tmp_path / "make")

    # CALIB quantizes, and the calibration data becomes a dependency through the depfile.
    shutil.copy(EXAMPLES / "digits_sample.npz", tmp_path / "digits_sample.npz")
    run("make", "-C", tmp_path / "make", "clean")
    assert "--calib ../digits_sample.npz" in run("make", "-C", tmp_path / "make", "CALIB=../digits_sample.npz")
    manifest = edgec.deploy.artifact.open_artifact(tmp_path / "make" / "digits-x86-64.edgec").manifest
    assert "quantize{calib=digits_sample.npz" in manifest["pipeline"]
    assert "edgec compile" not in run("make", "-C", tmp_path / "make", "CALIB=../digits_sample.npz")
    touch_later(tmp_path / "digits_sample.npz")
    assert "edgec compile" in run("make", "-C", tmp_path / "make", "CALIB=../digits_sample.npz")


def touch_later(path: Path) -> None:
    """Make ``path`` newer than every output so far, then wait until that time has passed, so
    what the rebuild writes is newer again (1 s filesystem timestamps otherwise tie or stay stale)."""
    import os
    import time

    later = time.time() + 1
    os.utime(path, (later, later))
    time.sleep(max(0.0, later - time.time()) + 0.1)
