"""ISO 15118-20 contract key transport and local issuing (edge.pki.install20): the Ed448 scalar key and
the Ed448 -> X448 map against the cryptography package, encryption round trips for both curves with
the field layouts of the XSD, every way decryption must fail, and the issuer's answers (OK with a chain
the charger's validator accepts; the WARNING_/FAILED_ codes of its refusals) with the car's checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, x448
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import exi
from edge.ev.iso20 import Iso20OemCredentials
from edge.pki.algorithms import KeyAlgorithm
from edge.pki.chain import ContractChainValidator, ContractProtocol
from edge.pki.install20 import (
    COMMON_NS,
    ED448_ORDER,
    ContractKeyError,
    Ed448ScalarKey,
    EncryptedContractKey,
    InstallationRejected,
    LocalContractIssuer20,
    accept_installation,
    decrypt_contract_key,
    ed448_secret_scalar,
    encrypt_contract_key,
    installation_aad,
    pcid_of,
    session_key,
    x448_private_from_ed448,
    x448_public_from_ed448,
)
from edge.pki.signature import sign
from edge.pki.store import josev_contract_trust_anchors
from edge.pki.testpki import ISO20_ED448_FOLDER, ISO20_FOLDER
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct

FOLDERS = [ISO20_FOLDER, ISO20_ED448_FOLDER]
AAD = b"OEMPROVCERT0123456789ABCDEF"


@pytest.fixture(scope="module")
def issuer(pki: Path) -> LocalContractIssuer20:
    return LocalContractIssuer20.from_pki_folder(pki)


def new_key(algorithm: KeyAlgorithm) -> Any:
    return algorithm.generate()


ALGORITHMS = [KeyAlgorithm.P521_SHA512, KeyAlgorithm.ED448]


# ------------------------------------------------------------------ Ed448 arithmetic
def test_scalar_key_signs_what_the_library_verifies() -> None:
    seed_key = ed448.Ed448PrivateKey.generate()
    scalar = ed448_secret_scalar(seed_key.private_bytes_raw()) % ED448_ORDER
    key = Ed448ScalarKey(scalar)
    assert key.public_key().public_bytes_raw() == seed_key.public_key().public_bytes_raw()
    for message in (b"", b"SignedInfo", bytes(range(256)) * 5):
        signature = key.sign(message)
        assert len(signature) == 114 and signature == key.sign(message)  # deterministic
        seed_key.public_key().verify(signature, message)
    with pytest.raises(InvalidSignature):  # a changed message does not verify
        seed_key.public_key().verify(key.sign(b"a"), b"b")
    assert isinstance(key, ed448.Ed448PrivateKey)  # what edge.pki.signature dispatches on


def test_scalar_key_refuses_out_of_range_and_export() -> None:
    for bad in (0, ED448_ORDER, ED448_ORDER + 5):
        with pytest.raises(ContractKeyError, match="between 1 and the group order"):
            Ed448ScalarKey(bad)
    key = Ed448ScalarKey(12345)
    with pytest.raises(ValueError, match="no RFC 8032 seed"):
        key.private_bytes_raw()
    with pytest.raises(ValueError, match="no RFC 8032 seed"):
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())


def test_ed448_key_has_the_x448_key_of_rfc7748() -> None:
    for _ in range(3):
        key = ed448.Ed448PrivateKey.generate()
        mapped = x448_public_from_ed448(key.public_key()).public_bytes_raw()
        assert mapped == x448_private_from_ed448(key).public_key().public_bytes_raw()
        # both sides of an exchange agree through the map
        ephemeral = x448.X448PrivateKey.generate()
        assert ephemeral.exchange(x448_public_from_ed448(key.public_key())) == \
            x448_private_from_ed448(key).exchange(ephemeral.public_key())


# ------------------------------------------------------------------ key transport
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip(algorithm: KeyAlgorithm) -> None:
    oem, contract = new_key(algorithm), new_key(algorithm)
    sealed = encrypt_contract_key(contract, oem.public_key(), AAD)
    key = decrypt_contract_key(sealed, oem, AAD, contract.public_key())
    if algorithm is KeyAlgorithm.P521_SHA512:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.private_numbers() == contract.private_numbers()
    else:
        assert isinstance(key, Ed448ScalarKey)
        contract.public_key().verify(key.sign(b"charge"), b"charge")
    # a fresh ephemeral key and IV each time
    again = encrypt_contract_key(contract, oem.public_key(), AAD)
    assert again.dh_public_key != sealed.dh_public_key and again.encrypted_private_key[:12] != \
        sealed.encrypted_private_key[:12]


def test_secp521_layout() -> None:
    oem, contract = ec.generate_private_key(ec.SECP521R1()), ec.generate_private_key(ec.SECP521R1())
    sealed = encrypt_contract_key(contract, oem.public_key(), AAD)
    assert sealed.curve == "SECP521"
    assert len(sealed.dh_public_key) == 133 and sealed.dh_public_key[0] == 0x04
    assert len(sealed.encrypted_private_key) == 94  # IV 12, ciphertext 66, tag 16
    # the plaintext: the scalar big-endian in 66 bytes, the top 7 bits zero
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP521R1(), sealed.dh_public_key)
    aes = AESGCM(session_key(oem.exchange(ec.ECDH(), peer)))
    plain = aes.decrypt(sealed.encrypted_private_key[:12], sealed.encrypted_private_key[12:], AAD)
    assert len(plain) == 66 and plain[0] & 0xFE == 0
    assert int.from_bytes(plain, "big") == contract.private_numbers().private_value


def test_x448_layout() -> None:
    oem, contract = ed448.Ed448PrivateKey.generate(), ed448.Ed448PrivateKey.generate()
    sealed = encrypt_contract_key(contract, oem.public_key(), AAD)
    assert sealed.curve == "X448"
    # 0x04 || u (56 bytes), then zero filler to the XSD's 133 bytes
    assert len(sealed.dh_public_key) == 133 and sealed.dh_public_key[0] == 0x04 and not any(sealed.dh_public_key[57:])
    assert len(sealed.encrypted_private_key) == 84  # IV 12, ciphertext 56, tag 16
    peer = x448.X448PublicKey.from_public_bytes(sealed.dh_public_key[1:57])
    aes = AESGCM(session_key(x448_private_from_ed448(oem).exchange(peer)))
    plain = aes.decrypt(sealed.encrypted_private_key[:12], sealed.encrypted_private_key[12:], AAD)
    assert len(plain) == 56
    assert int.from_bytes(plain, "big") == ed448_secret_scalar(contract.private_bytes_raw()) % ED448_ORDER
    # the spec's own form without filler (57 bytes) is read as well
    short = dataclasses.replace(sealed, dh_public_key=sealed.dh_public_key[:57])
    decrypt_contract_key(short, oem, AAD, contract.public_key())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_decryption_fails_on_anything_wrong(algorithm: KeyAlgorithm) -> None:
    oem, contract = new_key(algorithm), new_key(algorithm)
    sealed = encrypt_contract_key(contract, oem.public_key(), AAD)
    blob = sealed.encrypted_private_key

    def fails(match: str, sealed: EncryptedContractKey = sealed, key: Any = oem, aad: bytes = AAD,
              public: Any = None) -> None:
        with pytest.raises(ContractKeyError, match=match):
            decrypt_contract_key(sealed, key, aad, public or contract.public_key())

    fails("tag does not verify", key=new_key(algorithm))  # another car's OEM key
    fails("tag does not verify", aad=AAD + b"0")  # another PCID or contract SKI
    for position in (0, 20, len(blob) - 1):  # IV, ciphertext, tag
        changed = blob[:position] + bytes([blob[position] ^ 1]) + blob[position + 1:]
        fails("tag does not verify", sealed=dataclasses.replace(sealed, encrypted_private_key=changed))
    fails("does not belong to the contract", public=new_key(algorithm).public_key())
    fails("bytes", sealed=dataclasses.replace(sealed, encrypted_private_key=blob[:-1]))
    fails("bytes", sealed=dataclasses.replace(sealed, dh_public_key=sealed.dh_public_key[:100]))
    other = new_key(KeyAlgorithm.ED448 if algorithm is KeyAlgorithm.P521_SHA512 else KeyAlgorithm.P521_SHA512)
    fails("OEM provisioning key is not", key=other)
    fails("neither SECP521 nor X448", sealed=dataclasses.replace(sealed, curve="TPM"))


def test_x448_dh_public_key_filler_must_be_zero() -> None:
    oem, contract = ed448.Ed448PrivateKey.generate(), ed448.Ed448PrivateKey.generate()
    sealed = encrypt_contract_key(contract, oem.public_key(), AAD)
    dirty = sealed.dh_public_key[:-1] + b"\x01"
    with pytest.raises(ContractKeyError, match="zero filler"):
        decrypt_contract_key(dataclasses.replace(sealed, dh_public_key=dirty), oem, AAD, contract.public_key())


def test_secp521_padding_bits_must_be_zero() -> None:
    """[V2G20-2678]: a ciphertext that authenticates but carries a value above 521 bits is refused."""
    oem = ec.generate_private_key(ec.SECP521R1())
    ephemeral = ec.generate_private_key(ec.SECP521R1())
    aes = AESGCM(session_key(ephemeral.exchange(ec.ECDH(), oem.public_key())))
    iv = bytes(12)
    blob = iv + aes.encrypt(iv, b"\x02" + bytes(65), AAD)
    dh = ephemeral.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    with pytest.raises(ContractKeyError, match="padding bits"):
        decrypt_contract_key(EncryptedContractKey("SECP521", dh, blob), oem, AAD, oem.public_key())


def test_keys_of_other_algorithms_are_refused() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ContractKeyError, match="P-521 or Ed448"):
        encrypt_contract_key(p256, p256.public_key(), AAD)
    with pytest.raises(ContractKeyError, match="P-521 OEM"):
        encrypt_contract_key(ec.generate_private_key(ec.SECP521R1()), ed448.Ed448PrivateKey.generate().public_key(),
                             AAD)
    with pytest.raises(ContractKeyError, match="Ed448 OEM"):
        encrypt_contract_key(ed448.Ed448PrivateKey.generate(), ec.generate_private_key(ec.SECP521R1()).public_key(),
                             AAD)


def test_aad_is_pcid_and_contract_ski(pki: Path) -> None:
    oem_leaf = x509.load_pem_x509_certificate((pki / ISO20_FOLDER / "certs" / "oemLeafCert.pem").read_bytes())
    contract = x509.load_pem_x509_certificate((pki / ISO20_FOLDER / "certs" / "contractLeafCert.pem").read_bytes())
    assert pcid_of(oem_leaf) == "OEMPROVCERT"  # CN "OEMProvCert": capital letters and digits
    ski = contract.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert installation_aad("ABC", contract) == b"ABC" + ski.hex().upper().encode()


# ------------------------------------------------------------------ the issuer and the car's checks
def oem_of(pki: Path, folder: str) -> Iso20OemCredentials:
    return Iso20OemCredentials.from_pki(pki, folder)


def request(oem: Iso20OemCredentials, key: Any = None, **changes: Any) -> tuple[cm.CertificateInstallationReqType, Any]:
    req, signature = oem.installation_request()
    req = dataclasses.replace(req, **changes)
    if key is not None or changes:
        signature = sign("iso20", [exi.Fragment(COMMON_NS, "OEMProvisioningCertificateChain",
                                                req.OEMProvisioningCertificateChain)], key or oem.key)
    return req, signature


def accept(res: cm.CertificateInstallationResType, signature: Any, oem: Iso20OemCredentials, **kw: Any) -> Any:
    args: dict[str, Any] = {"oem_leaf": x509.load_der_x509_certificate(oem.leaf), "oem_key": oem.key,
                            "v2g_roots": [x509.load_der_x509_certificate(r) for r in oem.v2g_roots],
                            "now": dt.datetime.now(dt.UTC)}
    args.update(kw)
    return accept_installation(res, signature, **args)


@pytest.mark.parametrize("folder", FOLDERS)
def test_issuer_answers_and_the_car_accepts(pki: Path, issuer: LocalContractIssuer20, folder: str) -> None:
    oem = oem_of(pki, folder)
    answer, why = issuer.install(*request(oem))
    assert answer.response_code == "OK" and why.startswith(f"contract {issuer.issued[-1]}")
    body = answer.body
    curve = "SECP521" if folder == ISO20_FOLDER else "X448"
    assert body.EVSEProcessing == "Finished" and body.RemainingContractCertificateChains == 0
    assert body.SignedInstallationData.ECDHCurve == curve and body.SignedInstallationData.Id == "id1"
    # the whole answer goes through the codec, header signature included
    body.Header = ct.MessageHeaderType(SessionID=bytes(8), TimeStamp=0, Signature=answer.signature)
    decoded = exi.decode("iso20-common", exi.encode("iso20-common", body))
    installed = accept(decoded, decoded.Header.Signature, oem)
    assert installed.emaid == issuer.issued[-1] and installed.emaid.startswith("DEEDGT")
    leaf = x509.load_der_x509_certificate(installed.leaf)
    assert installed.key.public_key() == leaf.public_key()
    # the charger's own contract check takes the new chain (EMAID, DC=MO, -20 algorithms, MO root)
    verdict = ContractChainValidator(josev_contract_trust_anchors(pki)).validate(
        leaf, installed.sub_cas, protocol=ContractProtocol.ISO20, now=dt.datetime.now(dt.UTC))
    assert verdict.ok, verdict.reason
    assert KeyAlgorithm.of(leaf.public_key()) is KeyAlgorithm.of(oem.key.public_key())


@pytest.mark.parametrize("folder", FOLDERS)
def test_issuer_refusals(pki: Path, other_pki: Path, issuer: LocalContractIssuer20, folder: str) -> None:
    oem = oem_of(pki, folder)
    stranger = oem_of(other_pki, folder)

    def code(req_and_signature: tuple[Any, Any], on: LocalContractIssuer20 = issuer) -> str:
        answer, why = on.install(*req_and_signature)
        assert why and (answer.body is None) == (answer.response_code != "OK")
        return answer.response_code

    assert code(request(stranger)) == "WARNING_CertificateValidationError"  # an OEM root we do not know
    assert code(request(oem, key=new_key(KeyAlgorithm.of(oem.key.public_key())))) == "FAILED_SignatureError"
    assert code(request(oem, key=stranger.key)) == "FAILED_SignatureError"
    assert code(request(oem, MaximumContractCertificateChains=0)) == "WARNING_NoCertificateAvailable"
    no_chain = cm.CertificateInstallationReqType(OEMProvisioningCertificateChain=None)
    assert code((no_chain, None)) == "WARNING_CertificateValidationError"
    assert code((None, None)) == "WARNING_CertificateValidationError"  # no request at all
    not_der = dataclasses.replace(oem.chain(), Certificate=b"\x30\x00")
    assert code(request(oem, OEMProvisioningCertificateChain=not_der)) == "WARNING_CertificateValidationError"
    later = dataclasses.replace(issuer, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=20 * 365))
    assert code(request(oem), later) == "WARNING_CertificateExpired"
    earlier = dataclasses.replace(issuer, clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    assert code(request(oem), earlier) == "WARNING_CertificateNotYetValid"
    # NOTE 4 after [V2G20-2709]: a curve this SA has no issuing keys for
    algorithm = KeyAlgorithm.of(oem.key.public_key())
    narrow = dataclasses.replace(issuer, issuing={a: k for a, k in issuer.issuing.items() if a is not algorithm})
    assert code(request(oem), narrow) == "WARNING_CertificateValidationError"


@pytest.mark.parametrize("folder", FOLDERS)
def test_car_rejects_what_it_must(pki: Path, other_pki: Path, issuer: LocalContractIssuer20, folder: str) -> None:
    oem = oem_of(pki, folder)
    answer, _ = issuer.install(*request(oem))
    body, signature = answer.body, answer.signature
    data = body.SignedInstallationData

    def rejected(match: str, res: Any = body, sig: Any = signature, **kw: Any) -> None:
        with pytest.raises(InstallationRejected, match=match):
            accept(res, sig, oem, **kw)

    # anything changed in SignedInstallationData after the CPS signed it
    for change in ({"DHPublicKey": bytes([4]) + data.DHPublicKey[1:][::-1]},
                   {"ContractCertificateChain": dataclasses.replace(data.ContractCertificateChain,
                                                                    Certificate=oem.leaf)},
                   {"ECDHCurve": "X448" if data.ECDHCurve == "SECP521" else "SECP521"}):
        rejected("digest mismatch", res=dataclasses.replace(body, SignedInstallationData=dataclasses.replace(data,
                                                                                                            **change)))
    rejected("no Signature", sig=None)
    rejected("does not lead to a trusted root", v2g_roots=[x509.load_der_x509_certificate(r)
                                                           for r in oem_of(other_pki, folder).v2g_roots])
    rejected("expired", now=dt.datetime.now(dt.UTC) + dt.timedelta(days=20 * 365))
    stranger = oem_of(other_pki, folder)  # the answer was encrypted for another car
    rejected("tag does not verify", oem_key=stranger.key, oem_leaf=x509.load_der_x509_certificate(oem.leaf))
    rejected("lacks", res=dataclasses.replace(body, SignedInstallationData=None))
    # a correctly signed answer whose contract chain does not hang together
    broken = dataclasses.replace(data, ContractCertificateChain=dataclasses.replace(
        data.ContractCertificateChain, SubCertificates=cm.SubCertificatesType([oem.sub_cas[0]])))
    keys = issuer.issuing[KeyAlgorithm.of(oem.key.public_key())]
    resigned = sign("iso20", [exi.Fragment(COMMON_NS, "SignedInstallationData", broken)], keys.cps_key)
    rejected("contract chain is broken", res=dataclasses.replace(body, SignedInstallationData=broken), sig=resigned)


def test_issuer_from_folder_errors(tmp_path: Path, pki: Path) -> None:
    assert not LocalContractIssuer20.found_in(tmp_path)
    with pytest.raises(ValueError, match="no ISO 15118-20 folder"):
        LocalContractIssuer20.from_pki_folder(tmp_path)
    (tmp_path / ISO20_FOLDER / "certs").mkdir(parents=True)
    assert LocalContractIssuer20.found_in(tmp_path)
    with pytest.raises(ValueError, match="cannot load the -20 MO/CPS issuing keys"):
        LocalContractIssuer20.from_pki_folder(tmp_path)
    with pytest.raises(ValueError, match="cannot load the -20 MO/CPS issuing keys"):
        LocalContractIssuer20.from_pki_folder(pki, password="wrong")
