"""ISO 15118-2 charger session core: AC, Plug & Charge flow, metering receipts, pause/resume, service
details, charging profiles. Scripted requests against the sans-IO session, time as a number; the
contract decisions come from a recording stand-in (the real checks are tested in the PnC tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

import exi
from edge.hardware import AcLimits, SimulatedCharger
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.iso2.session import MSG_BODY_NS, Iso2PausedSessions, Iso2Session
from edge.v2g.physical import from_physical, to_physical
from edge.v2g.pnc import CertificateResponse, ContractChain
from edge.v2g.session import V2gSession
from edge.v2g.v2gtp import PayloadType, V2gtpMessage
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model import xmldsig as ds
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType

EVCC = bytes.fromhex("02aabbccddee")


def pv(x: float, unit: str) -> t.PhysicalValueType:
    return to_physical(t.PhysicalValueType, x, unit)


def a_signature() -> ds.SignatureType:
    ref = ds.ReferenceType(None, None, "#ID1", ds.TransformsType([ds.TransformType("http://www.w3.org/TR/canonical-exi/")]),
                           ds.DigestMethodType("http://www.w3.org/2001/04/xmlenc#sha256"), b"\x01" * 32)
    info = ds.SignedInfoType(None, ds.CanonicalizationMethodType("http://www.w3.org/TR/canonical-exi/"),
                             ds.SignatureMethodType("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"), [ref])
    return ds.SignatureType(None, info, ds.SignatureValueType(None, b"\x02" * 64))


@dataclass
class RecordingPnc:
    """Answers what the test says and records what the session asked."""

    contract: str = "OK"
    signature: str = "OK"
    authorize_answers: list[str] = field(default_factory=lambda: ["OK"])
    install: CertificateResponse = field(default_factory=lambda: CertificateResponse("FAILED_NoCertificateAvailable"))
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def check_contract(self, proto: str, chain: ContractChain, now: float) -> str:
        self.calls.append(("check_contract", chain))
        return self.contract

    def check_signature(self, proto: str, signature: Any, signed: list[exi.Fragment], chain: ContractChain) -> str:
        self.calls.append(("check_signature", [f.name for f in signed]))
        assert all(f.namespace == MSG_BODY_NS for f in signed)
        return self.signature

    def authorize(self, proto: str, chain: ContractChain) -> str:
        self.calls.append(("authorize", chain.emaid))
        return self.authorize_answers.pop(0) if len(self.authorize_answers) > 1 else self.authorize_answers[0]

    def install_certificate(self, proto: str, request: Any, signature: Any,
                            raw: bytes | None = None) -> CertificateResponse:
        self.calls.append(("install", request.Id))
        return self.install

    def update_certificate(self, proto: str, request: Any, signature: Any,
                           raw: bytes | None = None) -> CertificateResponse:
        return self.install


class Car:
    """Sends scripted -2 requests to a session and decodes the answers."""

    def __init__(self, session: V2gSession, evcc_id: bytes = EVCC) -> None:
        self.session, self.sid, self.now, self.evcc_id = session, b"\x00", 0.0, evcc_id
        self.ended = False
        self.signature: ds.SignatureType | None = None

    def send(self, name: str, req: Any, dt: float = 0.1) -> Any:
        assert not self.ended, "the session already ended"
        self.now += dt
        header = MessageHeaderType(self.sid, None, self.signature)
        self.signature = None
        request = exi.encode("iso2", V2G_Message(header, BodyType(**{name: req})))
        _, out, self.ended = self.session.handle(0x8001, request, self.now)
        msg = exi.decode("iso2", out)
        self.sid = msg.Header.SessionID
        self.header = msg.Header
        return getattr(msg.Body, name[:-3] + "Res")

    def setup(self, payment: str = "ExternalPayment", services: tuple[int, ...] = (1,)) -> Any:
        assert str(self.send("SessionSetupReq", b.SessionSetupReqType(self.evcc_id)).ResponseCode).startswith("OK")
        disc = self.send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())
        chosen = t.SelectedServiceListType([t.SelectedServiceType(s) for s in services])
        res = self.send("PaymentServiceSelectionReq", b.PaymentServiceSelectionReqType(payment, chosen))
        assert res.ResponseCode == "OK", res.ResponseCode
        return disc

    def ac_parameters(self, mode: str = "AC_three_phase_core", max_current: float = 16) -> Any:
        param = t.AC_EVChargeParameterType(None, pv(20_000, "Wh"), pv(400, "V"), pv(max_current, "A"), pv(6, "A"))
        return self.send("ChargeParameterDiscoveryReq", b.ChargeParameterDiscoveryReqType(None, mode, param))

    def contract(self) -> Any:
        chain = t.CertificateChainType(None, b"leaf-der", t.SubCertificatesType([b"sub2-der", b"sub1-der"]))
        return self.send("PaymentDetailsReq", b.PaymentDetailsReqType("DEEDGC0000001X", chain))


def ac_charger() -> SimulatedCharger:
    return SimulatedCharger(limits=None, ac=AcLimits(230.0, 32.0, 3))


def test_ac_eim_session_meters_energy_and_stops_cleanly() -> None:
    hw = ac_charger()
    car = Car(Iso2Session(hw))
    disc = car.setup()
    assert list(disc.PaymentOptionList.PaymentOption) == ["ExternalPayment"] and disc.ServiceList is None
    assert set(disc.ChargeService.SupportedEnergyTransferMode.EnergyTransferMode) == {
        "AC_three_phase_core", "AC_single_phase_core"}
    assert car.send("AuthorizationReq", b.AuthorizationReqType()).EVSEProcessing == "Finished"
    cpd = car.ac_parameters(max_current=16)
    assert cpd.ResponseCode == "OK" and cpd.DC_EVSEChargeParameter is None
    assert from_physical(cpd.AC_EVSEChargeParameter.EVSEMaxCurrent) == 32
    pmax = cpd.SAScheduleList.SAScheduleTuple[0].PMaxSchedule.PMaxScheduleEntry[0].PMax
    assert from_physical(pmax) == pytest.approx(230 * 32 * 3, rel=1e-3)
    assert car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1)).AC_EVSEStatus is not None
    assert hw.closed and hw.cp_state() == "C"
    readings = []
    for _ in range(60):  # one minute of ChargingStatus at 1 s
        res = car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)
        assert res.ResponseCode == "OK" and res.ReceiptRequired is False
        readings.append(res.MeterInfo.MeterReading)
    assert hw.present()[1] == pytest.approx(16, rel=0.01)  # the car's 16 A, not the charger's 32 A
    # 3 phases x 230 V x 16 A for about a minute
    assert readings[-1] == pytest.approx(3 * 230 * 16 / 60, rel=0.05) and readings == sorted(readings)
    res = car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Stop", 1))
    assert res.ResponseCode == "OK" and not hw.closed
    assert car.send("SessionStopReq", b.SessionStopReqType("Terminate")).ResponseCode == "OK" and car.ended


def test_wrong_energy_transfer_mode_and_parameters() -> None:
    car = Car(Iso2Session(ac_charger()))
    car.setup()
    car.send("AuthorizationReq", b.AuthorizationReqType())
    dc = t.DC_EVChargeParameterType(None, t.DC_EVStatusType(True, "NO_ERROR", 50), pv(100, "A"), None, pv(400, "V"))
    res = car.send("ChargeParameterDiscoveryReq", b.ChargeParameterDiscoveryReqType(None, "DC_extended", None, dc))
    assert res.ResponseCode == "FAILED_WrongEnergyTransferMode" and car.ended
    assert res.AC_EVSEChargeParameter is not None  # a complete response even when failing
    car = Car(Iso2Session(ac_charger()))
    car.setup()
    car.send("AuthorizationReq", b.AuthorizationReqType())
    assert car.ac_parameters(max_current=3).ResponseCode == "FAILED_WrongChargeParameter" and car.ended


def test_current_demand_in_an_ac_session_is_a_sequence_error() -> None:
    car = Car(Iso2Session(ac_charger()))
    car.setup()
    car.send("AuthorizationReq", b.AuthorizationReqType())
    car.ac_parameters()
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1))
    req = b.CurrentDemandReqType(t.DC_EVStatusType(True, "NO_ERROR", 50), pv(10, "A"), pv(400, "V"), None, None,
                                 False, False, None, None, pv(400, "V"))
    assert car.send("CurrentDemandReq", req).ResponseCode == "FAILED_SequenceError" and car.ended


def test_charging_profile_above_the_schedule_is_refused() -> None:
    car = Car(Iso2Session(ac_charger()))
    car.setup()
    car.send("AuthorizationReq", b.AuthorizationReqType())
    car.ac_parameters()
    profile = t.ChargingProfileType([t.ProfileEntryType(0, pv(30_000, "W"))])
    res = car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1, profile))
    assert res.ResponseCode == "FAILED_ChargingProfileInvalid" and car.ended and res.AC_EVSEStatus is not None


def test_ac_renegotiation_returns_to_power_delivery() -> None:
    hw = ac_charger()
    s = Iso2Session(hw)
    car = Car(s)
    car.setup()
    car.send("AuthorizationReq", b.AuthorizationReqType())
    car.ac_parameters()
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1))
    car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)
    assert car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Renegotiate", 1)).ResponseCode == "OK"
    assert hw.ac_limit == 0 and s.renegotiations == 1
    assert car.ac_parameters(max_current=10).ResponseCode == "OK"
    assert car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1)).ResponseCode == "OK"
    assert hw.ac_limit == 10


def pnc_session(pnc: RecordingPnc, **kw: Any) -> tuple[Car, Iso2Session]:
    s = Iso2Session(ac_charger(), pnc=pnc, **kw)
    return Car(s), s


def test_pnc_flow_challenge_signature_and_backend() -> None:
    pnc = RecordingPnc(authorize_answers=["Ongoing", "Ongoing", "OK"])
    car, s = pnc_session(pnc)
    disc = car.setup("Contract")
    assert list(disc.PaymentOptionList.PaymentOption) == ["Contract", "ExternalPayment"]
    assert [x.ServiceID for x in disc.ServiceList.Service] == [2]
    pd = car.contract()
    assert pd.ResponseCode == "OK" and len(pd.GenChallenge) == 16
    assert pnc.calls[0][0] == "check_contract" and pnc.calls[0][1].sub_cas == (b"sub2-der", b"sub1-der")
    car.signature = a_signature()
    res = car.send("AuthorizationReq", b.AuthorizationReqType("ID1", pd.GenChallenge))
    assert (res.ResponseCode, res.EVSEProcessing) == ("OK", "Ongoing")
    assert ("check_signature", ["AuthorizationReq"]) in pnc.calls
    assert car.send("AuthorizationReq", b.AuthorizationReqType()).EVSEProcessing == "Ongoing"
    assert car.send("AuthorizationReq", b.AuthorizationReqType()).EVSEProcessing == "Finished"
    assert s.contract.emaid == "DEEDGC0000001X" and [c[0] for c in pnc.calls].count("check_signature") == 1


@pytest.mark.parametrize("case, code", [
    ("wrong challenge", "FAILED_ChallengeInvalid"),
    ("no signature", "FAILED_SignatureError"),
    ("bad signature", "FAILED_SignatureError"),
    ("backend refuses", "FAILED_ContractCanceled"),
])
def test_pnc_authorization_failures(case: str, code: str) -> None:
    pnc = RecordingPnc(signature="FAILED_SignatureError" if case == "bad signature" else "OK",
                       authorize_answers=["FAILED_ContractCanceled" if case == "backend refuses" else "OK"])
    car, s = pnc_session(pnc)
    car.setup("Contract")
    challenge = car.contract().GenChallenge
    if case == "wrong challenge":
        challenge = bytes(16)
    if case != "no signature":
        car.signature = a_signature()
    res = car.send("AuthorizationReq", b.AuthorizationReqType("ID1", challenge))
    assert res.ResponseCode == code and res.EVSEProcessing == "Finished" and car.ended
    assert not s.hardware.closed


def test_pnc_contract_refused_and_backend_that_never_decides() -> None:
    car, _ = pnc_session(RecordingPnc(contract="FAILED_CertificateExpired"))
    car.setup("Contract")
    res = car.contract()
    assert res.ResponseCode == "FAILED_CertificateExpired" and car.ended and len(res.GenChallenge) == 16
    car, s = pnc_session(RecordingPnc(authorize_answers=["Ongoing"]))
    car.setup("Contract")
    challenge = car.contract().GenChallenge
    car.signature = a_signature()
    res = car.send("AuthorizationReq", b.AuthorizationReqType("ID1", challenge))
    while not car.ended:
        res = car.send("AuthorizationReq", b.AuthorizationReqType(), dt=2.0)
    assert res.ResponseCode == "FAILED" and car.now > s.timers.ongoing


def test_contract_is_offered_only_over_tls_unless_configured() -> None:
    from edge.ev.iso2 import Iso2Car

    for tls, without, offered in ((False, False, False), (True, False, True), (False, True, True)):
        conn = ChargerConnection(SimulatedCharger(), config=EvseConfig(pnc=RecordingPnc(), pnc_without_tls=without),
                                 tls=tls)
        conn.handle(V2gtpMessage(PayloadType.EXI, Iso2Car().start()), 0.1)
        car = Car(conn.session)
        options = car.setup().PaymentOptionList.PaymentOption
        assert ("Contract" in options) is offered


def charging_under_contract(pnc: RecordingPnc, receipt_interval: float) -> tuple[Car, Iso2Session, Any]:
    """An AC PnC session up to its first ChargingStatusRes (1 s into the charge)."""
    car, s = pnc_session(pnc, receipt_interval=receipt_interval)
    car.setup("Contract")
    challenge = car.contract().GenChallenge
    car.signature = a_signature()
    car.send("AuthorizationReq", b.AuthorizationReqType("ID1", challenge))
    car.ac_parameters()
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1))
    return car, s, car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)


def test_metering_receipt_requested_verified_and_checked() -> None:
    pnc = RecordingPnc()
    car, s, res = charging_under_contract(pnc, receipt_interval=5.0)
    assert res.ReceiptRequired is False
    while not res.ReceiptRequired:
        res = car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)
    assert 5.0 <= car.now <= 8.0
    meter = res.MeterInfo
    car.signature = a_signature()
    ok = car.send("MeteringReceiptReq", b.MeteringReceiptReqType("ID2", car.sid, 1, meter))
    assert ok.ResponseCode == "OK" and ok.AC_EVSEStatus is not None and s.receipts == 1
    assert ("check_signature", ["MeteringReceiptReq"]) in pnc.calls
    # not asked for: a sequence error
    assert car.send("MeteringReceiptReq", b.MeteringReceiptReqType("ID3", car.sid, 1, meter)).ResponseCode == \
        "FAILED_SequenceError"


def test_metering_receipt_for_another_reading_is_refused() -> None:
    car, s, res = charging_under_contract(RecordingPnc(), receipt_interval=0.5)
    assert res.ReceiptRequired
    forged = t.MeterInfoType(res.MeterInfo.MeterID, res.MeterInfo.MeterReading + 1000, None, None, res.MeterInfo.TMeter)
    car.signature = a_signature()
    bad = car.send("MeteringReceiptReq", b.MeteringReceiptReqType("ID2", car.sid, 1, forged))
    assert bad.ResponseCode == "FAILED_MeteringSignatureNotValid" and car.ended and not s.hardware.closed


def test_pause_and_resume_keeps_the_session_id_payment_and_mode() -> None:
    paused = Iso2PausedSessions()
    hw = ac_charger()
    car = Car(Iso2Session(hw, paused_sessions=paused))
    car.setup()
    car.send("AuthorizationReq", b.AuthorizationReqType())
    car.ac_parameters(mode="AC_single_phase_core")
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Start", 1))
    car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0)
    car.send("PowerDeliveryReq", b.PowerDeliveryReqType("Stop", 1))
    assert car.send("SessionStopReq", b.SessionStopReqType("Pause")).ResponseCode == "OK" and car.ended
    old = car.sid
    # another car cannot take the paused session over
    intruder = Car(Iso2Session(hw, paused_sessions=paused), evcc_id=bytes(6))
    intruder.sid = old
    res = intruder.send("SessionSetupReq", b.SessionSetupReqType(bytes(6)))
    assert res.ResponseCode == "OK_NewSessionEstablished" and intruder.sid != old
    # the same car, new connection, old SessionID: joined
    resumed = Car(Iso2Session(hw, paused_sessions=paused))
    resumed.sid = old
    res = resumed.send("SessionSetupReq", b.SessionSetupReqType(EVCC))
    assert res.ResponseCode == "OK_OldSessionJoined" and resumed.sid == old
    disc = resumed.send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())
    assert list(disc.PaymentOptionList.PaymentOption) == ["ExternalPayment"]
    assert list(disc.ChargeService.SupportedEnergyTransferMode.EnergyTransferMode) == ["AC_single_phase_core"]
    chosen = t.SelectedServiceListType([t.SelectedServiceType(1)])
    resumed.send("PaymentServiceSelectionReq", b.PaymentServiceSelectionReqType("ExternalPayment", chosen))
    resumed.send("AuthorizationReq", b.AuthorizationReqType())
    assert resumed.ac_parameters(mode="AC_single_phase_core").ResponseCode == "OK"
    # joined once: a second resume with the same id starts afresh
    again = Car(Iso2Session(hw, paused_sessions=paused))
    again.sid = old
    assert again.send("SessionSetupReq", b.SessionSetupReqType(EVCC)).ResponseCode == "OK_NewSessionEstablished"


def test_service_details_and_selection_checks() -> None:
    car, _ = pnc_session(RecordingPnc())
    car.send("SessionSetupReq", b.SessionSetupReqType(EVCC))
    car.send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())
    res = car.send("ServiceDetailReq", b.ServiceDetailReqType(2))
    names = [p.Parameter[0].stringValue for p in res.ServiceParameterList.ParameterSet]
    assert res.ResponseCode == "OK" and names == ["Installation", "Update"]
    assert car.send("ServiceDetailReq", b.ServiceDetailReqType(77)).ResponseCode == "FAILED_ServiceIDInvalid"
    car = Car(Iso2Session(ac_charger()))
    car.send("SessionSetupReq", b.SessionSetupReqType(EVCC))
    car.send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())
    res = car.send("PaymentServiceSelectionReq", b.PaymentServiceSelectionReqType(
        "ExternalPayment", t.SelectedServiceListType([t.SelectedServiceType(1), t.SelectedServiceType(2)])))
    assert res.ResponseCode == "FAILED_ServiceSelectionInvalid"  # no certificate service without PnC


def test_certificate_installation_relays_the_backend_answer() -> None:
    req = b.CertificateInstallationReqType("ID1", b"oem-leaf", t.ListOfRootCertificateIDsType(
        [ds.X509IssuerSerialType("CN=V2GRoot", 1)]))
    car, _ = pnc_session(RecordingPnc())
    car.setup("Contract", (1, 2))
    car.signature = a_signature()
    res = car.send("CertificateInstallationReq", req)
    assert res.ResponseCode == "FAILED_NoCertificateAvailable" and car.ended  # and it encoded completely
    body = b.CertificateInstallationResType(
        "OK", t.CertificateChainType(None, b"cps-leaf"), t.CertificateChainType("id1", b"contract-leaf"),
        t.ContractSignatureEncryptedPrivateKeyType("id2", bytes(48)), t.DiffieHellmanPublickeyType("id3", bytes(65)),
        t.EMAIDType("id4", "DEEDGC0000001X"))
    pnc = RecordingPnc(install=CertificateResponse("OK", body, a_signature()))
    car, _ = pnc_session(pnc)
    car.setup("Contract", (1, 2))
    car.signature = a_signature()
    res = car.send("CertificateInstallationReq", req)
    assert res.ResponseCode == "OK" and res.eMAID.value == "DEEDGC0000001X" and not car.ended
    assert car.header.Signature is not None and ("install", "ID1") in pnc.calls
    assert car.contract().ResponseCode == "OK"
