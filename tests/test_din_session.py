"""DIN SPEC 70121 DC: the charger's session against the simulated car, in memory and over TCP."""

from __future__ import annotations

import pytest
import trio

import exi
from edge.ev.din import DinCar
from edge.hardware import SimulatedCharger
from edge.v2g.charger import ChargerConnection
from edge.v2g.din.session import NEXT, DinSession
from edge.v2g.server import serve_tcp
from edge.v2g.v2gtp import PayloadType, V2gtpDecoder, frame
from exi.model import din_msgbody as b
from exi.model import din_msgdatatypes as t
from exi.model.din_msgdef import BodyType, V2G_Message
from exi.model.din_msgheader import MessageHeaderType
from tests.inmemory import run


def run_in_memory(car: DinCar, hardware: SimulatedCharger) -> ChargerConnection:
    conn = ChargerConnection(hardware)
    run(car, conn)
    return conn


def test_full_dc_session_in_memory() -> None:
    hw = SimulatedCharger()
    car = DinCar(soc=40, target_soc=40.5)
    conn = run_in_memory(car, hw)
    assert car.stopped_cleanly and conn.session.done
    assert car.soc >= 40.5 and car.energy_wh > 0.004 * car.capacity_wh
    assert hw.energy_wh() == pytest.approx(car.energy_wh, rel=0.2)  # meter and car agree roughly
    assert not hw.closed and hw.target_i == 0  # contactors open, power 0 after the session
    for step in ("CableCheckReq", "PreChargeReq", "PowerDeliveryReq", "CurrentDemandReq", "WeldingDetectionReq",
                 "SessionStopReq"):
        assert step in car.log
    assert car.log.count("CableCheckReq") > 1  # isolation check took its time (EVSEProcessing Ongoing)
    assert max(conn.session.stats["CurrentDemandReq"]) < 0.025 * 4  # generous: CI machines are slow


def _din(session_id: bytes, **body) -> bytes:
    return exi.encode("din", V2G_Message(MessageHeaderType(session_id), BodyType(**body)))


def test_wrong_order_is_a_sequence_error_and_ends_the_session() -> None:
    s = DinSession(SimulatedCharger())
    _, out, end = s.handle(0x8001, _din(b"\x00", SessionSetupReq=b.SessionSetupReqType(b"\x01" * 6)), 0.1)
    sid = exi.decode("din", out).Header.SessionID
    status = t.DC_EVStatusType(True, None, None, "NO_ERROR", 50)
    _, out, end = s.handle(0x8001, _din(sid, CableCheckReq=b.CableCheckReqType(status)), 0.2)
    res = exi.decode("din", out).Body.CableCheckRes
    assert res.ResponseCode == "FAILED_SequenceError" and end


def test_unknown_session_id() -> None:
    s = DinSession(SimulatedCharger())
    s.handle(0x8001, _din(b"\x00", SessionSetupReq=b.SessionSetupReqType(b"\x01" * 6)), 0.1)
    _, out, end = s.handle(0x8001, _din(b"\x99" * 8, ServiceDiscoveryReq=b.ServiceDiscoveryReqType()), 0.2)
    assert exi.decode("din", out).Body.ServiceDiscoveryRes.ResponseCode == "FAILED_UnknownSession" and end


def test_malformed_exi_ends_without_a_response() -> None:
    s = DinSession(SimulatedCharger())
    assert s.handle(0x8001, b"\x80\xff\xff", 0.1)[1:] == (None, True)


def test_sequence_table_covers_every_state() -> None:
    targets = {n for allowed in NEXT.values() for n in allowed}
    for name in targets:
        assert hasattr(DinSession, "_" + name), name


async def test_dc_session_over_tcp_and_the_charger_keeps_serving() -> None:
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp, 0, lambda: ChargerConnection(hw))
        for _ in range(2):  # two cars, one after the other
            car = DinCar(soc=50, target_soc=50.02)
            stream = await trio.open_tcp_stream("::1", port)
            decoder = V2gtpDecoder()
            request = car.start()
            with trio.fail_after(30):
                while request is not None:
                    await stream.send_all(frame(PayloadType.EXI, request))
                    messages = []
                    while not messages:
                        messages = decoder.feed(await stream.receive_some(65536))
                    await trio.sleep(0.01)
                    request = car.handle(messages[0].payload, trio.current_time())
            await stream.aclose()
            assert car.stopped_cleanly and car.energy_wh > 0
        nursery.cancel_scope.cancel()


async def test_car_disconnecting_mid_charge_leaves_no_power_flowing() -> None:
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    conns: list[ChargerConnection] = []

    def factory() -> ChargerConnection:
        conns.append(ChargerConnection(hw))
        return conns[-1]

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp, 0, factory)
        car = DinCar(soc=50, target_soc=90)
        stream = await trio.open_tcp_stream("::1", port)
        decoder = V2gtpDecoder()
        request = car.start()
        with trio.fail_after(30):
            while car.log.count("CurrentDemandReq") < 5:
                await stream.send_all(frame(PayloadType.EXI, request))
                messages = []
                while not messages:
                    messages = decoder.feed(await stream.receive_some(65536))
                await trio.sleep(0.01)
                request = car.handle(messages[0].payload, trio.current_time())
        assert hw.closed and hw.target_i > 0  # charging
        await stream.aclose()  # the car goes away mid-charge
        with trio.fail_after(5):
            while conns[0].ended is None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert not hw.closed and hw.target_i == 0 and hw.target_v == 0
    assert conns[0].ended.startswith("aborted") and "closed by the car" in conns[0].ended
