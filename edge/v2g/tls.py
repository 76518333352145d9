"""TLS for ISO 15118-2 (V2G2-600 ff.): the charger's server context and the simulated car's client
context, and a loader for a PKI folder in Josev's layout.

ISO 15118-2 names two cipher suites, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 (OpenSSL:
ECDHE-ECDSA-AES128-SHA256) and TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256 (ECDH-ECDSA-AES128-SHA256).
OpenSSL removed the static-ECDH suites in 1.1.0, so OpenSSL 3 (which Python's ``ssl`` uses here)
cannot offer the second at all: we offer ECDHE-ECDSA-AES128-SHA256 only. Every EV must support the
ECDHE one (the EVCC side is only required to support that one), so nothing is lost in practice.

The server sends its whole chain (leaf and CPO sub-CAs: the EV holds only the V2G root), asks for
no client certificate (ISO 15118-2 authenticates the car at the application layer), speaks TLS 1.2
only, and can write a key log in NSS format (``SSLKEYLOGFILE`` style) for Wireshark.

Every problem with the files (unreadable, wrong password, key not matching the leaf, a leaf that is
not EC) is a one-line ``ValueError``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("edge.tls")

#: ISO 15118-2's suites that OpenSSL 3 still has (the static-ECDH one is gone, see the module doc)
ISO2_CIPHERS = "ECDHE-ECDSA-AES128-SHA256"
#: ISO 15118-2 uses secp256r1 for every key, including the ECDHE exchange
ISO2_CURVE = "prime256v1"


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """Where the TLS material is in a PKI folder laid out like Josev's (``create_certs.sh``) and
    ``edge.pki.testpki.create_test_pki``."""

    chain: Path  # leaf SECC certificate, then the CPO sub-CAs (PEM)
    key: Path  # the SECC leaf's private key (PEM, usually encrypted)
    password_file: Path  # its password, first line (an empty or missing file: no password)
    v2g_root: Path  # the V2G root the car trusts (PEM)

    @classmethod
    def in_folder(cls, pki_dir: Path) -> PkiFiles:
        base = Path(pki_dir) / "iso15118_2"
        if not base.is_dir():
            raise ValueError(f"{pki_dir} is not a PKI folder: {base} is missing")
        return cls(base / "certs" / "cpoCertChain.pem", base / "private_keys" / "seccLeaf.key",
                   base / "private_keys" / "seccLeafPassword.txt", base / "certs" / "v2gRootCACert.pem")

    def key_password(self) -> str | None:
        if not self.password_file.exists():
            return None
        first = _read(self.password_file, "key password file").decode("utf-8", "replace").splitlines()
        return first[0].rstrip() if first and first[0].strip() else None


def server_context_from_pki(pki_dir: Path, *, keylog: Path | None = None) -> ssl.SSLContext:
    """The charger's context from a PKI folder (see :class:`PkiFiles`)."""
    files = PkiFiles.in_folder(pki_dir)
    return server_context(files.chain, files.key, key_password=files.key_password(), keylog=keylog)


def client_context_from_pki(pki_dir: Path, *, keylog: Path | None = None) -> ssl.SSLContext:
    """The simulated car's context trusting the PKI folder's V2G root."""
    return client_context([PkiFiles.in_folder(pki_dir).v2g_root], keylog=keylog)


def server_context(chain_pem: Path, key_pem: Path, *, key_password: str | None,
                   keylog: Path | None = None) -> ssl.SSLContext:
    """The SECC's TLS 1.2 server context for ISO 15118-2 (no client certificate)."""
    chain = _load_chain(Path(chain_pem))
    key = _load_key(Path(key_pem), key_password)
    leaf_key = chain[0].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{chain_pem}: the SECC certificate has no EC key; ISO 15118-2's suites need ECDSA (P-256)")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != leaf_key:
        raise ValueError(f"{key_pem} is not the private key of the first certificate in {chain_pem}")
    ctx = _tls12_context(server_side=True)
    ctx.verify_mode = ssl.CERT_NONE  # -2: no client certificate; the car is authenticated by its contract
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    password = key_password.encode() if key_password is not None else None
    with _chain_without_root(Path(chain_pem), chain) as chain_file:
        try:
            ctx.load_cert_chain(chain_file, key_pem, password=password)
        except (ssl.SSLError, OSError) as e:  # checked above; this is a last line of defence
            raise ValueError(f"could not load the SECC chain {chain_pem} with key {key_pem}: {e}") from None
    _set_keylog(ctx, keylog)
    return ctx


def client_context(v2g_roots: list[Path], keylog: Path | None = None) -> ssl.SSLContext:
    """The EV's TLS 1.2 client context: the SECC chain must lead to one of ``v2g_roots``; no
    hostname check (ISO 15118-2: the SECC is reached by its link-local address, not a name)."""
    if not v2g_roots:
        raise ValueError("the car needs at least one V2G root certificate to check the charger's chain")
    ctx = _tls12_context(server_side=False)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    for root in v2g_roots:
        pem = _read(Path(root), "V2G root certificate")
        try:
            ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise ValueError(f"{root} is not a PEM certificate: {e}") from None
    _set_keylog(ctx, keylog)
    return ctx


def _tls12_context(server_side: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ISO2_CIPHERS)
    ctx.set_ecdh_curve(ISO2_CURVE)
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # nothing in -2 needs it, and it is an attack surface
    return ctx


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {path}: {e.strerror or e}") from None


def _load_chain(path: Path) -> list[x509.Certificate]:
    data = _read(path, "SECC certificate chain")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificates") from None
    for cert, issuer in itertools.pairwise(chain):
        if cert.issuer != issuer.subject:
            raise ValueError(f"{path}: the chain is out of order ({cert.subject.rfc4514_string()} is not issued by "
                             f"the next certificate, {issuer.subject.rfc4514_string()}); put the leaf first, then "
                             "each sub-CA")
    return chain


def _load_key(path: Path, password: str | None) -> object:
    data = _read(path, "SECC private key")
    try:
        return serialization.load_pem_private_key(data, password.encode() if password is not None else None)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if password is None:
            raise ValueError(f"{path} is encrypted: a key password is needed") from None
        raise ValueError(f"{path} is not encrypted, but a key password was given") from None
    except ValueError as e:
        if password is not None and "decrypt" in str(e).lower():
            raise ValueError(f"wrong password for the private key {path}") from None
        raise ValueError(f"{path} is not a PEM private key (or the password is wrong)") from None


@contextlib.contextmanager
def _chain_without_root(path: Path, chain: list[x509.Certificate]) -> Iterator[str]:
    """The chain file to hand to OpenSSL: as given, or, when it ends with a self-signed root, a
    temporary copy without it (the EV has the root; sending it only costs bytes on a slow link)."""
    if len(chain) < 2 or chain[-1].issuer != chain[-1].subject:
        yield str(path)
        return
    log.warning("%s ends with the self-signed root %s; sending the chain without it", path,
                chain[-1].subject.rfc4514_string())
    fd, tmp = tempfile.mkstemp(prefix="secc-chain-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:  # certificates only: public data
            f.write(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[:-1]))
        yield tmp
    finally:
        os.unlink(tmp)


def _set_keylog(ctx: ssl.SSLContext, keylog: Path | None) -> None:
    if keylog is None:
        return
    try:
        ctx.keylog_filename = str(keylog)  # appends NSS key log lines (CLIENT_RANDOM ...) per handshake
    except OSError as e:
        raise ValueError(f"cannot write the TLS key log {keylog}: {e.strerror or e}") from None
    log.warning("TLS key log on: session keys go to %s (for debugging only)", keylog)
