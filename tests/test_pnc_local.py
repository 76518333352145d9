"""ISO 15118-2 Plug & Charge end to end in one process with real certificates and signatures: a test
PKI (``create_test_pki``), the charger's session deciding with :class:`LocalPlugAndCharge`, and a
scripted car that signs with the contract key. The negative cases each get their ResponseCode, and
the session ends with no power flowing. Also a local certificate installation whose new contract
then authorizes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge.pki.install import decrypt_contract_key
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.signature import sign, sign_authorization_req, sign_metering_receipt, verify
from edge.pki.testpki import create_test_pki
from edge.v2g.iso2.session import MSG_BODY_NS, Iso2Session
from exi import Fragment
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.xmldsig import X509IssuerSerialType
from tests.test_iso2_features import Car, ac_charger


def cert(pki: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((pki / "iso15118_2" / "certs" / f"{name}.pem").read_bytes())


def key(pki: Path, name: str):
    return serialization.load_pem_private_key((pki / "iso15118_2" / "private_keys" / f"{name}.key").read_bytes(),
                                              b"12345")


def der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


def contract_chain(pki: Path) -> t.CertificateChainType:
    return t.CertificateChainType(None, der(cert(pki, "contractLeafCert")), t.SubCertificatesType(
        [der(cert(pki, "moSubCA2Cert")), der(cert(pki, "moSubCA1Cert"))]))


class PncCar(Car):
    """The scripted car with a contract key; ``tamper`` breaks one thing on the way."""

    def __init__(self, session: Iso2Session, pki: Path) -> None:
        super().__init__(session)
        self.pki, self.key = pki, key(pki, "contractLeaf")

    def authorize(self, chain: t.CertificateChainType, emaid: str = "UKSWI123456791A", *, tamper: str = "") -> object:
        pd = self.send("PaymentDetailsReq", b.PaymentDetailsReqType(emaid, chain))
        if pd.ResponseCode != "OK":
            return pd
        req = b.AuthorizationReqType("ID1", pd.GenChallenge)
        if tamper == "challenge":  # a correctly signed request over another challenge
            req.GenChallenge = bytes(16)
        self.signature = sign_authorization_req("iso2", req, key(self.pki, "oemLeaf") if tamper == "other key"
                                                else self.key)
        if tamper == "after signing":  # one bit of the challenge flipped after signing
            req = dataclasses.replace(req, GenChallenge=pd.GenChallenge[:15] + bytes([pd.GenChallenge[15] ^ 1]))
        return self.send("AuthorizationReq", req)


def start(pki: Path, **kw) -> tuple[PncCar, Iso2Session, LocalPlugAndCharge]:
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    session = Iso2Session(ac_charger(), pnc=pnc, **kw)
    car = PncCar(session, pki)
    car.setup("Contract", (1, 2))
    return car, session, pnc


def test_ac_pnc_session_with_signed_authorization_and_metering_receipt(pki: Path) -> None:
    car, session, pnc = start(pki, receipt_interval=2.0)
    res = car.authorize(contract_chain(pki))
    assert (res.ResponseCode, res.EVSEProcessing) == ("OK", "Finished"), pnc.decisions
    assert session.contract.emaid == "UKSWI123456791A"
    car.ac_parameters()
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1))
    res = car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)
    while not res.ReceiptRequired:
        res = car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)
    receipt = b.MeteringReceiptReqType("ID2", car.sid, 1, res.MeterInfo)
    car.signature = sign_metering_receipt("iso2", receipt, car.key)
    assert car.send("MeteringReceiptReq", receipt).ResponseCode == "OK", pnc.decisions
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Stop", 1))
    assert car.send("SessionStopReq", b.SessionStopReqType("Terminate")).ResponseCode == "OK"
    assert session.receipts == 1 and not session.hardware.closed


def test_tampered_metering_receipt_is_refused(pki: Path) -> None:
    car, session, pnc = start(pki, receipt_interval=0.5)
    car.authorize(contract_chain(pki))
    car.ac_parameters()
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1))
    res = car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)
    assert res.ReceiptRequired
    receipt = b.MeteringReceiptReqType("ID2", car.sid, 1, res.MeterInfo)
    car.signature = sign_metering_receipt("iso2", receipt, car.key)
    receipt.MeterInfo = dataclasses.replace(res.MeterInfo, TMeter=res.MeterInfo.TMeter + 60)  # after signing
    out = car.send("MeteringReceiptReq", receipt)
    assert out.ResponseCode == "FAILED_MeteringSignatureNotValid" and car.ended
    assert not session.hardware.closed and "digest" in pnc.decisions[-1][0].lower()


@pytest.mark.parametrize("case, code", [
    ("challenge", "FAILED_ChallengeInvalid"),
    ("after signing", "FAILED_ChallengeInvalid"),
    ("other key", "FAILED_SignatureError"),
    ("emaid", "FAILED_CertChainError"),
    ("missing sub-CA", "FAILED_CertChainError"),
    ("expired", "FAILED_CertificateExpired"),
    ("other PKI", "FAILED_CertChainError"),
])
def test_pnc_refusals_end_the_session_cleanly(pki: Path, tmp_path: Path, case: str, code: str) -> None:
    chain = contract_chain(pki)
    kw = {}
    if case == "expired":
        kw["wall_clock"] = lambda: (dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)).timestamp()
    car, session, pnc = start(pki, **kw)
    if case == "missing sub-CA":
        chain.SubCertificates = t.SubCertificatesType([chain.SubCertificates.Certificate[0]])
    if case == "other PKI":
        other = tmp_path / "other"
        create_test_pki(other)
        car.key = key(other, "contractLeaf")
        chain = contract_chain(other)
    res = car.authorize(chain, "UKSWI123456792B" if case == "emaid" else "UKSWI123456791A",
                        tamper=case if case in ("challenge", "after signing", "other key") else "")
    assert res.ResponseCode == code, pnc.decisions
    assert car.ended and session.done and not session.hardware.closed


def test_local_certificate_installation_then_authorization(pki: Path) -> None:
    car, _, pnc = start(pki)
    oem_leaf, oem_key = cert(pki, "oemLeafCert"), key(pki, "oemLeaf")
    v2g_root = cert(pki, "v2gRootCACert")
    root_id = t.ListOfRootCertificateIDsType([X509IssuerSerialType(v2g_root.issuer.rfc4514_string(),
                                                                    v2g_root.serial_number)])
    req = b.CertificateInstallationReqType("ID1", der(oem_leaf), root_id)
    car.signature = sign("iso2", [Fragment(MSG_BODY_NS, "CertificateInstallationReq", req)], oem_key)
    res = car.send("CertificateInstallationReq", req)
    assert res.ResponseCode == "OK", pnc.decisions
    # the car checks the CPS signature over the four elements, then decrypts its new key
    signed = [Fragment(MSG_BODY_NS, n, getattr(res, n)) for n in
              ("ContractSignatureCertChain", "ContractSignatureEncryptedPrivateKey", "DHpublickey", "eMAID")]
    verify("iso2", car.header.Signature, signed, x509.load_der_x509_certificate(res.SAProvisioningCertificateChain
                                                                                 .Certificate))
    new_key = decrypt_contract_key(res.ContractSignatureEncryptedPrivateKey.value, res.DHpublickey.value, oem_key)
    leaf = x509.load_der_x509_certificate(res.ContractSignatureCertChain.Certificate)
    assert leaf.public_key().public_numbers() == new_key.public_key().public_numbers()
    # and the new contract authorizes
    car.key = new_key
    chain = dataclasses.replace(res.ContractSignatureCertChain, Id=None)
    out = car.authorize(chain, res.eMAID.value)
    assert (out.ResponseCode, out.EVSEProcessing) == ("OK", "Finished"), pnc.decisions
    # an installation request signed with another key is refused
    car2, _, _ = start(pki)
    car2.signature = sign("iso2", [Fragment(MSG_BODY_NS, "CertificateInstallationReq", req)], key(pki, "contractLeaf"))
    assert car2.send("CertificateInstallationReq", req).ResponseCode == "FAILED_SignatureError" and car2.ended


def test_revoked_contract_is_refused_through_ocsp(pki: Path) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    from edge.pki.ocsp import CachedOcspRevocation, OcspCache, OcspResponseChecker

    leaf, sub2 = cert(pki, "contractLeafCert"), cert(pki, "moSubCA2Cert")
    now = dt.datetime.now(dt.UTC)
    response = (ocsp.OCSPResponseBuilder()
                .add_response(leaf, sub2, hashes.SHA256(), ocsp.OCSPCertStatus.REVOKED, now - dt.timedelta(hours=2),
                              now + dt.timedelta(hours=2), now - dt.timedelta(days=1), None)
                .responder_id(ocsp.OCSPResponderEncoding.HASH, sub2)
                .sign(key(pki, "moSubCA2"), hashes.SHA256()))
    cache = OcspCache()
    cache.put(OcspResponseChecker().check(response.public_bytes(serialization.Encoding.DER), leaf, sub2, now=now))
    pnc = LocalPlugAndCharge.from_pki_folder(pki, revocation=CachedOcspRevocation(cache))
    car = PncCar(Iso2Session(ac_charger(), pnc=pnc), pki)
    car.setup("Contract", (1, 2))
    res = car.authorize(contract_chain(pki))
    assert res.ResponseCode == "FAILED_CertificateRevoked" and car.ended, pnc.decisions


def test_installation_for_an_oem_certificate_without_a_trusted_root_is_refused(pki: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.pki_builders import make_cert

    stranger = make_cert("OEM Prov", None, ca=False, key=ec.generate_private_key(ec.SECP256R1()),
                         not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))  # self-signed
    car, _, pnc = start(pki)
    req = b.CertificateInstallationReqType("ID1", der(stranger.cert), t.ListOfRootCertificateIDsType(
        [X509IssuerSerialType("CN=V2GRootCA", 12345)]))
    car.signature = sign("iso2", [Fragment(MSG_BODY_NS, "CertificateInstallationReq", req)], stranger.key)
    res = car.send("CertificateInstallationReq", req)
    assert res.ResponseCode == "FAILED_CertChainError" and car.ended, pnc.decisions
    assert "OEM provisioning chain does not lead to a trusted root" in pnc.decisions[-1][0]


def test_local_certificate_update_replaces_the_contract(pki: Path) -> None:
    car, _, pnc = start(pki)
    current = contract_chain(pki)
    req = b.CertificateUpdateReqType("ID1", dataclasses.replace(current, Id="id1"), "UKSWI123456791A",
                                     t.ListOfRootCertificateIDsType([X509IssuerSerialType("CN=V2GRootCA", 12345)]))
    car.signature = sign("iso2", [Fragment(MSG_BODY_NS, "CertificateUpdateReq", req)], car.key)
    res = car.send("CertificateUpdateReq", req)
    assert res.ResponseCode == "OK" and not car.ended, pnc.decisions
    signed = [Fragment(MSG_BODY_NS, n, getattr(res, n)) for n in
              ("ContractSignatureCertChain", "ContractSignatureEncryptedPrivateKey", "DHpublickey", "eMAID")]
    verify("iso2", car.header.Signature, signed,
           x509.load_der_x509_certificate(res.SAProvisioningCertificateChain.Certificate))
    # the new key is encrypted to the current contract key, and belongs to the new contract
    new_key = decrypt_contract_key(res.ContractSignatureEncryptedPrivateKey.value, res.DHpublickey.value, car.key)
    leaf = x509.load_der_x509_certificate(res.ContractSignatureCertChain.Certificate)
    assert leaf.public_key().public_numbers() == new_key.public_key().public_numbers()
    assert res.eMAID.value != "UKSWI123456791A"
    car.key = new_key
    out = car.authorize(dataclasses.replace(res.ContractSignatureCertChain, Id=None), res.eMAID.value)
    assert (out.ResponseCode, out.EVSEProcessing) == ("OK", "Finished"), pnc.decisions
    # an update request signed with another key than the current contract's is refused
    car2, _, _ = start(pki)
    car2.signature = sign("iso2", [Fragment(MSG_BODY_NS, "CertificateUpdateReq", req)], key(pki, "oemLeaf"))
    assert car2.send("CertificateUpdateReq", req).ResponseCode == "FAILED_SignatureError" and car2.ended
