"""The simulated car (testbench runs and our own end-to-end tests)."""

from __future__ import annotations

from typing import Protocol

import trio

from edge.v2g.v2gtp import PayloadType, V2gtpDecoder, frame


class Car(Protocol):
    log: list[str]

    def start(self) -> bytes: ...
    def handle(self, payload: bytes, now: float) -> bytes | None: ...


async def drive(stream: trio.abc.Stream, car: Car, *, loop_period: float = 0.05, step: float = 0.01) -> int:
    """Run ``car`` over a V2GTP stream until its session ends; returns the number of requests.
    Requests follow responses after ``step`` seconds (``loop_period`` in the charge loop)."""
    decoder = V2gtpDecoder()
    request = car.start()
    count = 0
    while request is not None:
        await stream.send_all(frame(PayloadType.EXI, request))
        count += 1
        messages = []
        while not messages:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError(f"the charger closed the connection after {car.log[-1:]}")
            messages = decoder.feed(data)
        await trio.sleep(loop_period if car.log and car.log[-1] == "CurrentDemandReq" else step)
        request = car.handle(messages[0].payload, trio.current_time())
    return count
