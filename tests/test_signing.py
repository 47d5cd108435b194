"""Signed artifacts: keygen, compile --sign, and --verify-key on run, check and bench."""

from __future__ import annotations

import stat

import onnx
import pytest

from edgec import api
from edgec.cli import main
from edgec.deploy.artifact import MANIFEST, SIGNATURE, WEIGHTS, open_artifact
from tests.models import small_cnn


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A model, two key pairs, the artifact signed with the first and an unsigned one."""
    directory = tmp_path_factory.mktemp("sign")
    onnx.save(small_cnn(), directory / "cnn.onnx")
    for name in ("key.pem", "other.pem"):
        assert main(["keygen", str(directory / name)]) == 0
    api.compile(directory / "cnn.onnx", "x86-64", output=directory / "signed.edgec", sign=directory / "key.pem")
    api.compile(directory / "cnn.onnx", "x86-64", output=directory / "plain.edgec")
    return directory


def run(capfd, argv):
    capfd.readouterr()
    code = main(argv)
    return code, capfd.readouterr().err


def test_keygen_writes_a_private_key_only_its_owner_reads(signed, capfd):
    assert stat.S_IMODE((signed / "key.pem").stat().st_mode) == 0o600
    assert (signed / "key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (signed / "key.pem.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = (signed / "key.pem").read_bytes()
    code, err = run(capfd, ["keygen", str(signed / "key.pem")])
    assert code == 2 and "already exists" in err and (signed / "key.pem").read_bytes() == before


@pytest.mark.parametrize("command", [["run", "--random-inputs"], ["bench", "--repeat", "1", "--warmup", "0"],
                                     ["check", "--model", "{model}"]])
def test_signed_artifact_round_trips(signed, capfd, command):
    argv = [command[0], str(signed / "signed.edgec"), "--verify-key", str(signed / "key.pem.pub"),
            *(a.format(model=signed / "cnn.onnx") for a in command[1:])]
    code, err = run(capfd, argv)
    assert code == 0, err
    assert SIGNATURE in open_artifact(signed / "signed.edgec").offsets


def test_unsigned_and_wrongly_signed_are_refused(signed, capfd):
    code, err = run(capfd, ["run", str(signed / "plain.edgec"), "--random-inputs", "--verify-key", str(signed / "key.pem.pub")])
    assert code == 1 and "not signed" in err and SIGNATURE in err and err.count("\n") == 1
    code, err = run(capfd, ["run", str(signed / "signed.edgec"), "--random-inputs", "--verify-key", str(signed / "other.pem.pub")])
    assert code == 1 and "does not verify" in err and err.count("\n") == 1
    code, err = run(capfd, ["check", str(signed / "plain.edgec"), "--model", str(signed / "cnn.onnx"),
                            "--verify-key", str(signed / "key.pem.pub")])
    assert code == 1 and "not signed" in err


def test_tampered_signed_artifact_is_refused(signed, tmp_path, capfd):
    """Re-signing a changed manifest needs the key: a consistent digest is not enough."""
    import hashlib
    import tarfile

    data = bytearray((signed / "signed.edgec").read_bytes())
    opened = open_artifact(signed / "signed.edgec")
    offset, size = opened.offsets[MANIFEST]
    manifest = bytes(data[offset:offset + size]).replace(b'"edgec_version"', b'"Edgec_version"')
    data[offset:offset + size] = manifest
    digest_offset, _ = opened.offsets["manifest.sha256"]
    data[digest_offset:digest_offset + 64] = hashlib.sha256(manifest).hexdigest().encode()
    (tmp_path / "t.edgec").write_bytes(bytes(data))
    with tarfile.open(tmp_path / "t.edgec"):
        pass
    code, err = run(capfd, ["run", str(tmp_path / "t.edgec"), "--random-inputs", "--verify-key", str(signed / "key.pem.pub")])
    assert code == 1 and "does not verify" in err
    data = bytearray((signed / "signed.edgec").read_bytes())
    offset, size = opened.offsets[WEIGHTS]
    data[offset + 1] ^= 1
    (tmp_path / "w.edgec").write_bytes(bytes(data))
    code, err = run(capfd, ["run", str(tmp_path / "w.edgec"), "--random-inputs", "--verify-key", str(signed / "key.pem.pub")])
    assert code == 1 and "'weights.bin' is corrupt" in err


def test_bad_signing_key_fails_before_compiling(signed, tmp_path, capfd):
    code, err = run(capfd, ["compile", str(signed / "cnn.onnx"), "-t", "x86-64", "-o", str(tmp_path / "x.edgec"),
                            "--sign", str(signed / "key.pem.pub")])
    assert code == 2 and "--sign" in err and not (tmp_path / "x.edgec").exists()
    code, err = run(capfd, ["run", str(signed / "signed.edgec"), "--random-inputs", "--verify-key", str(signed / "key.pem")])
    assert code == 2 and "--verify-key" in err


def test_inspect_says_whether_an_artifact_is_signed(signed, capfd):
    capfd.readouterr()
    assert main(["inspect", str(signed / "signed.edgec")]) == 0
    assert "signature  manifest.sig present" in capfd.readouterr().out
    assert main(["inspect", str(signed / "plain.edgec")]) == 0
    assert "signature  none" in capfd.readouterr().out
