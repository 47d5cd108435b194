"""The .edgec container and the runtime's checks on it."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import onnx
import pytest

from edgec import api
from edgec import runtime
from edgec.deploy.artifact import ALIGNMENT, DIGEST, LIBRARY, MANIFEST, WEIGHTS, atomic_write, open_artifact, write_artifact
from edgec.errors import ArtifactError
from tests.models import small_cnn


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("art")
    onnx.save(small_cnn(), directory / "cnn.onnx")
    api.compile(directory / "cnn.onnx", "x86-64", output=directory / "cnn.edgec")
    return directory / "cnn.edgec"


def rewrite(source, destination, edit_manifest=lambda m: None, weights=None):
    opened = open_artifact(source)
    manifest = json.loads(json.dumps(opened.manifest))
    edit_manifest(manifest)
    if weights is None:
        blob = opened.read_member(WEIGHTS)
        weights = [(w["name"], np.frombuffer(blob, np.dtype(w["dtype"]), int(np.prod(w["shape"])), w["offset"]).reshape(w["shape"]))
                   for w in opened.manifest["weights"]]
    write_artifact(destination, manifest, opened.read_member(LIBRARY), weights)


def test_layout_is_a_plain_tar_with_aligned_weights(artifact):
    with tarfile.open(artifact) as tar:
        assert tar.getnames() == [MANIFEST, DIGEST, LIBRARY, WEIGHTS]
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
    opened = open_artifact(artifact)
    opened.verify_members()
    offset, _ = opened.offsets[WEIGHTS]
    assert all((offset + w["offset"]) % ALIGNMENT == 0 for w in opened.manifest["weights"])


def test_weights_are_views_of_the_mapped_file_not_copies(artifact):
    compiled = runtime.load(artifact)
    mapped = compiled._weight_map
    start, end = mapped.ctypes.data, mapped.ctypes.data + mapped.nbytes
    weights = compiled._stages[0].weights
    assert weights and all(start <= t.data_ptr() < end for t in weights)


def test_loaded_model_runs_repeatably(artifact):
    compiled = runtime.load(artifact)
    first = compiled.run(compiled.random_inputs(0))
    assert compiled.run(compiled.random_inputs(0))["logits"].tolist() == first["logits"].tolist()
    assert compiled.run(compiled.random_inputs(1))["logits"].tolist() != first["logits"].tolist()


def test_artifact_for_another_architecture_is_refused(artifact, tmp_path):
    def to_arm(manifest):
        manifest["target"].update(name="arm64-a72", triple="aarch64-linux-gnu")

    rewrite(artifact, tmp_path / "arm.edgec", to_arm)
    with pytest.raises(ArtifactError, match="built for aarch64-linux-gnu .*this machine is x86_64; run it on the device"):
        runtime.load(tmp_path / "arm.edgec")


def test_newer_format_is_refused(artifact, tmp_path):
    rewrite(artifact, tmp_path / "v1.edgec")
    opened = open_artifact(tmp_path / "v1.edgec")
    manifest = dict(opened.manifest, format_version=99)
    # write_artifact always stamps the current version, so patch the tar by hand.
    with tarfile.open(tmp_path / "v99.edgec", "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArtifactError, match="format version 99 is not supported"):
        open_artifact(tmp_path / "v99.edgec")


def test_corrupt_member_is_detected(artifact, tmp_path):
    data = bytearray(artifact.read_bytes())
    opened = open_artifact(artifact)
    offset, size = opened.offsets[WEIGHTS]
    data[offset + size // 2] ^= 0xFF
    (tmp_path / "bad.edgec").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="member 'weights.bin' is corrupt"):
        open_artifact(tmp_path / "bad.edgec").verify_members()


def test_not_an_artifact(tmp_path):
    (tmp_path / "x.edgec").write_text("hello")
    with pytest.raises(ArtifactError, match="x.edgec: not an edgec artifact"):
        open_artifact(tmp_path / "x.edgec")


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_write(path) as handle:
        handle.write(b"new")
    assert path.read_bytes() == b"new" and oct(path.stat().st_mode & 0o777) == "0o644"
