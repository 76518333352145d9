"""TLS for ISO 15118-2 (TLS 1.2) and ISO 15118-20 (TLS 1.3): the charger's server contexts, the
simulated car's client contexts, one listener serving both, and loaders for a PKI folder in Josev's
layout (``iso15118_2`` P-256, ``iso15118_20`` P-521, ``iso15118_20_ed448`` Ed448; see
:mod:`edge.pki.testpki`).

**ISO 15118-2** (V2G2-600 ff.) names TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 (OpenSSL:
ECDHE-ECDSA-AES128-SHA256) and TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256. OpenSSL removed the
static-ECDH suites in 1.1.0, so we offer the ECDHE one only; every EV must support it. The server sends
its whole chain (the EV holds only the V2G root), asks for no client certificate (the car is
authenticated at the application layer), speaks TLS 1.2 only.

**ISO 15118-20** wants TLS 1.3 with mutual authentication: the SECC sends a CertificateRequest
([V2G20-2400]) naming the roots it trusts in ``certificate_authorities`` ([V2G20-2401]); the EV
presents its vehicle (OEM provisioning) chain and names the V2G roots it holds in its ClientHello
([V2G20-1006]); cipher suites TLS_AES_256_GCM_SHA384 then TLS_CHACHA20_POLY1305_SHA256 (Table 6),
groups secp521r1 then x448 (Table 7, [V2G20-2460]), signature schemes ecdsa_secp521r1_sha512 then
ed448 (Table 8, [V2G20-1667]). -20 must not be chosen over TLS 1.2 ([V2G20-2356]): that check belongs
to the protocol choice (the negotiated version is ``stream.version()``).

What Python's ``ssl`` (3.11, OpenSSL 3.0) can set, found out on this machine:

* ``set_ciphers`` only touches TLS <= 1.2 suites; there is no ``set_ciphersuites``. ``set_ecdh_curve``
  sets exactly one group (``SSL_CTX_set1_groups`` with one NID): secp521r1 *or* X448, never both.
  Signature algorithms and CA name lists have no setter at all. Left alone, OpenSSL 3.0 offers
  TLS_AES_128_GCM_SHA256 too, accepts x25519/P-256/P-384 key shares and any ECDSA/EdDSA/RSA scheme.
* So :func:`configure_openssl` calls the missing ``SSL_CTX_*`` functions through ``ctypes`` on the very
  ``libssl`` that ``_ssl`` is linked to, with the ``SSL_CTX*`` read from the context object (the first
  field after the object header in CPython's ``PySSLContext``; checked against ``options`` and
  ``security_level`` before use, and the TLS 1.3 suites are read back through ``get_ciphers``). No
  ``OPENSSL_CONF``, no process-wide change. Where that is impossible (another Python, a statically
  linked ``_ssl``) it returns False, the contexts log a warning and keep OpenSSL's defaults, which
  still contain every -20 algorithm (interoperable, not conformant).
* The server issues no session tickets (``num_tickets = 0``): a resumed TLS 1.3 handshake carries no
  client certificate, and -20 identifies the car by it.
* OCSP stapling: ``ssl`` has no status callback, so :func:`enable_ocsp_stapling` installs OpenSSL's through
  ``ctypes`` too (responses from :mod:`edge.pki.stapling`).

**One port for -2 and -20 cars.** One OpenSSL context keeps one certificate per key type (RSA, ECDSA,
Ed25519, Ed448 ...) and picks by the client's signature algorithms. So a P-256 chain and an Ed448 chain
fit in one context, but a P-256 and a P-521 chain do not (both ECDSA: the one loaded last replaces the
other); and verify mode, versions and groups are per context, so -2 cars (no CertificateRequest) and
-20 cars (CertificateRequest, required) cannot both be served right by one context anyway. The
``sni_callback`` cannot tell them apart (in it ``version()``, ``cipher()`` and ``shared_ciphers()`` are
still None, and switching ``SSLObject.context`` there swaps certificates but not the verify mode);
``_msg_callback`` could see the ClientHello but is private. Hence :class:`CombinedServerContext`: an
``SSLContext`` whose ``wrap_bio`` waits for the whole ClientHello (it arrives in the memory BIO
``trio.SSLStream`` feeds), parses it (:func:`parse_client_hello`) and only then creates the real
``SSLObject`` from the -2 context (no TLS 1.3 offered) or from one of the -20 contexts (TLS 1.3
offered with a Table 7 group; the chain leading to a root the car named, else the one whose signature
scheme the car prefers) -- the decision OpenSSL's client-hello callback lets C servers take. It works
with ``trio.SSLStream`` (``wrap_bio``) only, not with ``wrap_socket``.

Every problem with the files (unreadable, wrong password, key not matching the leaf, a key of the
wrong type) is a one-line ``ValueError``. Key logs are written in NSS format (``SSLKEYLOGFILE``):
CLIENT_RANDOM for TLS 1.2, the *_TRAFFIC_SECRET lines for TLS 1.3.
"""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import functools
import itertools
import logging
import os
import platform
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448

from edge.pki.testpki import ISO2_FOLDER, ISO20_ED448_FOLDER, ISO20_FOLDER

log = logging.getLogger("edge.tls")

#: ISO 15118-2's suites that OpenSSL 3 still has (the static-ECDH one is gone, see the module doc)
ISO2_CIPHERS = "ECDHE-ECDSA-AES128-SHA256"
#: ISO 15118-2 uses secp256r1 for every key, including the ECDHE exchange
ISO2_CURVE = "prime256v1"

#: ISO 15118-20 Table 6, in its order (OpenSSL names = IANA names for TLS 1.3)
ISO20_CIPHERSUITES = ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
#: ISO 15118-20 Table 7, in its order (OpenSSL group names)
ISO20_GROUPS = ("secp521r1", "X448")
#: ISO 15118-20 Table 8, in its order (TLS 1.3 SignatureScheme names as OpenSSL spells them)
ISO20_SIGNATURE_ALGORITHMS = ("ecdsa_secp521r1_sha512", "ed448")
#: the -20 PKI folders, in the order the charger prefers their chains
ISO20_FOLDERS = (ISO20_FOLDER, ISO20_ED448_FOLDER)

TLS12_VERSION = 0x0303
TLS13_VERSION = 0x0304
#: TLS SignatureScheme code points (RFC 8446 4.2.3)
SIGNATURE_SCHEMES = {"ecdsa_secp256r1_sha256": 0x0403, "ecdsa_secp521r1_sha512": 0x0603, "ed448": 0x0808}
#: TLS NamedGroup code points of ISO20_GROUPS (secp521r1, x448)
ISO20_GROUP_CODES = frozenset({0x0019, 0x001E})


class ClientAuth(Enum):
    """Whether a -20 server insists on the car's certificate. Both send a CertificateRequest
    ([V2G20-2400]) and check a certificate that comes; OPTIONAL lets a car without one through."""

    REQUIRED = "required"
    OPTIONAL = "optional"

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return ssl.CERT_REQUIRED if self is ClientAuth.REQUIRED else ssl.CERT_OPTIONAL


# --- where things are in a PKI folder ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """The charger's TLS material in one folder of a PKI laid out like Josev's (``create_certs.sh``)
    and ``edge.pki.testpki.create_test_pki``."""

    chain: Path  # leaf SECC certificate, then the CPO sub-CAs (PEM)
    key: Path  # the SECC leaf's private key (PEM, usually encrypted)
    password_file: Path  # its password, first line (an empty or missing file: no password)
    v2g_root: Path  # the V2G root the car trusts (PEM)
    oem_root: Path | None = None  # the OEM root vehicle certificates lead to (-20 client auth)

    @classmethod
    def in_folder(cls, pki_dir: Path, folder: str = ISO2_FOLDER) -> PkiFiles:
        base = _folder(pki_dir, folder)
        return cls(base / "certs" / "cpoCertChain.pem", base / "private_keys" / "seccLeaf.key",
                   base / "private_keys" / "seccLeafPassword.txt", base / "certs" / "v2gRootCACert.pem",
                   base / "certs" / "oemRootCACert.pem")

    def key_password(self) -> str | None:
        return _password_from_file(self.password_file)


@dataclass(frozen=True, slots=True)
class VehiclePkiFiles:
    """The car's TLS material for -20 in one PKI folder: its OEM provisioning (vehicle) chain and the
    V2G root it checks the charger against."""

    chain: Path  # OEM provisioning leaf, then the OEM sub-CAs (PEM)
    key: Path
    password_file: Path
    v2g_root: Path

    @classmethod
    def in_folder(cls, pki_dir: Path, folder: str = ISO20_FOLDER) -> VehiclePkiFiles:
        base = _folder(pki_dir, folder)
        return cls(base / "certs" / "oemCertChain.pem", base / "private_keys" / "oemLeaf.key",
                   base / "private_keys" / "oemLeafPassword.txt", base / "certs" / "v2gRootCACert.pem")

    def key_password(self) -> str | None:
        return _password_from_file(self.password_file)


def _folder(pki_dir: Path, folder: str) -> Path:
    base = Path(pki_dir) / folder
    if not base.is_dir():
        raise ValueError(f"{pki_dir} is not a PKI folder: {base} is missing")
    return base


def _password_from_file(path: Path) -> str | None:
    if not path.exists():
        return None
    first = _read(path, "key password file").decode("utf-8", "replace").splitlines()
    return first[0].rstrip() if first and first[0].strip() else None


# --- ISO 15118-2: TLS 1.2 -------------------------------------------------------------------------------


def server_context_from_pki(pki_dir: Path, *, keylog: Path | None = None) -> ssl.SSLContext:
    """The charger's -2 context from a PKI folder (see :class:`PkiFiles`)."""
    files = PkiFiles.in_folder(pki_dir)
    return server_context(files.chain, files.key, key_password=files.key_password(), keylog=keylog)


def client_context_from_pki(pki_dir: Path, *, keylog: Path | None = None) -> ssl.SSLContext:
    """The simulated car's -2 context trusting the PKI folder's V2G root."""
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
    _load_own_chain(ctx, Path(chain_pem), chain, Path(key_pem), key_password, "SECC")
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
    _trust(ctx, _load_roots(v2g_roots, "V2G root certificate"))
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


# --- ISO 15118-20: TLS 1.3 ------------------------------------------------------------------------------


def server_context_iso20_from_pki(pki_dir: Path, *, folder: str = ISO20_FOLDER,
                                  client_auth: ClientAuth = ClientAuth.REQUIRED,
                                  keylog: Path | None = None) -> ssl.SSLContext:
    """The charger's -20 context with the SECC chain of ``folder`` (``iso15118_20``: P-521,
    ``iso15118_20_ed448``: Ed448), trusting the OEM roots of every -20 folder in ``pki_dir`` (a car's
    vehicle PKI need not use the charger's algorithm)."""
    files = PkiFiles.in_folder(pki_dir, folder)
    return server_context_iso20(files.chain, files.key, key_password=files.key_password(),
                                oem_roots=_iso20_oem_roots(Path(pki_dir)), client_auth=client_auth, keylog=keylog)


def server_context_iso20(chain_pem: Path, key_pem: Path, *, key_password: str | None, oem_roots: Sequence[Path],
                         client_auth: ClientAuth = ClientAuth.REQUIRED,
                         keylog: Path | None = None) -> ssl.SSLContext:
    """The SECC's TLS 1.3 server context for ISO 15118-20: the SECC chain (P-521 or Ed448 leaf), a
    CertificateRequest naming ``oem_roots``, the car's chain checked against them."""
    chain = _load_chain(Path(chain_pem))
    _check_iso20_key(chain, _load_key(Path(key_pem), key_password), Path(chain_pem), Path(key_pem), "SECC")
    roots = _load_roots(oem_roots, "OEM root certificate")
    if not roots:
        raise ValueError("the -20 charger needs at least one OEM root certificate to check the car's certificate")
    ctx = _tls13_context(server_side=True, signature_algorithms=ISO20_SIGNATURE_ALGORITHMS, names=roots)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE  # Table 6's order, not the car's
    ctx.num_tickets = 0  # every handshake full, so every connection shows the car's certificate
    ctx.verify_mode = client_auth.verify_mode
    _trust(ctx, roots)
    _load_own_chain(ctx, Path(chain_pem), chain, Path(key_pem), key_password, "SECC")
    _set_keylog(ctx, keylog)
    return ctx


def client_context_iso20(pki_dir: Path, *, folder: str = ISO20_FOLDER,
                         signature_algorithms: Sequence[str] = ISO20_SIGNATURE_ALGORITHMS,
                         keylog: Path | None = None) -> ssl.SSLContext:
    """Our -20 car's context from a PKI folder: presents the folder's OEM provisioning chain, trusts
    the folder's V2G root (see :class:`VehiclePkiFiles`)."""
    files = VehiclePkiFiles.in_folder(pki_dir, folder)
    return client_context_iso20_from_files(files.chain, files.key, key_password=files.key_password(),
                                           v2g_roots=[files.v2g_root], signature_algorithms=signature_algorithms,
                                           keylog=keylog)


def client_context_iso20_from_files(chain_pem: Path, key_pem: Path, *, key_password: str | None,
                                    v2g_roots: Sequence[Path],
                                    signature_algorithms: Sequence[str] = ISO20_SIGNATURE_ALGORITHMS,
                                    keylog: Path | None = None) -> ssl.SSLContext:
    """The EV's TLS 1.3 client context: presents the vehicle chain, names ``v2g_roots`` in its
    ClientHello and checks the SECC chain against them (no hostname check). ``signature_algorithms``
    (a subset of Table 8, in the car's order of preference) is what the car offers; the charger
    picks its chain by it."""
    unknown = [a for a in signature_algorithms if a not in ISO20_SIGNATURE_ALGORITHMS]
    if unknown or not signature_algorithms:
        raise ValueError(f"signature algorithms must be taken from {', '.join(ISO20_SIGNATURE_ALGORITHMS)}; "
                         f"got {', '.join(signature_algorithms) or 'none'}")
    chain = _load_chain(Path(chain_pem), "vehicle certificate chain")
    key = _load_key(Path(key_pem), key_password, "vehicle private key")
    _check_iso20_key(chain, key, Path(chain_pem), Path(key_pem), "vehicle")
    roots = _load_roots(v2g_roots, "V2G root certificate")
    if not roots:
        raise ValueError("the car needs at least one V2G root certificate to check the charger's chain")
    ctx = _tls13_context(server_side=False, signature_algorithms=tuple(signature_algorithms), names=roots)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _trust(ctx, roots)
    _load_own_chain(ctx, Path(chain_pem), chain, Path(key_pem), key_password, "vehicle")
    _set_keylog(ctx, keylog)
    return ctx


def _tls13_context(*, server_side: bool, signature_algorithms: Sequence[str],
                   names: Sequence[x509.Certificate]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if not configure_openssl(ctx, ciphersuites=ISO20_CIPHERSUITES, groups=ISO20_GROUPS,
                             signature_algorithms=signature_algorithms, certificate_authorities=names):
        log.warning("this Python's ssl module cannot be reached through ctypes: the ISO 15118-20 TLS context "
                    "keeps OpenSSL's default cipher suites, groups and signature algorithms and names no "
                    "certificate authorities")
    return ctx


def _check_iso20_key(chain: list[x509.Certificate], key: object, chain_pem: Path, key_pem: Path, whose: str) -> None:
    leaf_key = chain[0].public_key()
    if isinstance(leaf_key, ec.EllipticCurvePublicKey) and isinstance(leaf_key.curve, ec.SECP521R1):
        matches = isinstance(key, ec.EllipticCurvePrivateKey) and key.public_key() == leaf_key
    elif isinstance(leaf_key, ed448.Ed448PublicKey):
        matches = isinstance(key, ed448.Ed448PrivateKey) and key.public_key() == leaf_key
    else:
        raise ValueError(f"{chain_pem}: the {whose} certificate's key is neither secp521r1 nor Ed448, the key types "
                         "ISO 15118-20 allows")
    if not matches:
        raise ValueError(f"{key_pem} is not the private key of the first certificate in {chain_pem}")


def _iso20_oem_roots(pki_dir: Path) -> list[Path]:
    from edge.pki.roots import protocol_folders

    folders = [f for base in ISO20_FOLDERS for f in protocol_folders(pki_dir, base)]  # @label variants too
    roots = [pki_dir / f / "certs" / "oemRootCACert.pem" for f in folders]
    return [r for r in roots if r.exists()]


# --- one listener for both: choose the context by the ClientHello --------------------------------------


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the charger needs from a ClientHello to pick its context."""

    versions: frozenset[int]  # supported_versions, or the legacy version without that extension
    signature_algorithms: tuple[int, ...]  # SignatureScheme code points, the client's preference first
    groups: tuple[int, ...]
    certificate_authorities: tuple[bytes, ...]  # DER DistinguishedNames of the roots the client holds
    trusted_ca_keys: tuple[tuple[int, bytes], ...] = ()  # RFC 6066 (identifier type, identifier)

    @property
    def offers_tls13(self) -> bool:
        return TLS13_VERSION in self.versions

    @property
    def offers_tls12(self) -> bool:
        return TLS12_VERSION in self.versions


#: a ClientHello larger than this is refused before it is parsed (real ones are well under 2 KiB)
MAX_CLIENT_HELLO = 65536


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of ``data`` (TLS records as received), or None while it is
    incomplete. Raises ``ValueError`` if ``data`` does not start with a TLS ClientHello."""
    handshake = bytearray()
    i = 0
    while True:
        if len(handshake) >= 4:
            if handshake[0] != 1:
                raise ValueError(f"the first handshake message has type {handshake[0]}, not ClientHello (1)")
            length = int.from_bytes(handshake[1:4], "big")
            if length > MAX_CLIENT_HELLO:
                raise ValueError(f"a ClientHello of {length} bytes is too long")
            if len(handshake) >= 4 + length:
                return _parse_client_hello_body(bytes(handshake[4:4 + length]))
        if len(data) - i < 5:
            return None
        content_type, major, record_length = data[i], data[i + 1], int.from_bytes(data[i + 3:i + 5], "big")
        if content_type != 22 or major != 3:
            raise ValueError(f"not a TLS handshake record (content type {content_type}, version major {major})")
        if record_length == 0 or record_length > 2 ** 14:
            raise ValueError(f"a TLS record of {record_length} bytes is not allowed")
        if len(data) - i - 5 < record_length:
            return None
        handshake += data[i + 5:i + 5 + record_length]
        i += 5 + record_length


class _Reader:
    """Bounds-checked reading of TLS vectors; running off the end is a ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.at

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise ValueError("a ClientHello field runs past its end")
        self.at += n
        return self.data[self.at - n:self.at]

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.number(length_size)))

    def numbers(self, size: int) -> tuple[int, ...]:
        if self.remaining % size:
            raise ValueError("a ClientHello list has a partial entry")
        return tuple(self.number(size) for _ in range(self.remaining // size))


def _parse_client_hello_body(body: bytes) -> ClientHello:
    hello = _Reader(body)
    legacy_version = hello.number(2)
    hello.take(32)  # random
    hello.vector(1)  # legacy_session_id
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    versions: frozenset[int] = frozenset({legacy_version})
    signature_algorithms: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    authorities: list[bytes] = []
    trusted_keys: list[tuple[int, bytes]] = []
    extensions = hello.vector(2) if hello.remaining else _Reader(b"")  # a bare TLS 1.0 hello has none
    while extensions.remaining:
        extension_type, content = extensions.number(2), extensions.vector(2)
        if extension_type == 43:  # supported_versions: it replaces legacy_version (RFC 8446 4.2.1)
            versions = frozenset(content.vector(1).numbers(2))
        elif extension_type == 13:  # signature_algorithms
            signature_algorithms = content.vector(2).numbers(2)
        elif extension_type == 10:  # supported_groups
            groups = content.vector(2).numbers(2)
        elif extension_type == 47:  # certificate_authorities
            names = content.vector(2)
            while names.remaining:
                authorities.append(names.vector(2).data)
        elif extension_type == 3:  # trusted_ca_keys (RFC 6066 §6)
            trusted_keys += _trusted_authorities(content.vector(2))
    return ClientHello(versions, signature_algorithms, groups, tuple(authorities), tuple(trusted_keys))


def _trusted_authorities(entries: _Reader) -> list[tuple[int, bytes]]:
    found: list[tuple[int, bytes]] = []
    while entries.remaining:
        kind = entries.number(1)
        if kind == 0:  # pre_agreed: no identifier
            found.append((kind, b""))
        elif kind in (1, 3):  # key_sha1_hash, cert_sha1_hash
            found.append((kind, entries.take(20)))
        elif kind == 2:  # x509_name: a DER DistinguishedName
            found.append((kind, entries.vector(2).data))
        else:  # an identifier type we cannot step over: keep what came before it
            break
    return found


@dataclass(frozen=True, slots=True)
class ServedChain:
    """One context the combined context hands connections to, and what it is chosen by."""

    context: ssl.SSLContext
    label: str  # the PKI folder, for logs
    root_name: bytes  # DER subject of the root the SECC chain leads to
    signature_scheme: int  # the TLS 1.3 SignatureScheme of the SECC leaf key
    root: x509.Certificate | None = None  # that root, when the folder holds it (for trusted_ca_keys hashes)

    def named_by(self, hello: ClientHello) -> bool:
        """Whether the car named this chain's root (certificate_authorities or trusted_ca_keys)."""
        from edge.pki.roots import trusted_ca_key_names

        return self.root_name in hello.certificate_authorities or \
            trusted_ca_key_names(self.root, self.root_name, hello.trusted_ca_keys)


class CombinedServerContext(ssl.SSLContext):
    """Serves -2 cars with ``iso2`` and -20 cars with one of ``iso20``, chosen per connection from the
    ClientHello (see the module doc). Configure the member contexts, not this object: only its
    ``wrap_bio`` (server side) is used, as ``trio.SSLStream`` does."""

    iso2: ServedChain | None
    iso20: tuple[ServedChain, ...]
    iso2_more: tuple[ServedChain, ...]  # -2 chains under other V2G roots, served to cars that name them

    def __new__(cls, iso2: ServedChain | None, iso20: Sequence[ServedChain],
                iso2_more: Sequence[ServedChain] = ()) -> CombinedServerContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, iso2: ServedChain | None, iso20: Sequence[ServedChain],
                 iso2_more: Sequence[ServedChain] = ()) -> None:
        if iso2 is None and not iso20:
            raise ValueError("a combined TLS context needs a -2 or a -20 chain")
        if iso2 is None and iso2_more:
            raise ValueError("further -2 chains need a default -2 chain")
        self.iso2, self.iso20, self.iso2_more = iso2, tuple(iso20), tuple(iso2_more)

    def _iso2_for(self, hello: ClientHello | None) -> ServedChain | None:
        """The -2 chain for this car: the first whose V2G root it named, else the default one."""
        if hello is not None and self.iso2_more and self.iso2 is not None and not self.iso2.named_by(hello):
            return next((c for c in self.iso2_more if c.named_by(hello)), self.iso2)
        return self.iso2

    def choose(self, hello: ClientHello | None) -> ServedChain:
        """The member for a connection that began with ``hello`` (None: not a TLS ClientHello, which
        the -2 context then refuses in OpenSSL's words)."""
        iso2 = self._iso2_for(hello)
        fallback = iso2 if iso2 is not None else self.iso20[0]
        if hello is None or not hello.offers_tls13 or not self.iso20:
            return fallback
        if iso2 is not None and hello.offers_tls12 and not ISO20_GROUP_CODES.intersection(hello.groups):
            return iso2  # TLS 1.3 without a Table 7 group cannot become -20 (Josev's TLS 1.3 car: P-256)
        candidates = list(self.iso20)
        if hello.certificate_authorities or hello.trusted_ca_keys:  # [V2G20-2379]: a chain to a root the car named
            named = [c for c in candidates if c.named_by(hello)]
            if named:
                candidates = named
            elif iso2 is not None and hello.offers_tls12 and iso2.named_by(hello):
                return iso2  # a car that also speaks TLS 1.2 and holds only the -2 root
        for scheme in hello.signature_algorithms:  # the car's preference first
            for candidate in candidates:
                if candidate.signature_scheme == scheme:
                    return candidate
        return candidates[0]  # nothing the car can check: OpenSSL refuses it with a proper alert

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        if not server_side:
            raise ValueError("the combined context serves the charger's side only")
        return _ClientHelloDispatch(self, incoming, outgoing)  # type: ignore[return-value]  # duck-typed SSLObject

    def wrap_socket(self, *args: object, **kwargs: object) -> ssl.SSLSocket:  # type: ignore[override]
        raise TypeError("the combined context works with memory BIOs (trio.SSLStream), not sockets")


class _ClientHelloDispatch:
    """Stands in for the ``SSLObject`` of one connection: holds back until the ClientHello is
    complete in ``incoming``, puts it back untouched and from then on is the chosen context's
    ``SSLObject`` (every later call goes straight to it)."""

    server_side = True
    server_hostname = None

    def __init__(self, combined: CombinedServerContext, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self._combined, self._incoming, self._outgoing = combined, incoming, outgoing
        self._chosen: ssl.SSLObject | None = None

    def _object(self) -> ssl.SSLObject:
        if self._chosen is not None:
            return self._chosen
        data = self._incoming.read()
        if self._incoming.eof:  # the peer closed before its ClientHello was complete
            error = ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF before the ClientHello was complete")
            error.reason, error.library = "UNEXPECTED_EOF_WHILE_READING", "SSL"  # what server.py logs
            raise error
        try:
            hello = parse_client_hello(data)
        except ValueError as e:
            log.debug("not a TLS ClientHello (%s); the default context answers", e)
            hello = None
        else:
            if hello is None:
                self._incoming.write(data)  # not complete yet: keep it, wait for more
                raise ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "the ClientHello is not complete")
        self._incoming.write(data)  # the chosen SSLObject reads the ClientHello from the start
        served = self._combined.choose(hello)
        log.debug("TLS: serving the %s chain (client offers %s)", served.label,
                  "TLS 1.3" if hello is not None and hello.offers_tls13 else "no TLS 1.3")
        self._chosen = served.context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        return self._chosen

    def do_handshake(self) -> None:
        self._object().do_handshake()

    def read(self, len: int = 1024, buffer: bytearray | None = None) -> bytes | int:  # SSLObject's parameter names
        return self._object().read(len, buffer)

    def write(self, data: bytes) -> int:
        return self._object().write(data)

    def unwrap(self) -> None:
        self._object().unwrap()

    @property
    def context(self) -> ssl.SSLContext:
        return self._chosen.context if self._chosen is not None else self._combined

    def version(self) -> str | None:
        return self._chosen.version() if self._chosen is not None else None

    def cipher(self) -> tuple[str, str, int] | None:
        return self._chosen.cipher() if self._chosen is not None else None

    def pending(self) -> int:
        return self._chosen.pending() if self._chosen is not None else 0

    def __getattr__(self, name: str) -> object:
        if self._chosen is None:
            raise ValueError(f"{name} is not known before the car's ClientHello has arrived")
        return getattr(self._chosen, name)


def server_context_combined(pki_dir: Path, *, iso20_folders: Sequence[str] | None = None,
                            client_auth: ClientAuth = ClientAuth.REQUIRED,
                            keylog: Path | None = None,
                            ocsp_fetched: Callable[[x509.Certificate], bytes | None] | None = None,
                            ) -> CombinedServerContext:
    """One TLS context for one port: -2 cars get TLS 1.2 with the ``iso15118_2`` chain and no client
    certificate; -20 cars get TLS 1.3 with the chain of one of ``iso20_folders`` (default: every -20
    folder in ``pki_dir``, P-521 first) and mutual authentication per ``client_auth``. Folders that
    are missing are left out; none at all is an error. Each chain's leaf is OCSP-stapled for cars that ask
    (:mod:`edge.pki.stapling`): from ``ocsp_fetched`` (the station's GetCertificateStatus answers) or the
    folder's ``ocsp/`` files."""
    from edge.pki.roots import protocol_folders

    pki_dir = Path(pki_dir)
    iso2_chains = []
    for folder in protocol_folders(pki_dir, ISO2_FOLDER):  # the default first, then chains under other roots
        files = PkiFiles.in_folder(pki_dir, folder)
        context = server_context(files.chain, files.key, key_password=files.key_password(), keylog=keylog)
        iso2_chains.append(ServedChain(context, folder, *_chain_choice_keys(files.chain),
                                       root=_folder_root(pki_dir / folder, files.chain)))
        _staple(context, files.chain, pki_dir / folder, ocsp_fetched)
    if iso2_chains and iso2_chains[0].label != ISO2_FOLDER:
        raise ValueError(f"{pki_dir}: {iso2_chains[0].label} needs the default {ISO2_FOLDER} folder beside it")
    if iso20_folders is None:  # every -20 folder present, the variants after the standard ones
        present = [f for base in ISO20_FOLDERS for f in protocol_folders(pki_dir, base)]
        folders = tuple(f for f in present if f in ISO20_FOLDERS) + tuple(f for f in present if f not in ISO20_FOLDERS)
    else:
        folders = tuple(iso20_folders)
    iso20 = []
    for folder in folders:
        files = PkiFiles.in_folder(pki_dir, folder)
        context = server_context_iso20_from_pki(pki_dir, folder=folder, client_auth=client_auth, keylog=keylog)
        iso20.append(ServedChain(context, folder, *_chain_choice_keys(files.chain),
                                 root=_folder_root(pki_dir / folder, files.chain)))
        _staple(context, files.chain, pki_dir / folder, ocsp_fetched)
    if not iso2_chains and not iso20:
        raise ValueError(f"{pki_dir} is not a PKI folder: none of {ISO2_FOLDER}, {', '.join(ISO20_FOLDERS)} is in it")
    return CombinedServerContext(iso2_chains[0] if iso2_chains else None, iso20, iso2_chains[1:])


def _folder_root(folder: Path, chain_pem: Path) -> x509.Certificate | None:
    """The folder's V2G root, if it is the one its SECC chain leads to (for the car's trusted_ca_keys)."""
    path = folder / "certs" / "v2gRootCACert.pem"
    try:
        root = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return root if root.subject == _load_chain(chain_pem)[-1].issuer else None


def _staple(ctx: ssl.SSLContext, chain_pem: Path, folder: Path,
            fetched: Callable[[x509.Certificate], bytes | None] | None) -> None:
    from edge.pki.stapling import OCSP_FOLDER, stapler_for_chain

    stapler = stapler_for_chain(_load_chain(chain_pem), label=folder.name, folder=folder / OCSP_FOLDER,
                                fetched=fetched)
    if stapler is not None and not enable_ocsp_stapling(ctx, stapler, label=folder.name):
        log.warning("TLS (%s): OpenSSL's status callback cannot be reached from this Python: no OCSP stapling",
                    folder.name)


def _chain_choice_keys(chain_pem: Path) -> tuple[bytes, int]:
    """(DER name of the root the chain leads to, SignatureScheme of its leaf) for :meth:`choose`."""
    chain = _load_chain(chain_pem)
    root_name = chain[-1].issuer.public_bytes()
    leaf_key = chain[0].public_key()
    if isinstance(leaf_key, ed448.Ed448PublicKey):
        return root_name, SIGNATURE_SCHEMES["ed448"]
    if isinstance(leaf_key, ec.EllipticCurvePublicKey) and isinstance(leaf_key.curve, ec.SECP521R1):
        return root_name, SIGNATURE_SCHEMES["ecdsa_secp521r1_sha512"]
    return root_name, SIGNATURE_SCHEMES["ecdsa_secp256r1_sha256"]


# --- what Python's ssl cannot set: through ctypes ------------------------------------------------------

_SSL_CTRL_SET_GROUPS_LIST = 92  # openssl/ssl.h; SSL_CTX_set1_groups_list is a macro over SSL_CTX_ctrl
_SSL_CTRL_SET_SIGALGS_LIST = 98  # SSL_CTX_set1_sigalgs_list, likewise


class _LibSsl:
    """The ``libssl`` functions ``_ssl`` links to but does not wrap."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        self.get_options = _bind(lib.SSL_CTX_get_options, ctypes.c_uint64, p)
        self.get_security_level = _bind(lib.SSL_CTX_get_security_level, i, p)
        self.set_ciphersuites = _bind(lib.SSL_CTX_set_ciphersuites, i, p, s)
        self.ctrl = _bind(lib.SSL_CTX_ctrl, ctypes.c_long, p, i, ctypes.c_long, s)
        self.d2i_x509 = _bind(lib.d2i_X509, p, p, ctypes.POINTER(p), ctypes.c_long)
        self.x509_free = _bind(lib.X509_free, None, p)
        self.add_client_ca = _bind(lib.SSL_CTX_add_client_CA, i, p, p)  # names in a CertificateRequest
        self.add_ca_name = _bind(lib.SSL_CTX_add1_to_CA_list, i, p, p)  # names in a ClientHello
        self.callback_ctrl = _bind(lib.SSL_CTX_callback_ctrl, ctypes.c_long, p, i, p)
        self.ssl_ctrl = _bind(lib.SSL_ctrl, ctypes.c_long, p, i, ctypes.c_long, p)
        self.crypto_malloc = _bind(lib.CRYPTO_malloc, p, ctypes.c_size_t, s, i)  # OPENSSL_malloc is a macro

    def context_pointer(self, ctx: ssl.SSLContext) -> int | None:
        """The ``SSL_CTX*`` of ``ctx``: CPython's ``PySSLContext`` holds it right after the object
        header. Trusted only if OpenSSL reads the same options and security level through it."""
        address = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not address or self.get_options(address) != int(ctx.options):
            return None
        return address if self.get_security_level(address) == ctx.security_level else None

    def add_name(self, address: int, certificate: x509.Certificate, server_side: bool) -> bool:
        der = certificate.public_bytes(serialization.Encoding.DER)
        buffer = ctypes.create_string_buffer(der, len(der))
        cursor = ctypes.c_void_p(ctypes.addressof(buffer))
        handle = self.d2i_x509(None, ctypes.byref(cursor), len(der))
        if not handle:
            return False
        try:  # both copy the subject name; the X509 stays ours to free
            return bool((self.add_client_ca if server_side else self.add_ca_name)(address, handle))
        finally:
            self.x509_free(handle)


_SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB = 63  # SSL_CTX_set_tlsext_status_cb is a macro over SSL_CTX_callback_ctrl
_SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP = 71  # SSL_set_tlsext_status_ocsp_resp, over SSL_ctrl
_SSL_TLSEXT_ERR_OK, _SSL_TLSEXT_ERR_NOACK = 0, 3
#: int (*)(SSL *s, void *arg): OpenSSL calls it on the server when the client asked for the certificate status
_STATUS_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def enable_ocsp_stapling(ctx: ssl.SSLContext, stapler: Callable[[], bytes | None], *, label: str) -> bool:
    """Staple what ``stapler`` returns (a DER OCSPResponse for the context's leaf, or None: no staple) in every
    handshake whose client asks for the certificate status: the TLS 1.2 status_request extension, and in TLS 1.3
    the status in the leaf's CertificateEntry (OpenSSL does both from this one callback). Python's ``ssl`` has no
    such setter, so OpenSSL's status callback is installed through ``ctypes`` like :func:`configure_openssl`.
    Returns False, changing nothing, when this Python's ``libssl`` cannot be reached.

    The callback never raises into OpenSSL: any failure there is logged and the handshake goes on unstapled.
    The response buffer is OPENSSL_malloc'ed because OpenSSL takes it over and frees it with the connection."""
    lib = _libssl()
    address = lib.context_pointer(ctx) if lib is not None else None
    if lib is None or address is None:
        return False

    def on_status_request(ssl_pointer: int | None, _arg: int | None) -> int:
        try:
            der = stapler()
            if not der or not ssl_pointer:
                return _SSL_TLSEXT_ERR_NOACK
            buffer = lib.crypto_malloc(len(der), b"edge/v2g/tls.py", 0)
            if not buffer:
                return _SSL_TLSEXT_ERR_NOACK
            ctypes.memmove(buffer, der, len(der))
            lib.ssl_ctrl(ssl_pointer, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, len(der), buffer)
            return _SSL_TLSEXT_ERR_OK
        except Exception:  # a callback from C must not raise: the car gets no staple, the log says why
            log.exception("TLS (%s): OCSP stapling failed; the handshake goes on without a staple", label)
            return _SSL_TLSEXT_ERR_NOACK

    callback = _STATUS_CALLBACK(on_status_request)
    if lib.callback_ctrl(address, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, ctypes.cast(callback, ctypes.c_void_p)) != 1:
        return False
    ctx._edge_ocsp_status_callback = callback  # type: ignore[attr-defined]  # alive as long as the context
    return True


def _bind(function: ctypes._CFuncPtr, restype: object, *argtypes: object) -> ctypes._CFuncPtr:
    function.restype, function.argtypes = restype, argtypes
    return function


@functools.cache
def _libssl() -> _LibSsl | None:
    if platform.python_implementation() != "CPython":
        return None
    try:
        return _LibSsl(ctypes.CDLL(_ssl.__file__))  # dlsym on this handle also finds its libssl/libcrypto
    except (OSError, AttributeError) as e:
        log.debug("libssl functions not reachable through %s: %s", _ssl.__file__, e)
        return None


def openssl_tuning_available() -> bool:
    """Whether :func:`configure_openssl` can work in this Python."""
    lib = _libssl()
    return lib is not None and lib.context_pointer(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)) is not None


def configure_openssl(ctx: ssl.SSLContext, *, ciphersuites: Sequence[str] | None = None,
                      groups: Sequence[str] | None = None, signature_algorithms: Sequence[str] | None = None,
                      certificate_authorities: Sequence[x509.Certificate] | None = None) -> bool:
    """Set on ``ctx`` what Python's ``ssl`` has no setter for: the TLS 1.3 cipher suites, the groups
    (key exchange), the signature algorithms (offered, and accepted from the peer) and the CA names
    sent in ``certificate_authorities`` (a server's CertificateRequest, a client's ClientHello), each
    in the given order. Returns False, changing nothing, when this Python's ``libssl`` cannot be
    reached; raises ``ValueError`` if OpenSSL refuses a name."""
    lib = _libssl()
    address = lib.context_pointer(ctx) if lib is not None else None
    if lib is None or address is None:
        return False
    if ciphersuites is not None:
        if lib.set_ciphersuites(address, ":".join(ciphersuites).encode()) != 1:
            raise ValueError(f"OpenSSL does not know the TLS 1.3 cipher suites {':'.join(ciphersuites)}")
        offered = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
        if offered != list(ciphersuites):  # read back through ssl: proof the pointer was the right one
            raise ValueError(f"OpenSSL took the TLS 1.3 cipher suites {':'.join(ciphersuites)} as {':'.join(offered)}")
    for command, names, what in ((_SSL_CTRL_SET_GROUPS_LIST, groups, "groups"),
                                 (_SSL_CTRL_SET_SIGALGS_LIST, signature_algorithms, "signature algorithms")):
        if names is not None and lib.ctrl(address, command, 0, ":".join(names).encode()) != 1:
            raise ValueError(f"OpenSSL does not accept the {what} {':'.join(names)}")
    server_side = ctx.protocol == ssl.PROTOCOL_TLS_SERVER
    named: set[bytes] = set()
    for certificate in certificate_authorities or ():
        name = certificate.subject.public_bytes()
        if name in named:  # roots of several PKIs may share a name; list it once
            continue
        named.add(name)
        if not lib.add_name(address, certificate, server_side):
            raise ValueError(f"OpenSSL refused the CA name {certificate.subject.rfc4514_string()}")
    return True


# --- files -------------------------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {path}: {e.strerror or e}") from None


def _load_chain(path: Path, what: str = "SECC certificate chain") -> list[x509.Certificate]:
    data = _read(path, what)
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


def _load_roots(paths: Sequence[Path], what: str) -> list[x509.Certificate]:
    roots = []
    for path in paths:
        data = _read(Path(path), what)
        try:
            roots.extend(x509.load_pem_x509_certificates(data))
        except ValueError:
            raise ValueError(f"{path} is not a PEM certificate") from None
    return roots


def _trust(ctx: ssl.SSLContext, roots: Sequence[x509.Certificate]) -> None:
    for root in roots:
        ctx.load_verify_locations(cadata=root.public_bytes(serialization.Encoding.PEM).decode("ascii"))


def _load_key(path: Path, password: str | None, what: str = "SECC private key") -> object:
    data = _read(path, what)
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


def _load_own_chain(ctx: ssl.SSLContext, chain_pem: Path, chain: list[x509.Certificate], key_pem: Path,
                    key_password: str | None, whose: str) -> None:
    password = key_password.encode() if key_password is not None else None
    with _chain_without_root(chain_pem, chain) as chain_file:
        try:
            ctx.load_cert_chain(chain_file, key_pem, password=password)
        except (ssl.SSLError, OSError) as e:  # checked before; this is a last line of defence
            raise ValueError(f"could not load the {whose} chain {chain_pem} with key {key_pem}: {e}") from None


@contextlib.contextmanager
def _chain_without_root(path: Path, chain: list[x509.Certificate]) -> Iterator[str]:
    """The chain file to hand to OpenSSL: as given, or, when it ends with a self-signed root, a
    temporary copy without it (the peer has the root; sending it only costs bytes on a slow link)."""
    if len(chain) < 2 or chain[-1].issuer != chain[-1].subject:
        yield str(path)
        return
    log.warning("%s ends with the self-signed root %s; sending the chain without it", path,
                chain[-1].subject.rfc4514_string())
    fd, tmp = tempfile.mkstemp(prefix="tls-chain-", suffix=".pem")
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
        ctx.keylog_filename = str(keylog)  # appends NSS key log lines per handshake (TLS 1.2 and 1.3)
    except OSError as e:
        raise ValueError(f"cannot write the TLS key log {keylog}: {e.strerror or e}") from None
    log.warning("TLS key log on: session keys go to %s (for debugging only)", keylog)
