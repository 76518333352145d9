"""The simulated car as a testbench tool against chargers we did not write: it gives up on welding
detection after a bounded time and says what it saw, it stays within the current and power the charger
announced (DIN, -2 and -20 DC), and a phase that does not finish fails with what the car last saw."""

from __future__ import annotations

from typing import Any

import pytest

import exi
from edge.ev.base import SessionFailed, SimulatedCar
from edge.ev.din import DinCar
from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20Car
from edge.hardware import DcLimits, SimulatedCharger
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.iso20.messages import from_rational, rational
from edge.v2g.physical import from_physical, to_physical
from exi.model import din_msgbody as din_b
from exi.model import din_msgdatatypes as din_t
from exi.model import iso2_msgbody as iso2_b
from exi.model import iso2_msgdatatypes as iso2_t
from exi.model import iso20_commontypes as ct
from exi.model import iso20_dc as dc
from exi.model.din_msgdef import BodyType as DinBody
from exi.model.din_msgdef import V2G_Message as DinMessage
from exi.model.din_msgheader import MessageHeaderType as DinHeader
from exi.model.iso2_msgbody import BodyType as Iso2Body
from exi.model.iso2_msgdef import V2G_Message as Iso2Message
from exi.model.iso2_msgheader import MessageHeaderType as Iso2Header
from tests.inmemory import run

SID = bytes.fromhex("0102030405060708")


def at_step(car: SimulatedCar, request: str, **state: Any) -> None:
    """``car`` as if it had just sent ``request`` in session SID (no SAP, no earlier steps)."""
    car._last, car._negotiated, car.session_id = request, True, SID
    if isinstance(car, Iso20Car):
        car._schema = "iso20-dc"
    for name, value in state.items():
        setattr(car, name, value)


def din_res(name: str, res: Any) -> bytes:
    return exi.encode("din", DinMessage(DinHeader(SID), DinBody(**{name: res})))


def iso2_res(name: str, res: Any) -> bytes:
    return exi.encode("iso2", Iso2Message(Iso2Header(SID), Iso2Body(**{name: res})))


def din_pv(x: float, unit: str) -> din_t.PhysicalValueType:
    return to_physical(din_t.PhysicalValueType, x, unit)


def iso2_pv(x: float, unit: str) -> iso2_t.PhysicalValueType:
    return to_physical(iso2_t.PhysicalValueType, x, unit)


DIN_STATUS = din_t.DC_EVSEStatusType("Valid", "EVSE_Ready", 0, "None")
ISO2_STATUS = iso2_t.DC_EVSEStatusType(0, "None", "Valid", "EVSE_Ready")


def welding_res(car: SimulatedCar, volts: float) -> bytes:
    if isinstance(car, DinCar):
        return din_res("WeldingDetectionRes", din_b.WeldingDetectionResType("OK", DIN_STATUS, din_pv(volts, "V")))
    if isinstance(car, Iso2Car):
        return iso2_res("WeldingDetectionRes", iso2_b.WeldingDetectionResType("OK", ISO2_STATUS,
                                                                              iso2_pv(volts, "V")))
    return exi.encode("iso20-dc", dc.DC_WeldingDetectionResType(
        Header=ct.MessageHeaderType(SessionID=SID, TimeStamp=0), ResponseCode="OK",
        EVSEPresentVoltage=rational(volts)))


def decoded(car: SimulatedCar, out: bytes) -> Any:
    """The request ``out`` as a body element (DIN/-2) or root element (-20)."""
    if isinstance(car, Iso20Car):
        return exi.decode(car._schema, out)
    message = exi.decode(car.protocol.name, out)
    return getattr(message.Body, car.log[-1])


WELDING = {"din": (lambda: DinCar(), "WeldingDetectionReq", "SessionStopReq"),
           "iso2": (lambda: Iso2Car(), "WeldingDetectionReq", "SessionStopReq"),
           "iso20": (lambda: Iso20Car(session_id=SID), "DC_WeldingDetectionReq", "SessionStopReq")}


@pytest.mark.parametrize("protocol", sorted(WELDING))
def test_welding_detection_gives_up_and_reports_the_voltage_it_saw(protocol: str) -> None:
    """A charger whose output stays at 400 V once made the car ask 2,560 times in 110 s: now the car
    asks for its limit (20 s), then ends the session with SessionStop and reports the failure."""
    make, welding, stop = WELDING[protocol]
    car = make()
    at_step(car, welding, _phase="stopping")
    now, sent = 0.0, 0
    while car.log[-1:] != [stop]:
        assert sent < 1000, "the car asks on forever"
        car.handle(welding_res(car, 400.0), now)
        now, sent = now + 0.05, sent + 1
    assert 20.0 < now < 20.2 and car.failure is not None
    assert "400 V after 20 s" in car.failure and "welded contactor" in car.failure
    assert car.summary()["failure"] == car.failure


@pytest.mark.parametrize("protocol", sorted(WELDING))
def test_welding_detection_ends_once_the_output_is_discharged(protocol: str) -> None:
    make, welding, stop = WELDING[protocol]
    car = make()
    at_step(car, welding, _phase="stopping")
    car.handle(welding_res(car, 300.0), 0.0)
    assert car.log[-1] == welding
    car.handle(welding_res(car, 40.0), 0.5)
    assert car.log[-1] == stop and car.failure is None


# ------------------------------------------------------------------ the charger's maximum current and power


def din_current_demand_res(max_current: float | None, max_power: float | None) -> bytes:
    res = din_b.CurrentDemandResType(
        "OK", DIN_STATUS, din_pv(390, "V"), din_pv(50, "A"), False, False, False,
        EVSEMaximumCurrentLimit=din_pv(max_current, "A") if max_current is not None else None,
        EVSEMaximumPowerLimit=din_pv(max_power, "W") if max_power is not None else None)
    return din_res("CurrentDemandRes", res)


def iso2_current_demand_res(max_current: float | None, max_power: float | None) -> bytes:
    res = iso2_b.CurrentDemandResType(
        "OK", ISO2_STATUS, iso2_pv(390, "V"), iso2_pv(50, "A"), False, False, False,
        EVSEMaximumCurrentLimit=iso2_pv(max_current, "A") if max_current is not None else None,
        EVSEMaximumPowerLimit=iso2_pv(max_power, "W") if max_power is not None else None,
        EVSEID="DE*EDG*E0001*1", SAScheduleTupleID=1)
    return iso2_res("CurrentDemandRes", res)


def iso20_loop_res(max_current: float | None, max_power: float | None) -> bytes:
    mode = dc.Scheduled_DC_CLResControlModeType(
        EVSEMaximumChargeCurrent=rational(max_current) if max_current is not None else None,
        EVSEMaximumChargePower=rational(max_power) if max_power is not None else None)
    return exi.encode("iso20-dc", dc.DC_ChargeLoopResType(
        Header=ct.MessageHeaderType(SessionID=SID, TimeStamp=0), ResponseCode="OK",
        EVSEPresentCurrent=rational(50), EVSEPresentVoltage=rational(390), EVSEPowerLimitAchieved=False,
        EVSECurrentLimitAchieved=False, EVSEVoltageLimitAchieved=False, Scheduled_DC_CLResControlMode=mode))


LOOPS = {"din": (lambda: DinCar(), "CurrentDemandReq", din_current_demand_res),
         "iso2": (lambda: Iso2Car(), "CurrentDemandReq", iso2_current_demand_res),
         "iso20": (lambda: Iso20Car(session_id=SID), "DC_ChargeLoopReq", iso20_loop_res)}


def target_current(car: SimulatedCar, request: Any) -> float:
    if isinstance(car, Iso20Car):
        return from_rational(request.Scheduled_DC_CLReqControlMode.EVTargetCurrent)
    return from_physical(request.EVTargetCurrent)


@pytest.mark.parametrize("protocol", sorted(LOOPS))
def test_the_car_asks_no_more_than_the_charger_said_in_the_loop(protocol: str) -> None:
    """The car wants 125 A; the charger's loop responses say 50 A, then 10 kW (25.6 A at the 390 V the
    car asks for), then nothing new (the last limits stand)."""
    make, loop, response = LOOPS[protocol]
    car = make()
    at_step(car, loop, _phase="charging", soc=40.0, target_soc=90.0)
    car._start_metering(0.0)
    asked = []
    for i, (max_current, max_power) in enumerate([(50, None), (200, 10_000), (None, None)]):
        out = car.handle(response(max_current, max_power), 0.1 * (i + 1))
        asked.append(target_current(car, decoded(car, out)))
    assert car.max_current == 125
    limits = [50, 10_000 / 390, 10_000 / 390]
    assert all(limit - 0.1 <= a <= limit for a, limit in zip(asked, limits, strict=True)), asked  # 0.1 A: rounding


LIMITED = DcLimits(max_voltage=500.0, max_current=60.0, max_power=100_000.0)
CARS = {"din": lambda: DinCar(soc=40, target_soc=40.3, capacity_wh=2_000),
        "iso2": lambda: Iso2Car(soc=40, target_soc=40.3, capacity_wh=2_000, offer_din_too=False),
        "iso20": lambda: Iso20Car(soc=40, target_soc=40.3, capacity_wh=2_000)}


@pytest.mark.parametrize("protocol", sorted(CARS))
def test_the_car_keeps_to_the_current_of_the_charge_parameter_discovery(protocol: str) -> None:
    """A 60 A charger (ChargeParameterDiscoveryRes): no request of the car asks for more."""
    hw = SimulatedCharger(limits=LIMITED, isolation_s=0.5, voltage_tau=0.1)
    conn = ChargerConnection(hw, config=EvseConfig())
    car = CARS[protocol]()
    asked: list[float] = []

    def record(now: float) -> None:
        if car.in_charge_loop:
            asked.append(target_current(car, car.last_request))

    run(car, conn, each=record)
    assert car.stopped_cleanly and asked and max(asked) == pytest.approx(60.0)


# ------------------------------------------------------------------ phases that do not finish


def test_pre_charge_failure_says_what_the_car_saw() -> None:
    car = DinCar()
    at_step(car, "PreChargeReq")
    res = din_b.PreChargeResType("OK", DIN_STATUS, din_pv(120, "V"))
    car.handle(din_res("PreChargeRes", res), 0.0)
    with pytest.raises(SessionFailed, match=r"pre-charge not finished within 7 s: EVSEPresentVoltage 120 V, "
                                            r"target 380 V"):
        car.handle(din_res("PreChargeRes", res), 7.5)


def test_iso20_pre_charge_and_cable_check_failures_say_what_the_car_saw() -> None:
    car = Iso20Car(session_id=SID)
    at_step(car, "DC_PreChargeReq")
    head = ct.MessageHeaderType(SessionID=SID, TimeStamp=0)
    res = exi.encode("iso20-dc", dc.DC_PreChargeResType(Header=head, ResponseCode="OK",
                                                        EVSEPresentVoltage=rational(250)))
    car.handle(res, 0.0)
    with pytest.raises(SessionFailed, match="pre-charge not finished within 10 s: EVSEPresentVoltage 250 V, "
                                            "target 380 V"):
        car.handle(res, 10.5)
    car = Iso20Car(session_id=SID)
    at_step(car, "DC_CableCheckReq")
    ongoing = exi.encode("iso20-dc", dc.DC_CableCheckResType(Header=head, ResponseCode="OK", EVSEProcessing="Ongoing"))
    car.handle(ongoing, 0.0)
    with pytest.raises(SessionFailed, match="cable check not finished within 40 s: DC_CableCheckRes "
                                            "EVSEProcessing Ongoing"):
        car.handle(ongoing, 41.0)
