"""Hostile artifacts: each is refused, naming the artifact and the member, before any
member is written to disk or loaded, and nothing lands outside the runtime's private
directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgec import api
from edgec import runtime
from edgec.cli import main
from edgec.deploy.artifact import DIGEST, LIBRARY, MANIFEST, WEIGHTS, open_artifact
from edgec.errors import ArtifactError
from tests.models import small_cnn


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trust")
    onnx.save(small_cnn(), directory / "cnn.onnx")
    api.compile(directory / "cnn.onnx", "x86-64", output=directory / "cnn.edgec")
    opened = open_artifact(directory / "cnn.edgec")
    members = {name: opened.read_member(name) for name in opened.manifest["members"]}
    return directory / "cnn.edgec", json.loads(json.dumps(opened.manifest)), members


def craft(path: Path, manifest: dict | bytes, members: list[tuple[str, bytes]], *, digest: bytes | None = None,
          extra: list[tarfile.TarInfo] = ()) -> Path:
    """A tar with a manifest (its digest recomputed unless given), the members as named and
    any raw extra headers: every structural check but the one under test passes."""
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest, sort_keys=True).encode()
    digest = digest if digest is not None else (hashlib.sha256(data).hexdigest() + "\n").encode()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in [(MANIFEST, data), (DIGEST, digest), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for info in extra:
            tar.addfile(info)
    return path


def listed(manifest: dict, members: dict[str, bytes]) -> dict:
    manifest = json.loads(json.dumps(manifest))
    manifest["members"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in members.items()}
    return manifest


def refused(path: Path, member: str, capfd) -> str:
    """Both the library API and ``edgec run`` refuse ``path``, naming it and ``member``."""
    with pytest.raises(ArtifactError) as caught:
        runtime.load(path)
    assert str(path) in str(caught.value) and member in str(caught.value)
    capfd.readouterr()
    assert main(["run", str(path), "--random-inputs"]) == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgec: error: ") and member in err, err
    return err


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR for the runtime, so a test can see everything it writes there."""
    directory = tmp_path / "tmpdir"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr("tempfile.tempdir", None)
    return directory


def tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("name", ["../../pwned.so", "/tmp/edgec-pwned.so", "sub/lib.so", "..", ".hidden/x"])
def test_library_outside_the_directory_is_refused_and_never_written(good, tmp_path, private_tmp, capfd, name):
    _, manifest, members = good
    evil = dict(members)
    evil[name] = evil.pop(LIBRARY)
    manifest = listed(manifest, evil)
    manifest["format_version"] = 2
    manifest["partitions"] = [{"id": 0, "library": name, "runs_on": "cpu", "inputs": ["input"],
                               "outputs": ["logits"], "weights": [w["name"] for w in manifest["weights"]]}]
    path = craft(tmp_path / "evil.edgec", manifest, list(evil.items()))
    before = tree(tmp_path)
    err = refused(path, name, capfd)
    assert "invalid name" in err
    # ../../pwned.so from the runtime's directory under TMPDIR would be tmp_path/pwned.so
    assert not Path("/tmp/edgec-pwned.so").exists() and tree(tmp_path) == before and not tree(private_tmp)


def test_manifest_naming_a_bad_member_is_refused(good, tmp_path, capfd):
    _, manifest, members = good
    manifest = listed(manifest, members)
    manifest["members"]["../x.so"] = manifest["members"][LIBRARY]
    err = refused(craft(tmp_path / "m.edgec", manifest, list(members.items())), "../x.so", capfd)
    assert "invalid" in err


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_links_and_special_members_are_refused(good, tmp_path, private_tmp, capfd, kind):
    _, manifest, members = good
    link = tarfile.TarInfo(LIBRARY)
    link.type, link.linkname = kind, "/etc/passwd"
    others = [(n, d) for n, d in members.items() if n != LIBRARY]
    err = refused(craft(tmp_path / "link.edgec", listed(manifest, members), others, extra=[link]), LIBRARY, capfd)
    assert "not a regular file" in err
    assert not tree(private_tmp)


@pytest.mark.parametrize("member", [WEIGHTS, LIBRARY])
def test_byte_flip_in_a_member_is_refused_before_it_is_used(good, tmp_path, private_tmp, capfd, monkeypatch, member):
    source, _, _ = good
    opened = open_artifact(source)
    data = bytearray(source.read_bytes())
    offset, size = opened.offsets[member]
    data[offset + size // 2] ^= 0x01
    (tmp_path / "flip.edgec").write_bytes(bytes(data))
    loaded = []
    monkeypatch.setattr("tvm.runtime.load_module", lambda *a: loaded.append(a))
    err = refused(tmp_path / "flip.edgec", member, capfd)
    assert "corrupt" in err and not loaded and not tree(private_tmp)


def test_byte_flip_in_the_manifest_is_refused(good, tmp_path, capfd):
    source, _, _ = good
    data = bytearray(source.read_bytes())
    at = data.index(b'"edgec_version"')
    data[at + 1] ^= 0x20  # "Edgec_version": still valid JSON, a different manifest
    (tmp_path / "flip.edgec").write_bytes(bytes(data))
    assert "corrupt" in refused(tmp_path / "flip.edgec", MANIFEST, capfd)


def test_missing_digest_is_refused(good, tmp_path, capfd):
    _, manifest, members = good
    path = tmp_path / "nodigest.edgec"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in [(MANIFEST, json.dumps(listed(manifest, members)).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    assert "missing" in refused(path, DIGEST, capfd)


def test_nesting_bomb_is_refused_without_recursion(good, tmp_path, capfd):
    _, manifest, members = good
    bomb = json.dumps(listed(manifest, members), sort_keys=True).encode()
    bomb = bomb[:-1] + b', "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    err = refused(craft(tmp_path / "bomb.edgec", bomb, list(members.items())), MANIFEST, capfd)
    assert "nests 200001 levels deep" in err


def test_brackets_inside_strings_do_not_count_as_nesting(good, tmp_path):
    _, manifest, members = good
    manifest = listed(manifest, members)
    manifest["note"] = "[" * 1000 + '\\"{'
    open_artifact(craft(tmp_path / "strings.edgec", manifest, list(members.items())))


def test_oversized_manifest_is_refused(good, tmp_path, capfd):
    _, manifest, members = good
    manifest = listed(manifest, members)
    manifest["padding"] = "x" * (5 << 20)
    assert "over the limit" in refused(craft(tmp_path / "big.edgec", manifest, list(members.items())), MANIFEST, capfd)


def test_sparse_64_gib_member_is_refused_from_its_header(good, tmp_path, capfd):
    """The tar header claims 64 GiB (a sparse file on disk); the manifest says otherwise, and
    the member is refused without reading it."""
    _, manifest, members = good
    path = craft(tmp_path / "huge.edgec", listed(manifest, members), list(members.items()))
    huge = tarfile.TarInfo("extra.bin")
    huge.size = 64 << 30
    data = path.read_bytes().rstrip(b"\0")
    data += b"\0" * (-len(data) % 512)
    with open(path, "wb") as handle:
        handle.write(data + huge.tobuf(format=tarfile.GNU_FORMAT))
        handle.truncate(len(data) + 512 + (64 << 30) + 1024)
    assert "not listed" in refused(path, "extra.bin", capfd)


def test_member_larger_than_the_manifest_says_is_refused(good, tmp_path, capfd):
    _, manifest, members = good
    grown = dict(members, **{WEIGHTS: members[WEIGHTS] + b"\0" * 4096})
    manifest = listed(manifest, members)  # records the original size
    err = refused(craft(tmp_path / "grown.edgec", manifest, list(grown.items())), WEIGHTS, capfd)
    assert "the manifest says" in err


def test_weight_index_outside_the_blob_is_refused(good, tmp_path, capfd):
    _, manifest, members = good
    manifest = listed(manifest, members)
    manifest["weights"][0]["offset"] = len(members[WEIGHTS]) + 64
    assert "does not fit" in refused(craft(tmp_path / "index.edgec", manifest, list(members.items())), WEIGHTS, capfd)


def test_library_is_loaded_from_a_private_directory(good, private_tmp, monkeypatch):
    """The one file written is in a fresh 0700 directory, 0600 itself, and both are gone after."""
    source, _, _ = good
    seen = []

    def load_vm(self, path, *args):
        directory = Path(path).parent
        seen.append((stat.S_IMODE(os.stat(directory).st_mode), stat.S_IMODE(os.stat(path).st_mode), directory))
        return loader(self, path, *args)

    from edgec.runtime.tvm_runtime import Runtime

    loader = Runtime.load_vm
    monkeypatch.setattr(Runtime, "load_vm", load_vm)
    compiled = runtime.load(source)
    compiled.run(compiled.random_inputs())
    assert [(d, f) for d, f, _ in seen] == [(0o700, 0o600)]
    assert seen[0][2].parent == private_tmp and not seen[0][2].exists() and not tree(private_tmp)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2, 1 << 40) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


def manifest_paths(value, prefix=()):
    """Every (path, value) in a JSON document, to pick one to mutate."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from manifest_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from manifest_paths(item, (*prefix, index))


@settings(max_examples=int(os.environ.get("EDGEC_MANIFEST_EXAMPLES", "40")), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_tampered_manifest_with_a_fresh_digest_is_refused_or_runs(good, tmp_path, data):
    """Whoever can write the file can recompute the digest: the manifest's fields are checked
    too, so loading and running a mutated one gives an ArtifactError or a normal run,
    never another exception."""
    _, manifest, members = good
    manifest = listed(manifest, members)
    paths = [p for p in manifest_paths(manifest) if p and p[0] not in ("report", "memory_plan", "runtime_memory")]
    path = data.draw(st.sampled_from(paths))
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES)
    artifact = craft(tmp_path / "mutated.edgec", manifest, list(members.items()))
    try:
        compiled = runtime.load(artifact)
        compiled.run(compiled.random_inputs())
    except ArtifactError:
        pass
