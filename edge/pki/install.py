"""Contract certificate installation and update in local mode (ISO 15118-2), for testbenches and
rigs without a backend: the charger itself issues the contract from a configured MO Sub-CA 2 and
signs the response with a certificate provisioning service (CPS) key.

The contract's private key travels to the car encrypted (V2G2-818..V2G2-824): ECDH between a fresh
ephemeral key and the car's OEM provisioning (or current contract) certificate key on secp256r1, a
128-bit AES key from the NIST SP 800-56A concatenation KDF with SHA-256 and OtherInfo = AlgorithmID
0x01, PartyUInfo "U", PartyVInfo "V", then AES-128-CBC over the 32-byte private scalar with a random
IV sent in front (48 bytes, no padding: the scalar is a whole number of blocks). The ephemeral public
key goes to the car as DHpublickey (uncompressed point, 65 bytes).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

import exi
from edge.pki.algorithms import KeyAlgorithm, PrivateKey
from edge.pki.folder import read_certificate, read_key_of
from edge.pki.roots import car_root_ids, pick_for_car, protocol_folders
from edge.pki.testpki import CA_ISSUERS_URL, ISO2_FOLDER, OCSP_URL, PROFILES, PkiPaths, key_usage
from edge.v2g.pnc import CertificateResponse
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t

MSG_BODY_NS = "urn:iso:15118:2:2013:MsgBody"
_KDF_OTHER_INFO = bytes([0x01, 0x55, 0x56])  # AlgorithmID, PartyUInfo "U", PartyVInfo "V" (V2G2-818)
_SCALAR_BYTES = 32  # secp256r1


class ContractKeyError(ValueError):
    """The encrypted contract key cannot be recovered (wrong key, wrong length, wrong curve)."""


def _symmetric_key(shared_secret: bytes) -> bytes:
    return ConcatKDFHash(hashes.SHA256(), 16, _KDF_OTHER_INFO).derive(shared_secret)


def encrypt_contract_key(contract_key: ec.EllipticCurvePrivateKey,
                         recipient: ec.EllipticCurvePublicKey) -> tuple[bytes, bytes]:
    """(DHpublickey, IV + ciphertext) for ``contract_key``, readable only with ``recipient``'s key."""
    if not isinstance(recipient, ec.EllipticCurvePublicKey) or recipient.curve.name != "secp256r1":
        raise ContractKeyError("the car's certificate key must be an EC key on secp256r1")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    key = _symmetric_key(ephemeral.exchange(ec.ECDH(), recipient))
    iv = os.urandom(16)
    scalar = contract_key.private_numbers().private_value.to_bytes(_SCALAR_BYTES, "big")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    dh_public = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
    return dh_public, iv + encryptor.update(scalar) + encryptor.finalize()


def decrypt_contract_key(encrypted: bytes, dh_public: bytes,
                         recipient_key: ec.EllipticCurvePrivateKey) -> ec.EllipticCurvePrivateKey:
    """The car's side: the contract private key from ContractSignatureEncryptedPrivateKey."""
    if len(encrypted) != 16 + _SCALAR_BYTES:
        raise ContractKeyError(f"encrypted contract key must be 48 bytes (IV + 32), got {len(encrypted)}")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), dh_public)
    except ValueError as e:
        raise ContractKeyError(f"DHpublickey is not a secp256r1 point: {e}") from None
    key = _symmetric_key(recipient_key.exchange(ec.ECDH(), peer))
    decryptor = Cipher(algorithms.AES(key), modes.CBC(encrypted[:16])).decryptor()
    scalar = int.from_bytes(decryptor.update(encrypted[16:]) + decryptor.finalize(), "big")
    try:
        return ec.derive_private_key(scalar, ec.SECP256R1())
    except ValueError:
        raise ContractKeyError("decrypted value is not a valid private key (wrong recipient key?)") from None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _chain(leaf: x509.Certificate, subs: list[x509.Certificate], chain_id: str | None) -> t.CertificateChainType:
    sub_certificates = t.SubCertificatesType([_der(c) for c in subs]) if subs else None
    return t.CertificateChainType(chain_id, _der(leaf), sub_certificates)


def _certificate_response_signer() -> Callable[..., Any]:
    from edge.pki import signature  # the XML-signature module (EXI canonicalisation, ECDSA)

    return signature.sign


@dataclass(frozen=True)
class IssuingKeys:
    """What issues contracts of one algorithm: the MO Sub-CA 2 (and 1 above it) and the CPS leaf (and
    its sub-CAs) that signs the installation response."""

    mo_sub_ca2: x509.Certificate
    mo_sub_ca2_key: PrivateKey
    mo_sub_ca1: x509.Certificate
    cps_leaf: x509.Certificate
    cps_key: PrivateKey
    cps_sub_cas: tuple[x509.Certificate, ...]
    v2g_root: x509.Certificate | None = None  # the root the CPS chain leads to (matched to the car's root IDs)

    @classmethod
    def from_folder(cls, paths: PkiPaths, password: str | None = None) -> IssuingKeys:
        """From one protocol folder of a Josev-layout PKI; key passwords from its files unless given.
        One-line ValueError on any problem."""
        mo2, cps = read_certificate(paths.cert("moSubCA2")), read_certificate(paths.cert("cpsLeaf"))
        root = read_certificate(paths.cert("v2gRootCA")) if paths.cert("v2gRootCA").is_file() else None
        return cls(mo2, read_key_of(paths, "moSubCA2", mo2, password), read_certificate(paths.cert("moSubCA1")),
                   cps, read_key_of(paths, "cpsLeaf", cps, password),
                   (read_certificate(paths.cert("cpsSubCA2")), read_certificate(paths.cert("cpsSubCA1"))), root)


def issue_contract(keys: IssuingKeys, public_key: Any, emaid: str, *, organization: str, validity: dt.timedelta,
                   now: dt.datetime) -> x509.Certificate:
    """A contract leaf for ``public_key`` with the test PKI's contractLeaf profile (key usage, OCSP and
    CA-issuer URLs) under ``keys``' MO Sub-CA 2, signed with that CA's algorithm."""
    profile = next(p for p in PROFILES if p.name == "contractLeaf")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, emaid),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                         x509.NameAttribute(NameOID.COUNTRY_NAME, emaid[:2]),
                         x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "MO")])
    issuer_ski = keys.mo_sub_ca2.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(keys.mo_sub_ca2.subject)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(min(now + validity, keys.mo_sub_ca2.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(key_usage(profile.key_usage), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                              critical=False))
    if profile.with_aia:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(OCSP_URL)),
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(CA_ISSUERS_URL))]), critical=False)
    algorithm = KeyAlgorithm.of(keys.mo_sub_ca2.public_key())
    return builder.sign(keys.mo_sub_ca2_key, algorithm.signature_hash())


def numbered_emaid(prefix: str, number: int) -> str:
    """A 15-character EMAID for issued test contracts: ``prefix`` + a running number + a check
    character (the sum of character values mod 36). Real MOs compute the check digit of the EMAID
    standard; a charger does not verify it, so tests need only a stable one."""
    body = f"{prefix}{number:0{14 - len(prefix)}d}"[:14]
    total = sum(int(c, 36) for c in body.upper() if c.isalnum())
    return body + "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[total % 36]


@dataclass
class LocalContractIssuer:
    """Issues -2 contract certificates under ``mo_sub_ca2`` and answers CertificateInstallationReq /
    CertificateUpdateReq itself, signing the response with the CPS leaf key (V2G2-771)."""

    keys: IssuingKeys  # P-256 (the iso15118_2 folder)
    # the same under other V2G roots (iso15118_2@label folders): a car that names only such a root gets its CPS chain
    alternatives: list[IssuingKeys] = field(default_factory=list)
    emaid_prefix: str = "DEEDGC"  # country + provider + "C"; a running number makes each EMAID unique
    organization: str = "edge test MO"
    validity: dt.timedelta = dt.timedelta(days=730)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    issued: list[str] = field(default_factory=list)  # EMAIDs, in order

    @classmethod
    def from_pki_folder(cls, folder: Path, password: str | None = None) -> LocalContractIssuer:
        """The MO Sub-CA 2 and CPS keys of a PKI folder in Josev's layout (``edge pki create``);
        the key passwords from the folder's password files unless given."""
        try:
            keys = [IssuingKeys.from_folder(PkiPaths(folder, name), password)
                    for name in protocol_folders(folder, ISO2_FOLDER)]
        except ValueError as e:
            raise ValueError(f"cannot load the MO/CPS issuing keys from {folder}: {e}") from None
        if not keys:
            raise ValueError(f"cannot load the MO/CPS issuing keys from {folder}: no {ISO2_FOLDER} folder")
        return cls(keys[0], keys[1:])

    @property
    def cps_key(self) -> PrivateKey:
        return self.keys.cps_key

    def new_emaid(self) -> str:
        return numbered_emaid(self.emaid_prefix, len(self.issued) + 1)

    def issue(self, public_key: ec.EllipticCurvePublicKey, emaid: str, keys: IssuingKeys | None = None
              ) -> x509.Certificate:
        cert = issue_contract(keys or self.keys, public_key, emaid, organization=self.organization,
                              validity=self.validity, now=self.clock())
        self.issued.append(emaid)
        return cert

    def keys_for(self, root_ids: list[tuple[str, int]]) -> IssuingKeys:
        """The issuing keys whose CPS chain leads to a V2G root the car named (its ListOfRootCertificateIDs), else
        the default ones (see :func:`edge.pki.roots.pick_for_car`)."""
        keys, _ = pick_for_car([self.keys, *self.alternatives], lambda k: k.v2g_root, root_ids)
        return keys

    def _respond(self, recipient_der: bytes, update: bool, root_ids: list[tuple[str, int]] | None = None
                 ) -> CertificateResponse:
        keys = self.keys_for(root_ids or [])
        try:
            recipient = x509.load_der_x509_certificate(recipient_der).public_key()
        except ValueError:
            return CertificateResponse("FAILED_CertChainError")
        if not isinstance(recipient, ec.EllipticCurvePublicKey) or recipient.curve.name != "secp256r1":
            return CertificateResponse("FAILED_CertChainError")
        contract_key = ec.generate_private_key(ec.SECP256R1())
        emaid = self.new_emaid()
        leaf = self.issue(contract_key.public_key(), emaid, keys)
        dh_public, encrypted = encrypt_contract_key(contract_key, recipient)
        # the four signed elements carry these Ids (V2G2-771: CPS signs them, the car checks)
        cls = b.CertificateUpdateResType if update else b.CertificateInstallationResType
        body = cls("OK", _chain(keys.cps_leaf, list(keys.cps_sub_cas), None),
                   _chain(leaf, [keys.mo_sub_ca2, keys.mo_sub_ca1], "id1"),
                   t.ContractSignatureEncryptedPrivateKeyType("id2", encrypted),
                   t.DiffieHellmanPublickeyType("id3", dh_public), t.EMAIDType("id4", emaid))
        if update:
            body.RetryCounter = None
        signed = [exi.Fragment(MSG_BODY_NS, name, getattr(body, name)) for name in
                  ("ContractSignatureCertChain", "ContractSignatureEncryptedPrivateKey", "DHpublickey", "eMAID")]
        signature = _certificate_response_signer()("iso2", signed, keys.cps_key)
        return CertificateResponse("OK", body, signature)

    def install(self, request: b.CertificateInstallationReqType) -> CertificateResponse:
        """A new contract for the car whose OEM provisioning certificate is in ``request``."""
        return self._respond(request.OEMProvisioningCert or b"", update=False,
                             root_ids=car_root_ids(request.ListOfRootCertificateIDs))

    def update(self, request: b.CertificateUpdateReqType) -> CertificateResponse:
        """A new contract replacing the one in ``request`` (encrypted to the current contract key)."""
        chain = request.ContractSignatureCertChain
        return self._respond(chain.Certificate if chain else b"", update=True,
                             root_ids=car_root_ids(request.ListOfRootCertificateIDs))
