"""edgec's C runtime API (edgec/cmake/runtime/edgec_runtime.h), driven from a plain C
program (tests/c_api/c_run.c) built with CMake against the TVM runtime in the wheels:
one- and multi-partition artifacts, opened from a file, from memory and from misaligned
memory, give the Python runtime's outputs bit for bit; hostile artifacts are refused with
the Python runtime's own message; the same program cross-built for aarch64 runs on the
emulated lab device (slow)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgec.runtime
from edgec.cli import main
from edgec.compiler.pipelines import DEFAULT_PIPELINE
from edgec.deploy import lab
from edgec.deploy.artifact import DIGEST, LIBRARY, MANIFEST, WEIGHTS, open_artifact
from edgec.errors import ArtifactError
from tests.models import ort_run, random_feeds, small_cnn
from tests.test_artifact_trust import craft, good, listed  # noqa: F401  (good is a fixture)
from tests.test_cpp_consumer import names_and_dtypes

SOURCE = Path(__file__).parent / "c_api"
EXAMPLE = Path(__file__).parent.parent / "examples" / "cpp"
CMAKE_DIR = Path(edgec.__file__).parent / "cmake"
DOUBLE = f"{DEFAULT_PIPELINE},partition{{target=x86-64,device=cpu-test-double}}"


def build(build_dir: Path, *extra: str, source: Path = SOURCE) -> Path:
    for command in (["cmake", "-S", str(source), "-B", str(build_dir), f"-DEDGEC_CMAKE_DIR={CMAKE_DIR}", *extra],
                    ["cmake", "--build", str(build_dir), "-j2"]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return build_dir


@pytest.fixture(scope="module")
def c_run(tmp_path_factory) -> Path:
    missing = [tool for tool in ("cmake", "gcc", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"building the C API test needs {' and '.join(missing)}, not installed")
    return build(tmp_path_factory.mktemp("c-build"), f"-DPython3_EXECUTABLE={sys.executable}") / "c_run"


def compile_to(directory: Path, model: onnx.ModelProto, target: str, *flags: str) -> Path:
    onnx.save(model, directory / "model.onnx")
    out = directory / "model.edgec"
    assert main(["compile", str(directory / "model.onnx"), "-t", target, "-o", str(out), "-q", *flags]) == 0
    return out


MODELS = {"one-partition": (small_cnn, ()), "multi-partition": (small_cnn, ("--passes", DOUBLE)),
          "two-inputs-int64": (names_and_dtypes, ())}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, tuple[onnx.ModelProto, Path]]:
    compiled = {}
    for name, (make, flags) in MODELS.items():
        model = make()
        compiled[name] = model, compile_to(tmp_path_factory.mktemp(name), model, "x86-64", *flags)
    return compiled


def run_c(binary: Path, mode: str, artifact: Path, manifest: dict, feeds: dict, workdir: Path,
          prefix: list[str] = ()) -> tuple[subprocess.CompletedProcess, dict[str, np.ndarray]]:
    """Run c_run; return the process and the outputs it wrote, typed by the manifest."""
    for i, spec in enumerate(manifest["signature"]["inputs"]):
        np.ascontiguousarray(feeds[spec["name"]]).tofile(workdir / f"in{i}.bin")
    result = subprocess.run([*prefix, str(binary), mode, str(artifact), str(workdir)], capture_output=True, text=True)
    outputs = {}
    if result.returncode == 0:
        for i, spec in enumerate(manifest["signature"]["outputs"]):
            outputs[spec["name"]] = np.fromfile(workdir / f"out{i}.bin", dtype=spec["dtype"]).reshape(spec["shape"])
    return result, outputs


def info_lines(manifest: dict) -> list[str]:
    """What c_run prints for the signature: name, dtype, shape and byte size of each tensor."""
    lines = []
    for kind in ("input", "output"):
        for i, spec in enumerate(manifest["signature"][f"{kind}s"]):
            nbytes = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
            lines.append(f"{kind} {i} {spec['name']} {spec['dtype']} {'x'.join(map(str, spec['shape']))} {nbytes}")
    return lines


def test_cmake_dir_holds_the_runtime(capsys):
    assert main(["cmake-dir"]) == 0
    directory = Path(capsys.readouterr().out.strip())
    assert directory == CMAKE_DIR
    for member in ("edgec_runtime.cmake", "runtime/edgec_runtime.h", "runtime/edgec_runtime.cc"):
        assert (directory / member).is_file(), member


@pytest.mark.parametrize("mode", ["file", "memory", "misaligned"])
@pytest.mark.parametrize("name", list(MODELS))
def test_c_api_matches_the_python_runtime(c_run, artifacts, tmp_path, name, mode):
    model, artifact = artifacts[name]
    manifest = open_artifact(artifact).manifest
    assert manifest["format_version"] == (2 if name == "multi-partition" else 1)
    feeds = random_feeds(model)
    result, outputs = run_c(c_run, mode, artifact, manifest, feeds, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if not line.startswith(("probe:", "ran "))] == info_lines(manifest)
    assert [line[len("ran "):] for line in lines if line.startswith("ran ")] == info_lines(manifest)[-len(outputs):]
    first = manifest["signature"]["inputs"][0]
    count = len(manifest["signature"]["inputs"])
    nbytes = int(np.prod(first["shape"])) * np.dtype(first["dtype"]).itemsize
    assert [line for line in lines if line.startswith("probe:")] == [
        f"probe: 2 input index {count} is out of range (the model has {count})",
        f"probe: 2 input '{first['name']}' was not set",
        "probe: 2 no outputs yet: call edgec_run first",
        f"probe: 2 input '{first['name']}' takes {nbytes} bytes ({first['dtype']}), got 1",
        "probe: -1",
    ]
    python = edgec.runtime.load(artifact).run(feeds)
    expected = ort_run(model, feeds)
    for out_name, want in expected.items():
        assert outputs[out_name].dtype == want.dtype
        np.testing.assert_allclose(outputs[out_name], want, rtol=1e-4, atol=1e-5, err_msg=out_name)
        assert np.array_equal(outputs[out_name], python[out_name]), f"{out_name} differs from the Python runtime"


def test_c_api_cuts_detection_rows_as_onnxruntime_returns_them(c_run, tmp_path):
    """The detector of tests/test_detection.py (TopK, NonMaxSuppression, Gathers by its rows):
    its row-count output is the runtime's, and each run's outputs have onnxruntime's rows,
    none when no box clears the threshold."""
    from tests.test_detection import FEATURES, detector

    model = detector()
    artifact = compile_to(tmp_path, model, "x86-64")
    manifest = open_artifact(artifact).manifest
    public = [spec for spec in manifest["signature"]["outputs"] if not spec.get("count_of_rows")]
    rng = np.random.default_rng(7)
    rows = []
    for scale in (0.7, 1.3, 0.0):  # 0: every score sigmoid(-3), below the threshold
        feeds = {"features": (rng.standard_normal((1, FEATURES, 3, 3)) * scale).astype(np.float32)}
        for i, spec in enumerate(manifest["signature"]["inputs"]):
            np.ascontiguousarray(feeds[spec["name"]]).tofile(tmp_path / f"in{i}.bin")
        result = subprocess.run([str(c_run), "file", str(artifact), str(tmp_path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        ran = [line.split() for line in result.stdout.splitlines() if line.startswith("ran output")]
        assert [fields[3] for fields in ran] == [spec["name"] for spec in public]
        expected = ort_run(model, feeds)
        for i, (spec, fields) in enumerate(zip(public, ran)):
            shape = [int(d) for d in fields[5].split("x")] if fields[5] else []
            got = np.fromfile(tmp_path / f"out{i}.bin", dtype=spec["dtype"]).reshape(shape)
            want = expected[spec["name"]]
            assert got.shape == want.shape, spec["name"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=spec["name"])
        rows.append(len(expected["selected"]))
    assert rows[-1] == 0 and min(rows[:-1]) > 0


# Hostile artifacts, made from test_artifact_trust's good artifact: name -> a function
# (source artifact, manifest, members, directory) -> the hostile file.

def renamed_library(source, manifest, members, directory):
    evil = dict(members)
    evil["../../pwned.so"] = evil.pop(LIBRARY)
    manifest = listed(manifest, evil)
    manifest["format_version"] = 2
    manifest["partitions"] = [{"id": 0, "library": "../../pwned.so", "runs_on": "cpu", "inputs": ["x"],
                               "outputs": ["logits"], "weights": [w["name"] for w in manifest["weights"]]}]
    return craft(directory / "a.edgec", manifest, list(evil.items()))


def symlink_member(source, manifest, members, directory):
    link = tarfile.TarInfo(LIBRARY)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    others = [(n, d) for n, d in members.items() if n != LIBRARY]
    return craft(directory / "a.edgec", listed(manifest, members), others, extra=[link])


def flipped(member):
    def flip(source, manifest, members, directory):
        data = bytearray(source.read_bytes())
        offset, size = open_artifact(source).offsets[member]
        data[offset + size // 2] ^= 0x01
        (directory / "a.edgec").write_bytes(bytes(data))
        return directory / "a.edgec"
    return flip


def flipped_manifest(source, manifest, members, directory):
    data = bytearray(source.read_bytes())
    data[data.index(b'"edgec_version"') + 1] ^= 0x20
    (directory / "a.edgec").write_bytes(bytes(data))
    return directory / "a.edgec"


def no_digest(source, manifest, members, directory):
    path = directory / "a.edgec"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in [(MANIFEST, json.dumps(listed(manifest, members)).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def nesting_bomb(source, manifest, members, directory):
    bomb = json.dumps(listed(manifest, members), sort_keys=True).encode()
    bomb = bomb[:-1] + b', "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    return craft(directory / "a.edgec", bomb, list(members.items()))


def oversized_manifest(source, manifest, members, directory):
    manifest = listed(manifest, members)
    manifest["padding"] = "x" * (5 << 20)
    return craft(directory / "a.edgec", manifest, list(members.items()))


def grown_member(source, manifest, members, directory):
    grown = dict(members, **{WEIGHTS: members[WEIGHTS] + b"\0" * 4096})
    return craft(directory / "a.edgec", listed(manifest, members), list(grown.items()))


def weight_outside(source, manifest, members, directory):
    manifest = listed(manifest, members)
    manifest["weights"][0]["offset"] = len(members[WEIGHTS]) + 64
    return craft(directory / "a.edgec", manifest, list(members.items()))


def unlisted_member(source, manifest, members, directory):
    return craft(directory / "a.edgec", listed(manifest, members), [*members.items(), ("extra.bin", b"1234")])


def missing_member(source, manifest, members, directory):
    return craft(directory / "a.edgec", listed(manifest, members), [(n, d) for n, d in members.items() if n != LIBRARY])


def sparse_huge_member(source, manifest, members, directory):
    """A GNU header claiming 64 GiB (base-256 size field) on a sparse file: refused from the header."""
    path = craft(directory / "a.edgec", listed(manifest, members), list(members.items()))
    huge = tarfile.TarInfo("extra.bin")
    huge.size = 64 << 30
    data = path.read_bytes().rstrip(b"\0")
    data += b"\0" * (-len(data) % 512)
    with open(path, "wb") as handle:
        handle.write(data + huge.tobuf(format=tarfile.GNU_FORMAT))
        handle.truncate(len(data) + 512 + (64 << 30) + 1024)
    return path


def future_version(source, manifest, members, directory):
    manifest = listed(manifest, members)
    manifest["format_version"] = 4
    return craft(directory / "a.edgec", manifest, list(members.items()))


def bad_digest(source, manifest, members, directory):
    return craft(directory / "a.edgec", listed(manifest, members), list(members.items()), digest=b"0" * 64 + b"\n")


HOSTILE = {f.__name__: f for f in (renamed_library, symlink_member, flipped_manifest, no_digest, nesting_bomb,
                                   oversized_manifest, grown_member, weight_outside, unlisted_member, missing_member,
                                   sparse_huge_member, future_version, bad_digest)}
HOSTILE["flipped_weights"] = flipped(WEIGHTS)
HOSTILE["flipped_library"] = flipped(LIBRARY)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_artifact_is_refused_with_the_python_runtimes_message(c_run, good, tmp_path, case):  # noqa: F811
    source, manifest, members = good
    path = HOSTILE[case](source, manifest, members, tmp_path)
    with pytest.raises(ArtifactError) as caught:
        edgec.runtime.load(path)
    for mode in ("file",) if case == "sparse_huge_member" else ("file", "memory"):  # 64 GiB stays on disk
        result = subprocess.run([str(c_run), mode, str(path), str(tmp_path)], capture_output=True, text=True)
        assert result.returncode == 1, (mode, result.stdout)
        assert result.stderr == f"{caught.value}\n", mode


def test_not_an_artifact_is_refused(c_run, tmp_path):
    onnx.save(small_cnn(), tmp_path / "model.onnx")
    result = subprocess.run([str(c_run), "file", str(tmp_path / "model.onnx"), str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith(f"{tmp_path / 'model.onnx'}: not an edgec artifact")


def test_artifact_for_another_architecture_is_refused(c_run, tmp_path):
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("linking an arm64 artifact needs aarch64-linux-gnu-g++ (Debian g++-aarch64-linux-gnu)")
    artifact = compile_to(tmp_path, small_cnn(), "arm64-a72")
    result = subprocess.run([str(c_run), "file", str(artifact), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == f"{artifact}: built for aarch64-linux-gnu (target arm64-a72), but this machine is x86_64; " \
                            "run it on the device\n"


@pytest.mark.slow
def test_c_api_cross_built_for_aarch64_matches_on_the_emulated_lab(tmp_path):
    """c_run and examples/cpp cross-built with g++-aarch64-linux-gnu against the lab's aarch64
    TVM wheels, run under qemu as a Cortex-A72 on arm64-a72 artifacts (one and several
    partitions): the outputs equal the Python runtime's run on the same emulated device."""
    from tests.test_lab import lab_unavailable

    reason = lab_unavailable() or (None if shutil.which("aarch64-linux-gnu-g++") else
                                   "needs aarch64-linux-gnu-g++ (Debian g++-aarch64-linux-gnu)")
    if reason:
        pytest.skip(reason)
    device = lab.prepare()
    cross = ["-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64", "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc",
             "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++", f"-DTVM_PYTHON_SITE={device.site}"]
    binary = build(tmp_path / "build", *cross) / "c_run"
    example = build(tmp_path / "example", *cross, source=EXAMPLE) / "edgec_run"
    command, env = device.python_command("arm64-a72")
    qemu = command[:command.index("-L") + 2]
    for name, flags in (("one", ()), ("multi", ("--passes", DOUBLE.replace("x86-64", "arm64-a72")))):
        directory = tmp_path / name
        directory.mkdir()
        model = small_cnn()
        artifact = compile_to(directory, model, "arm64-a72", *flags)
        manifest = open_artifact(artifact).manifest
        assert manifest["format_version"] == (2 if name == "multi" else 1)
        feeds = random_feeds(model)
        result, outputs = run_c(binary, "file", artifact, manifest, feeds, directory, prefix=qemu)
        assert result.returncode == 0, result.stderr
        np.savez(directory / "feeds.npz", **feeds)
        script = ("import sys, numpy as np, edgec.runtime as r; f = dict(np.load(sys.argv[2])); "
                  "np.savez(sys.argv[3], **r.load(sys.argv[1]).run(f))")
        done = subprocess.run([*command, "-c", script, str(artifact), str(directory / "feeds.npz"),
                               str(directory / "python.npz")], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        python = np.load(directory / "python.npz")
        # The example program (examples/cpp), cross-built the same way, on .npy files.
        (directory / "in").mkdir()
        for in_name, array in feeds.items():
            np.save(directory / "in" / f"{in_name}.npy", array)
        done = subprocess.run([*qemu, str(example), str(artifact), str(directory / "in"), str(directory / "out")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        for out_name, want in ort_run(model, feeds).items():
            np.testing.assert_allclose(outputs[out_name], want, rtol=1e-4, atol=1e-5, err_msg=out_name)
            assert np.array_equal(outputs[out_name], python[out_name]), f"{name}: {out_name} differs on the device"
            assert np.array_equal(np.load(directory / "out" / f"{out_name}.npy"), python[out_name]), \
                f"{name}: examples/cpp's {out_name} differs on the device"


def test_firmware_artifact_is_refused_with_the_reason(c_run, good, tmp_path):  # noqa: F811
    source, manifest, members = good
    manifest = listed(manifest, members)
    manifest["format_version"] = 3
    path = craft(tmp_path / "fw.edgec", manifest, list(members.items()))
    result = subprocess.run([str(c_run), "file", str(path), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == f"{path}: microcontroller firmware (format version 3) runs on its board, or under qemu " \
                            "with 'edgec run'; this runtime loads TVM libraries (format versions 1, 2)\n"
