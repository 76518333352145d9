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
from cryptography.x509.oid import NameOID

import exi
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


@dataclass
class LocalContractIssuer:
    """Issues -2 contract certificates under ``mo_sub_ca2`` and answers CertificateInstallationReq /
    CertificateUpdateReq itself, signing the response with the CPS leaf key (V2G2-771)."""

    mo_sub_ca2: x509.Certificate
    mo_sub_ca2_key: ec.EllipticCurvePrivateKey
    mo_sub_ca1: x509.Certificate
    cps_leaf: x509.Certificate
    cps_key: ec.EllipticCurvePrivateKey
    cps_sub_cas: list[x509.Certificate]
    emaid_prefix: str = "DEEDG"  # country + provider; a running number makes each EMAID unique
    organization: str = "edge test MO"
    validity: dt.timedelta = dt.timedelta(days=730)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    issued: list[str] = field(default_factory=list)  # EMAIDs, in order

    @classmethod
    def from_pki_folder(cls, folder: Path, password: str | None = None) -> LocalContractIssuer:
        """The MO Sub-CA 2 and CPS keys of a PKI folder in Josev's layout (``edge pki create``);
        the key password from the folder's password files unless given."""
        certs, keys = folder / "iso15118_2" / "certs", folder / "iso15118_2" / "private_keys"

        def cert(name: str) -> x509.Certificate:
            return x509.load_pem_x509_certificate((certs / f"{name}Cert.pem").read_bytes())

        def key(name: str, password_file: str) -> Any:
            secret = password if password is not None else (keys / password_file).read_text().strip()
            return serialization.load_pem_private_key((keys / f"{name}.key").read_bytes(), secret.encode() or None)

        try:
            return cls(cert("moSubCA2"), key("moSubCA2", "moSubCA2LeafPassword.txt"), cert("moSubCA1"),
                       cert("cpsLeaf"), key("cpsLeaf", "cpsLeafPassword.txt"), [cert("cpsSubCA2"), cert("cpsSubCA1")])
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"cannot load the MO/CPS issuing keys from {folder}: {e}") from None

    def new_emaid(self) -> str:
        body = f"{self.emaid_prefix}C{len(self.issued) + 1:08d}"[:14]
        return body + _emaid_check(body)

    def issue(self, public_key: ec.EllipticCurvePublicKey, emaid: str) -> x509.Certificate:
        now = self.clock()
        not_after = min(now + self.validity, self.mo_sub_ca2.not_valid_after_utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, emaid),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                             x509.NameAttribute(NameOID.COUNTRY_NAME, emaid[:2]),
                             x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "MO")])
        ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
        issuer_ski = self.mo_sub_ca2.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.mo_sub_ca2.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, True, True, False, True, False, False, False, False), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                               critical=False)
                .sign(self.mo_sub_ca2_key, hashes.SHA256()))
        self.issued.append(emaid)
        return cert

    def _respond(self, recipient_der: bytes, update: bool) -> CertificateResponse:
        try:
            recipient = x509.load_der_x509_certificate(recipient_der).public_key()
        except ValueError:
            return CertificateResponse("FAILED_CertChainError")
        if not isinstance(recipient, ec.EllipticCurvePublicKey) or recipient.curve.name != "secp256r1":
            return CertificateResponse("FAILED_CertChainError")
        contract_key = ec.generate_private_key(ec.SECP256R1())
        emaid = self.new_emaid()
        leaf = self.issue(contract_key.public_key(), emaid)
        dh_public, encrypted = encrypt_contract_key(contract_key, recipient)
        # the four signed elements carry these Ids (V2G2-771: CPS signs them, the car checks)
        cls = b.CertificateUpdateResType if update else b.CertificateInstallationResType
        body = cls("OK", _chain(self.cps_leaf, self.cps_sub_cas, None),
                   _chain(leaf, [self.mo_sub_ca2, self.mo_sub_ca1], "id1"),
                   t.ContractSignatureEncryptedPrivateKeyType("id2", encrypted),
                   t.DiffieHellmanPublickeyType("id3", dh_public), t.EMAIDType("id4", emaid))
        if update:
            body.RetryCounter = None
        signed = [exi.Fragment(MSG_BODY_NS, name, getattr(body, name)) for name in
                  ("ContractSignatureCertChain", "ContractSignatureEncryptedPrivateKey", "DHpublickey", "eMAID")]
        signature = _certificate_response_signer()("iso2", signed, self.cps_key)
        return CertificateResponse("OK", body, signature)

    def install(self, request: b.CertificateInstallationReqType) -> CertificateResponse:
        """A new contract for the car whose OEM provisioning certificate is in ``request``."""
        return self._respond(request.OEMProvisioningCert or b"", update=False)

    def update(self, request: b.CertificateUpdateReqType) -> CertificateResponse:
        """A new contract replacing the one in ``request`` (encrypted to the current contract key)."""
        chain = request.ContractSignatureCertChain
        return self._respond(chain.Certificate if chain else b"", update=True)


def _emaid_check(body: str) -> str:
    """A check character for test EMAIDs (sum of character values mod 36). Real MOs compute the
    check digit of the EMAID standard; a charger does not verify it, so tests need only a stable one."""
    total = sum(int(c, 36) for c in body.upper() if c.isalnum())
    return "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[total % 36]
