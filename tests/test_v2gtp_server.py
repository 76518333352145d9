"""The V2GTP server shell over loopback: one send per response, errors close one connection only."""

from __future__ import annotations

import trio
import trio.testing

from edge.v2g.server import serve_tcp
from edge.v2g.v2gtp import HEADER_SIZE, PayloadType, V2gtpMessage, frame


class Echo:
    def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage | None:
        if message.payload == b"bye":
            return None
        if message.payload == b"boom":
            raise RuntimeError("bug in a session")
        return V2gtpMessage(message.payload_type, message.payload[::-1])


async def _connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("::1", port)


async def test_responses_are_single_writes_and_errors_stay_local() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp, 0, Echo)
        car = await _connect(port)
        # two requests in one segment, then one split across three
        await car.send_all(frame(PayloadType.EXI, b"abc") + frame(PayloadType.EXI, b"xyz"))
        got = b""
        while len(got) < 2 * (HEADER_SIZE + 3):
            got += await car.receive_some(100)
        assert got == frame(PayloadType.EXI, b"cba") + frame(PayloadType.EXI, b"zyx")
        msg = frame(PayloadType.EXI, b"hello")
        for part in (msg[:3], msg[3:9], msg[9:]):
            await car.send_all(part)
            await trio.sleep(0.01)
        assert await car.receive_some(100) == frame(PayloadType.EXI, b"olleh")  # one read, one message

        bad = await _connect(port)
        await bad.send_all(bytes([0x01, 0xFE, 0x80, 0x01, 0xFF, 0xFF, 0xFF, 0xFF]))  # 4 GB claimed
        assert await bad.receive_some(100) == b""  # closed at once

        buggy = await _connect(port)
        await buggy.send_all(frame(PayloadType.EXI, b"boom"))
        assert await buggy.receive_some(100) == b""

        # the first car is still served
        await car.send_all(frame(PayloadType.EXI, b"again"))
        assert await car.receive_some(100) == frame(PayloadType.EXI, b"niaga")
        await car.send_all(frame(PayloadType.EXI, b"bye"))
        assert await car.receive_some(100) == b""
        nursery.cancel_scope.cancel()


async def test_silent_car_hits_the_sequence_timeout() -> None:
    from edge.v2g.server import serve_connection

    left, right = trio.testing.memory_stream_pair()
    with trio.fail_after(2):
        why = await serve_connection(right, Echo(), idle_timeout=0.2)
    assert "sequence timeout" in why
    await left.aclose()


async def test_port_zero_is_a_dynamic_port() -> None:
    """EVs reject an SDP response whose port is outside 49152-65535 (Josev: "The port 39745 does not
    match the mandatory UDP server port 15118"), so port 0 must pick from that range."""
    async with trio.open_nursery() as nursery:
        ports = [await nursery.start(serve_tcp, 0, Echo) for _ in range(5)]
        nursery.cancel_scope.cancel()
    assert all(49152 <= p <= 65535 for p in ports) and len(set(ports)) == 5
