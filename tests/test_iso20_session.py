"""ISO 15118-20 DC charger session core: scripted requests against the sans-IO session (time as a
number): the whole EIM sequence, sequence and session errors, the isolation rule, Plug & Charge with
real chains and signatures (P-521 and Ed448 test PKIs) and its refusals with the -20 codes, metering
confirmation, PowerDelivery variants, renegotiation, pause/resume, and the connection's routing by
V2GTP payload type."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import exi
from edge.ev.iso20 import Iso20ContractCredentials
from edge.hardware import AcLimits, SimulatedCharger
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.signature import sign
from edge.pki.testpki import TEST_EMAID, create_test_pki
from edge.v2g import sap
from edge.v2g.charger import DEFAULT_PROTOCOLS, ChargerConnection, EvseConfig
from edge.v2g.iso20.messages import (
    COMMON,
    DC,
    NO_SESSION,
    PAYLOAD_TYPES,
    REQUESTS,
    from_rational,
    header,
    rational,
    response_class,
)
from edge.v2g.iso20.session import NEXT, STEPS, Iso20DcSession, Iso20PausedSessions
from edge.v2g.v2gtp import PayloadType, V2gtpMessage
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct
from exi.model import iso20_dc as dc
from exi.model import xmldsig
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq

EVCCID = "WMIV1234567890ABCDEX"
CLOCK = float(int(time.time()))  # the wall clock at the scripted time 0 (certificates are checked against it)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    create_test_pki(out, now=dt.datetime.fromtimestamp(CLOCK, dt.UTC) - dt.timedelta(hours=1))
    return out


@pytest.fixture(scope="module")
def expired_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made three years ago: the contract leaf (730 days) has expired, its CAs have not."""
    out = tmp_path_factory.mktemp("old-pki")
    create_test_pki(out, now=dt.datetime.fromtimestamp(CLOCK, dt.UTC) - dt.timedelta(days=3 * 365))
    return out


def charger(**kw: Any) -> SimulatedCharger:
    return SimulatedCharger(isolation_s=0.5, voltage_tau=0.1, **kw)


def power_off(hw: SimulatedCharger) -> bool:
    return not hw.closed and hw.target_i == 0


class Car:
    """Sends scripted -20 requests (each in its own schema and payload type) and decodes the answers."""

    def __init__(self, session: Iso20DcSession, evccid: str = EVCCID) -> None:
        self.session, self.sid, self.now, self.evccid = session, NO_SESSION, 0.0, evccid
        self.ended = False
        session.wall_clock = lambda: CLOCK + self.now  # the charger's clock follows the script

    def send(self, req: Any, dt: float = 0.1, signature: Any = None, sid: bytes | None = None) -> Any:
        assert not self.ended, "the session already ended"
        name = type(req).__name__.removesuffix("Type")
        schema = REQUESTS[name]
        self.now += dt
        req.Header = header(self.sid if sid is None else sid, CLOCK + self.now, signature)
        ptype, out, self.ended = self.session.handle(PAYLOAD_TYPES[schema], exi.encode(schema, req), self.now)
        assert ptype == PAYLOAD_TYPES[schema], "a response goes with its request's payload type"
        assert out is not None, f"the session closed silently after {name}"
        res = exi.decode(schema, out)
        assert isinstance(res, response_class(name))
        assert len(res.Header.SessionID) == 8 and res.Header.TimeStamp == int(CLOCK + self.now)
        self.sid = res.Header.SessionID
        return res

    def setup(self) -> cm.AuthorizationSetupResType:
        res = self.send(cm.SessionSetupReqType(EVCCID=self.evccid))
        assert res.ResponseCode == "OK_NewSessionEstablished" and res.EVSEID == "DE*EDG*E0001*1"
        assert self.sid != NO_SESSION
        return self.send(cm.AuthorizationSetupReqType())

    def eim(self) -> cm.AuthorizationResType:
        return self.send(cm.AuthorizationReqType(SelectedAuthorizationService="EIM",
                                                 EIM_AReqAuthorizationMode=cm.EIM_AReqAuthorizationModeType()))

    def pnc(self, credentials: Iso20ContractCredentials, challenge: bytes, *, signed_challenge: bytes | None = None,
            key: Any = None) -> cm.AuthorizationResType:
        """PnC with ``challenge``; the signature covers ``signed_challenge`` (default: the same) with ``key``."""
        signed = cm.PnC_AReqAuthorizationModeType(Id="id1", GenChallenge=signed_challenge or challenge,
                                                  ContractCertificateChain=credentials.chain())
        signature = sign("iso20", [exi.Fragment("urn:iso:std:iso:15118:-20:CommonMessages",
                                                "PnC_AReqAuthorizationMode", signed)], key or credentials.key)
        mode = dataclasses.replace(signed, GenChallenge=challenge)
        return self.send(cm.AuthorizationReqType(SelectedAuthorizationService="PnC", PnC_AReqAuthorizationMode=mode),
                         signature=signature)

    def services(self, parameter_set: int = 1) -> None:
        disc = self.send(cm.ServiceDiscoveryReqType())
        offered = [6, 2] if self.session.hardware.dc_limits().bidirectional else [2]  # DC_BPT first when possible
        assert disc.ResponseCode == "OK" and [s.ServiceID for s in disc.EnergyTransferServiceList.Service] == offered
        assert disc.ServiceRenegotiationSupported is False
        detail = self.send(cm.ServiceDetailReqType(ServiceID=2))
        params = {p.Name: p.intValue for p in detail.ServiceParameterList.ParameterSet[0].Parameter}
        assert params == {"Connector": 2, "ControlMode": 1, "MobilityNeedsMode": 1, "Pricing": 0}
        if not self.session.resumed:  # a resumed session offers only the set it had
            dynamic = {p.Name: p.intValue for p in detail.ServiceParameterList.ParameterSet[1].Parameter}
            assert dynamic == {"Connector": 2, "ControlMode": 2, "MobilityNeedsMode": 2, "Pricing": 0}
        chosen = cm.SelectedServiceType(ServiceID=2, ParameterSetID=parameter_set)
        assert self.send(cm.ServiceSelectionReqType(SelectedEnergyTransferService=chosen)).ResponseCode == "OK"

    def parameters(self, max_voltage: float = 500, max_power: float = 150_000) -> dc.DC_ChargeParameterDiscoveryResType:
        mode = dc.DC_CPDReqEnergyTransferModeType(
            EVMaximumChargePower=rational(max_power), EVMinimumChargePower=rational(0),
            EVMaximumChargeCurrent=rational(300), EVMinimumChargeCurrent=rational(0),
            EVMaximumVoltage=rational(max_voltage), EVMinimumVoltage=rational(200))
        return self.send(dc.DC_ChargeParameterDiscoveryReqType(DC_CPDReqEnergyTransferMode=mode))

    def schedule(self) -> cm.ScheduleExchangeResType:
        mode = cm.Scheduled_SEReqControlModeType(EVTargetEnergyRequest=rational(20_000))
        return self.send(cm.ScheduleExchangeReqType(MaximumSupportingPoints=24, Scheduled_SEReqControlMode=mode))

    def cable_check_and_pre_charge(self, voltage: float = 380) -> None:
        while self.send(dc.DC_CableCheckReqType(), dt=0.2).EVSEProcessing == "Ongoing":
            pass
        for _ in range(30):
            res = self.send(dc.DC_PreChargeReqType(EVProcessing="Ongoing", EVPresentVoltage=rational(voltage),
                                                   EVTargetVoltage=rational(voltage)))
            if abs(from_rational(res.EVSEPresentVoltage) - voltage) < 10:
                return
        raise AssertionError("pre-charge never reached the battery voltage")

    def start(self, power: float = 100_000, schedule_id: int = 1) -> cm.PowerDeliveryResType:
        plan = cm.Scheduled_EVPPTControlModeType(SelectedScheduleTupleID=schedule_id)
        profile = cm.EVPowerProfileType(
            TimeAnchor=0, Scheduled_EVPPTControlMode=plan,
            EVPowerProfileEntries=cm.EVPowerProfileEntryListType([cm.PowerScheduleEntryType(3600, rational(power))]))
        return self.send(cm.PowerDeliveryReqType(EVProcessing="Finished", ChargeProgress="Start",
                                                 EVPowerProfile=profile))

    def progress(self, progress: str, processing: str = "Finished") -> cm.PowerDeliveryResType:
        return self.send(cm.PowerDeliveryReqType(EVProcessing=processing, ChargeProgress=progress))

    def loop(self, voltage: float = 390, current: float = 100, dt: float = 0.25, **kw: Any) -> dc.DC_ChargeLoopResType:
        mode = dc.Scheduled_DC_CLReqControlModeType(EVTargetCurrent=rational(current),
                                                    EVTargetVoltage=rational(voltage))
        return self.send(dc.DC_ChargeLoopReqType(EVPresentVoltage=rational(380), Scheduled_DC_CLReqControlMode=mode,
                                                 **{"MeterInfoRequested": False, **kw}), dt=dt)

    def to_charge_loop(self) -> None:
        assert self.setup().ResponseCode == "OK"
        assert self.eim().EVSEProcessing == "Finished"
        self.services()
        assert self.parameters().ResponseCode == "OK"
        assert self.schedule().ResponseCode == "OK"
        self.cable_check_and_pre_charge()
        assert self.start().ResponseCode == "OK"


def session(hw: SimulatedCharger | None = None, **kw: Any) -> Iso20DcSession:
    return Iso20DcSession(hw or charger(), **kw)


# ---------------------------------------------------------------------------------------------- EIM


def test_eim_dc_session_from_setup_to_stop() -> None:
    hw = charger()
    car = Car(session(hw))
    setup = car.setup()
    assert setup.ResponseCode == "OK" and list(setup.AuthorizationServices) == ["EIM"]
    assert setup.EIM_ASResAuthorizationMode is not None and setup.PnC_ASResAuthorizationMode is None
    assert setup.CertificateInstallationService is False
    auth = car.eim()
    assert (auth.ResponseCode, auth.EVSEProcessing) == ("OK", "Finished")
    car.services()
    cpd = car.parameters().DC_CPDResEnergyTransferMode
    assert from_rational(cpd.EVSEMaximumVoltage) == 500 and from_rational(cpd.EVSEMaximumChargePower) == 100_000
    tuples = car.schedule().Scheduled_SEResControlMode.ScheduleTuple
    entry = tuples[0].ChargingSchedule.PowerSchedule.PowerScheduleEntries.PowerScheduleEntry[0]
    assert tuples[0].ScheduleTupleID == 1 and from_rational(entry.Power) == 100_000  # min(charger, car)
    assert tuples[0].ChargingSchedule.PriceLevelSchedule.NumberOfPriceLevels == 1
    assert not hw.closed
    car.cable_check_and_pre_charge()
    assert hw.target_i <= 2.0 and not hw.closed  # pre-charge: voltage at 2 A at most, contactors open
    assert car.start().ResponseCode == "OK" and hw.closed
    meter_before = hw.energy_wh()
    for _ in range(20):  # 5 s of charge loop at 390 V / 100 A
        res = car.loop(390, 100)
        assert res.ResponseCode == "OK" and res.EVSEStatus is None  # no notification: Josev's EV stops on any
        assert res.Scheduled_DC_CLResControlMode is not None and not res.EVSEPowerLimitAchieved
    assert from_rational(res.EVSEPresentCurrent) == pytest.approx(100, rel=0.02)
    assert hw.energy_wh() - meter_before == pytest.approx(390 * 100 * 5 / 3600, rel=0.1)
    assert car.session.sequence_timeout() == 0.5  # V2G_SECC_Sequence_Timeout after a ChargeLoopRes
    assert car.progress("Stop").ResponseCode == "OK" and power_off(hw)
    assert car.session.sequence_timeout() == 60
    for _ in range(10):
        weld = car.send(dc.DC_WeldingDetectionReqType(EVProcessing="Ongoing"), dt=0.3)
    assert from_rational(weld.EVSEPresentVoltage) < 60  # the output discharged with the contactors open
    assert car.send(cm.SessionStopReqType(ChargingSession="Terminate")).ResponseCode == "OK"
    assert car.ended and car.session.done and car.session.state == "stopped" and power_off(hw)
    assert car.session.auth_service == "EIM" and car.session.evcc_id == EVCCID
    car.ended = False  # the core answers anything after its end (no KeyError; the shell has closed already)
    late = car.send(cm.SessionStopReqType(ChargingSession="Terminate"))
    assert late.ResponseCode == "FAILED_SequenceError" and car.ended and power_off(hw)
    assert car.session.ev_clock_offset is not None


def test_every_failure_response_is_encodable() -> None:
    """A refusal of any request carries every element its schema requires (else it could not be sent)."""
    s = session()
    for name, schema in REQUESTS.items():
        res = s._failed(name, "FAILED_SequenceError")
        res.Header = header(s.session_id, CLOCK)
        assert exi.decode(schema, exi.encode(schema, res)).ResponseCode == "FAILED_SequenceError", name


def test_the_table_names_only_known_requests_and_states() -> None:
    for state, allowed in NEXT.items():
        assert allowed <= set(STEPS.values()), state
        assert "SessionStopReq" in allowed or state == "start", state


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("steps", "out_of_order"), [
    (0, cm.ServiceDiscoveryReqType()),  # services before authorization
    (0, cm.ServiceSelectionReqType(SelectedEnergyTransferService=cm.SelectedServiceType(2, 1))),  # no discovery
    (1, dc.DC_ChargeLoopReqType(MeterInfoRequested=False, EVPresentVoltage=rational(380), Scheduled_DC_CLReqControlMode=
                                dc.Scheduled_DC_CLReqControlModeType(EVTargetCurrent=rational(1),
                                                                     EVTargetVoltage=rational(380)))),  # no power yet
    (1, dc.DC_CableCheckReqType()),  # cable check before parameters and schedule
    (2, cm.PowerDeliveryReqType(EVProcessing="Finished", ChargeProgress="Start")),  # Start without cable check
    (2, dc.DC_PreChargeReqType(EVProcessing="Ongoing", EVPresentVoltage=rational(380),
                               EVTargetVoltage=rational(380))),  # pre-charge before the isolation check
    (2, cm.SessionSetupReqType(EVCCID=EVCCID)),  # a second SessionSetup
    (2, cm.CertificateInstallationReqType()),  # never offered
])
def test_requests_out_of_order_end_the_session(steps: int, out_of_order: Any) -> None:
    hw = charger()
    car = Car(session(hw))
    car.setup()
    if steps >= 1:
        car.eim()
        car.services()
    if steps >= 2:
        car.parameters()
        car.schedule()
    if isinstance(out_of_order, cm.CertificateInstallationReqType):  # a request we never parse further
        out_of_order = cm.CertificateInstallationReqType(
            OEMProvisioningCertificateChain=cm.SignedCertificateChainType(Id="id1", Certificate=b"\x30"),
            ListOfRootCertificateIDs=ct.ListOfRootCertificateIDsType(
                [xmldsig.X509IssuerSerialType("CN=root", 1)]),
            MaximumContractCertificateChains=1)
    res = car.send(out_of_order)
    assert res.ResponseCode == "FAILED_SequenceError" and car.ended and power_off(hw)
    assert hw.target_v == 0 and hw.target_i == 0  # no isolation check, no pre-charge voltage


def test_authorization_needs_authorization_setup_first() -> None:
    car = Car(session())
    car.send(cm.SessionSetupReqType(EVCCID=EVCCID))
    assert car.eim().ResponseCode == "FAILED_SequenceError" and car.ended


def test_pre_charge_refused_while_the_isolation_check_runs() -> None:
    hw = SimulatedCharger(isolation_s=5.0)
    car = Car(session(hw))
    car.setup(), car.eim(), car.services(), car.parameters(), car.schedule()
    assert car.send(dc.DC_CableCheckReqType()).EVSEProcessing == "Ongoing"
    res = car.send(dc.DC_PreChargeReqType(EVProcessing="Ongoing", EVPresentVoltage=rational(380),
                                          EVTargetVoltage=rational(380)))
    assert res.ResponseCode == "FAILED_SequenceError" and car.ended and power_off(hw)


def test_cable_check_gives_up_after_its_time() -> None:
    hw = SimulatedCharger(isolation_s=1e9)
    car = Car(session(hw))
    car.setup(), car.eim(), car.services(), car.parameters(), car.schedule()
    for _ in range(38):
        assert car.send(dc.DC_CableCheckReqType(), dt=1.0).EVSEProcessing == "Ongoing"
    res = car.send(dc.DC_CableCheckReqType(), dt=1.5)
    assert res.ResponseCode == "FAILED" and car.ended and power_off(hw)


def test_unknown_session_id_ends_the_session() -> None:
    hw = charger()
    car = Car(session(hw))
    car.setup()
    res = car.send(cm.AuthorizationReqType(SelectedAuthorizationService="EIM",
                                           EIM_AReqAuthorizationMode=cm.EIM_AReqAuthorizationModeType()),
                   sid=bytes.fromhex("0102030405060708"))
    assert res.ResponseCode == "FAILED_UnknownSession" and car.ended and power_off(hw)


def test_what_cannot_be_answered_closes_silently() -> None:
    setup = cm.SessionSetupReqType(Header=header(NO_SESSION, CLOCK), EVCCID=EVCCID)
    common = exi.encode(COMMON, setup)
    cable_check = exi.encode(DC, dc.DC_CableCheckReqType(Header=header(NO_SESSION, CLOCK)))
    for payload_type, payload in [(PayloadType.ISO20_AC, common), (PayloadType.EXI, common),
                                  (PayloadType.ISO20_COMMON, b"\x80\xff\xff"),  # not EXI of the schema
                                  (PayloadType.ISO20_COMMON, exi.encode(COMMON, cm.SessionSetupResType(
                                      Header=header(NO_SESSION, CLOCK), ResponseCode="OK", EVSEID="x"))),  # a response
                                  (PayloadType.ISO20_DC, common), (PayloadType.ISO20_COMMON, cable_check)]:
        hw = charger()
        hw.set_contactors(True)
        s = session(hw)
        assert s.handle(payload_type, payload, 1.0)[1:] == (None, True), hex(payload_type)
        assert s.done and power_off(hw)


def test_service_detail_and_selection_refusals() -> None:
    car = Car(session())
    car.setup(), car.eim()
    car.send(cm.ServiceDiscoveryReqType())
    res = car.send(cm.ServiceDetailReqType(ServiceID=6))  # DC_BPT: not offered
    assert res.ResponseCode == "FAILED_ServiceIDInvalid" and res.ServiceID == 6 and car.ended

    for selected, code in [(cm.SelectedServiceType(ServiceID=2, ParameterSetID=3), "FAILED_ServiceSelectionInvalid"),
                           (cm.SelectedServiceType(ServiceID=1, ParameterSetID=1), "FAILED_ServiceSelectionInvalid"),
                           (cm.SelectedServiceType(ServiceID=65, ParameterSetID=1),  # Internet: a VAS
                            "FAILED_NoEnergyTransferServiceSelected")]:
        car = Car(session())
        car.setup(), car.eim(), car.send(cm.ServiceDiscoveryReqType())
        res = car.send(cm.ServiceSelectionReqType(SelectedEnergyTransferService=selected))
        assert res.ResponseCode == code and car.ended


def test_charge_parameters_the_charger_cannot_meet() -> None:
    car = Car(session())
    car.setup(), car.eim(), car.services()
    res = car.parameters(max_voltage=40)  # below the charger's 50 V minimum
    assert res.ResponseCode == "FAILED_WrongChargeParameter" and car.ended
    assert res.DC_CPDResEnergyTransferMode is not None  # the schema wants the charger's limits even here


def test_service_renegotiation_is_not_offered() -> None:
    car = Car(session())
    car.setup(), car.eim()
    res = car.send(cm.SessionStopReqType(ChargingSession="ServiceRenegotiation"))
    assert res.ResponseCode == "FAILED_NoServiceRenegotiationSupported" and car.ended


# ---------------------------------------------------------------------------------------------- power


def test_power_delivery_checks_the_car_plan() -> None:
    for kw, code in [({"schedule_id": 7}, "FAILED_ScheduleSelectionInvalid"),
                     ({"power": 120_000}, "FAILED_EVPowerProfileInvalid")]:  # schedule says 100 kW
        hw = charger()
        car = Car(session(hw))
        car.setup(), car.eim(), car.services(), car.parameters(), car.schedule()
        car.cable_check_and_pre_charge()
        assert car.start(**kw).ResponseCode == code and car.ended and power_off(hw)


def test_power_delivery_ongoing_and_standby() -> None:
    hw = charger()
    car = Car(session(hw))
    car.setup(), car.eim(), car.services(), car.parameters(), car.schedule()
    car.cable_check_and_pre_charge()
    # Josev's EV announces Start with EVProcessing=Ongoing (its profile not ready) and asks again
    assert car.progress("Start", "Ongoing").ResponseCode == "OK" and not hw.closed
    assert car.progress("Standby").ResponseCode == "WARNING_StandbyNotAllowed" and not car.ended
    assert car.start().ResponseCode == "OK" and hw.closed
    assert car.loop().ResponseCode == "OK"


def test_charge_loop_keeps_to_the_schedule_and_the_charger_limits() -> None:
    hw = charger()
    car = Car(session(hw))
    car.to_charge_loop()
    for _ in range(12):
        res = car.loop(400, 400)  # 160 kW asked: the charger has 200 A and the schedule 100 kW
    assert res.EVSEPowerLimitAchieved and res.EVSECurrentLimitAchieved and not res.EVSEVoltageLimitAchieved
    assert hw.target_i == 200  # min(400 A asked, the charger's 200 A, 100 kW / 400 V = 250 A)
    assert from_rational(res.EVSEPresentCurrent) == pytest.approx(200, rel=0.02)
    limits = res.Scheduled_DC_CLResControlMode
    assert from_rational(limits.EVSEMaximumChargePower) == 100_000
    assert from_rational(limits.EVSEMaximumChargeCurrent) == 200
    assert car.loop(400, 100, MeterInfoRequested=True).MeterInfo.ChargedEnergyReadingWh > 0

    # a car that takes 50 kW at most: the schedule says 50 kW, so 125 A at 400 V although 200 A are there
    hw = charger()
    car = Car(session(hw))
    car.setup(), car.eim(), car.services()
    car.parameters(max_power=50_000)
    entry = car.schedule().Scheduled_SEResControlMode.ScheduleTuple[0].ChargingSchedule.PowerSchedule
    assert from_rational(entry.PowerScheduleEntries.PowerScheduleEntry[0].Power) == 50_000
    car.cable_check_and_pre_charge()
    car.start(power=50_000)
    res = car.loop(400, 180)
    assert hw.target_i == 125 and res.EVSEPowerLimitAchieved and not res.EVSECurrentLimitAchieved


def test_output_voltage_never_above_what_the_car_takes() -> None:
    hw = charger()
    car = Car(session(hw))
    car.setup(), car.eim(), car.services()
    car.parameters(max_voltage=400)  # the charger could give 500 V
    car.schedule()
    while car.send(dc.DC_CableCheckReqType(), dt=0.2).EVSEProcessing == "Ongoing":
        pass
    car.send(dc.DC_PreChargeReqType(EVProcessing="Ongoing", EVPresentVoltage=rational(380),
                                    EVTargetVoltage=rational(450)))
    assert hw.target_v == 400
    car.start()
    res = car.loop(voltage=480, current=50)
    assert hw.target_v == 400 and not res.EVSEVoltageLimitAchieved  # the car's limit, not the charger's


def test_the_charger_can_ask_the_car_to_stop() -> None:
    hw = charger()
    car = Car(session(hw))
    car.to_charge_loop()
    assert car.loop().EVSEStatus is None
    car.session.request_stop()
    status = car.loop().EVSEStatus
    assert status.EVSENotification == "Terminate" and status.NotificationMaxDelay == 10  # the car has 10 s to act
    assert car.progress("Stop").ResponseCode == "OK" and power_off(hw)


def test_schedule_renegotiation() -> None:
    hw = charger()
    car = Car(session(hw))
    car.to_charge_loop()
    car.loop()
    assert car.progress("ScheduleRenegotiation").ResponseCode == "OK"
    assert hw.target_i == 0 and hw.closed  # no current until the new schedule; the output holds its voltage
    assert car.schedule().ResponseCode == "OK"
    assert car.start().ResponseCode == "OK" and car.loop().ResponseCode == "OK"
    assert car.session.renegotiations == 1
    # only from the charge loop: straight after PowerDelivery Stop it is out of order
    car.progress("Stop")
    assert car.progress("ScheduleRenegotiation").ResponseCode == "FAILED_SequenceError" and car.ended


# ---------------------------------------------------------------------------------------------- Plug & Charge


def pnc_session(pki: Path, hw: SimulatedCharger | None = None, **kw: Any) -> tuple[Iso20DcSession, LocalPlugAndCharge]:
    pnc = LocalPlugAndCharge.from_pki_folder(pki, local_install=False, **kw)
    return session(hw, pnc=pnc), pnc


@pytest.mark.parametrize("folder", ["iso15118_20", "iso15118_20_ed448"])
def test_pnc_accepted(pki: Path, folder: str) -> None:
    credentials = Iso20ContractCredentials.from_pki(pki, folder)
    s, pnc = pnc_session(pki)
    car = Car(s)
    setup = car.setup()
    assert list(setup.AuthorizationServices) == ["PnC", "EIM"] and setup.CertificateInstallationService is False
    challenge = setup.PnC_ASResAuthorizationMode.GenChallenge
    assert len(challenge) == 16 and setup.EIM_ASResAuthorizationMode is None
    res = car.pnc(credentials, challenge)
    assert (res.ResponseCode, res.EVSEProcessing) == ("OK", "Finished")
    assert [code for _, code in pnc.decisions] == ["OK", "OK", "OK"]
    assert pnc.decisions[1][0] == "signature over PnC_AReqAuthorizationMode"
    assert s.auth_service == "PnC" and s.contract.emaid == TEST_EMAID and len(s.contract.sub_cas) == 2
    car.services()  # and on to charging
    assert car.parameters().ResponseCode == "OK"


def test_pnc_backend_ongoing_then_decided(pki: Path) -> None:
    credentials = Iso20ContractCredentials.from_pki(pki)
    s, pnc = pnc_session(pki, ongoing_rounds=2)
    car = Car(s)
    challenge = car.setup().PnC_ASResAuthorizationMode.GenChallenge
    assert car.pnc(credentials, challenge).EVSEProcessing == "Ongoing"
    assert car.pnc(credentials, challenge).EVSEProcessing == "Ongoing"  # the unaltered request again
    assert car.pnc(credentials, challenge).EVSEProcessing == "Finished"
    assert [what for what, _ in pnc.decisions].count("signature over PnC_AReqAuthorizationMode") == 1


def test_pnc_backend_ongoing_too_long(pki: Path) -> None:
    credentials = Iso20ContractCredentials.from_pki(pki)
    s, _ = pnc_session(pki, ongoing_rounds=1000)
    car = Car(s)
    challenge = car.setup().PnC_ASResAuthorizationMode.GenChallenge
    for _ in range(11):  # 55 s of Ongoing answers
        assert car.pnc(credentials, challenge).EVSEProcessing == "Ongoing"
        car.now += 4.9
    car.now += 1
    res = car.pnc(credentials, challenge)
    assert res.ResponseCode == "FAILED" and car.ended


@pytest.mark.parametrize("case", ["not our challenge", "altered after signing", "wrong key", "expired chain",
                                  "unknown contract"])
def test_pnc_refusals(pki: Path, expired_pki: Path, case: str) -> None:
    folder = expired_pki if case == "expired chain" else pki
    credentials = Iso20ContractCredentials.from_pki(folder)
    allowed = {"DEXYZ000000001"} if case == "unknown contract" else None
    hw = charger()
    s, _ = pnc_session(folder, hw, allowed_emaids=allowed)
    car = Car(s)
    challenge = car.setup().PnC_ASResAuthorizationMode.GenChallenge
    other = bytes(b ^ 0xFF for b in challenge)
    kw: dict[str, Any] = {
        "altered after signing": {"signed_challenge": other},  # what was signed is not what was sent
        "not our challenge": {},  # sent and signed a challenge this session never issued
        "wrong key": {"key": ec.generate_private_key(ec.SECP521R1())},
    }.get(case, {})
    res = car.pnc(credentials, other if case == "not our challenge" else challenge, **kw)
    expected = {"altered after signing": "FAILED_SignatureError", "not our challenge": "WARNING_ChallengeInvalid",
                "wrong key": "FAILED_SignatureError", "expired chain": "WARNING_CertificateExpired",
                "unknown contract": "WARNING_GeneralPnCAuthorizationError"}[case]
    assert res.ResponseCode == expected and res.EVSEProcessing == "Finished"
    assert s.auth_service is None and power_off(hw) and hw.target_v == 0
    if expected.startswith("FAILED"):
        assert car.ended
        return
    # a warning ends nothing, but the session cannot go on to charge: the car may retry or stop
    assert not car.ended and s.state == "AuthorizationReq:refused"
    assert car.send(cm.ServiceDiscoveryReqType()).ResponseCode == "FAILED_SequenceError" and car.ended
    assert power_off(hw)


def test_after_a_refusal_the_car_may_stop_or_fall_back_to_eim(pki: Path) -> None:
    credentials = Iso20ContractCredentials.from_pki(pki)
    s, _ = pnc_session(pki)
    car = Car(s)
    challenge = car.setup().PnC_ASResAuthorizationMode.GenChallenge
    assert car.pnc(credentials, bytes(16)).ResponseCode == "WARNING_ChallengeInvalid"
    assert car.eim().ResponseCode == "OK" and s.auth_service == "EIM"
    assert challenge != bytes(16)

    s, _ = pnc_session(pki)
    car = Car(s)
    car.setup()
    assert car.pnc(credentials, bytes(16)).ResponseCode == "WARNING_ChallengeInvalid"
    assert car.send(cm.SessionStopReqType(ChargingSession="Terminate")).ResponseCode == "OK" and car.ended


def test_pnc_only_when_offered() -> None:
    car = Car(session())
    assert list(car.setup().AuthorizationServices) == ["EIM"]
    chain = cm.ContractCertificateChainType(Certificate=b"\x30", SubCertificates=cm.SubCertificatesType([b"\x30"]))
    mode = cm.PnC_AReqAuthorizationModeType(Id="id1", GenChallenge=bytes(16), ContractCertificateChain=chain)
    res = car.send(cm.AuthorizationReqType(SelectedAuthorizationService="PnC", PnC_AReqAuthorizationMode=mode))
    assert res.ResponseCode == "WARNING_AuthorizationSelectionInvalid" and not car.ended
    assert car.eim().ResponseCode == "OK"


def test_metering_confirmation_signed_with_the_contract_key(pki: Path) -> None:
    credentials = Iso20ContractCredentials.from_pki(pki, "iso15118_20_ed448")
    hw = charger()
    pnc = LocalPlugAndCharge.from_pki_folder(pki, local_install=False)
    s = session(hw, pnc=pnc, receipt_interval=1.0)
    car = Car(s)
    car.pnc(credentials, car.setup().PnC_ASResAuthorizationMode.GenChallenge)
    car.services(), car.parameters(), car.schedule()
    car.cable_check_and_pre_charge()
    car.start()
    res = car.loop()
    while res.EVSEStatus is None:
        res = car.loop()
    assert res.EVSEStatus.EVSENotification == "MeteringConfirmation" and res.MeterInfo is not None
    data = cm.SignedMeteringDataType(Id="id2", SessionID=car.sid, MeterInfo=res.MeterInfo,
                                     Scheduled_SMDTControlMode=cm.Scheduled_SMDTControlModeType(1))
    ok = car.send(cm.MeteringConfirmationReqType(SignedMeteringData=data), signature=credentials.sign_metering(data))
    assert ok.ResponseCode == "OK" and s.receipts == 1
    assert car.loop().EVSEStatus is None  # the next one an interval later
    # a confirmation nobody asked for
    assert car.send(cm.MeteringConfirmationReqType(SignedMeteringData=data),
                    signature=credentials.sign_metering(data)).ResponseCode == "FAILED_SequenceError"


def test_metering_confirmation_with_a_bad_signature(pki: Path) -> None:
    credentials = Iso20ContractCredentials.from_pki(pki)
    hw = charger()
    s = session(hw, pnc=LocalPlugAndCharge.from_pki_folder(pki, local_install=False), receipt_interval=0.5)
    car = Car(s)
    car.pnc(credentials, car.setup().PnC_ASResAuthorizationMode.GenChallenge)
    car.services(), car.parameters(), car.schedule()
    car.cable_check_and_pre_charge()
    car.start()
    res = car.loop()
    while res.EVSEStatus is None:
        res = car.loop()
    data = cm.SignedMeteringDataType(Id="id2", SessionID=car.sid, MeterInfo=res.MeterInfo,
                                     Scheduled_SMDTControlMode=cm.Scheduled_SMDTControlModeType(1))
    stranger = dataclasses.replace(credentials, key=ec.generate_private_key(ec.SECP521R1()))
    res = car.send(cm.MeteringConfirmationReqType(SignedMeteringData=data), signature=stranger.sign_metering(data))
    assert res.ResponseCode == "FAILED_MeteringSignatureNotValid" and car.ended and power_off(hw)


# ---------------------------------------------------------------------------------------------- pause, resume


def test_pause_and_resume() -> None:
    paused = Iso20PausedSessions()
    hw = charger()
    car = Car(session(hw, paused_sessions=paused))
    car.to_charge_loop()
    car.loop()
    car.progress("Stop")
    assert car.send(cm.SessionStopReqType(ChargingSession="Pause")).ResponseCode == "OK"
    assert car.session.state == "paused" and list(paused.sessions) == [car.sid] and power_off(hw)
    old = car.sid

    # another car (another EVCCID) cannot take over the paused session: it gets a new one
    stranger = Car(session(hw, paused_sessions=paused), evccid="SOMEONEELSE0000001")
    stranger.sid = old
    assert stranger.send(cm.SessionSetupReqType(EVCCID=stranger.evccid)).ResponseCode == "OK_NewSessionEstablished"
    assert stranger.sid != old and list(paused.sessions) == [old]

    again = Car(session(hw, paused_sessions=paused))
    again.sid = old  # SessionSetupReq with the paused session's ID
    res = again.send(cm.SessionSetupReqType(EVCCID=EVCCID))
    assert res.ResponseCode == "OK_OldSessionJoined" and again.sid == old and not paused.sessions
    assert list(again.send(cm.AuthorizationSetupReqType()).AuthorizationServices) == ["EIM"]
    again.eim()
    again.services()
    assert again.session.resumed and again.session.selected == (2, 1)
    # the whole sequence again: the contactors were open
    assert again.parameters().ResponseCode == "OK" and again.schedule().ResponseCode == "OK"
    again.cable_check_and_pre_charge()
    assert again.start().ResponseCode == "OK" and hw.closed


# ---------------------------------------------------------------------------------------------- the connection


def sap_request(*offers: tuple[sap.Protocol, int]) -> bytes:
    entries = [AppProtocolType(p.namespace, p.major, p.minor, i + 1, prio) for i, (p, prio) in enumerate(offers)]
    return exi.encode("apphand", supportedAppProtocolReq(entries))


def test_connection_routes_by_payload_type() -> None:
    assert DEFAULT_PROTOCOLS[0] is sap.ISO20_DC
    hw = charger()
    conn = ChargerConnection(hw)
    res = conn.handle(V2gtpMessage(PayloadType.EXI, sap_request((sap.ISO2, 2), (sap.ISO20_DC, 1))), 0.1)
    assert res.payload_type == PayloadType.EXI and exi.decode("apphand", res.payload).SchemaID == 2
    assert isinstance(conn.session, Iso20DcSession) and conn.protocol is sap.ISO20_DC
    setup = exi.encode(COMMON, cm.SessionSetupReqType(Header=header(NO_SESSION, CLOCK), EVCCID=EVCCID))
    res = conn.handle(V2gtpMessage(PayloadType.ISO20_COMMON, setup), 0.2)
    assert res.payload_type == PayloadType.ISO20_COMMON
    assert exi.decode(COMMON, res.payload).ResponseCode == "OK_NewSessionEstablished"
    assert conn.idle_timeout == 60
    # -2 framing on a -20 session: nothing to answer, the connection closes (and the power its session held)
    conn.session.hardware.set_contactors(True)
    assert hw.closed
    assert conn.handle(V2gtpMessage(PayloadType.EXI, setup), 0.3) is None and conn.session.done
    assert power_off(hw)


def test_the_car_priority_decides_between_iso2_and_iso20() -> None:
    conn = ChargerConnection(charger())
    conn.handle(V2gtpMessage(PayloadType.EXI, sap_request((sap.ISO20_DC, 2), (sap.ISO2, 1))), 0.1)
    assert conn.protocol is sap.ISO2
    assert conn.handle(V2gtpMessage(PayloadType.ISO20_COMMON, b"\x80"), 0.2) is None  # -20 framing on -2


def test_no_iso20_dc_on_a_board_without_dc() -> None:
    conn = ChargerConnection(SimulatedCharger(limits=None, ac=AcLimits()))
    res = conn.handle(V2gtpMessage(PayloadType.EXI, sap_request((sap.ISO20_DC, 1))), 0.1)
    assert exi.decode("apphand", res.payload).ResponseCode == "Failed_NoNegotiation" and conn.closing


@pytest.mark.parametrize(("tls", "without_tls", "offered"), [(False, False, ["EIM"]), (True, False, ["PnC", "EIM"]),
                                                             (False, True, ["PnC", "EIM"])])
def test_pnc_offered_only_over_tls(pki: Path, tls: bool, without_tls: bool, offered: list[str]) -> None:
    config = EvseConfig(pnc=LocalPlugAndCharge.from_pki_folder(pki, local_install=False), pnc_without_tls=without_tls)
    conn = ChargerConnection(charger(), config=config, tls=tls)
    conn.handle(V2gtpMessage(PayloadType.EXI, sap_request((sap.ISO20_DC, 1))), 0.1)
    assert isinstance(conn.session, Iso20DcSession)
    car = Car(conn.session)
    assert list(car.setup().AuthorizationServices) == offered


def test_local_pnc_speaks_iso20_codes(pki: Path) -> None:
    credentials = Iso20ContractCredentials.from_pki(pki)
    pnc = LocalPlugAndCharge.from_pki_folder(pki, local_install=False, allowed_emaids={"DEXYZ000000001"})
    from edge.v2g.pnc import ContractChain

    chain = ContractChain(credentials.leaf, credentials.sub_cas, "")
    assert pnc.check_contract("iso20-dc", chain, CLOCK) == "OK"  # -20 carries no eMAID beside the chain
    assert pnc.authorize("iso20", chain) == "WARNING_GeneralPnCAuthorizationError"
    assert pnc.authorize("iso2", chain) == "FAILED_ContractCanceled"
    mode = cm.PnC_AReqAuthorizationModeType(Id="id1", GenChallenge=bytes(16),
                                            ContractCertificateChain=credentials.chain())
    fragment = exi.Fragment("urn:iso:std:iso:15118:-20:CommonMessages", "PnC_AReqAuthorizationMode", mode)
    signature = credentials.sign_authorization(mode)
    assert pnc.check_signature("iso20-dc", signature, [fragment], chain) == "OK"  # checked in CommonMessages
    assert pnc.install_certificate("iso20", None, None).response_code == "WARNING_NoCertificateAvailable"
    with pytest.raises(ValueError, match="ISO 15118-2 and -20 only"):
        pnc.authorize("din", chain)
