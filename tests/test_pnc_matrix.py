"""The Plug & Charge negative matrix at session level (issue 5): each bad contract chain reaches the
car as its ResponseCode (-2 PaymentDetailsRes, -20 AuthorizationRes), the session ends, no power flows.
Chains come from tests/pki_builders.py; the decisions from LocalPlugAndCharge with real checks.
(Tampered GenChallenge and MeteringReceipt: tests/test_pnc_local.py and tests/test_iso20_session.py.)"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from cryptography import x509

from edge.ev.iso20 import Iso20ContractCredentials
from edge.hardware import SimulatedCharger
from edge.pki.algorithms import KeyAlgorithm
from edge.pki.chain import ContractChainValidator, RevocationStatus
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.signature import sign_authorization_req
from edge.v2g.iso2.session import Iso2Session
from edge.v2g.iso20.session import Iso20DcSession
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from tests import test_iso2_features, test_iso20_session
from tests.pki_builders import Chain, Issued, break_signature, make_cert, make_leaf

TODAY = dt.datetime.fromtimestamp(int(time.time()), dt.UTC)


class Revoked:
    """A revocation source (OCSP's place) that says the leaf is revoked."""

    def __init__(self, serial: int) -> None:
        self.serial = serial

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> RevocationStatus:
        return RevocationStatus.REVOKED if cert.serial_number == self.serial else RevocationStatus.GOOD


def chain(algorithm: KeyAlgorithm, **leaf_options: Any) -> Chain:
    root = make_cert("MO Root", None, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=60))
    sub1 = make_cert("MO Sub1", root, algorithm=algorithm, path_length=1, not_before=TODAY - dt.timedelta(days=60))
    sub2 = make_cert("MO Sub2", sub1, algorithm=algorithm, path_length=0, not_before=TODAY - dt.timedelta(days=60))
    options: dict[str, Any] = {"not_before": TODAY - dt.timedelta(days=30), **leaf_options}
    return Chain(root, sub1, sub2, make_leaf(sub2, algorithm=algorithm, **options))


def bad_case(name: str, algorithm: KeyAlgorithm) -> tuple[list[x509.Certificate], Issued, list[x509.Certificate],
                                                           Any]:
    """(trusted roots, leaf, sub-CAs the car sends, revocation source) for one case of the matrix."""
    good = chain(algorithm)
    roots, leaf, subs, revocation = [good.root.cert], good.leaf, good.sub_cas, None
    if name == "expired":
        leaf = make_leaf(good.sub2, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=400),
                         not_after=TODAY - dt.timedelta(days=1))
    elif name == "not yet valid":
        leaf = make_leaf(good.sub2, algorithm=algorithm, not_before=TODAY + dt.timedelta(days=2))
    elif name == "wrong issuer":
        roots = [chain(algorithm).root.cert]  # another MO's root with the same name
    elif name == "broken signature":
        subs = [break_signature(good.sub2.cert), good.sub1.cert]
    elif name == "wrong curve":
        # a key of another profile than its chain's (-2: P-521; -20: the other -20 algorithm, which the car
        # can still sign with)
        other = {KeyAlgorithm.P256_SHA256: KeyAlgorithm.P521_SHA512, KeyAlgorithm.P521_SHA512: KeyAlgorithm.ED448,
                 KeyAlgorithm.ED448: KeyAlgorithm.P521_SHA512}[algorithm]
        leaf = make_leaf(good.sub2, key=other.generate(), algorithm=algorithm, not_before=TODAY - dt.timedelta(days=1))
    elif name == "path too long":
        sub3 = make_cert("MO Sub3", good.sub2, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=60))
        leaf = make_leaf(sub3, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=1))
        subs = [sub3.cert, *good.sub_cas]
    elif name == "CA flag missing":
        sub1 = make_cert("MO Sub1", good.root, algorithm=algorithm, ca=False, not_before=TODAY - dt.timedelta(days=60))
        sub2 = make_cert("MO Sub2", sub1, algorithm=algorithm, path_length=0, not_before=TODAY - dt.timedelta(days=60))
        leaf = make_leaf(sub2, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=1))
        subs = [sub2.cert, sub1.cert]
    elif name == "revoked":
        revocation = Revoked(good.leaf.cert.serial_number)
    elif name == "critical extension":  # RFC 5280 §4.2: an unrecognised critical extension is refused
        leaf = make_leaf(good.sub2, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=1), extensions=[
            (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"), b"\x05\x00"), True)])
    elif name == "issued by root":  # the profiles issue contract leaves from a Sub-CA
        leaf = make_leaf(good.root, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=1))
        subs = [good.root.cert]  # SubCertificates cannot be empty in the schemas: the car sends its root copy
    elif name == "no trust anchor":
        roots = []
    elif name == "leaf without DC":  # Table F.4: the contract leaf's domain component is optional
        leaf = make_leaf(good.sub2, algorithm=algorithm, not_before=TODAY - dt.timedelta(days=1),
                         domain_component=None)
    return roots, leaf, subs, revocation


def der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


ISO2_CASES = {
    "expired": "FAILED_CertificateExpired",
    "not yet valid": "FAILED_CertificateExpired",  # -2 has no code of its own (V2G2-824)
    "wrong issuer": "FAILED_CertChainError",
    "broken signature": "FAILED_CertChainError",
    "wrong curve": "FAILED_CertChainError",
    "path too long": "FAILED_CertChainError",
    "CA flag missing": "FAILED_CertChainError",
    "revoked": "FAILED_CertificateRevoked",
    "EMAID mismatch": "FAILED_CertChainError",
    "critical extension": "FAILED_CertChainError",
    "issued by root": "FAILED_CertChainError",
    "no trust anchor": "FAILED_NoCertificateAvailable",
}
GOOD_CASES = ["good", "leaf without DC"]


def pnc_for(roots: list[x509.Certificate], revocation: Any) -> LocalPlugAndCharge:
    return LocalPlugAndCharge(ContractChainValidator(roots, revocation=revocation))


@pytest.mark.parametrize("case", [*GOOD_CASES, *ISO2_CASES])
def test_iso2_contract_matrix(case: str) -> None:
    roots, leaf, subs, revocation = bad_case(case, KeyAlgorithm.P256_SHA256)
    pnc = pnc_for(roots, revocation)
    hw = SimulatedCharger()
    car = test_iso2_features.Car(Iso2Session(hw, pnc=pnc))
    car.setup("Contract")
    emaid = "DEXXXC000000001" if case == "EMAID mismatch" else leaf.cert.subject.rfc4514_string().split("CN=")[1]
    res = car.send("PaymentDetailsReq", b.PaymentDetailsReqType(emaid, t.CertificateChainType(
        None, der(leaf.cert), t.SubCertificatesType([der(c) for c in subs]))))
    if case in GOOD_CASES:
        assert res.ResponseCode == "OK", pnc.decisions
        req = b.AuthorizationReqType("ID1", res.GenChallenge)
        car.signature = sign_authorization_req("iso2", req, leaf.key)
        assert car.send("AuthorizationReq", req).ResponseCode == "OK", pnc.decisions
        return
    assert res.ResponseCode == ISO2_CASES[case], pnc.decisions
    assert car.ended and not hw.closed and hw.target_i == 0


ISO20_CASES = {
    "expired": "WARNING_CertificateExpired",
    "not yet valid": "WARNING_CertificateNotYetValid",
    "wrong issuer": "WARNING_CertificateValidationError",
    "broken signature": "WARNING_CertificateValidationError",
    "wrong curve": "WARNING_CertificateValidationError",
    "path too long": "WARNING_CertificateValidationError",
    "CA flag missing": "WARNING_CertificateValidationError",
    "revoked": "WARNING_CertificateRevoked",
    "critical extension": "WARNING_CertificateValidationError",
    "issued by root": "WARNING_CertificateValidationError",
    "no trust anchor": "WARNING_NoCertificateAvailable",
}


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.P521_SHA512, KeyAlgorithm.ED448], ids=lambda a: a.value)
@pytest.mark.parametrize("case", [*GOOD_CASES, *ISO20_CASES])
def test_iso20_contract_matrix(case: str, algorithm: KeyAlgorithm) -> None:
    roots, leaf, subs, revocation = bad_case(case, algorithm)
    pnc = pnc_for(roots, revocation)
    hw = SimulatedCharger()
    car = test_iso20_session.Car(Iso20DcSession(hw, pnc=pnc))
    setup = car.setup()
    credentials = Iso20ContractCredentials(leaf.cert.subject.rfc4514_string(), der(leaf.cert),
                                           tuple(der(c) for c in subs), leaf.key)
    res = car.pnc(credentials, setup.PnC_ASResAuthorizationMode.GenChallenge)
    if case in GOOD_CASES:
        assert (res.ResponseCode, res.EVSEProcessing) == ("OK", "Finished"), pnc.decisions
        return
    assert res.ResponseCode == ISO20_CASES[case], pnc.decisions
    assert not hw.closed and hw.target_i == 0
    # a WARNING leaves the car the choice (V2G20: retry with EIM or stop); anything else ends the session
    stopped = car.send(test_iso20_session.cm.SessionStopReqType(ChargingSession="Terminate"))
    assert stopped.ResponseCode == "OK" and car.ended and not hw.closed
