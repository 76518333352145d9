"""The charger acts mid-session through its controller, in every protocol (in memory, simulated cars):
a stop reaches DIN and -2 cars as EVSENotification StopCharging and -20 cars as Terminate, and each car
stops cleanly with the power off; a new limit reaches a -2 car as ReNegotiation and the new schedule
bounds its power. And the DIN/-2 current demand obeys the charger's power and the car's voltage limits
(they used to be ignored there while -20 enforced them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

import exi
from edge.controller import ChargingController, PowerCommand
from edge.ev import request_payload_type
from edge.ev.base import SimulatedCar
from edge.ev.din import DinCar
from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20DcCar
from edge.hardware import DcLimits, SimulatedCharger
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.din.session import DinSession
from edge.v2g.v2gtp import V2gtpMessage
from exi.model import din_msgbody as b
from exi.model import din_msgdatatypes as t
from exi.model.din_msgdef import BodyType, V2G_Message
from exi.model.din_msgheader import MessageHeaderType
from tests.inmemory import run

CARS: dict[str, Callable[[], SimulatedCar]] = {
    "din": lambda: DinCar(soc=40, target_soc=90),
    "iso2 dc": lambda: Iso2Car(soc=40, target_soc=90),
    "iso2 ac": lambda: Iso2Car(mode="ac", soc=40, target_soc=90),
    "iso20 dc": lambda: Iso20DcCar(soc=40, target_soc=90),
}


@pytest.mark.parametrize("name", sorted(CARS))
def test_a_charger_initiated_stop_ends_the_session_cleanly(name: str) -> None:
    car = CARS[name]()
    controller = ChargingController()
    hw = SimulatedCharger(isolation_s=0.2)
    conn = ChargerConnection(hw, config=EvseConfig(controller=controller))
    asked_at: list[float] = []

    def stop_after_a_while(now: float) -> None:
        if conn.session is not None and hw.closed and not asked_at and now > 3.0:
            controller.request_stop("the CSMS ended the transaction")
            asked_at.append(now)

    end = run(car, conn, each=stop_after_a_while)
    assert asked_at and end - asked_at[0] < 30, "the car did not stop soon after the charger asked"
    assert car.stopped_cleanly and any("asked to stop" in n for n in car.notes), car.notes
    assert conn.session is not None and conn.session.state == "stopped"
    assert not hw.closed and hw.target_i == 0 and car.soc < 90  # stopped early, power off


def test_more_power_reaches_a_iso2_car_as_renegotiation_and_its_new_schedule() -> None:
    car = Iso2Car(soc=40, target_soc=41)
    controller = ChargingController(limit=PowerCommand(max_w=10_000))
    hw = SimulatedCharger(isolation_s=0.2)
    conn = ChargerConnection(hw, config=EvseConfig(controller=controller))

    def raise_the_limit(now: float) -> None:
        if hw.closed and controller.revision == 0 and now > 3.0:
            controller.set_command(PowerCommand(max_w=40_000))

    run(car, conn, each=raise_the_limit)
    assert car.renegotiations == 1 and any("renegotiation" in n for n in car.notes)
    assert car.stopped_cleanly and conn.session.schedule_pmax == 40_000


def test_a_lower_limit_bounds_a_iso2_car_at_once_without_renegotiation() -> None:
    car = Iso2Car(soc=40, target_soc=41)
    controller = ChargingController()
    hw = SimulatedCharger(isolation_s=0.2)
    conn = ChargerConnection(hw, config=EvseConfig(controller=controller))
    powers: list[float] = []

    def lower_the_limit(now: float) -> None:
        if hw.closed and controller.revision == 0 and now > 3.0:
            controller.set_command(PowerCommand(max_w=10_000))
        elif controller.revision and hw.closed:
            powers.append(hw.target_v * hw.target_i)

    run(car, conn, each=lower_the_limit)
    assert car.renegotiations == 0 and car.stopped_cleanly
    assert powers and max(powers[1:]) <= 10_000 * 1.01


class ScriptedDinCar:
    """DIN requests written out by hand against a session (what a real car would not send is the point)."""

    STATUS = t.DC_EVStatusType(True, None, None, "NO_ERROR", 50)

    def __init__(self, s: DinSession) -> None:
        self.s, self.pv = s, s.pv
        s.handle(0x8001, exi.encode("din", V2G_Message(MessageHeaderType(b"\x00"), BodyType(
            SessionSetupReq=b.SessionSetupReqType(b"\x01" * 6)))), 0.0)

    def req(self, now: float, **body: Any) -> tuple[Any, bool]:
        message = V2G_Message(MessageHeaderType(self.s.session_id), BodyType(**body))
        _, out, end = self.s.handle(0x8001, exi.encode("din", message), now)
        return getattr(exi.decode("din", out).Body, next(iter(body)).replace("Req", "Res")), end

    def to_pre_charge(self, max_voltage: float) -> None:
        """Discovery to cable check, the car taking at most ``max_voltage``."""
        status, pv = self.STATUS, self.pv
        self.req(0.1, ServiceDiscoveryReq=b.ServiceDiscoveryReqType())
        self.req(0.2, ServicePaymentSelectionReq=b.ServicePaymentSelectionReqType(
            "ExternalPayment", t.SelectedServiceListType([t.SelectedServiceType(1)])))
        self.req(0.3, ContractAuthenticationReq=b.ContractAuthenticationReqType())
        param = t.DC_EVChargeParameterType(status, pv(300, "A"), None, pv(max_voltage, "V"))
        self.req(0.4, ChargeParameterDiscoveryReq=b.ChargeParameterDiscoveryReqType(
            "DC_extended", DC_EVChargeParameter=param))
        self.req(0.5, CableCheckReq=b.CableCheckReqType(status))

    def power_on(self, now: float) -> None:
        ready = t.DC_EVPowerDeliveryParameterType(self.STATUS, None, True)
        self.req(now, PowerDeliveryReq=b.PowerDeliveryReqType(True, None, ready))

    def demand(self, now: float, voltage: float, current: float) -> tuple[Any, bool]:
        return self.req(now, CurrentDemandReq=b.CurrentDemandReqType(
            self.STATUS, self.pv(current, "A"), ChargingComplete=False, EVTargetVoltage=self.pv(voltage, "V")))


def test_din_current_demand_obeys_the_chargers_power_and_the_cars_voltage() -> None:
    """A car asking for more than the charger's power at more than its own maximum voltage gets neither
    (DIN/-2 used to pass the target current through up to the charger's current limit, and the voltage
    up to the charger's maximum)."""
    hw = SimulatedCharger(limits=DcLimits(max_voltage=500, max_current=200, max_power=20_000), isolation_s=0.0)
    car = ScriptedDinCar(DinSession(hw))
    car.to_pre_charge(max_voltage=400)
    res, _ = car.req(0.6, PreChargeReq=b.PreChargeReqType(car.STATUS, car.pv(450, "V"), car.pv(2, "A")))
    assert res.ResponseCode == "OK" and hw.target_v == 400  # pre-charge: the car's maximum, not its target
    car.power_on(0.7)
    res, _ = car.demand(0.8, voltage=450, current=150)
    assert res.ResponseCode == "OK" and hw.target_v == 400
    assert hw.target_i * 400 <= 20_000 * 1.001 and res.EVSEPowerLimitAchieved


def test_iso2_current_demand_obeys_the_controllers_limit() -> None:
    car = Iso2Car(soc=40, target_soc=40.5)
    controller = ChargingController(limit=PowerCommand(max_w=15_000))
    hw = SimulatedCharger(isolation_s=0.2)
    conn = ChargerConnection(hw, config=EvseConfig(controller=controller))
    seen: list[float] = []
    run(car, conn, each=lambda now: seen.append(hw.target_i * max(hw.target_v, 1.0)) if hw.closed else None)
    assert car.stopped_cleanly and seen and max(seen) <= 15_000 * 1.01


def test_a_car_that_ignores_the_chargers_stop_is_cut_off_after_notification_max_delay() -> None:
    """StopCharging says NotificationMaxDelay; a car still in the loop after it gets FAILED (its current
    was 0 from the first notification on)."""
    from edge.v2g.timers import DIN as DIN_TIMERS

    controller = ChargingController()
    hw = SimulatedCharger(isolation_s=0.0)
    s = DinSession(hw, controller=controller, timers=dataclasses.replace(DIN_TIMERS, notification_max_delay=2.0))
    car = ScriptedDinCar(s)
    car.to_pre_charge(max_voltage=400)
    car.req(0.6, PreChargeReq=b.PreChargeReqType(car.STATUS, car.pv(380, "V"), car.pv(2, "A")))
    car.power_on(0.7)
    res, end = car.demand(0.8, 380, 50)
    assert res.DC_EVSEStatus.EVSENotification == "None" and hw.target_i == 50
    controller.request_stop("the CSMS ended the transaction")
    res, end = car.demand(1.0, 380, 50)
    assert res.DC_EVSEStatus.EVSENotification == "StopCharging" and res.DC_EVSEStatus.NotificationMaxDelay == 2
    assert hw.target_i == 0 and not end
    res, end = car.demand(2.9, 380, 50)  # within the delay: still told, still no current
    assert res.DC_EVSEStatus.EVSENotification == "StopCharging" and not end and hw.target_i == 0
    res, end = car.demand(3.1, 380, 50)  # past it: cut off
    assert res.ResponseCode == "FAILED" and end and not hw.closed
    assert any("ignored the charger's stop" in n for n in s.notes)


def test_a_stop_request_concerns_the_sessions_alive_then_not_the_next_car() -> None:
    """The charger asked to stop while a car was in its session; that car left before charging. The
    next car charges normally (the request was not about it); a stranger's end resets nothing."""
    controller = ChargingController()
    hw = SimulatedCharger(isolation_s=0.2)
    config = EvseConfig(controller=controller)
    first = ChargerConnection(hw, config=config)
    car = DinCar(soc=40, target_soc=40.2)
    request = car.start()
    response = first.handle(V2gtpMessage(request_payload_type(car), request), 0.1)
    request = car.handle(response.payload, 0.1)
    controller.request_stop("the CSMS cancelled the reservation")
    first.connection_lost("closed by the car")  # gone before any power
    assert controller.stop_reason is not None  # a session that never had power does not reset the controller
    second = DinCar(soc=40, target_soc=40.2)
    run(second, ChargerConnection(hw, config=config), now=1.0)
    assert second.stopped_cleanly and not any("asked to stop" in n for n in second.notes)
    assert second.soc >= 40.2
