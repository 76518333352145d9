"""ISO 15118-2 DC EIM: the charger's session against the simulated car, with a renegotiation."""

from __future__ import annotations

import pytest

import exi
from edge.ev.iso2 import Iso2DcCar
from edge.hardware import SimulatedDcCharger
from edge.v2g import sap
from edge.v2g.charger import ChargerConnection
from edge.v2g.iso2.session import Iso2DcSession
from edge.v2g.v2gtp import PayloadType, V2gtpMessage
from exi.model import iso2_msgbody as b
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType


def run(car: Iso2DcCar, conn: ChargerConnection) -> None:
    now, request = 0.0, car.start()
    while request is not None:
        assert now < 3600, "the session does not end"
        now += 0.1
        response = conn.handle(V2gtpMessage(PayloadType.EXI, request), now)
        assert response is not None, f"charger closed after {car.log[-1:]}"
        request = car.handle(response.payload, now + 0.05)


def test_full_dc_session_with_a_renegotiation() -> None:
    hw = SimulatedDcCharger()
    car = Iso2DcCar(soc=40, target_soc=40.6, renegotiate_at_soc=40.3)
    conn = ChargerConnection(hw)
    run(car, conn)
    assert conn.protocol is sap.ISO2 and isinstance(conn.session, Iso2DcSession)
    assert car.stopped_cleanly and car.renegotiated and conn.session.renegotiations == 1
    assert car.soc >= 40.6 and car.energy_wh > 0 and not hw.closed
    i = car.log.index("PowerDeliveryReq", car.log.index("CurrentDemandReq"))  # the Renegotiate one
    assert car.log[i + 1] == "ChargeParameterDiscoveryReq" and car.log[i + 2] == "PowerDeliveryReq"
    assert car.log.count("CableCheckReq") >= 2 and car.log.count("PreChargeReq") >= 1


def test_din_is_chosen_when_iso2_is_disabled() -> None:
    conn = ChargerConnection(SimulatedDcCharger(), [sap.DIN])
    res = conn.handle(V2gtpMessage(PayloadType.EXI, Iso2DcCar().start()), 0.1)
    assert exi.decode("apphand", res.payload).SchemaID == 2 and conn.protocol is sap.DIN


def _iso2(sid: bytes, **body) -> bytes:
    return exi.encode("iso2", V2G_Message(MessageHeaderType(sid), BodyType(**body)))


def test_power_delivery_start_before_precharge_is_a_sequence_error() -> None:
    s = Iso2DcSession(SimulatedDcCharger())
    out, _ = s.handle(_iso2(b"\x00", SessionSetupReq=b.SessionSetupReqType(b"\x01" * 6)), 0.1)
    sid = exi.decode("iso2", out).Header.SessionID
    out, end = s.handle(_iso2(sid, PowerDeliveryReq=b.PowerDeliveryReqType("Start", 1)), 0.2)
    assert exi.decode("iso2", out).Body.PowerDeliveryRes.ResponseCode == "FAILED_SequenceError" and end


def test_cable_check_and_pre_charge_give_up_after_their_limits() -> None:
    from edge.v2g.timers import ISO2

    # an isolation monitor that never finishes: the charger ends the session after cable_check
    car = Iso2DcCar()
    conn = ChargerConnection(SimulatedDcCharger(isolation_s=1e9))
    now, request = 0.0, car.start()
    with pytest.raises(RuntimeError, match="CableCheckRes failed: FAILED"):
        while request is not None:
            now += 1.0
            request = car.handle(conn.handle(V2gtpMessage(PayloadType.EXI, request), now).payload, now)
    assert now > ISO2.cable_check and conn.session.done
    # a power module that cannot reach the car's voltage: pre-charge gives up after pre_charge
    car = Iso2DcCar(battery_voltage=480)
    conn = ChargerConnection(SimulatedDcCharger(isolation_s=0.5, voltage_tau=1e9))
    now, request = 0.0, car.start()
    with pytest.raises(RuntimeError, match="PreChargeRes failed: FAILED"):
        while request is not None:
            now += 0.5
            request = car.handle(conn.handle(V2gtpMessage(PayloadType.EXI, request), now).payload, now)
    assert conn.session.done and car.log.count("PreChargeReq") > ISO2.pre_charge / 0.5
