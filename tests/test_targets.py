"""The target registry and cross-compilation."""

from __future__ import annotations

import dataclasses
import shutil
import tarfile

import onnx
import pytest

from edgec.artifact import open_artifact
from edgec.cli import main
from edgec.errors import CompileError, UsageError
from edgec.importer import import_proto
from edgec.targets import all_targets, get_target, lower
from tests.models import small_cnn


def test_registry_has_the_host_and_arm64_boards():
    targets = all_targets()
    assert list(targets)[0] == "x86-64"
    assert {"arm64-a53", "arm64-a72", "arm64-a76"} <= set(targets)
    assert "asimddp" in targets["arm64-a76"].features and "asimddp" not in targets["arm64-a72"].features
    assert targets["arm64-a72"].tvm_target == {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 4,
    }
    with pytest.raises(UsageError, match="--target z80: unknown target"):
        get_target("z80")


def test_missing_cross_toolchain_names_the_package():
    spec = dataclasses.replace(get_target("arm64-a72"), cross_compiler="no-such-g++", cross_package="g++-no-such")
    with pytest.raises(CompileError, match="no-such-g\\+\\+, which is not installed; install it with: apt-get install g\\+\\+-no-such"):
        lower(import_proto(small_cnn()), spec)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="needs Debian's g++-aarch64-linux-gnu (CI installs it)")
def test_arm64_artifact_is_an_aarch64_library_and_records_its_target(tmp_path):
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    for name in ("a.edgec", "b.edgec"):
        assert main(["compile", str(tmp_path / "cnn.onnx"), "-t", "arm64-a76", "-o", str(tmp_path / name), "-q"]) == 0
    assert (tmp_path / "a.edgec").read_bytes() == (tmp_path / "b.edgec").read_bytes()
    opened = open_artifact(tmp_path / "a.edgec")
    target = opened.manifest["target"]
    assert (target["triple"], target["features"]) == ("aarch64-linux-gnu", ["asimd", "asimddp", "asimdhp"])
    library = opened.read_member("model.so")
    assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == 183  # EM_AARCH64
    with tarfile.open(tmp_path / "a.edgec") as tar:
        assert tar.getnames() == ["manifest.json", "model.so", "weights.bin"]


BOARD = """\
name = "acme-cam"
base = "arm64-a72"
cpu = "cortex-a55"
mattr = ["+neon", "+dotprod"]
features = ["asimd", "asimddp"]
cores = 2
"""


def test_custom_board_from_toml(tmp_path):
    (tmp_path / "board.toml").write_text(BOARD)
    spec = get_target(str(tmp_path / "board.toml"))
    assert (spec.name, spec.family, spec.cores, spec.features) == ("acme-cam", "arm64", 2, ("asimd", "asimddp"))
    assert spec.tvm_target["mcpu"] == "cortex-a55" and spec.tvm_target["num-cores"] == 2
    assert spec.cross_compiler == "aarch64-linux-gnu-g++"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("cores = 2", "cors = 2"), r"board.toml:6: field 'cors': unknown field"),
        (lambda t: t.replace("cores = 2", "cores = -2"), r"board.toml:6: field 'cores': must be positive"),
        (lambda t: t.replace("cores = 2", 'cores = "two"'), r"board.toml:6: field 'cores': expected int, got str"),
        (lambda t: t.replace('base = "arm64-a72"', 'base = "arm64-a99"'), r"board.toml:2: field 'base': unknown target 'arm64-a99'"),
        (lambda t: t + 'triple = "x86_64-linux-gnu"\n', r"board.toml:7: field 'triple': conflicts with base arm64-a72"),
        (lambda t: t.replace('base = "arm64-a72"\n', ""), r"board.toml: field 'triple' is required when there is no 'base'"),
        (lambda t: t + "oops", r"board.toml: not valid TOML"),
    ],
)
def test_custom_board_errors_name_file_line_and_field(tmp_path, edit, message):
    (tmp_path / "board.toml").write_text(edit(BOARD))
    with pytest.raises(UsageError, match=message):
        get_target(str(tmp_path / "board.toml"))


def test_every_target_declares_what_the_schedules_and_profiles_need():
    for spec in all_targets().values():
        described = spec.describe()
        assert described["vector_bits"] > 0 and described["cores"] > 0 and described["dtypes"]
        assert described["memory_bytes"] and described["memory_bytes"] > 0
        if spec.name != "x86-64":  # the host's power is not declared anywhere
            assert described["power"]["watts"] > 0 and described["power"]["source"]
        if not described["runs_here"]:
            assert described["why_not_here"]


def test_cuda_targets_pair_a_gpu_with_its_host():
    orin = get_target("jetson-orin")
    assert orin.device == "cuda" and orin.tvm_target["arch"] == "sm_87"
    assert orin.tvm_target["host"]["mcpu"] == "cortex-a78ae" and orin.cross_compiler == "aarch64-linux-gnu-g++"
    assert get_target("cuda").tvm_target["host"]["mtriple"] == "x86_64-linux-gnu"


def test_cuda_artifact_builds_here_and_its_run_is_refused_with_the_reason(tmp_path, capsys):
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    assert main(["compile", str(tmp_path / "cnn.onnx"), "-t", "cuda", "-o", str(tmp_path / "gpu.edgec"), "-q"]) == 0
    library = open_artifact(tmp_path / "gpu.edgec").read_member("model.so")
    assert b"__global__" in library  # CUDA kernels (as source: TVM 0.27 compiles them when the library loads)
    assert main(["run", str(tmp_path / "gpu.edgec"), "--random-inputs"]) == 1
    assert "whose code runs on cuda" in capsys.readouterr().err
