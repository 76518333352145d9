"""OcppPlugAndCharge (edge.ocpp.pnc): Plug & Charge authorized by the CSMS (OCPP C07), with real certificates
from the test PKI (conftest's ``pki``/``other_pki``) and tests/pki_builders.py, checks from LocalPlugAndCharge.
The station is a fake with a switchable connection and a hand-driven clock; payloads are checked against the
official 2.0.1 and 2.1 schemas, hash data against values recomputed here (RFC 6960 CertID by hand)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.ev.iso20 import Iso20ContractCredentials
from edge.hardware import SimulatedCharger
from edge.ocpp.adapter import validate
from edge.ocpp.device_model import DeviceModel
from edge.ocpp.pnc import AuthorizeRequest, OcppPlugAndCharge
from edge.pki.chain import ContractChainValidator
from edge.pki.folder import read_certificate, read_key_of
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.signature import sign_authorization_req
from edge.pki.store import josev_contract_trust_anchors
from edge.pki.testpki import ISO2_FOLDER, ISO20_ED448_FOLDER, ISO20_FOLDER, OCSP_URL, TEST_EMAID, PkiPaths
from edge.v2g.iso2.session import Iso2Session
from edge.v2g.iso20.session import Iso20DcSession
from edge.v2g.pnc import ContractChain
from exi.model import iso2_msgbody as b
from tests import test_iso2_features, test_iso20_session
from tests.pki_builders import Issued, break_signature, contract_chain, make_leaf

FOLDER_OF = {"iso2": ISO2_FOLDER, "iso20": ISO20_FOLDER, "iso20-dc": ISO20_FOLDER, "iso20-ed448": ISO20_ED448_FOLDER}
ACCEPTED = {"idTokenInfo": {"status": "Accepted"}}


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def pki_certs(pki: Path, folder: str) -> dict[str, x509.Certificate]:
    paths = PkiPaths(pki, folder)
    return {n: read_certificate(paths.cert(n)) for n in ("contractLeaf", "moSubCA2", "moSubCA1", "moRootCA")}


def proto_of(case: str) -> str:
    return "iso20" if case == "iso20-ed448" else case


def pki_chain(pki: Path, case: str) -> ContractChain:
    """The test PKI's contract chain as a car sends it (-2 with the eMAID beside it, -20 from the leaf)."""
    certs = pki_certs(pki, FOLDER_OF[case])
    return ContractChain(der(certs["contractLeaf"]), (der(certs["moSubCA2"]), der(certs["moSubCA1"])), TEST_EMAID)


@dataclasses.dataclass
class Station:
    """The station's side as OcppPlugAndCharge sees it: is the CSMS there, what time is it, was it woken."""

    connected: bool = True
    time: float = 1000.0
    woken: int = 0

    def wake(self) -> None:
        self.woken += 1


def device_model(**iso15118: str) -> DeviceModel:
    return DeviceModel.standard(1, model="Edge", vendor="Test",
                                overrides={f"ISO15118Ctrlr/{k}": v for k, v in iso15118.items()})


def make(local: LocalPlugAndCharge, **iso15118: str) -> tuple[OcppPlugAndCharge, Station]:
    station = Station()
    pnc = OcppPlugAndCharge(local, device_model(**iso15118), online=lambda: station.connected,
                            clock=lambda: station.time, wake=station.wake)
    return pnc, station


@pytest.fixture(scope="module")
def local(pki: Path) -> LocalPlugAndCharge:
    return LocalPlugAndCharge.from_pki_folder(pki)


def now() -> float:
    return time.time()


def ask(pnc: OcppPlugAndCharge, proto: str, chain: ContractChain) -> AuthorizeRequest:
    """check_contract OK, the first authorize queues exactly one request: it."""
    assert pnc.check_contract(proto, chain, now()) == "OK", pnc.decisions
    assert pnc.authorize(proto, chain) == "Ongoing"
    (request,) = pnc.take_requests()
    return request


def expected_hash_entry(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, str]:
    """RFC 6960 CertID by hand: SHA-256 of the issuer name as the certificate encodes it and of the issuer key's
    BIT STRING contents (the uncompressed point for EC, the raw key for Ed448), the serial in hex."""
    key = issuer.public_key()
    raw = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint) \
        if isinstance(key, ec.EllipticCurvePublicKey) else key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"hashAlgorithm": "SHA256", "issuerNameHash": hashlib.sha256(cert.issuer.public_bytes()).hexdigest(),
            "issuerKeyHash": hashlib.sha256(raw).hexdigest(), "serialNumber": format(cert.serial_number, "x"),
            "responderURL": OCSP_URL}


def assert_schema_valid(payload: dict[str, Any]) -> None:
    for version in ("2.0.1", "2.1"):
        validate(version, "Authorize", "request", payload)


# --- the CSMS decides -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["iso2", "iso20", "iso20-dc"])
def test_ongoing_until_the_csms_accepts_then_ok_once(pki: Path, local: LocalPlugAndCharge, proto: str) -> None:
    pnc, station = make(local)
    chain = pki_chain(pki, proto)
    assert pnc.check_contract(proto, chain, now()) == "OK"
    assert pnc.authorize(proto, chain) == "Ongoing"
    assert station.woken == 1
    assert pnc.authorize(proto, chain) == "Ongoing"  # the car repeats AuthorizationReq
    assert station.woken == 1 and pnc.pending_count == 1  # one request, however often the car asks
    (request,) = pnc.take_requests()
    assert pnc.take_requests() == []  # handed out once
    station.time += 5
    assert pnc.authorize(proto, chain) == "Ongoing"  # sent, not answered yet
    assert pnc.answered(request.key, ACCEPTED)
    assert pnc.authorize(proto, chain) == "OK"
    assert pnc.decisions[-1].code == "OK" and "Accepted" in pnc.decisions[-1].why
    assert not pnc.answered(request.key, ACCEPTED)  # nothing waits any more
    # the decision was given once: the next session of this contract asks the CSMS again
    assert pnc.check_contract(proto, chain, now()) == "OK"
    assert pnc.authorize(proto, chain) == "Ongoing"
    (again,) = pnc.take_requests()
    assert again.key != request.key


CERTIFICATE_STATUS_CASES = [  # certificateStatus, -2 code, -20 code
    ("CertificateRevoked", "FAILED_CertificateRevoked", "WARNING_CertificateRevoked"),
    ("CertChainError", "FAILED_CertChainError", "WARNING_CertificateValidationError"),
    ("CertificateExpired", "FAILED_CertificateExpired", "WARNING_CertificateExpired"),
    ("SignatureError", "FAILED_SignatureError", "WARNING_CertificateValidationError"),
    ("NoCertificateAvailable", "FAILED_NoCertificateAvailable", "WARNING_NoCertificateAvailable"),
    ("ContractCancelled", "FAILED_ContractCanceled", "WARNING_GeneralPnCAuthorizationError"),
]


@pytest.mark.parametrize("id_status", ["Invalid", "Accepted"])
@pytest.mark.parametrize("certificate_status, iso2_code, iso20_code", CERTIFICATE_STATUS_CASES)
def test_certificate_status_decides(pki: Path, local: LocalPlugAndCharge, certificate_status: str, iso2_code: str,
                                    iso20_code: str, id_status: str) -> None:
    # C07.FR.16 sends a revoked chain as CertificateRevoked with status Invalid; a CSMS that says Accepted
    # beside a certificate problem is refused too
    for proto, code in (("iso2", iso2_code), ("iso20", iso20_code)):
        pnc, _ = make(local)
        chain = pki_chain(pki, proto)
        request = ask(pnc, proto, chain)
        answer = {"idTokenInfo": {"status": id_status}, "certificateStatus": certificate_status}
        validate("2.0.1", "Authorize", "response", answer)
        assert pnc.answered(request.key, answer)
        assert pnc.authorize(proto, chain) == code, (proto, pnc.decisions[-1])


def test_accepted_certificate_status_with_accepted_token_is_ok(pki: Path, local: LocalPlugAndCharge) -> None:
    pnc, _ = make(local)
    chain = pki_chain(pki, "iso2")
    request = ask(pnc, "iso2", chain)
    pnc.answered(request.key, {"idTokenInfo": {"status": "Accepted"}, "certificateStatus": "Accepted"})
    assert pnc.authorize("iso2", chain) == "OK"


ID_TOKEN_CASES = [  # idTokenInfo.status, -2 code, -20 code
    ("Blocked", "FAILED_ContractCanceled", "WARNING_GeneralPnCAuthorizationError"),
    ("Expired", "FAILED_ContractCanceled", "WARNING_GeneralPnCAuthorizationError"),
    ("Invalid", "FAILED_ContractCanceled", "WARNING_GeneralPnCAuthorizationError"),
    ("Unknown", "FAILED_ContractCanceled", "WARNING_eMSPUnknown"),
    ("NoCredit", "FAILED", "WARNING_GeneralPnCAuthorizationError"),
    ("NotAllowedTypeEVSE", "FAILED", "WARNING_GeneralPnCAuthorizationError"),
    ("NotAtThisLocation", "FAILED", "WARNING_GeneralPnCAuthorizationError"),
    ("NotAtThisTime", "FAILED", "WARNING_GeneralPnCAuthorizationError"),
    ("ConcurrentTx", "FAILED", "WARNING_GeneralPnCAuthorizationError"),
]


@pytest.mark.parametrize("status, iso2_code, iso20_code", ID_TOKEN_CASES)
def test_id_token_status_codes(pki: Path, local: LocalPlugAndCharge, status: str, iso2_code: str,
                               iso20_code: str) -> None:
    for proto, code in (("iso2", iso2_code), ("iso20-dc", iso20_code)):
        pnc, _ = make(local, ContractValidationOffline="true")  # an answer is not "offline": no fallback to OK
        chain = pki_chain(pki, proto)
        request = ask(pnc, proto, chain)
        answer = {"idTokenInfo": {"status": status}}
        validate("2.1", "Authorize", "response", answer)
        pnc.answered(request.key, answer)
        assert pnc.authorize(proto, chain) == code, proto


# --- what is sent -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["iso2", "iso20", "iso20-ed448"])
def test_payload_is_schema_valid_and_its_hash_data_match_the_chain(pki: Path, local: LocalPlugAndCharge,
                                                                    case: str) -> None:
    pnc, _ = make(local)
    request = ask(pnc, proto_of(case), pki_chain(pki, case))
    assert_schema_valid(request.payload)
    certs = pki_certs(pki, FOLDER_OF[case])
    leaf, sub2, sub1, root = (certs[n] for n in ("contractLeaf", "moSubCA2", "moSubCA1", "moRootCA"))
    assert request.payload == {
        "idToken": {"idToken": TEST_EMAID, "type": "eMAID"},
        # leaf and sub-CAs, each with its issuer; not the root
        "iso15118CertificateHashData": [expected_hash_entry(leaf, sub2), expected_hash_entry(sub2, sub1),
                                        expected_hash_entry(sub1, root)],
    }
    assert request.emaid == TEST_EMAID


def test_certificates_without_an_ocsp_responder_are_left_out(pki: Path, local: LocalPlugAndCharge) -> None:
    # a leaf built here has no authorityInfoAccess; the PKI's sub-CAs have one
    paths = PkiPaths(pki, ISO2_FOLDER)
    sub2 = read_certificate(paths.cert("moSubCA2"))
    sub1 = read_certificate(paths.cert("moSubCA1"))
    leaf = make_leaf(Issued(sub2, read_key_of(paths, "moSubCA2", sub2)), emaid="DEEDGC000000042",
                     not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    pnc, _ = make(local)
    request = ask(pnc, "iso2", ContractChain(leaf.der, (der(sub2), der(sub1)), "DEEDGC000000042"))
    assert_schema_valid(request.payload)
    root = read_certificate(paths.cert("moRootCA"))
    assert request.payload["iso15118CertificateHashData"] == [expected_hash_entry(sub2, sub1),
                                                              expected_hash_entry(sub1, root)]
    assert "no OCSP URL" in pnc.decisions[-2].why  # the check_contract note says what was left out


# --- no answer: offline rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("proto, refusal", [("iso2", "FAILED"), ("iso20", "WARNING_GeneralPnCAuthorizationError")])
@pytest.mark.parametrize("offline_allowed", [True, False])
def test_offline_at_the_first_authorize(pki: Path, local: LocalPlugAndCharge, proto: str, refusal: str,
                                        offline_allowed: bool) -> None:
    pnc, station = make(local, ContractValidationOffline=str(offline_allowed).lower())
    chain = pki_chain(pki, proto)
    assert pnc.check_contract(proto, chain, now()) == "OK"
    station.connected = False
    assert pnc.authorize(proto, chain) == ("OK" if offline_allowed else refusal)
    assert pnc.take_requests() == [] and station.woken == 0
    assert "offline" in pnc.decisions[-1].why


@pytest.mark.parametrize("offline_allowed", [True, False])
def test_failed_request_follows_the_offline_rule(pki: Path, local: LocalPlugAndCharge, offline_allowed: bool) -> None:
    pnc, _ = make(local, ContractValidationOffline=str(offline_allowed).lower())
    chain = pki_chain(pki, "iso2")
    request = ask(pnc, "iso2", chain)
    assert pnc.failed(request.key, "CALLERROR InternalError")
    assert pnc.authorize("iso2", chain) == ("OK" if offline_allowed else "FAILED")
    assert "CALLERROR InternalError" in pnc.decisions[-1].why
    assert not pnc.failed(request.key, "again")


def test_unanswered_request_times_out_and_a_late_answer_is_dropped(pki: Path, local: LocalPlugAndCharge) -> None:
    pnc, station = make(local, ContractValidationOffline="false")
    chain = pki_chain(pki, "iso20")
    request = ask(pnc, "iso20", chain)
    station.time += 39.9
    assert pnc.authorize("iso20", chain) == "Ongoing"
    station.time += 0.1  # 40 s after queueing
    assert pnc.authorize("iso20", chain) == "WARNING_GeneralPnCAuthorizationError"
    assert "within 40 s" in pnc.decisions[-1].why
    assert not pnc.answered(request.key, ACCEPTED) and pnc.pending_count == 0


def test_going_offline_before_the_request_was_taken_decides_at_once(pki: Path, local: LocalPlugAndCharge) -> None:
    pnc, station = make(local, ContractValidationOffline="true")
    chain = pki_chain(pki, "iso2")
    assert pnc.check_contract("iso2", chain, now()) == "OK"
    assert pnc.authorize("iso2", chain) == "Ongoing"
    station.connected = False
    assert pnc.authorize("iso2", chain) == "OK" and pnc.pending_count == 0
    assert pnc.take_requests() == []


def test_malformed_answer_counts_as_no_answer(pki: Path, local: LocalPlugAndCharge) -> None:
    pnc, _ = make(local, ContractValidationOffline="false")
    chain = pki_chain(pki, "iso2")
    request = ask(pnc, "iso2", chain)
    pnc.answered(request.key, {"certificateStatus": "Accepted"})
    assert pnc.authorize("iso2", chain) == "FAILED"


# --- central contract validation ----------------------------------------------------------------------------------


def foreign_local(other_pki: Path | None) -> LocalPlugAndCharge:
    """Trusts the roots of another PKI of the same names and other keys (the test PKI's chains fail at the link to
    the root: BAD_SIGNATURE), or (None) a root of another name (UNKNOWN_ROOT)."""
    roots = josev_contract_trust_anchors(other_pki) if other_pki else [contract_chain().root.cert]
    return LocalPlugAndCharge(ContractChainValidator(roots))


@pytest.mark.parametrize("roots", ["same names", "other names"])
@pytest.mark.parametrize("proto, local_code", [("iso2", "FAILED_CertChainError"),
                                               ("iso20", "WARNING_CertificateValidationError")])
def test_chain_without_local_root_is_validated_centrally(pki: Path, other_pki: Path, proto: str, local_code: str,
                                                         roots: str) -> None:
    local = foreign_local(other_pki if roots == "same names" else None)
    pnc, _ = make(local, CentralContractValidationAllowed="true", ContractValidationOffline="true")
    certs = pki_certs(pki, FOLDER_OF[proto])
    # the car sends its sub-CAs in the other order: the PEM is leaf, sub-CA 2, sub-CA 1
    chain = ContractChain(der(certs["contractLeaf"]), (der(certs["moSubCA1"]), der(certs["moSubCA2"])), TEST_EMAID)
    request = ask(pnc, proto, chain)
    assert_schema_valid(request.payload)
    pem = "".join(certs[n].public_bytes(Encoding.PEM).decode() for n in ("contractLeaf", "moSubCA2", "moSubCA1"))
    assert request.payload == {"idToken": {"idToken": TEST_EMAID, "type": "eMAID"}, "certificate": pem}
    assert pnc.answered(request.key, ACCEPTED)
    assert pnc.authorize(proto, chain) == "OK"
    # never offline: nothing here vouches for such a chain, even with ContractValidationOffline
    request = ask(pnc, proto, chain)
    pnc.failed(request.key, "timeout")
    assert pnc.authorize(proto, chain) == local_code


def test_a_broken_link_inside_the_chain_is_not_left_to_the_csms(pki: Path, other_pki: Path) -> None:
    certs = pki_certs(pki, ISO2_FOLDER)
    chain = ContractChain(der(certs["contractLeaf"]), (der(break_signature(certs["moSubCA2"])),
                                                       der(certs["moSubCA1"])), TEST_EMAID)
    for local in (foreign_local(other_pki), foreign_local(None)):
        pnc, _ = make(local, CentralContractValidationAllowed="true")
        assert pnc.check_contract("iso2", chain, now()) == "FAILED_CertChainError"
        assert "signature" in pnc.decisions[-1].why


def test_no_trust_anchor_at_all_is_validated_centrally(pki: Path) -> None:
    pnc, _ = make(LocalPlugAndCharge(ContractChainValidator([])), CentralContractValidationAllowed="true")
    request = ask(pnc, "iso2", pki_chain(pki, "iso2"))
    assert "certificate" in request.payload and "iso15118CertificateHashData" not in request.payload
    assert_schema_valid(request.payload)


@pytest.mark.parametrize("allowed, connected", [(False, True), (True, False)])
def test_no_central_validation_when_not_allowed_or_offline(pki: Path, other_pki: Path, allowed: bool,
                                                           connected: bool) -> None:
    pnc, station = make(foreign_local(other_pki), CentralContractValidationAllowed=str(allowed).lower())
    station.connected = connected
    assert pnc.check_contract("iso2", pki_chain(pki, "iso2"), now()) == "FAILED_CertChainError"
    pnc, _ = make(LocalPlugAndCharge(ContractChainValidator([])), CentralContractValidationAllowed="false")
    assert pnc.check_contract("iso2", pki_chain(pki, "iso2"), now()) == "FAILED_NoCertificateAvailable"


@pytest.mark.parametrize("problem, code", [("expired", "FAILED_CertificateExpired"),
                                           ("emaid", "FAILED_CertChainError")])
def test_central_validation_still_checks_what_it_can(pki: Path, other_pki: Path, problem: str, code: str) -> None:
    paths = PkiPaths(pki, ISO2_FOLDER)
    sub2, sub1 = read_certificate(paths.cert("moSubCA2")), read_certificate(paths.cert("moSubCA1"))
    today = dt.datetime.now(dt.UTC)
    validity = {"not_before": today - dt.timedelta(days=400), "not_after": today - dt.timedelta(days=1)} \
        if problem == "expired" else {"not_before": today - dt.timedelta(days=1)}
    leaf = make_leaf(Issued(sub2, read_key_of(paths, "moSubCA2", sub2)), emaid="DEEDGC000000042", **validity)
    sent_emaid = "DEEDGC000000099" if problem == "emaid" else "DEEDGC000000042"
    pnc, _ = make(foreign_local(other_pki), CentralContractValidationAllowed="true")
    chain = ContractChain(leaf.der, (der(sub2), der(sub1)), sent_emaid)
    assert pnc.check_contract("iso2", chain, now()) == code
    assert pnc.authorize("iso2", chain) == "FAILED" and pnc.take_requests() == []  # never checked: not asked


# --- device model switches ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("proto, code", [("iso2", "FAILED_PaymentSelectionInvalid"),
                                         ("iso20", "WARNING_AuthorizationSelectionInvalid")])
def test_pnc_disabled_refuses_contracts(pki: Path, local: LocalPlugAndCharge, proto: str, code: str) -> None:
    pnc, _ = make(local, PnCEnabled="false")
    chain = pki_chain(pki, proto)
    assert pnc.check_contract(proto, chain, now()) == code
    assert pnc.authorize(proto, chain) == code and pnc.take_requests() == []
    assert not pnc.installs_certificates(proto)


def test_contract_certificate_installation_switch(pki: Path, local: LocalPlugAndCharge) -> None:
    pnc, _ = make(local)
    assert pnc.installs_certificates("iso2") and pnc.installs_certificates("iso20")  # the local issuers
    pnc.device_model.update("ISO15118Ctrlr", "ContractCertificateInstallationEnabled", "false")
    assert not pnc.installs_certificates("iso2") and not pnc.installs_certificates("iso20")
    assert pnc.install_certificate("iso2", None, None).response_code == "FAILED_NoCertificateAvailable"
    assert pnc.install_certificate("iso20", None, None).response_code == "WARNING_NoCertificateAvailable"
    assert pnc.update_certificate("iso2", None, None).response_code == "FAILED_NoCertificateAvailable"
    assert pnc.decisions[-1].why == "contract certificate installation disabled (device model)"


# --- bounds ----------------------------------------------------------------------------------------------------------


def flood_chains(pki: Path, count: int) -> list[ContractChain]:
    """``count`` different valid -2 contracts under the test PKI's MO sub-CA 2."""
    paths = PkiPaths(pki, ISO2_FOLDER)
    sub2, sub1 = read_certificate(paths.cert("moSubCA2")), read_certificate(paths.cert("moSubCA1"))
    issuer = Issued(sub2, read_key_of(paths, "moSubCA2", sub2))
    subs = (der(sub2), der(sub1))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    chains = []
    for i in range(count):
        emaid = f"DEEDG{i:09d}"
        chains.append(ContractChain(make_leaf(issuer, emaid=emaid, not_before=start).der, subs, emaid))
    return chains


@pytest.fixture(scope="module")
def many_chains(pki: Path) -> list[ContractChain]:
    return flood_chains(pki, 1000)


@pytest.mark.parametrize("offline_allowed, code", [(True, "OK"), (False, "FAILED")])
def test_pending_requests_are_bounded(local: LocalPlugAndCharge, many_chains: list[ContractChain],
                                      offline_allowed: bool, code: str) -> None:
    pnc, station = make(local, ContractValidationOffline=str(offline_allowed).lower())
    for chain in many_chains[:16]:
        assert pnc.check_contract("iso2", chain, now()) == "OK"
        assert pnc.authorize("iso2", chain) == "Ongoing"
    extra = many_chains[16]
    assert pnc.check_contract("iso2", extra, now()) == "OK"
    assert pnc.authorize("iso2", extra) == code  # decided at once: no room to ask
    assert "16 Authorize requests already waiting" in pnc.decisions[-1].why
    assert pnc.pending_count == 16 and len(pnc.take_requests()) == 16 and station.woken == 16


def test_a_flood_of_sessions_stays_within_the_bounds(local: LocalPlugAndCharge,
                                                     many_chains: list[ContractChain]) -> None:
    pnc, station = make(local)
    sizes: list[int] = []
    tracemalloc.start()
    try:
        for i, chain in enumerate(many_chains):
            assert pnc.check_contract("iso2", chain, now()) == "OK"
            pnc.authorize("iso2", chain)  # Ongoing, or decided at once while 16 wait
            if i % 10 == 9:  # the station sends and the CSMS answers; no session ever picks the answer up
                for request in pnc.take_requests():
                    pnc.answered(request.key, ACCEPTED)
            if i % 7 == 0:
                station.time += 1  # some requests also time out
            if i in (299, 999):
                sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    held = pnc.held()
    assert held == {"checked": 64, "pending": held["pending"], "finished": 16, "decisions": 256}
    assert held["pending"] <= 16
    # 700 more contracts after the stores are full: no growth per contract (a leaf and its payload are ~2 kB each)
    assert sizes[1] - sizes[0] < 150_000, sizes


def test_bounds_keep_the_newest_decisions(pki: Path, local: LocalPlugAndCharge,
                                          many_chains: list[ContractChain]) -> None:
    pnc, _ = make(local)
    requests = [ask(pnc, "iso2", chain) for chain in many_chains[:16]]
    for request in requests:
        pnc.answered(request.key, ACCEPTED)
    newest = ask(pnc, "iso2", many_chains[16])
    pnc.answered(newest.key, {"idTokenInfo": {"status": "Blocked"}})  # pushes the oldest answer out
    assert pnc.authorize("iso2", many_chains[16]) == "FAILED_ContractCanceled"
    assert pnc.authorize("iso2", many_chains[15]) == "OK"
    assert pnc.authorize("iso2", many_chains[0]) == "Ongoing"  # its answer was dropped: asked again


# --- with the real sessions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, result", [(ACCEPTED, ("OK", "Finished")),
                                            ({"idTokenInfo": {"status": "Invalid"},
                                              "certificateStatus": "CertificateRevoked"},
                                             ("FAILED_CertificateRevoked", "Finished"))])
def test_iso2_session_waits_for_the_csms(pki: Path, local: LocalPlugAndCharge, answer: dict[str, Any],
                                         result: tuple[str, str]) -> None:
    from tests.test_pnc_local import PncCar
    from tests.test_pnc_local import contract_chain as chain_type

    pnc, _ = make(local)
    hw = test_iso2_features.ac_charger()
    car = PncCar(Iso2Session(hw, pnc=pnc), pki)
    car.setup("Contract", (1, 2))
    details = car.send("PaymentDetailsReq", b.PaymentDetailsReqType(TEST_EMAID, chain_type(pki)))
    assert details.ResponseCode == "OK"
    req = b.AuthorizationReqType("ID1", details.GenChallenge)
    car.signature = sign_authorization_req("iso2", req, car.key)
    res = car.send("AuthorizationReq", req)
    assert (res.ResponseCode, res.EVSEProcessing) == ("OK", "Ongoing")
    (request,) = pnc.take_requests()
    assert (car.send("AuthorizationReq", req).EVSEProcessing, car.ended) == ("Ongoing", False)
    pnc.answered(request.key, answer)
    res = car.send("AuthorizationReq", req)
    assert (res.ResponseCode, res.EVSEProcessing) == result, pnc.decisions
    assert car.ended == (result[0] != "OK") and not hw.closed


def test_iso20_session_waits_for_the_csms(pki: Path, local: LocalPlugAndCharge, monkeypatch) -> None:
    pnc, _ = make(local)
    hw = SimulatedCharger()
    # that module's scripted clock starts when it was imported, maybe before the shared test PKI was made
    monkeypatch.setattr(test_iso20_session, "CLOCK", float(int(time.time())))
    car = test_iso20_session.Car(Iso20DcSession(hw, pnc=pnc))
    setup = car.setup()
    credentials = Iso20ContractCredentials.from_pki(pki)
    challenge = setup.PnC_ASResAuthorizationMode.GenChallenge
    res = car.pnc(credentials, challenge)
    assert (res.ResponseCode, res.EVSEProcessing) == ("OK", "Ongoing"), pnc.decisions
    (request,) = pnc.take_requests()
    assert request.payload["idToken"] == {"idToken": TEST_EMAID, "type": "eMAID"}
    pnc.answered(request.key, {"idTokenInfo": {"status": "Unknown"}})
    res = car.pnc(credentials, challenge)
    assert (res.ResponseCode, res.EVSEProcessing) == ("WARNING_eMSPUnknown", "Finished")
    assert not car.ended  # a WARNING leaves the car the choice (EIM or stop)
    assert car.eim().ResponseCode == "OK"



def test_certificate_installation_is_relayed_as_the_car_sent_it(local: LocalPlugAndCharge, pki: Path) -> None:
    """M01: the raw request goes out as exiRequest; Ongoing until the answer; -2 waits at most 4 s; a
    Failed answer or an unusable exiResponse is refused with the code of no certificate."""
    import base64

    from edge.ev.iso2 import OemCredentials
    from edge.ocpp.pnc import decode_certificate_response

    request, signature = OemCredentials.from_pki(pki).installation_request()
    raw = b"\x80\x98raw-exi-of-the-car"
    pnc, station = make(local)
    assert pnc.install_certificate("iso2", request, signature, raw=raw).response_code == "Ongoing"
    [out] = pnc.take_certificate_requests()
    assert pnc.take_certificate_requests() == []  # handed out once
    for version in ("2.0.1", "2.1"):
        validate(version, "Get15118EVCertificate", "request", out.payload)
    assert base64.b64decode(out.payload["exiRequest"]) == raw and out.payload["action"] == "Install"
    assert pnc.install_certificate("iso2", request, signature, raw=raw).response_code == "Ongoing"  # asked again
    assert pnc.certificate_answered(out.key, {"status": "Failed", "exiResponse": ""})
    assert pnc.install_certificate("iso2", request, signature, raw=raw).response_code == \
        "FAILED_NoCertificateAvailable"
    # no answer in time: -2 gives up after 4 s (the car waits 5)
    pnc.install_certificate("iso2", request, signature, raw=raw)
    station.time += 4.1
    assert pnc.install_certificate("iso2", request, signature, raw=raw).response_code == \
        "FAILED_NoCertificateAvailable"
    # an exiResponse that is not a CertificateInstallationRes
    pnc.install_certificate("iso2", request, signature, raw=raw)
    [out] = pnc.take_certificate_requests()
    pnc.certificate_answered(out.key, {"status": "Accepted", "exiResponse": base64.b64encode(b"\x80\x00").decode()})
    assert pnc.install_certificate("iso2", request, signature, raw=raw).response_code == \
        "FAILED_NoCertificateAvailable"
    with pytest.raises(ValueError):
        decode_certificate_response("iso2", "not base64!")
    # offline: the local issuer answers at once, nothing is relayed
    station.connected = False
    assert pnc.install_certificate("iso2", request, signature, raw=raw).response_code == "OK"
    assert pnc.take_certificate_requests() == []
