"""The C++ consumer (examples/cpp): built with CMake over edgec's C runtime API
(edgec::runtime) and the TVM runtime in the wheels, it runs one- and multi-partition
artifacts to the same bits as the Python runtime and refuses bad inputs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgec.runtime
from edgec.cli import main
from edgec.compiler.pipelines import DEFAULT_PIPELINE
from edgec.deploy.artifact import open_artifact
from tests.models import make_model, ort_run, random_feeds, small_cnn, zoo_model
from tests.test_scalars import scalar_model

SOURCE = Path(__file__).parent.parent / "examples" / "cpp"


def npy_name(tensor_name: str) -> str:
    """The file name edgec_run uses for a tensor (see examples/cpp/README.md)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tensor_name) + ".npy"


@pytest.fixture(scope="module")
def edgec_run(tmp_path_factory) -> Path:
    """examples/cpp built once for this module, in a temp dir."""
    missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"building the C++ consumer needs {' and '.join(missing)}, not installed")
    build = tmp_path_factory.mktemp("cpp-build")
    for command in (
        ["cmake", "-S", str(SOURCE), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}", "-DCMAKE_CXX_COMPILER=g++"],
        ["cmake", "--build", str(build), "-j2"],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return build / "edgec_run"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """compiled(name, model) -> artifact path, compiling each model once per module."""
    cache: dict[str, Path] = {}
    workdir = tmp_path_factory.mktemp("cpp-models")

    def compile_model(name: str, model: onnx.ModelProto, *flags: str) -> Path:
        if name not in cache:
            onnx.save(model, workdir / f"{name}.onnx")
            out = workdir / f"{name}.edgec"
            assert main(["compile", str(workdir / f"{name}.onnx"), "-t", "x86-64", "-o", str(out), "-q", *flags]) == 0
            cache[name] = out
        return cache[name]

    return compile_model


def run_cpp(binary: Path, artifact: Path, feeds: dict[str, np.ndarray], workdir: Path) -> subprocess.CompletedProcess:
    in_dir, out_dir = workdir / "in", workdir / "out"
    in_dir.mkdir(exist_ok=True)
    for name, array in feeds.items():
        np.save(in_dir / npy_name(name), array)
    return subprocess.run([str(binary), str(artifact), str(in_dir), str(out_dir)], capture_output=True, text=True)


def names_and_dtypes() -> onnx.ModelProto:
    """Names with '/' and ':', an int64 input, two outputs (one int64)."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["enc/x:0", "ids_f"], ["out/y"]),
        helper.make_node("Add", ["ids", "ids"], ["out/ids"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("enc/x:0", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
        [helper.make_tensor_value_info("out/y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("out/ids", TensorProto.INT64, [2, 3])],
    )


MODELS = {"small_cnn": small_cnn, "squeezenet": lambda: zoo_model("squeezenet"), "names": names_and_dtypes,
          "scalars": scalar_model, "small_cnn_partitioned": small_cnn}
FLAGS = {"small_cnn_partitioned": ("--passes", f"{DEFAULT_PIPELINE},partition{{target=x86-64,device=cpu-test-double}}")}


@pytest.mark.parametrize("name", list(MODELS))
def test_cpp_matches_onnxruntime_and_the_python_runtime(name, edgec_run, compiled, tmp_path):
    model = MODELS[name]()
    artifact = compiled(name, model, *FLAGS.get(name, ()))
    assert open_artifact(artifact).manifest["format_version"] == (2 if name in FLAGS else 1)
    feeds = random_feeds(model)
    if name == "names":
        feeds["ids"] = np.arange(6, dtype=np.int64).reshape(2, 3) * 1000003
    result = run_cpp(edgec_run, artifact, feeds, tmp_path)
    assert result.returncode == 0, result.stderr

    expected = ort_run(model, feeds)
    python = edgec.runtime.load(artifact).run(feeds)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(npy_name(n) for n in expected)
    for out_name, want in expected.items():
        got = np.load(tmp_path / "out" / npy_name(out_name))
        assert got.dtype == want.dtype and got.shape == want.shape, out_name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"output {out_name} vs onnxruntime")
        assert np.array_equal(got, python[out_name]), f"output {out_name} differs from the Python runtime"


def test_wrong_input_shape_is_refused_with_the_input_named(edgec_run, compiled, tmp_path):
    artifact = compiled("small_cnn", small_cnn())
    result = run_cpp(edgec_run, artifact, {"x": np.zeros((1, 3, 8, 8), np.float32)}, tmp_path)
    assert result.returncode != 0
    assert "input 'x' must have shape [1, 3, 16, 16], got [1, 3, 8, 8]" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_and_non_artifact_are_refused(edgec_run, compiled, tmp_path):
    artifact = compiled("small_cnn", small_cnn())
    result = run_cpp(edgec_run, artifact, {}, tmp_path)
    assert result.returncode != 0 and "missing input 'x'" in result.stderr
    not_artifact = tmp_path / "model.onnx"
    onnx.save(small_cnn(), not_artifact)
    result = run_cpp(edgec_run, not_artifact, {"x": np.zeros((1, 3, 16, 16), np.float32)}, tmp_path)
    assert result.returncode != 0 and "not an edgec artifact" in result.stderr


def test_signature_and_digests_are_checked_with_openssl(edgec_run, compiled, tmp_path):
    """Built with OpenSSL: --verify-key accepts the signing key's artifact only, and a flipped
    weight byte is refused even without a key."""
    if "OPENSSL_CRYPTO_LIBRARY:FILEPATH=/" not in (edgec_run.parent / "CMakeCache.txt").read_text():
        pytest.skip("edgec_run was built without OpenSSL (libssl-dev): it checks no signatures")
    from edgec.deploy.artifact import WEIGHTS, open_artifact

    artifact = compiled("small_cnn", small_cnn())
    assert main(["keygen", str(tmp_path / "key.pem")]) == 0
    assert main(["keygen", str(tmp_path / "other.pem")]) == 0
    signed = tmp_path / "signed.edgec"
    shutil.copy(artifact, signed)
    from edgec.deploy.trust import load_private_key, sign_artifact

    sign_artifact(signed, load_private_key(tmp_path / "key.pem"))
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    np.save(in_dir / "x.npy", np.zeros((1, 3, 16, 16), np.float32))

    def run(path, key=None):
        flags = ["--verify-key", str(key)] if key else []
        return subprocess.run([str(edgec_run), *flags, str(path), str(in_dir), str(tmp_path / "out")],
                              capture_output=True, text=True)

    assert run(signed, tmp_path / "key.pem.pub").returncode == 0
    result = run(signed, tmp_path / "other.pem.pub")
    assert result.returncode == 1 and "'manifest.sig' does not verify" in result.stderr
    result = run(artifact, tmp_path / "key.pem.pub")
    assert result.returncode == 1 and "not signed" in result.stderr
    data = bytearray(artifact.read_bytes())
    offset, size = open_artifact(artifact).offsets[WEIGHTS]
    data[offset + size // 2] ^= 1
    (tmp_path / "flipped.edgec").write_bytes(bytes(data))
    result = run(tmp_path / "flipped.edgec")
    assert result.returncode == 1 and "'weights.bin' is corrupt" in result.stderr
