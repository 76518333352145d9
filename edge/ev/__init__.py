"""The simulated car (testbench runs and our own end-to-end tests): sans-IO cars in
:mod:`edge.ev.din` and :mod:`edge.ev.iso2` (shared parts in :mod:`edge.ev.base`), :func:`drive` to run
one over a stream, and :mod:`edge.ev.run` for SDP, connection and pause/resume on an interface."""

from __future__ import annotations

from typing import Protocol

import trio

from edge.v2g.v2gtp import PayloadType, V2gtpDecoder, frame


class Car(Protocol):
    log: list[str]

    @property
    def in_charge_loop(self) -> bool: ...
    def response_timeout(self) -> float: ...
    def start(self) -> bytes: ...
    def handle(self, payload: bytes, now: float) -> bytes | None: ...


async def drive(stream: trio.abc.Stream, car: Car, *, loop_period: float = 0.05, step: float = 0.01,
                timeout_factor: float | None = None) -> int:
    """Run ``car`` over a V2GTP stream until its session (or a paused part of it) ends; returns the
    number of requests sent. Requests follow responses after ``step`` seconds (``loop_period`` in the
    charge loop). With ``timeout_factor`` the car waits at most that many times its own timeout for
    each response (V2G_EVCC_Msg_Timeout; 1.0 is the standard's value) and raises TimeoutError."""
    decoder = V2gtpDecoder()
    request = car.start()
    count = 0
    while request is not None:
        await stream.send_all(frame(PayloadType.EXI, request))  # one send: header and payload together
        count += 1
        limit = car.response_timeout() * timeout_factor if timeout_factor is not None else float("inf")
        messages = []
        with trio.move_on_after(limit) as waiting:
            while not messages:
                data = await stream.receive_some(65536)
                if not data:
                    raise ConnectionError(f"the charger closed the connection after {car.log[-1:]}")
                messages = decoder.feed(data)
        if waiting.cancelled_caught:
            raise TimeoutError(f"no response to {car.log[-1] if car.log else 'supportedAppProtocolReq'} "
                               f"within {limit:g} s")
        await trio.sleep(loop_period if car.in_charge_loop else step)
        request = car.handle(messages[0].payload, trio.current_time())
    return count
