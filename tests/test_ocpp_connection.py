"""The OCPP-J connection shell over a real WebSocket on loopback, against a small CSMS written here with
trio-websocket: the subprotocol the CSMS picks, a CALL and its answer, the CSMS's CALL answered by the
handler (and a handler bug answered InternalError), malformed CSMS frames answered without dropping the
connection, a call timeout, and a CSMS that picks no OCPP version refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from edge.ocpp.connection import CallRefused, NoCommonSubprotocol, OcppCallFailed, connect


async def start_csms(nursery: trio.Nursery, script, pick: str | None = "ocpp2.0.1") -> int:
    """A CSMS on ::1 that accepts with subprotocol ``pick`` and runs ``script(ws)``; returns its port."""
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept(subprotocol=pick)
        await script(ws)

    server = await nursery.start(serve_websocket, handler, "::1", 0, None)
    return server.port


async def test_calls_both_ways_and_bad_frames_from_the_csms() -> None:
    seen: list[Any] = []

    async def csms(ws) -> None:
        boot = json.loads(await ws.get_message())
        seen.append(boot)
        await ws.send_message(json.dumps([3, boot[1], {"status": "Accepted", "interval": 300,
                                                        "currentTime": "2026-12-04T00:00:00Z"}]))
        for bad in ("not json", '[2, "x"]', '[9, "y", "A", {}]'):  # each answered, the connection stays up
            await ws.send_message(bad)
            seen.append(json.loads(await ws.get_message()))
        await ws.send_message('[2, "c1", "Reset", {"type": "Immediate"}]')
        seen.append(json.loads(await ws.get_message()))
        await ws.send_message('[2, "c2", "UnlockConnector", {"evseId": 1, "connectorId": 1}]')
        seen.append(json.loads(await ws.get_message()))
        await ws.send_message('[2, "c3", "DataTransfer", {"vendorId": "x"}]')
        seen.append(json.loads(await ws.get_message()))
        await ws.aclose()

    async def station_handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "Reset":
            return {"status": "Accepted"}
        if action == "DataTransfer":
            raise CallRefused("NotImplemented", "no vendor extensions")
        raise RuntimeError("a bug in the station")

    async with trio.open_nursery() as nursery:
        port = await start_csms(nursery, csms)
        with trio.fail_after(10):
            async with connect(f"ws://[::1]:{port}/CS001") as conn:
                assert conn.version == "ocpp2.0.1"
                async with trio.open_nursery() as inner:
                    inner.start_soon(conn.serve, station_handler)
                    answer = await conn.call("BootNotification", {"reason": "PowerUp", "chargingStation": {
                        "model": "edge", "vendorName": "edge"}})
                    assert answer["status"] == "Accepted"
        nursery.cancel_scope.cancel()
    assert seen[0][0] == 2 and seen[0][2] == "BootNotification"
    assert [frame[:3] for frame in seen[1:4]] == [[4, "-1", "RpcFrameworkError"], [4, "x", "RpcFrameworkError"],
                                                 [4, "y", "MessageTypeNotSupported"]]
    assert seen[4] == [3, "c1", {"status": "Accepted"}]
    assert seen[5][:3] == [4, "c2", "InternalError"]  # our bug: answered, logged, the connection lives on
    assert seen[6][:3] == [4, "c3", "NotImplemented"]
    assert conn.violations == 3


async def test_a_call_without_answer_times_out(autojump_clock: trio.abc.Clock) -> None:
    async def silent_csms(ws) -> None:
        await ws.get_message()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await start_csms(nursery, silent_csms)
        async with connect(f"ws://[::1]:{port}/CS001", call_timeout=5) as conn:
            nursery.start_soon(conn.serve, lambda action, payload: None)
            start = trio.current_time()
            with pytest.raises(OcppCallFailed, match="Timeout"):
                await conn.call("Heartbeat", {})
            assert trio.current_time() - start == pytest.approx(5)
        nursery.cancel_scope.cancel()


async def test_a_csms_that_picks_no_ocpp_version_is_refused() -> None:
    async def csms(ws) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await start_csms(nursery, csms, pick=None)
        with pytest.raises(NoCommonSubprotocol), trio.fail_after(10):
            async with connect(f"ws://[::1]:{port}/CS001"):
                pass
        nursery.cancel_scope.cancel()


async def test_a_call_fails_at_once_when_the_csms_closes_the_connection() -> None:
    async def closing_csms(ws) -> None:
        await ws.get_message()
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        port = await start_csms(nursery, closing_csms)
        with trio.fail_after(10):
            async with connect(f"ws://[::1]:{port}/CS001", call_timeout=300) as conn:
                nursery.start_soon(conn.serve, lambda action, payload: None)
                with pytest.raises(OcppCallFailed, match="ConnectionClosed"):
                    await conn.call("Heartbeat", {})
        nursery.cancel_scope.cancel()
