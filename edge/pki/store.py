"""The certificate store: files under one directory, written atomically, typed by use.

Layout of our own store (``CertificateStore(root)``)::

    ROOT/V2GRootCertificate/<sha256 of the DER>.pem     one trusted root per file, for each use below
    ROOT/MORootCertificate/...
    ROOT/OEMRootCertificate/...
    ROOT/CSMSRootCertificate/...
    ROOT/secc/<algorithm>/chain.pem     SECC leaf, then the CPO sub-CAs (what TLS sends); algorithm is
    ROOT/secc/<algorithm>/leaf.key      secp256r1 (-2), secp521r1 or ed448 (-20); unencrypted PKCS#8, 0600
    ROOT/secc/<algorithm>/pending.key   the key of the last CSR, until CertificateSigned brings its chain

Every write goes to a temporary file in the same directory, is fsynced, then ``os.replace``d over the
target, and the directory is fsynced: a crash leaves the old or the new file, never half of one.

The operations are the ones OCPP 2.0.1 asks for, with its names and statuses: InstallCertificate
(:meth:`CertificateStore.install_root`), DeleteCertificate (:meth:`~CertificateStore.delete`),
GetInstalledCertificateIds (:meth:`~CertificateStore.installed`), SignCertificate
(:meth:`~CertificateStore.create_secc_csr`) and CertificateSigned (:meth:`~CertificateStore.install_secc_chain`);
certificates are identified by OCPP's CertificateHashData (issuer name/key hashes and serial).

A Josev-layout test PKI (``edge pki create``) is read by :func:`load_josev_pki` and can be copied into a
store with :meth:`CertificateStore.import_josev_pki`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from edge.pki.algorithms import KeyAlgorithm, PrivateKey
from edge.pki.chain import parse_certificates
from edge.pki.paths import chain_problem, issued_by
from edge.pki.testpki import FOLDERS, PkiPaths


class CertificateUse(StrEnum):
    """What a stored certificate is for; the values are OCPP's (GetCertificateIdUseEnumType)."""

    V2G_ROOT = "V2GRootCertificate"
    MO_ROOT = "MORootCertificate"
    OEM_ROOT = "OEMRootCertificate"  # OCPP 2.1's name for ISO 15118 OEM provisioning roots
    CSMS_ROOT = "CSMSRootCertificate"
    V2G_CERTIFICATE_CHAIN = "V2GCertificateChain"  # the SECC chain; listed and deleted, not installed as a root


ROOT_USES: tuple[CertificateUse, ...] = (
    CertificateUse.V2G_ROOT,
    CertificateUse.MO_ROOT,
    CertificateUse.OEM_ROOT,
    CertificateUse.CSMS_ROOT,
)


class InstallStatus(StrEnum):
    """OCPP InstallCertificateStatusEnumType / CertificateSignedStatusEnumType values."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    FAILED = "Failed"


class DeleteStatus(StrEnum):
    """OCPP DeleteCertificateStatusEnumType."""

    ACCEPTED = "Accepted"
    FAILED = "Failed"
    NOT_FOUND = "NotFound"


@dataclass(frozen=True)
class StoreResult:
    status: InstallStatus | DeleteStatus
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "Accepted"


_HASHES: dict[str, hashes.HashAlgorithm] = {
    "SHA256": hashes.SHA256(),
    "SHA384": hashes.SHA384(),
    "SHA512": hashes.SHA512(),
}


@dataclass(frozen=True)
class CertificateHashData:
    """OCPP CertificateHashDataType: lowercase hex hashes of the issuer's name and key, serial in hex."""

    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str

    def matches(self, other: CertificateHashData) -> bool:
        """Equal up to hex case and leading zeros of the serial (CSMSs differ in both)."""
        try:
            same_serial = int(self.serial_number, 16) == int(other.serial_number, 16)
        except ValueError:
            return False
        return (
            same_serial
            and self.hash_algorithm.upper() == other.hash_algorithm.upper()
            and self.issuer_name_hash.lower() == other.issuer_name_hash.lower()
            and self.issuer_key_hash.lower() == other.issuer_key_hash.lower()
        )

    def to_ocpp(self) -> dict[str, str]:
        return {
            "hashAlgorithm": self.hash_algorithm,
            "issuerNameHash": self.issuer_name_hash,
            "issuerKeyHash": self.issuer_key_hash,
            "serialNumber": self.serial_number,
        }

    @classmethod
    def from_ocpp(cls, data: dict[str, str]) -> CertificateHashData:
        """From an OCPP JSON object; ValueError naming the missing field."""
        try:
            return cls(data["hashAlgorithm"], data["issuerNameHash"], data["issuerKeyHash"], data["serialNumber"])
        except KeyError as e:
            raise ValueError(f"CertificateHashData lacks {e.args[0]}") from None


def certificate_hash_data(
    cert: x509.Certificate, issuer: x509.Certificate | None = None, hash_algorithm: str = "SHA256"
) -> CertificateHashData:
    """The CertificateHashData of ``cert`` (``issuer`` None: self-signed), hashed as OCSP does (RFC 6960)."""
    algorithm = _HASHES.get(hash_algorithm.upper())
    if algorithm is None:
        raise ValueError(f"OCPP allows SHA256, SHA384 or SHA512, not {hash_algorithm!r}")
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer or cert, algorithm).build()
    return CertificateHashData(
        hash_algorithm=hash_algorithm.upper(),
        issuer_name_hash=request.issuer_name_hash.hex(),
        issuer_key_hash=request.issuer_key_hash.hex(),
        serial_number=format(request.serial_number, "x"),
    )


@dataclass(frozen=True)
class InstalledCertificate:
    """One entry of GetInstalledCertificateIds; ``children`` are the sub-CAs of a V2GCertificateChain."""

    use: CertificateUse
    certificate: x509.Certificate
    hash_data: CertificateHashData
    path: Path
    children: tuple[CertificateHashData, ...] = ()


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def key_algorithm_of(public_key: object) -> KeyAlgorithm:
    """The KeyAlgorithm (store slot) of a public key; ValueError for keys no ISO 15118 profile uses."""
    return KeyAlgorithm.of(public_key)


def _same_key(a: object, b: object) -> bool:
    encoding, fmt = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(encoding, fmt) == b.public_bytes(encoding, fmt)  # type: ignore[attr-defined]


def _parse_one(data: bytes | str) -> x509.Certificate:
    raw = data.encode() if isinstance(data, str) else data
    certs = parse_certificates(raw)
    if len(certs) != 1:
        raise ValueError(f"expected one certificate, got {len(certs)}")
    return certs[0]


class CertificateStore:
    """Trusted roots by use, and the SECC chain + key per key algorithm, under ``root`` (see module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- roots ---------------------------------------------------------------------------------------------

    def _use_dir(self, use: CertificateUse) -> Path:
        if use not in ROOT_USES:
            raise ValueError(f"{use} is not a root certificate use")
        return self.root / use.value

    def install_root(self, use: CertificateUse, certificate: bytes | str, *, now: dt.datetime) -> StoreResult:
        """InstallCertificate: PEM (as OCPP sends it) or DER. A CA certificate valid at ``now`` is Accepted
        (again if already there); anything else Rejected; a storage error Failed."""
        try:
            cert = _parse_one(certificate)
        except ValueError as e:
            return StoreResult(InstallStatus.REJECTED, f"not a certificate: {e}")
        constraints = _basic_constraints(cert)
        if constraints is None or not constraints.ca:
            return StoreResult(InstallStatus.REJECTED, "not a CA certificate (basicConstraints CA flag)")
        moment = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
        if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
            return StoreResult(InstallStatus.REJECTED, "the certificate is not valid now")
        try:
            atomic_write(self._use_dir(use) / f"{_fingerprint(cert)}.pem", _pem(cert))
        except OSError as e:
            return StoreResult(InstallStatus.FAILED, f"cannot store it: {e}")
        return StoreResult(InstallStatus.ACCEPTED)

    def roots(self, use: CertificateUse) -> list[x509.Certificate]:
        return [cert for cert, _ in self._root_files(use)]

    def _root_files(self, use: CertificateUse) -> list[tuple[x509.Certificate, Path]]:
        directory = self._use_dir(use)
        if not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.glob("*.pem")):
            found.extend((cert, path) for cert in parse_certificates(path.read_bytes()))
        return found

    def contract_trust_anchors(self) -> list[x509.Certificate]:
        """The roots a contract chain may end in: MO roots and V2G roots."""
        return self.roots(CertificateUse.MO_ROOT) + self.roots(CertificateUse.V2G_ROOT)

    # --- listing and deleting (GetInstalledCertificateIds, DeleteCertificate) ------------------------------

    def installed(
        self, uses: Iterable[CertificateUse] | None = None, *, hash_algorithm: str = "SHA256"
    ) -> list[InstalledCertificate]:
        """GetInstalledCertificateIds: every root of the given uses (all when None) and the SECC chains."""
        wanted = set(uses) if uses is not None else set(CertificateUse)
        entries: list[InstalledCertificate] = []
        for use in ROOT_USES:
            if use in wanted:
                entries.extend(
                    InstalledCertificate(use, cert, certificate_hash_data(cert, None, hash_algorithm), path)
                    for cert, path in self._root_files(use)
                )
        if CertificateUse.V2G_CERTIFICATE_CHAIN in wanted:
            v2g_roots = self.roots(CertificateUse.V2G_ROOT)
            for algorithm in KeyAlgorithm:
                chain = self.secc_chain(algorithm)
                if not chain:
                    continue
                hash_data = [
                    certificate_hash_data(cert, issuer, hash_algorithm)
                    for cert, issuer in _with_issuers(chain, v2g_roots)
                    if issuer is not None
                ]
                if not hash_data:
                    continue
                entries.append(
                    InstalledCertificate(
                        CertificateUse.V2G_CERTIFICATE_CHAIN,
                        chain[0],
                        hash_data[0],
                        self._secc_dir(algorithm) / "chain.pem",
                        tuple(hash_data[1:]),
                    )
                )
        return entries

    def delete(self, hash_data: CertificateHashData) -> StoreResult:
        """DeleteCertificate: the root or SECC chain (by its leaf) that ``hash_data`` names."""
        try:
            for entry in self.installed(hash_algorithm=hash_data.hash_algorithm):
                if not entry.hash_data.matches(hash_data):
                    continue
                if entry.use is CertificateUse.V2G_CERTIFICATE_CHAIN:
                    entry.path.unlink()
                    (entry.path.parent / "leaf.key").unlink(missing_ok=True)
                else:
                    entry.path.unlink()
                _fsync_directory(entry.path.parent)
                return StoreResult(DeleteStatus.ACCEPTED)
        except ValueError as e:
            return StoreResult(DeleteStatus.FAILED, str(e))
        except OSError as e:
            return StoreResult(DeleteStatus.FAILED, f"cannot delete it: {e}")
        return StoreResult(DeleteStatus.NOT_FOUND)

    # --- the SECC chain (SignCertificate, CertificateSigned) -----------------------------------------------

    def _secc_dir(self, algorithm: KeyAlgorithm) -> Path:
        return self.root / "secc" / algorithm.value

    def secc_chain(self, algorithm: KeyAlgorithm = KeyAlgorithm.P256_SHA256) -> list[x509.Certificate]:
        """The SECC leaf and its CPO sub-CAs (leaf first), or [] when none is installed."""
        path = self._secc_dir(algorithm) / "chain.pem"
        return parse_certificates(path.read_bytes()) if path.is_file() else []

    def secc_key(self, algorithm: KeyAlgorithm = KeyAlgorithm.P256_SHA256) -> PrivateKey | None:
        path = self._secc_dir(algorithm) / "leaf.key"
        return _load_key(path.read_bytes(), None) if path.is_file() else None

    def secc_files(self, algorithm: KeyAlgorithm = KeyAlgorithm.P256_SHA256) -> tuple[Path, Path] | None:
        """(chain.pem, leaf.key) for ``ssl.SSLContext.load_cert_chain``, when both exist."""
        directory = self._secc_dir(algorithm)
        chain, key = directory / "chain.pem", directory / "leaf.key"
        return (chain, key) if chain.is_file() and key.is_file() else None

    def create_secc_csr(
        self,
        *,
        common_name: str,
        organization: str,
        country: str = "DE",
        algorithm: KeyAlgorithm = KeyAlgorithm.P256_SHA256,
    ) -> str:
        """SignCertificate: a fresh key (kept as pending) and a PEM CSR for the SECC leaf, subject
        CN=<SECC ID>, O, C, DC=CPO as the ISO 15118 SECC certificate profile wants."""
        key = algorithm.generate()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "CPO"),
            ]
        )
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, algorithm.signature_hash())
        )
        atomic_write(self._secc_dir(algorithm) / "pending.key", _key_bytes(key), mode=0o600)
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def install_secc_chain(self, pem_chain: bytes | str, *, now: dt.datetime) -> StoreResult:
        """CertificateSigned: the leaf (first) and its CPO sub-CAs. The leaf must belong to the pending CSR key
        (or to the installed key, for a re-issue), be valid at ``now``, and each certificate must be signed
        by the next; if a V2G root is installed the last one must be signed by one of them."""
        raw = pem_chain.encode() if isinstance(pem_chain, str) else pem_chain
        try:
            chain = parse_certificates(raw)
            algorithm = key_algorithm_of(chain[0].public_key())
        except ValueError as e:
            return StoreResult(InstallStatus.REJECTED, f"not a certificate chain: {e}")
        directory = self._secc_dir(algorithm)
        pending, current = directory / "pending.key", directory / "leaf.key"
        key_file = next(
            (p for p in (pending, current) if p.is_file() and _same_key(_load_key(p.read_bytes(), None).public_key(),
                                                                        chain[0].public_key())),
            None,
        )
        if key_file is None:
            return StoreResult(InstallStatus.REJECTED, "the leaf does not belong to a key this station generated")
        moment = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
        problem = _chain_problem(chain, self.roots(CertificateUse.V2G_ROOT), moment)
        if problem:
            return StoreResult(InstallStatus.REJECTED, problem)
        try:
            atomic_write(directory / "chain.pem", b"".join(_pem(c) for c in chain))
            if key_file == pending:
                os.replace(pending, current)
                _fsync_directory(directory)
        except OSError as e:
            return StoreResult(InstallStatus.FAILED, f"cannot store it: {e}")
        return StoreResult(InstallStatus.ACCEPTED)

    def install_secc_chain_with_key(self, chain: list[x509.Certificate], key: PrivateKey) -> None:
        """Store a SECC chain with its key as they are (provisioning from files, no checks but key match)."""
        if not chain or not _same_key(chain[0].public_key(), key.public_key()):
            raise ValueError("the key does not belong to the chain's leaf")
        directory = self._secc_dir(key_algorithm_of(chain[0].public_key()))
        atomic_write(directory / "leaf.key", _key_bytes(key), mode=0o600)
        atomic_write(directory / "chain.pem", b"".join(_pem(c) for c in chain))

    # --- Josev layout ----------------------------------------------------------------------------------------

    def import_josev_pki(self, pki_dir: Path, *, now: dt.datetime) -> list[str]:
        """Copy the V2G, MO and OEM roots and the SECC chains + keys of a Josev-layout PKI into this store;
        returns what was imported, one line each. ValueError if ``pki_dir`` holds no Josev-layout PKI."""
        imported: list[str] = []
        for contents in load_josev_pki(pki_dir):
            for use, certs in contents.roots.items():
                for cert in certs:
                    result = self.install_root(use, _pem(cert), now=now)
                    if not result.ok:
                        raise ValueError(f"{contents.folder}: {use} {cert.subject.rfc4514_string()}: {result.reason}")
                    imported.append(f"{contents.folder}: {use} {cert.subject.rfc4514_string()}")
            if contents.secc_chain and contents.secc_key is not None:
                self.install_secc_chain_with_key(contents.secc_chain, contents.secc_key)
                imported.append(f"{contents.folder}: SECC chain {contents.secc_chain[0].subject.rfc4514_string()}")
        return imported


@dataclass(frozen=True)
class JosevPkiContents:
    """What one protocol folder of a Josev-layout PKI holds for a charger."""

    folder: str
    roots: dict[CertificateUse, list[x509.Certificate]]
    secc_chain: list[x509.Certificate]
    secc_key: PrivateKey | None


def is_josev_pki(path: Path) -> bool:
    return any((Path(path) / folder / "certs").is_dir() for folder in FOLDERS)


def load_josev_pki(pki_dir: Path, folders: Iterable[str] | None = None) -> list[JosevPkiContents]:
    """Read roots and the SECC chain + key (decrypted with seccLeafPassword.txt) from each protocol folder
    (iso15118_2, iso15118_20, iso15118_20_ed448) present under ``pki_dir``. ValueError if there is none."""
    found: list[JosevPkiContents] = []
    for folder in folders if folders is not None else FOLDERS:
        paths = PkiPaths(Path(pki_dir), folder)
        if not paths.certs.is_dir():
            continue
        roots: dict[CertificateUse, list[x509.Certificate]] = {}
        for use, name in ((CertificateUse.V2G_ROOT, "v2gRootCA"), (CertificateUse.MO_ROOT, "moRootCA"),
                          (CertificateUse.OEM_ROOT, "oemRootCA")):
            path = paths.cert(name)
            if path.is_file():
                roots[use] = parse_certificates(path.read_bytes())
        chain_path, key_path = paths.certs / "cpoCertChain.pem", paths.key("seccLeaf")
        chain = parse_certificates(chain_path.read_bytes()) if chain_path.is_file() else []
        key = None
        if key_path.is_file():
            password_path = paths.password_file("seccLeaf")
            password = password_path.read_text().strip() if password_path.is_file() else ""
            key = _load_key(key_path.read_bytes(), password.encode() or None)
        found.append(JosevPkiContents(folder, roots, chain, key))
    if not found:
        raise ValueError(f"{pki_dir} holds no Josev-layout PKI (no {'/ '.join(FOLDERS)}/certs folder)")
    return found


def josev_contract_trust_anchors(pki_dir: Path) -> list[x509.Certificate]:
    """The MO and V2G roots of every protocol folder of a Josev-layout PKI, ``@label`` variants included (keys are
    not touched)."""
    from edge.pki.roots import protocol_folders

    anchors: list[x509.Certificate] = []
    for folder in (f for standard in FOLDERS for f in protocol_folders(Path(pki_dir), standard)):
        paths = PkiPaths(Path(pki_dir), folder)
        for name in ("moRootCA", "v2gRootCA"):
            if paths.cert(name).is_file():
                anchors += parse_certificates(paths.cert(name).read_bytes())
    if not anchors:
        raise ValueError(f"{pki_dir} holds no moRootCACert.pem or v2gRootCACert.pem in Josev's layout")
    return anchors


# --- helpers -------------------------------------------------------------------------------------------------


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_bytes(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(data: bytes, password: bytes | None) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey):
        raise ValueError(f"not an ISO 15118 key: {type(key).__name__}")
    return key


def _with_issuers(
    chain: list[x509.Certificate], roots: list[x509.Certificate]
) -> list[tuple[x509.Certificate, x509.Certificate | None]]:
    """Each certificate with its issuer: the next one in the chain, for the last one a matching root."""
    pairs: list[tuple[x509.Certificate, x509.Certificate | None]] = list(itertools.pairwise(chain))
    last = chain[-1]
    pairs.append((last, next((r for r in roots if r.subject == last.issuer and _signed_by(last, r)), None)))
    return pairs


def _chain_problem(chain: list[x509.Certificate], v2g_roots: list[x509.Certificate], now: dt.datetime) -> str | None:
    """With V2G roots installed, the full SECC chain validation (RFC 5280 and the SECC profile); without any (a
    station provisioned before its roots), what can be judged alone: validity and the links inside the chain."""
    if v2g_roots:
        problem = chain_problem(chain[0], chain[1:], v2g_roots, now, "SECC")
        return problem.reason if problem else None
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"{cert.subject.rfc4514_string()} is not valid now"
    for cert, issuer in itertools.pairwise(chain):
        if not _signed_by(cert, issuer):
            return f"{cert.subject.rfc4514_string()} is not signed by the next certificate in the chain"
    if v2g_roots and not any(_signed_by(chain[-1], root) for root in v2g_roots):
        return "the chain does not lead to an installed V2G root"
    return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return issued_by(cert, issuer, require_ca=False)
