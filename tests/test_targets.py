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
