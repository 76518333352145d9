"""The V2GTP server shell over loopback: one send per response, errors close one connection only."""

from __future__ import annotations

import trio
import trio.testing

from edge.v2g.server import serve_tcp
from edge.v2g.v2gtp import ANSWER_LATER, HEADER_SIZE, PayloadType, V2gtpMessage, frame


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


async def _drip_into(stream: trio.abc.Stream, data: bytes, every: float) -> None:
    try:
        for i in range(len(data)):
            await stream.send_all(data[i:i + 1])
            await trio.sleep(every)
    except trio.BrokenResourceError:
        pass


async def test_a_message_dripping_in_is_cut_at_its_deadline(autojump_clock) -> None:
    """One byte a second once held a connection for ~18 h: a message must be complete within its
    deadline of its first byte, whatever the bytes in between."""
    from edge.v2g.server import serve_connection

    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drip_into, left, frame(PayloadType.EXI, b"x" * 64), 1.0)
        start = trio.current_time()
        why = await serve_connection(right, Echo(), idle_timeout=3600, message_deadline=5.0)
        assert why == "V2GTP message incomplete 5 s after its first byte"
        assert trio.current_time() - start == 5.0
        nursery.cancel_scope.cancel()


async def test_bytes_do_not_restart_the_sequence_timeout(autojump_clock) -> None:
    """The idle timer once restarted on every byte: the next request is due a sequence timeout after the
    last response, however its bytes trickle."""
    from edge.v2g.server import serve_connection

    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drip_into, left, b"\x01" * 100, 1.0)  # never a whole header
        start = trio.current_time()
        why = await serve_connection(right, Echo(), idle_timeout=3.0, message_deadline=3600)
        assert why == "sequence timeout: no request" and trio.current_time() - start == 3.0
        nursery.cancel_scope.cancel()


async def test_whole_messages_keep_a_connection_alive(autojump_clock) -> None:
    """The deadlines do not cut a car that sends whole requests in time, one after another."""
    from edge.v2g.server import serve_connection

    left, right = trio.testing.memory_stream_pair()
    answers: list[bytes] = []

    async def car() -> None:
        for _ in range(20):
            await left.send_all(frame(PayloadType.EXI, b"ping"))
            answers.append(await left.receive_some(100))
            await trio.sleep(0.9)
        await left.send_all(frame(PayloadType.EXI, b"bye"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(car)
        why = await serve_connection(right, Echo(), idle_timeout=1.0, message_deadline=0.5)
    assert why == "closed by the session" and answers == [frame(PayloadType.EXI, b"gnip")] * 20


def test_a_broken_connection_says_why() -> None:
    """trio's BrokenResourceError has no text; the log line named nothing ("connection broken: ")."""
    from edge.v2g.server import broken_reason

    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as reset:
            raise trio.BrokenResourceError from reset
    except trio.BrokenResourceError as e:
        assert broken_reason(e) == "[Errno 104] Connection reset by peer"
    assert broken_reason(trio.BrokenResourceError()) == "BrokenResourceError"


class Deciding:
    """A session whose backend decides after ``rounds`` looks (ANSWER_LATER until then); forever with None."""

    def __init__(self, rounds: int | None) -> None:
        self.rounds, self.asked = rounds, 0

    def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage | None:
        self.asked += 1
        if self.rounds is None or self.asked <= self.rounds:
            return ANSWER_LATER
        return V2gtpMessage(message.payload_type, b"decided")


async def test_a_session_waiting_for_its_backend_answers_the_same_request_later(autojump_clock) -> None:
    from edge.v2g.server import MAX_ANSWER_WAIT, serve_connection

    left, right = trio.testing.memory_stream_pair()
    handler = Deciding(rounds=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_connection(right, handler, idle_timeout=60))
        await left.send_all(frame(PayloadType.EXI, b"install me"))
        answer = await left.receive_some(100)
        assert answer == frame(PayloadType.EXI, b"decided") and handler.asked == 6
        nursery.cancel_scope.cancel()
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(frame(PayloadType.EXI, b"install me"))
    start = trio.current_time()
    why = await serve_connection(right, Deciding(rounds=None), idle_timeout=60)
    assert why == f"no answer to the request within {MAX_ANSWER_WAIT:g} s"
    assert MAX_ANSWER_WAIT <= trio.current_time() - start <= MAX_ANSWER_WAIT + 0.1
