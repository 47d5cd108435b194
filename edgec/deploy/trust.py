"""Signed artifacts: Ed25519 keys and signatures, through the ``cryptography`` package.

A signature is the artifact member ``manifest.sig``: the 64-byte Ed25519 signature of
the 32-byte SHA-256 of ``manifest.json`` (the manifest digest). The manifest records
every other member's sha256, and the loader checks each member against it, so one
signature covers the whole artifact. Keys are PEM files: the private key PKCS#8,
unencrypted, written 0600; the public key SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import ArtifactError, UsageError
from .artifact import DIGEST, MANIFEST, SIGNATURE, ArtifactFile, open_artifact, write_members


def generate_keypair(private_path: Path) -> Path:
    """Write a new private key to ``private_path`` (0600) and its public key beside it, as
    ``private_path`` + ``.pub``; refuse to overwrite either. Returns the public key's path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path}: already exists; edgec keygen does not overwrite keys")
        if not path.parent.is_dir():
            raise UsageError(f"{path}: directory {path.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    write_new(private_path, private_pem, 0o600)
    try:
        write_new(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return public_path


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never a moment more readable), never following a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_private_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = read_key_file(path, "--sign")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--sign {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"--sign {path}: not an Ed25519 key (make one with 'edgec keygen')")
    return key


def load_public_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = read_key_file(path, "--verify-key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--verify-key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"--verify-key {path}: not an Ed25519 public key (make one with 'edgec keygen')")
    return key


def read_key_file(path: Path, flag: str) -> bytes:
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    if path.stat().st_size > 64 << 10:
        raise UsageError(f"{flag} {path}: too large for a key file")
    return path.read_bytes()


def sign_artifact(path: Path, key) -> None:
    """Rewrite the artifact at ``path`` with a ``manifest.sig`` member, atomically; members
    are checked against the manifest first, so only an intact artifact gets signed."""
    opened = open_artifact(path)
    offset, size = opened.offsets[MANIFEST]
    with open(path, "rb") as handle:
        handle.seek(offset)
        manifest_bytes = handle.read(size)
    members = {name: opened.read_member(name) for name in opened.typed.members}
    if hashlib.sha256(manifest_bytes).digest() != opened.manifest_digest:
        raise ArtifactError(f"{path}: member '{MANIFEST}' changed while it was being signed")
    write_members(path, manifest_bytes, members, key.sign(opened.manifest_digest))


def verify_signature(artifact: ArtifactFile, key, key_path: Path) -> None:
    """Raise unless ``artifact`` carries a signature of its manifest digest by ``key``."""
    from cryptography.exceptions import InvalidSignature

    if SIGNATURE not in artifact.offsets:
        raise ArtifactError(f"{artifact.path}: member '{SIGNATURE}' is missing: the artifact is not signed "
                            f"(--verify-key {key_path} requires 'edgec compile --sign')")
    offset, size = artifact.offsets[SIGNATURE]
    if size != 64:
        raise ArtifactError(f"{artifact.path}: member '{SIGNATURE}' is {size} bytes, not an Ed25519 signature (64)")
    with open(artifact.path, "rb") as handle:
        handle.seek(offset)
        signature = handle.read(size)
    try:
        key.verify(signature, artifact.manifest_digest)
    except InvalidSignature:
        raise ArtifactError(f"{artifact.path}: member '{SIGNATURE}' does not verify with {key_path}: signed by "
                            f"another key, or '{MANIFEST}' and '{DIGEST}' were changed after signing") from None
