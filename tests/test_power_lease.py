"""One car owns the power: the charging point's power lease and watchdog (sans-IO, time as a number).

The shells and the attacks over real sockets are in tests/test_attacks.py."""

from __future__ import annotations

import logging

import pytest

import exi
from edge.chargingpoint import ChargingPoint, PowerLeaseRefused
from edge.ev import request_payload_type
from edge.ev.base import SessionFailed, SimulatedCar
from edge.ev.din import DinCar
from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20DcCar
from edge.hardware import SimulatedCharger
from edge.logs import RateLimitedLog
from edge.v2g.admission import ConnectionAdmission
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.din.session import DinSession
from edge.v2g.timers import PowerSafetyTimers
from edge.v2g.v2gtp import V2gtpMessage
from exi.model import din_msgbody as b
from exi.model import din_msgdatatypes as t
from exi.model.din_msgdef import BodyType, V2G_Message
from exi.model.din_msgheader import MessageHeaderType
from tests.inmemory import run

CARS = {
    "din": lambda: DinCar(soc=40, target_soc=40.6),
    "iso2": lambda: Iso2Car(soc=40, target_soc=40.6),
    "iso20": lambda: Iso20DcCar(soc=40, target_soc=40.6),
}


def drive_until_closed(car: SimulatedCar, conn: ChargerConnection, now: float) -> str:
    """A second car's session on another connection, as far as the charger lets it go: the last
    request and how it ended."""
    request: bytes | None = car.start()
    while request is not None:
        response = conn.handle(V2gtpMessage(request_payload_type(car), request), now)
        if response is None:
            return f"closed after {car.log[-1]}"
        try:
            request = car.handle(response.payload, now)
        except SessionFailed as e:
            return str(e)
    return "stopped"


@pytest.mark.parametrize("protocol", sorted(CARS))
def test_other_connections_cannot_cut_or_take_the_power(protocol: str) -> None:
    """Mid-charge, on the same charging point: a connection that ends without a session (TCP
    connect+close, a TLS handshake and close, an idle timeout), one that ends after SessionSetup,
    and a second car that asks for power. The charging car keeps its power and finishes."""
    hw = SimulatedCharger(isolation_s=0.3)
    config = EvseConfig()
    car = CARS[protocol]()
    conn = ChargerConnection(hw, config=config)
    seen: list[tuple[float, float]] = []
    intruders: list[str] = []

    def mid_charge(now: float) -> None:
        if not car.in_charge_loop:
            return
        seen.append((now, hw.energy_wh()))
        if intruders:
            assert hw.closed, "an intruder cut the charging car's power"
            return
        for reason in ("closed by the car", "sequence timeout: no request", "TLS handshake failed"):
            ChargerConnection(hw, config=config).connection_lost(reason)
        half = ChargerConnection(hw, config=config)
        intruders.append(drive_until_closed(CARS[protocol](), half, now))  # the second car: refused power
        half.connection_lost("closed by the car")
        assert hw.closed and config.point.holder is conn.power

    run(car, conn, each=mid_charge)
    assert intruders and "CableCheckRes failed: FAILED" in intruders[0], intruders
    assert car.stopped_cleanly and car.soc >= 40.6
    energies = [wh for _, wh in seen]
    assert energies[-1] > energies[0] and energies == sorted(energies)  # kept rising through the intrusions
    assert not hw.closed and config.point.holder is None


def test_a_refused_session_says_why_and_leaves_no_trace_on_the_power() -> None:
    hw = SimulatedCharger()
    point = ChargingPoint(hw, "cp1")
    owner, other = point.lease("owner"), point.lease("other")
    owner.update(1.0)
    owner.start_isolation_check()
    owner.set_contactors(True)
    owner.set_dc_target(400, 100)
    with pytest.raises(PowerLeaseRefused, match="belongs to owner"):
        other.set_contactors(True)
    with pytest.raises(PowerLeaseRefused):
        other.set_dc_target(10, 0)
    with pytest.raises(PowerLeaseRefused):
        other.set_ac_current_limit(16)
    with pytest.raises(PowerLeaseRefused):
        other.start_isolation_check()
    # its "off" commands and its end are no-ops for the owner's power
    other.set_contactors(False)
    other.set_dc_target(0, 0)
    other.set_ac_current_limit(0)
    other.release("connection ended")
    assert hw.closed and (hw.target_v, hw.target_i) == (400, 100) and point.holder is owner
    owner.release("session ended")
    assert not hw.closed and hw.target_i == 0 and point.holder is None
    other.set_contactors(True)  # free now: the next session may take it
    assert point.holder is other and hw.closed


def test_din_power_delivery_again_after_stopping_is_refused() -> None:
    """The DIN defect: PowerDeliveryReq(ReadyToChargeState=true) after it had opened the contactors
    closed them again with no new cable check or pre-charge."""
    hw = SimulatedCharger(isolation_s=0.0)
    s = DinSession(hw)

    def req(now: float, **body) -> tuple[str, bool]:
        message = V2G_Message(MessageHeaderType(s.session_id), BodyType(**body))
        _, out, end = s.handle(0x8001, exi.encode("din", message), now)
        body_out = exi.decode("din", out).Body
        res = getattr(body_out, next(iter(body)).replace("Req", "Res"))
        return res.ResponseCode, end

    status = t.DC_EVStatusType(True, None, None, "NO_ERROR", 50)
    pv = s.pv
    s.handle(0x8001, exi.encode("din", V2G_Message(MessageHeaderType(b"\x00"), BodyType(
        SessionSetupReq=b.SessionSetupReqType(b"\x01" * 6)))), 0.0)
    assert req(0.1, ServiceDiscoveryReq=b.ServiceDiscoveryReqType())[0] == "OK"
    assert req(0.2, ServicePaymentSelectionReq=b.ServicePaymentSelectionReqType(
        "ExternalPayment", t.SelectedServiceListType([t.SelectedServiceType(1)])))[0] == "OK"
    assert req(0.3, ContractAuthenticationReq=b.ContractAuthenticationReqType())[0] == "OK"
    param = t.DC_EVChargeParameterType(status, pv(100, "A"), None, pv(450, "V"))
    assert req(0.4, ChargeParameterDiscoveryReq=b.ChargeParameterDiscoveryReqType(
        "DC_extended", DC_EVChargeParameter=param))[0] == "OK"
    assert req(0.5, CableCheckReq=b.CableCheckReqType(status))[0] == "OK"
    assert req(0.6, PreChargeReq=b.PreChargeReqType(status, pv(380, "V"), pv(2, "A")))[0] == "OK"
    ready = t.DC_EVPowerDeliveryParameterType(status, None, True)
    assert req(0.7, PowerDeliveryReq=b.PowerDeliveryReqType(True, None, ready))[0] == "OK" and hw.closed
    assert req(0.8, PowerDeliveryReq=b.PowerDeliveryReqType(False, None, ready))[0] == "OK" and not hw.closed
    code, end = req(0.9, PowerDeliveryReq=b.PowerDeliveryReqType(True, None, ready))
    assert (code, end) == ("FAILED_SequenceError", True) and not hw.closed
    # after a failure the session is over, whatever its state allowed before (the shell's flag hid this)
    assert req(1.0, WeldingDetectionReq=b.WeldingDetectionReqType(status)) == ("FAILED_SequenceError", True)
    assert req(1.1, SessionStopReq=b.SessionStopType()) == ("FAILED_SequenceError", True)


def charging(timers: PowerSafetyTimers | None = None) -> tuple[SimulatedCharger, ChargingPoint, DinCar,
                                                                  ChargerConnection, float]:
    """A DIN car in its charge loop at about 100 A; returns the simulated time of its last request."""
    hw = SimulatedCharger(isolation_s=0.2, current_tau=0.1)
    point = ChargingPoint(hw, "cp1", timers or PowerSafetyTimers())
    conn = ChargerConnection(hw, config=EvseConfig(point=point))
    car = DinCar(soc=40, target_soc=90)
    request: bytes | None = car.start()
    now = 0.0
    while not (car.in_charge_loop and hw.present()[1] > 90):
        now += 0.05
        assert point.check(now) is None or now < point.check(now)  # the watchdog never trips a live car
        response = conn.handle(V2gtpMessage(request_payload_type(car), request), now)
        request = car.handle(response.payload, now)
        assert now < 30
    return hw, point, car, conn, now


def test_the_watchdog_ramps_down_and_opens_when_the_car_goes_silent(caplog) -> None:
    caplog.set_level(logging.INFO, "edge.power")
    hw, point, car, conn, last = charging()
    assert point.check(last + 0.5) == pytest.approx(last + 1.0)  # armed: wake at the limit
    assert hw.closed and point.check(last + 0.99) is not None and hw.closed
    wake = point.check(last + 1.0)  # tripped: current target 0, contactors still closed while it falls
    assert hw.target_i == 0 and hw.closed and wake is not None and wake <= last + 1.0 + 0.02
    t = last + 1.0
    while wake is not None:
        t = wake
        wake = point.check(t)
    assert not hw.closed and hw.present()[1] == 0 and point.holder is None and point.trips == 1
    assert t <= last + 1.0 + PowerSafetyTimers().ramp_down + 1e-9  # open within the ramp-down time
    messages = [r.getMessage() for r in caplog.records]
    assert any("no valid message" in m and "during energy transfer" in m for m in messages)
    assert any("contactors open (watchdog" in m for m in messages)
    # the session still waits for its sequence timeout; the car's next request gets no power back
    assert not conn.session.done
    response = conn.handle(V2gtpMessage(request_payload_type(car), _current_demand(conn)), t + 0.1)
    res = exi.decode("din", response.payload).Body.CurrentDemandRes
    assert res.ResponseCode == "FAILED" and conn.session.done and not hw.closed
    assert "watchdog" in conn.session.notes[-1]


def _current_demand(conn: ChargerConnection) -> bytes:
    status = t.DC_EVStatusType(True, None, None, "NO_ERROR", 50)
    pv = conn.session.pv
    return exi.encode("din", V2G_Message(MessageHeaderType(conn.session.session_id), BodyType(
        CurrentDemandReq=b.CurrentDemandReqType(status, pv(100, "A"), None, None, None, None, False, None, None,
                                                pv(400, "V")))))


def test_the_watchdog_opens_after_the_ramp_time_even_if_the_current_does_not_fall() -> None:
    hw, point, _, _, last = charging(PowerSafetyTimers(ramp_down=0.3))
    hw.current_tau = 1e9  # a power module that does not follow its target
    t, wake = last + 1.0, point.check(last + 1.0)
    while wake is not None:
        t, wake = wake, point.check(wake)
    assert not hw.closed and t == pytest.approx(last + 1.3)


def test_the_watchdog_can_be_off() -> None:
    hw, point, _, _, last = charging(PowerSafetyTimers(communication_watchdog=None))
    assert point.check(last + 100) is None and hw.closed  # off: only the session's timers apply


def test_shutdown_switches_everything_off_with_one_line(caplog) -> None:
    caplog.set_level(logging.INFO, "edge.power")
    hw, point, _, conn, _ = charging()
    point.shutdown("SIGTERM received")
    assert not hw.closed and hw.present()[1] == 0 and point.holder is None and conn.power.revoked
    lines = [r.getMessage() for r in caplog.records if "SIGTERM" in r.getMessage()]
    assert any(line.startswith("cp1: power off (SIGTERM received)") for line in lines)
    assert any("contactors open (SIGTERM received)" in line for line in lines)
    with pytest.raises(PowerLeaseRefused):
        conn.power.set_contactors(True)


def test_every_contactor_change_is_one_info_line(caplog) -> None:
    caplog.set_level(logging.INFO, "edge.power")
    hw = SimulatedCharger()
    config = EvseConfig()
    run(DinCar(soc=40, target_soc=40.3), ChargerConnection(hw, config=config))
    lines = [r.getMessage() for r in caplog.records if "contactors" in r.getMessage()]
    assert len(lines) == 2 and "closed" in lines[0] and "open" in lines[1], lines
    assert all(line.startswith("evse: contactors") and "connection #1" in line for line in lines)


def test_a_car_gone_mid_charge_is_the_reason_in_the_contactor_line(caplog) -> None:
    caplog.set_level(logging.INFO, "edge.power")
    hw, point, _, conn, _ = charging()
    conn.connection_lost("connection broken: [Errno 104] Connection reset by peer")
    assert not hw.closed and point.holder is None
    lines = [r.getMessage() for r in caplog.records if "contactors open" in r.getMessage()]
    assert lines == ["cp1: contactors open (connection ended: connection broken: [Errno 104] Connection reset by "
                     "peer)"]


def test_admission_evicts_idle_connections_first_and_never_a_session() -> None:
    evicted: list[str] = []
    adm = ConnectionAdmission(max_connections=3, max_per_peer=2)
    a1, _ = adm.admit("fe80::a", 0.0, lambda: evicted.append("a1"))
    a1.in_session = lambda: True
    adm.admit("fe80::a", 1.0, lambda: evicted.append("a2"))
    a3, done = adm.admit("fe80::a", 2.0, lambda: evicted.append("a3"))  # per peer: a2 (no session) goes
    assert evicted == ["a2"] and a3 is not None and len(done) == 1
    b1, _ = adm.admit("fe80::b", 3.0, lambda: evicted.append("b1"))  # 3 in total now
    b2, _ = adm.admit("fe80::b", 4.0, lambda: evicted.append("b2"))  # total cap: oldest idle is a3
    assert evicted == ["a2", "a3"] and b2 is not None
    for slot in (b1, b2):
        slot.in_session = lambda: True
    refused, _ = adm.admit("fe80::c", 5.0, lambda: evicted.append("c1"))
    assert refused is None and adm.refused == 1 and evicted == ["a2", "a3"]  # all in session: refuse the new one
    adm.leave(b1)
    c1, _ = adm.admit("fe80::c", 6.0, lambda: None)
    assert c1 is not None and len(adm.slots) == 3


def test_rate_limited_log_counts_what_it_drops(caplog) -> None:
    now = [0.0]
    quiet = RateLimitedLog(logging.getLogger("edge.test"), burst=3, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "edge.test"):
        written = [quiet.info("datagram %d", i) for i in range(10_000)]
        now[0] = 10.0
        quiet.info("one more")
    assert sum(written) == 3 and len(caplog.records) == 4
    assert "9997 more like it" in caplog.records[-1].getMessage() and quiet.total_suppressed == 9997


@pytest.mark.parametrize("phase", ["CableCheckReq", "PreChargeReq"])
def test_a_car_silent_during_cable_check_or_pre_charge_loses_the_output(phase: str) -> None:
    """Before energy transfer the output carries the isolation test voltage or the pre-charge voltage with
    the contactors open; a car that goes silent there used to keep it up for the 60 s sequence timeout."""
    hw = SimulatedCharger(isolation_s=0.5, voltage_tau=0.1)
    point = ChargingPoint(hw, "cp1", PowerSafetyTimers(energized_watchdog=5.0))
    conn = ChargerConnection(hw, config=EvseConfig(point=point))
    car = DinCar(soc=40, target_soc=90)
    request: bytes | None = car.start()
    now = 0.0
    while request is not None and (not car.log or car.log[-1] != phase):
        now += 0.05
        response = conn.handle(V2gtpMessage(request_payload_type(car), request), now)
        assert response is not None
        request = car.handle(response.payload, now)
    now += 0.05  # the charger answers the phase's first request; the car's next one never comes
    response = conn.handle(V2gtpMessage(request_payload_type(car), request), now)
    request = car.handle(response.payload, now)
    assert point.energized and point.holder is conn.power and not hw.closed
    assert point.check(now + 4.95) == pytest.approx(now + 5.0)  # not yet: the car may still come back
    assert point.check(now + 1.0) == pytest.approx(now + 1.1)  # and the guard looks again soon (contactors?)
    assert point.check(now + 5.01) is None
    assert not point.energized and point.holder is None and hw.target_v == 0 and point.trips == 1
    response = conn.handle(V2gtpMessage(request_payload_type(car), request), now + 6)  # the car wakes up
    assert response is not None and car_response_code(response.payload) == "FAILED"


def car_response_code(payload: bytes) -> str:
    body = exi.decode("din", payload).Body
    res = next(getattr(body, f) for f in body.__dataclass_fields__ if getattr(body, f) is not None)
    return str(res.ResponseCode)
