"""Reading certificates and keys from a PKI folder in Josev's layout (``edge pki create`` writes one),
each problem a one-line ValueError naming the file."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from edge.pki.algorithms import PrivateKey
from edge.pki.testpki import PkiPaths


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None


def read_certificate(path: Path) -> x509.Certificate:
    data = read_file(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"{path} is not a PEM certificate") from None


def read_key_of(paths: PkiPaths, name: str, leaf: x509.Certificate, password: str | None = None) -> PrivateKey:
    """``private_keys/<name>.key``, which must be the key of ``leaf``; its password as given, else from
    Josev's password file for it (none: unencrypted)."""
    password_file = paths.password_file(name)
    if password is None:
        password = read_file(password_file).decode("utf-8", "replace").strip() if password_file.exists() else ""
    key_path = paths.key(name)
    try:
        key = serialization.load_pem_private_key(read_file(key_path), password.encode() or None)
    except (TypeError, ValueError):
        raise ValueError(f"cannot load the key {key_path} (wrong or missing password?)") from None
    if key.public_key() != leaf.public_key():
        raise ValueError(f"{key_path} is not the key of {leaf.subject.rfc4514_string()}")
    return key  # type: ignore[return-value]


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def emaid_of_leaf(leaf: bytes | None) -> str:
    """The EMAID a -20 contract leaf (DER) carries in its CN ("" when it cannot be read: the chain check
    then refuses it)."""
    try:
        return common_name(x509.load_der_x509_certificate(leaf or b"")) or ""
    except ValueError:
        return ""
