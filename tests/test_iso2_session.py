"""ISO 15118-2 DC EIM: the charger's session against the simulated car, with a renegotiation."""

from __future__ import annotations

from typing import Any

import pytest

import exi
from edge.ev.iso2 import Iso2Car
from edge.hardware import SimulatedCharger
from edge.v2g import sap
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.iso2.session import Iso2Session, pv
from edge.v2g.v2gtp import PayloadType, V2gtpMessage
from exi.model import iso2_msgbody as b
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType
from tests.inmemory import run


def test_full_dc_session_with_a_renegotiation() -> None:
    hw = SimulatedCharger()
    car = Iso2Car(soc=40, target_soc=40.6, renegotiate_at_soc=40.3)
    conn = ChargerConnection(hw)
    run(car, conn)
    assert conn.protocol is sap.ISO2 and isinstance(conn.session, Iso2Session)
    assert car.stopped_cleanly and car.renegotiated and conn.session.renegotiations == 1
    assert car.soc >= 40.6 and car.energy_wh > 0 and not hw.closed
    i = car.log.index("PowerDeliveryReq", car.log.index("CurrentDemandReq"))  # the Renegotiate one
    assert car.log[i + 1] == "ChargeParameterDiscoveryReq" and car.log[i + 2] == "PowerDeliveryReq"
    assert car.log.count("CableCheckReq") >= 2 and car.log.count("PreChargeReq") >= 1


def test_din_is_chosen_when_iso2_is_disabled() -> None:
    conn = ChargerConnection(SimulatedCharger(), [sap.DIN])
    res = conn.handle(V2gtpMessage(PayloadType.EXI, Iso2Car().start()), 0.1)
    assert exi.decode("apphand", res.payload).SchemaID == 2 and conn.protocol is sap.DIN


def _iso2(sid: bytes, **body) -> bytes:
    return exi.encode("iso2", V2G_Message(MessageHeaderType(sid), BodyType(**body)))


def test_power_delivery_start_before_precharge_is_a_sequence_error() -> None:
    s = Iso2Session(SimulatedCharger())
    _, out, _ = s.handle(0x8001, _iso2(b"\x00", SessionSetupReq=b.SessionSetupReqType(b"\x01" * 6)), 0.1)
    sid = exi.decode("iso2", out).Header.SessionID
    _, out, end = s.handle(0x8001, _iso2(sid, PowerDeliveryReq=b.PowerDeliveryReqType("Start", 1)), 0.2)
    assert exi.decode("iso2", out).Body.PowerDeliveryRes.ResponseCode == "FAILED_SequenceError" and end


def test_cable_check_and_pre_charge_give_up_after_their_limits() -> None:
    from edge.v2g.timers import ISO2

    # an isolation monitor that never finishes: the charger ends the session after cable_check
    car = Iso2Car()
    conn = ChargerConnection(SimulatedCharger(isolation_s=1e9))
    now, request = 0.0, car.start()
    with pytest.raises(RuntimeError, match="CableCheckRes failed: FAILED"):
        while request is not None:
            now += 1.0
            request = car.handle(conn.handle(V2gtpMessage(PayloadType.EXI, request), now).payload, now)
    assert now > ISO2.cable_check and conn.session.done
    # a power module that cannot reach the car's voltage: pre-charge gives up after pre_charge
    car = Iso2Car(battery_voltage=480)
    conn = ChargerConnection(SimulatedCharger(isolation_s=0.5, voltage_tau=1e9))
    now, request = 0.0, car.start()
    with pytest.raises(RuntimeError, match="PreChargeRes failed: FAILED"):
        while request is not None:
            now += 0.5
            request = car.handle(conn.handle(V2gtpMessage(PayloadType.EXI, request), now).payload, now)
    assert conn.session.done and car.log.count("PreChargeReq") > ISO2.pre_charge / 0.5


def _to_cable_check(hw: SimulatedCharger) -> tuple[Any, Any]:
    from exi.model import iso2_msgdatatypes as t
    from tests.test_iso2_features import Car

    car = Car(Iso2Session(hw))
    car.setup()
    car.send("AuthorizationReq", b.AuthorizationReqType())
    status = t.DC_EVStatusType(True, "NO_ERROR", 50)
    dc = t.DC_EVChargeParameterType(None, status, pv(100, "A"), None, pv(420, "V"))
    assert car.send("ChargeParameterDiscoveryReq", b.ChargeParameterDiscoveryReqType(None, "DC_extended", None, dc)
                    ).ResponseCode == "OK"
    return car, status


def test_pre_charge_before_the_isolation_check_finished_is_refused() -> None:
    # a car that ignores CableCheckRes Ongoing (seen: Seres 3) gets no voltage and no contactors
    hw = SimulatedCharger(isolation_s=5.0)
    car, status = _to_cable_check(hw)
    assert car.send("CableCheckReq", b.CableCheckReqType(status)).EVSEProcessing == "Ongoing"
    res = car.send("PreChargeReq", b.PreChargeReqType(status, pv(380, "V"), pv(1, "A")))
    assert res.ResponseCode == "FAILED_SequenceError" and car.ended
    assert not hw.closed and hw.target_v == 0 and hw.target_i == 0


def test_isolation_fault_fails_the_cable_check_at_once() -> None:
    hw = SimulatedCharger()
    hw.isolation = lambda: "Fault"  # the monitor reports a fault
    car, status = _to_cable_check(hw)
    res = car.send("CableCheckReq", b.CableCheckReqType(status))
    assert res.ResponseCode == "FAILED" and car.ended and hw.target_v == 0 and not hw.closed


def test_response_times_are_logged_against_their_budgets(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from edge.v2g.timers import ISO2

    caplog.set_level(logging.DEBUG, logger="edge.v2g")
    hw = SimulatedCharger()
    conn = ChargerConnection(hw, config=EvseConfig(timers={"iso2": ISO2.with_overrides(default_performance=1e-9)}))
    car = Iso2Car(soc=40, target_soc=40.2)
    run(car, conn)
    conn.connection_lost("closed by the car")
    over = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "edge.v2g.budget"]
    assert any(m.startswith("SessionSetupReq answered in") and "over its 0 ms budget" in m for m in over)
    report = [r.getMessage() for r in caplog.records if r.name == "edge.v2g" and "response times" in r.getMessage()]
    assert len(report) == 1 and "iso2 session closed by the car" in report[0] and "CurrentDemandReq x" in report[0]
