"""The target registry and cross-compilation."""

from __future__ import annotations

import dataclasses
import shutil
import tarfile

import onnx
import pytest

from edgec import api
from edgec.cli import main
from edgec.deploy.artifact import open_artifact
from edgec.errors import CompileError, UsageError
from edgec.frontend.importer import import_proto
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
        api.compile(tmp_path / "cnn.onnx", "arm64-a76", output=tmp_path / name)
    assert (tmp_path / "a.edgec").read_bytes() == (tmp_path / "b.edgec").read_bytes()
    opened = open_artifact(tmp_path / "a.edgec")
    target = opened.manifest["target"]
    assert (target["triple"], target["features"]) == ("aarch64-linux-gnu", ["asimd", "asimddp", "asimdhp"])
    library = opened.read_member("model.so")
    assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == 183  # EM_AARCH64
    with tarfile.open(tmp_path / "a.edgec") as tar:
        assert tar.getnames() == ["manifest.json", "manifest.sha256", "model.so", "weights.bin"]


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
    assert spec.memory_bytes == get_target("arm64-a72").memory_bytes  # not overridden


def test_custom_board_declares_memory_power_and_dtypes(tmp_path):
    (tmp_path / "board.toml").write_text(
        BOARD + 'memory = "2GiB"\npower_watts = 4\npower_source = "ACME datasheet"\ndtypes = ["float32", "int8"]\n'
        "vector_registers = 16\n"
    )
    spec = get_target(str(tmp_path / "board.toml"))
    assert (spec.memory_bytes, spec.power_watts, spec.power_source) == (2 * 1024**3, 4.0, "ACME datasheet")
    assert (spec.dtypes, spec.vector_registers) == (("float32", "int8"), 16)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("cores = 2", "cors = 2"), r"board.toml:6: field 'cors': unknown field"),
        (lambda t: t.replace("cores = 2", "cores = -2"), r"board.toml:6: field 'cores': input should be greater than 0, got int -2"),
        (lambda t: t.replace("cores = 2", 'cores = "two"'), r"board.toml:6: field 'cores': input should be a valid integer, got str 'two'"),
        (lambda t: t.replace("cores = 2", "cores = true"), r"board.toml:6: field 'cores': input should be a valid integer, got a boolean"),
        (lambda t: t + 'description = 5\n', r"board.toml:7: field 'description': input should be a valid string, got int 5"),
        (lambda t: t + 'memory = "0B"\n', r"board.toml:7: field 'memory': input should be greater than 0, got str '0B'"),
        (lambda t: t.replace('base = "arm64-a72"', 'base = "arm64-a99"'), r"board.toml:2: field 'base': unknown target 'arm64-a99'"),
        (lambda t: t + 'triple = "x86_64-linux-gnu"\n', r"board.toml:7: field 'triple': conflicts with base arm64-a72"),
        (lambda t: t.replace('base = "arm64-a72"\n', ""), r"board.toml: field 'triple' is required when there is no 'base'"),
        (lambda t: t + "oops", r"board.toml: not valid TOML"),
        (lambda t: t.replace('"asimddp"]', '"dotprod"]'), r"board.toml:5: field 'features': unknown feature 'dotprod' \(use an arm64 HWCAP"),
        (lambda t: t + 'memory = "lots"\n', r"board.toml:7: field 'memory': bad size 'lots'"),
        (lambda t: t + "power_watts = 5\n", r"board.toml:7: field 'power_watts': needs 'power_source'"),
        (lambda t: t + 'dtypes = ["float64"]\n', r"board.toml:7: field 'dtypes': item 0: input should be 'float32', 'float16', .* or 'bool', got str 'float64'"),
    ],
)
def test_custom_board_errors_name_file_line_and_field(tmp_path, edit, message):
    (tmp_path / "board.toml").write_text(edit(BOARD))
    with pytest.raises(UsageError, match=message):
        get_target(str(tmp_path / "board.toml"))


PORTABLE = {"x86-64-v3", "x86-64-v4", "x86-64-vnni"}
"""Targets naming no particular machine: no memory size to declare."""


def test_every_target_declares_what_the_schedules_and_profiles_need():
    for spec in all_targets().values():
        described = spec.describe()
        assert described["vector_bits"] > 0 and described["cores"] > 0 and described["dtypes"]
        if spec.device == "cpu":  # the CPU code is built for these features (a GPU target's host is generic)
            assert described["features"], spec.name
        if spec.name not in PORTABLE:
            assert described["memory_bytes"] and described["memory_bytes"] > 0
        # A power figure with its source, or the reason there is none.
        assert described["power"]["source"], spec.name
        if spec.family != "x86":
            assert described["power"]["watts"] > 0
        if not described["runs_here"]:
            assert described["why_not_here"]


def test_x86_levels_are_the_psabi_levels():
    targets = all_targets()
    v3, v4 = targets["x86-64-v3"], targets["x86-64-v4"]
    assert (v3.tvm_target["mcpu"], v3.vector_bits, v3.vector_registers) == ("x86-64-v3", 256, 16)
    assert (v4.tvm_target["mcpu"], v4.vector_bits, v4.vector_registers) == ("x86-64-v4", 512, 32)
    assert {"avx2", "fma"} <= set(v3.features) and "avx512f" not in v3.features
    assert set(v3.features) < set(v4.features) and {"avx512f", "avx512bw", "avx512vl"} <= set(v4.features)


@pytest.mark.parametrize("name", ["x86-64-v3", "x86-64-v4"])
def test_x86_level_artifact_runs_here_or_is_refused_with_the_missing_feature(name, tmp_path, capsys):
    from edgec.host import cpu_features

    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    api.compile(tmp_path / "cnn.onnx", name, output=tmp_path / "m.edgec")
    assert open_artifact(tmp_path / "m.edgec").manifest["target"]["tvm_target"]["mcpu"] == name
    missing = [f for f in get_target(name).features if f not in cpu_features()]
    code = main(["check", str(tmp_path / "m.edgec"), "--model", str(tmp_path / "cnn.onnx")])
    err = capsys.readouterr().err
    if missing:  # refused before loading: the code would die of SIGILL
        assert code == 1 and "lacks CPU feature" in err and missing[0] in err
    else:
        assert code == 0, err


def test_an_artifact_needing_a_feature_this_cpu_lacks_is_refused_before_loading(tmp_path, capsys):
    board = tmp_path / "future.toml"
    board.write_text('base = "x86-64"\nfeatures = ["avx2", "avx10_512"]\n')
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    api.compile(tmp_path / "cnn.onnx", board, output=tmp_path / "m.edgec")
    assert main(["run", str(tmp_path / "m.edgec"), "--random-inputs"]) == 1
    assert "this machine lacks CPU feature avx10_512 required by target future" in capsys.readouterr().err


def test_cuda_targets_pair_a_gpu_with_its_host():
    orin = get_target("jetson-orin")
    assert orin.device == "cuda" and orin.tvm_target["arch"] == "sm_87"
    assert orin.tvm_target["host"]["mcpu"] == "cortex-a78ae" and orin.cross_compiler == "aarch64-linux-gnu-g++"
    assert get_target("cuda").tvm_target["host"]["mtriple"] == "x86_64-linux-gnu"


def test_a_cuda_compile_of_a_tiny_cnn_stays_on_the_host_and_runs_without_a_gpu(tmp_path, capsys):
    """The cost model finds the CNN too small to pay for its copies: one CPU partition in the
    single-library layout, host code only. GPU partitions: tests/test_partitioned.py."""
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    api.compile(tmp_path / "cnn.onnx", "cuda", output=tmp_path / "gpu.edgec")
    opened = open_artifact(tmp_path / "gpu.edgec")
    assert opened.manifest["format_version"] == 1
    assert [(p["device"], p["library"]) for p in opened.manifest["partitions"]] == [("cpu", "model.so")]
    assert b"__global__" not in opened.read_member("model.so")
    assert opened.manifest["partition_plan"]["nodes"][0]["reason"].startswith("cost model: its cuda partition of 8 nodes")
    assert main(["run", str(tmp_path / "gpu.edgec"), "--random-inputs"]) == 0


def benchmark_model(name: str) -> onnx.ModelProto:
    """A model from benchmarks/models.py (MobileNetV2-style CNN), which keeps no test helpers of its own."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "models.py"
    spec = importlib.util.spec_from_file_location("edgec_benchmark_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model_by_name(name)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="needs Debian's g++-aarch64-linux-gnu (CI installs it)")
def test_jetson_orin_artifact_of_mobilenet_v2_builds_here(tmp_path):
    """GPU kernels for sm_87 and an aarch64 host library, cross-built on this x86 machine."""
    onnx.save(benchmark_model("mobilenet_v2"), tmp_path / "mnv2.onnx")
    api.compile(tmp_path / "mnv2.onnx", "jetson-orin", output=tmp_path / "orin.edgec")
    opened = open_artifact(tmp_path / "orin.edgec")
    library = opened.read_member("model.so")
    assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == 183  # EM_AARCH64
    assert b"__global__" in library  # CUDA kernels, compiled for the GPU when the library loads
    target = opened.manifest["target"]
    assert (target["device"], target["tvm_target"]["arch"], target["triple"]) == ("cuda", "sm_87", "aarch64-linux-gnu")


def test_operator_support_is_asked_per_device_and_answers_with_a_reason():
    """targets/support.py is the one interface: each device's capability comes from its
    family's module (cuda's tables from targets/cuda.py), and a refusal carries its reason."""
    from edgec.ir import parse_model
    from edgec.targets import cuda
    from edgec.targets.support import device_support, supported_devices

    assert supported_devices() == ["cuda", "cpu-test-double"]
    model = parse_model('model ir_version=8 opset_import={"": 17} {\n  input %x: float32[4]\n'
                        '  %s = Shape(%x) : int64[1] @s\n  %r = Relu(%x) : float32[4] @r\n  output %s\n  output %r\n}\n')
    shape, relu = model.graph.nodes
    support = device_support(get_target("cuda"), "cuda")
    assert support(relu).ok
    assert support(shape).reason == f"Shape: {cuda.CUDA_DENY['Shape']}"
    assert device_support(get_target("cuda"), "cpu-test-double")(shape).reason == (
        "Shape is not in the cpu-test-double capability table")
    with pytest.raises(KeyError):
        device_support(get_target("cuda"), "npu")
