"""A complete ISO 15118-2 and -20 test PKI, written in Josev's folder layout.

The layout, file names, subjects, extensions, serials and validity periods follow Josev's
``iso15118/shared/pki/create_certs.sh`` and its ``configs/*.cnf`` (PyPI ``iso15118`` 0.31.2), so one
folder serves Josev's EV simulator (``PKI_PATH``) and our charger alike::

    OUT/iso15118_2/certs/*.pem, *.der, cpoCertChain.pem, oemCertChain.pem, intermediateMOCACerts.pem,
                         intermediateCPSCACerts.pem, moCertChain.p12, cpsCertChain.p12
    OUT/iso15118_2/private_keys/*.key (encrypted PEM), moSubCA2.pkcs8.der, *Password.txt
    OUT/iso15118_2/csrs/*.csr
    OUT/iso15118_20/...          same names; secp521r1 keys, ECDSA with SHA-512 (ISO 15118-20)
    OUT/iso15118_20_ed448/...    same names; Ed448 keys and signatures (the other -20 profile)

Josev's script uses prime256v1/SHA-256 for -20 as well (its -20 branch is marked TODO) and Josev
only ever reads ``iso15118_2``; the -20 folders follow the standard instead: ISO 15118-20 allows
secp521r1 with ECDSA-SHA-512 and Ed448, and we write one complete PKI per algorithm.

Chains: V2G root -> CPO sub-CA 1 -> CPO sub-CA 2 -> SECC leaf; V2G root -> CPS sub-CA 1 -> CPS sub-CA 2
-> CPS leaf; MO root -> MO sub-CA 1 -> MO sub-CA 2 -> contract leaf (EMAID in its CN); OEM root -> OEM
sub-CA 1 -> OEM sub-CA 2 -> OEM provisioning leaf. Keys are fresh random keys each run; everything
else is fixed.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from edge.pki.algorithms import KeyAlgorithm, PrivateKey

ISO2_FOLDER = "iso15118_2"
ISO20_FOLDER = "iso15118_20"
ISO20_ED448_FOLDER = "iso15118_20_ed448"

#: the EMAID in the contract leaf's CN (Josev's value: country UK, provider SWI, instance, check char)
TEST_EMAID = "UKSWI123456791A"
DEFAULT_PASSWORD = "12345"
#: the OCSP responder / CA issuers URLs Josev's MO configs put in an authorityInfoAccess extension
OCSP_URL = "https://www.example.com/"
CA_ISSUERS_URL = "https://www.example.com/Intermediate-CA.cer"

#: one folder per algorithm, in the order they are written
FOLDERS: dict[str, KeyAlgorithm] = {
    ISO2_FOLDER: KeyAlgorithm.P256_SHA256,
    ISO20_FOLDER: KeyAlgorithm.P521_SHA512,
    ISO20_ED448_FOLDER: KeyAlgorithm.ED448,
}

# keyUsage bits, by the names openssl's config uses
_CA_USAGE = frozenset({"keyCertSign", "cRLSign"})


@dataclass(frozen=True)
class CertProfile:
    """One certificate of the test PKI as Josev's ``configs/<name>Cert.cnf`` describes it."""

    name: str  # key file <name>.key, certificate <name>Cert.pem / .der
    common_name: str
    domain_component: str
    issuer: str | None  # name of the issuing profile; None: self-signed root
    is_ca: bool
    path_length: int | None  # basicConstraints pathlen (CAs only; None: unlimited)
    key_usage: frozenset[str]
    validity_days: int
    serial: int
    with_aia: bool = False  # authorityInfoAccess with OCSP + caIssuers (Josev's MO certificates)

    @property
    def cert_stem(self) -> str:
        return f"{self.name}Cert"

    @property
    def csr_stem(self) -> str:
        # Josev names CA requests after the key (v2gRootCA.csr) and leaf requests after the cert
        return self.name if self.is_ca else self.cert_stem


# Order matters: every issuer comes before what it issues (the order of create_certs.sh).
PROFILES: tuple[CertProfile, ...] = (
    CertProfile("v2gRootCA", "V2GRootCA", "V2G", None, True, None, _CA_USAGE, 3650, 12345),
    CertProfile("cpoSubCA1", "CPOSubCA1", "V2G", "v2gRootCA", True, 1, _CA_USAGE, 1460, 12346),
    CertProfile("cpoSubCA2", "CPOSubCA2", "V2G", "cpoSubCA1", True, 0, _CA_USAGE, 365, 12347),
    CertProfile(
        "seccLeaf", "SECCCert", "CPO", "cpoSubCA2", False, None, frozenset({"digitalSignature", "keyAgreement"}), 60,
        12348,
    ),
    CertProfile("oemRootCA", "OEMRootCA", "OEM", None, True, None, _CA_USAGE, 3650, 12349),
    CertProfile("oemSubCA1", "OEMSubCA1", "OEM", "oemRootCA", True, 1, _CA_USAGE, 1460, 12350),
    CertProfile("oemSubCA2", "OEMSubCA2", "OEM", "oemSubCA1", True, 0, _CA_USAGE, 1460, 12351),
    CertProfile(
        "oemLeaf", "OEMProvCert", "OEM", "oemSubCA2", False, None, frozenset({"digitalSignature", "keyAgreement"}),
        1460, 12352,
    ),
    CertProfile("moRootCA", "MORootCA", "MO", None, True, None, _CA_USAGE, 3650, 12353, with_aia=True),
    CertProfile(
        "moSubCA1", "PKI-Ext_CRT_MO_SUB1_VALID", "MO", "moRootCA", True, 1, _CA_USAGE, 1460, 12354, with_aia=True
    ),
    CertProfile(
        "moSubCA2", "PKI-Ext_CRT_MO_SUB2_VALID", "MO", "moSubCA1", True, 0,
        frozenset({"digitalSignature", "nonRepudiation", "keyCertSign", "cRLSign"}), 1460, 12355, with_aia=True,
    ),
    CertProfile(
        "contractLeaf", TEST_EMAID, "MO", "moSubCA2", False, None,
        frozenset({"digitalSignature", "nonRepudiation", "keyEncipherment", "keyAgreement"}), 730, 12356,
        with_aia=True,
    ),
    CertProfile("cpsSubCA1", "ProvSubCA1", "CPS", "v2gRootCA", True, 1, _CA_USAGE, 1460, 12357),
    CertProfile("cpsSubCA2", "ProvSubCA2", "CPS", "cpsSubCA1", True, 0, _CA_USAGE, 730, 12358),
    CertProfile("cpsLeaf", "CPS Leaf", "CPS", "cpsSubCA2", False, None, frozenset({"digitalSignature"}), 90, 12359),
)

#: concatenated PEM files: file name -> certificate names in file order (leaf first, as TLS wants)
PEM_BUNDLES: dict[str, tuple[str, ...]] = {
    "cpoCertChain.pem": ("seccLeaf", "cpoSubCA2", "cpoSubCA1"),
    "oemCertChain.pem": ("oemLeaf", "oemSubCA2", "oemSubCA1"),
    "intermediateMOCACerts.pem": ("moSubCA2", "moSubCA1"),
    "intermediateCPSCACerts.pem": ("cpsSubCA2", "cpsSubCA1"),
}
#: PKCS#12 containers: file name -> (friendly name, leaf, sub-CAs)
P12_BUNDLES: dict[str, tuple[bytes, str, tuple[str, ...]]] = {
    "moCertChain.p12": (b"contract_leaf_cert", "contractLeaf", ("moSubCA2", "moSubCA1")),
    "cpsCertChain.p12": (b"cps_leaf_cert", "cpsLeaf", ("cpsSubCA2", "cpsSubCA1")),
}
#: password files Josev reads (KeyPasswordPath), each holding the password of one key
PASSWORD_FILES = (
    "seccLeafPassword.txt",
    "oemLeafPassword.txt",
    "contractLeafPassword.txt",
    "cpsLeafPassword.txt",
    "moSubCA2LeafPassword.txt",
)

_KEY_USAGE_FLAGS = (
    "digitalSignature",
    "nonRepudiation",  # content_commitment in cryptography
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
)


@dataclass(frozen=True)
class PkiPaths:
    """Where things are in one protocol folder of a Josev-layout PKI (``PkiPaths(root, "iso15118_2")``)."""

    root: Path
    folder: str = ISO2_FOLDER

    @property
    def certs(self) -> Path:
        return self.root / self.folder / "certs"

    @property
    def private_keys(self) -> Path:
        return self.root / self.folder / "private_keys"

    @property
    def csrs(self) -> Path:
        return self.root / self.folder / "csrs"

    def cert(self, name: str, ext: str = "pem") -> Path:
        """``cert("seccLeaf")`` -> certs/seccLeafCert.pem."""
        return self.certs / f"{name}Cert.{ext}"

    def key(self, name: str) -> Path:
        return self.private_keys / f"{name}.key"

    def password_file(self, name: str) -> Path:
        """Josev's password file for a key; moSubCA2's is called moSubCA2LeafPassword.txt."""
        suffix = "LeafPassword.txt" if name == "moSubCA2" else "Password.txt"
        return self.private_keys / f"{name}{suffix}"


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)  # a naive time is taken as UTC, as X.509 times are
    return now.astimezone(dt.UTC).replace(microsecond=0)


#: root CN suffixes of the -20 folders: a -20 car names the roots it trusts in its ClientHello
#: (certificate_authorities), so the charger can pick the matching chain only if the names differ
_ROOT_SUFFIX = {KeyAlgorithm.P256_SHA256: "", KeyAlgorithm.P521_SHA512: "-P521", KeyAlgorithm.ED448: "-Ed448"}


def _subject(profile: CertProfile, algorithm: KeyAlgorithm, organization: str = "Switch") -> x509.Name:
    # attribute order as in Josev's configs (openssl keeps the config order): CN, O, C, DC
    root = profile.is_ca and profile.issuer is None
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, profile.common_name + (_ROOT_SUFFIX[algorithm] if root else "")),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "UK"),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, profile.domain_component),
        ]
    )


def key_usage(flags: Iterable[str]) -> x509.KeyUsage:
    """A KeyUsage extension from openssl-style flag names (digitalSignature, keyCertSign, ...)."""
    chosen = set(flags)
    unknown = chosen - set(_KEY_USAGE_FLAGS)
    if unknown:
        raise ValueError(f"unknown keyUsage flag(s): {', '.join(sorted(unknown))}")
    return x509.KeyUsage(
        digital_signature="digitalSignature" in chosen,
        content_commitment="nonRepudiation" in chosen,
        key_encipherment="keyEncipherment" in chosen,
        data_encipherment="dataEncipherment" in chosen,
        key_agreement="keyAgreement" in chosen,
        key_cert_sign="keyCertSign" in chosen,
        crl_sign="cRLSign" in chosen,
        encipher_only=False,
        decipher_only=False,
    )


def _build_certificate(
    profile: CertProfile,
    key: PrivateKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKey,
    algorithm: KeyAlgorithm,
    now: dt.datetime,
    organization: str = "Switch",
) -> x509.Certificate:
    public_key = key.public_key()
    subject = _subject(profile, algorithm, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(public_key)
        .serial_number(profile.serial)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=profile.validity_days))
        .add_extension(x509.BasicConstraints(ca=profile.is_ca, path_length=profile.path_length), critical=True)
        .add_extension(key_usage(profile.key_usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_cert is not None:
        # issued certificates name their issuer's key (OpenSSL 3 adds this by default; strict verifiers want it)
        issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
    if profile.with_aia:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(OCSP_URL)
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(CA_ISSUERS_URL)
                    ),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, algorithm.signature_hash())


def _encryption(password: str) -> serialization.KeySerializationEncryption:
    return serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()


def _key_pem(key: PrivateKey, password: str) -> bytes:
    # EC keys as "EC PRIVATE KEY" like `openssl ec -aes-128-cbc`; Ed448 has no traditional format, so PKCS#8
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, _encryption(password))


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def create_pki_folder(folder: Path, algorithm: KeyAlgorithm, *, now: dt.datetime, password: str,
                      organization: str = "Switch") -> None:
    """Write one protocol folder (certs/, private_keys/, csrs/) with every key on ``algorithm``; ``organization``
    is the O of every subject (another value makes a PKI whose names differ from the default one's)."""
    certs_dir, keys_dir, csrs_dir = folder / "certs", folder / "private_keys", folder / "csrs"
    for directory in (certs_dir, keys_dir, csrs_dir):
        directory.mkdir(parents=True, exist_ok=True)

    keys: dict[str, PrivateKey] = {}
    certs: dict[str, x509.Certificate] = {}
    for profile in PROFILES:
        key = algorithm.generate()
        issuer_cert = certs[profile.issuer] if profile.issuer else None
        issuer_key = keys[profile.issuer] if profile.issuer else key
        cert = _build_certificate(profile, key, issuer_cert, issuer_key, algorithm, now, organization)
        keys[profile.name], certs[profile.name] = key, cert

        csr = x509.CertificateSigningRequestBuilder().subject_name(cert.subject).sign(key, algorithm.signature_hash())
        _write(csrs_dir / f"{profile.csr_stem}.csr", csr.public_bytes(serialization.Encoding.PEM))
        _write(keys_dir / f"{profile.name}.key", _key_pem(key, password), private=True)
        _write(certs_dir / f"{profile.cert_stem}.pem", cert.public_bytes(serialization.Encoding.PEM))
        _write(certs_dir / f"{profile.cert_stem}.der", cert.public_bytes(serialization.Encoding.DER))

    for file_name, members in PEM_BUNDLES.items():
        _write(certs_dir / file_name, b"".join(certs[m].public_bytes(serialization.Encoding.PEM) for m in members))
    for file_name, (friendly_name, leaf, sub_cas) in P12_BUNDLES.items():
        p12 = pkcs12.serialize_key_and_certificates(
            friendly_name, keys[leaf], certs[leaf], [certs[s] for s in sub_cas], _encryption(password)
        )
        _write(certs_dir / file_name, p12, private=True)
    # the MO sub-CA 2 key also as encrypted DER PKCS#8 (used to sign CertificateInstallationRes contents)
    _write(
        keys_dir / "moSubCA2.pkcs8.der",
        keys["moSubCA2"].private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, _encryption(password)
        ),
        private=True,
    )
    for file_name in PASSWORD_FILES:
        _write(keys_dir / file_name, f"{password}\n".encode(), private=True)


def create_test_pki(out: Path, *, now: dt.datetime | None = None, password: str = DEFAULT_PASSWORD,
                    organization: str = "Switch", label: str | None = None) -> None:
    """Write the complete -2 (P-256) and -20 (P-521 and Ed448) test PKI under ``out`` in Josev's layout.

    ``now`` is the notBefore of every certificate (default: the current time; a naive time is UTC).
    Existing files of the same names are overwritten, like Josev's script does. An empty password
    writes unencrypted keys and empty password files (Josev reads an empty file as "no password").
    ``label`` writes the folders as ``<folder>@<label>``: a second PKI (another V2G root) beside the default one,
    best with another ``organization`` so that its names differ (see :mod:`edge.pki.roots`).
    """
    if "\n" in password or "\r" in password:
        raise ValueError("the key password must be a single line (it is stored in *Password.txt files)")
    start = _utc(now)
    out = Path(out)
    suffix = f"@{label}" if label else ""
    if label is not None and (not label or "/" in label or "@" in label):
        raise ValueError(f"a PKI label is a plain name: {label!r}")
    for folder_name, algorithm in FOLDERS.items():
        create_pki_folder(out / (folder_name + suffix), algorithm, now=start, password=password,
                          organization=organization)
    write_secc_ocsp_responses(out, now=start, password=password, label=label)


#: how long a test OCSP response is current (nextUpdate - thisUpdate); real responders give days
OCSP_VALIDITY = dt.timedelta(days=7)
OCSP_RESPONSE_FILE = "seccLeafCert.ocsp.der"


def write_secc_ocsp_responses(out: Path, *, now: dt.datetime | None = None, password: str = DEFAULT_PASSWORD,
                              revoked: bool = False, valid_for: dt.timedelta = OCSP_VALIDITY,
                              label: str | None = None) -> list[Path]:
    """For each protocol folder of the PKI at ``out``: the OCSP response for its SECC leaf, signed by CPO Sub-CA 2
    (the issuer answers for its own certificates, RFC 6960 §4.2.2.2), current from ``now`` for ``valid_for``, in
    ``<folder>/ocsp/`` where the charger picks it up to staple. Returns the files written."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    moment = _utc(now)
    written = []
    for standard, algorithm in FOLDERS.items():
        folder_name = standard + (f"@{label}" if label else "")
        paths = PkiPaths(Path(out), folder_name)
        if not paths.cert("seccLeaf").is_file():
            continue
        leaf = x509.load_pem_x509_certificate(paths.cert("seccLeaf").read_bytes())
        issuer = x509.load_pem_x509_certificate(paths.cert("cpoSubCA2").read_bytes())
        key = serialization.load_pem_private_key(paths.key("cpoSubCA2").read_bytes(), password.encode() or None)
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=leaf, issuer=issuer, algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
            this_update=moment, next_update=moment + valid_for,
            revocation_time=moment if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        response = builder.sign(key, algorithm.signature_hash())  # type: ignore[arg-type]
        target = paths.root / folder_name / "ocsp" / OCSP_RESPONSE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, response.public_bytes(serialization.Encoding.DER))
        written.append(target)
    return written
