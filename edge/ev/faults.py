"""Faults a testbench injects on the car's side: a car whose software hangs mid-charge, strangers on
the charging link. Used by ``edge simulate`` and the attack tests."""

from __future__ import annotations

import trio

from edge.ev import request_payload_type
from edge.ev.base import SessionFailed, SimulatedCar
from edge.ev.connect import open_v2g_stream
from edge.v2g.v2gtp import V2gtpDecoder, frame


class FreezingStream(trio.abc.Stream):
    """The car's stream until :meth:`freeze`: then it sends nothing more and keeps TCP open (a car whose
    software hangs, as SIGSTOP does). ``last_send`` is when its last request went out."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner, self.frozen, self.last_send = inner, False, 0.0

    def freeze(self) -> None:
        self.frozen = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.frozen:
            await trio.sleep_forever()
        self.last_send = trio.current_time()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def second_car(host: str, port: int, car: SimulatedCar, scope_id: int = 0) -> str:
    """Another car's session on the same charging point, as far as the charger lets it go: what ended it
    (the request the charger refused and its code, or that it closed the connection)."""
    stream = await open_v2g_stream(host, port, scope_id)
    decoder = V2gtpDecoder()
    async with stream:
        request: bytes | None = car.start()
        while request is not None:
            await stream.send_all(frame(request_payload_type(car), request))
            messages = []
            while not messages:
                data = await stream.receive_some(65536)
                if not data:
                    return f"connection closed after {car.log[-1] if car.log else 'supportedAppProtocolReq'}"
                messages = decoder.feed(data)
            try:
                request = car.handle(messages[0].payload, trio.current_time())
            except SessionFailed as e:
                return str(e)
    return "stopped"

