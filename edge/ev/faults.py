"""Faults a testbench injects on the car's side: a car whose software hangs mid-charge, strangers on
the charging link. Used by ``edge simulate`` and the attack tests."""

from __future__ import annotations

import trio

from edge.ev import drive
from edge.ev.base import SessionFailed, SimulatedCar
from edge.ev.connect import open_v2g_stream


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
    (the response that refused it and its code, or that the charger closed the connection)."""
    async with await open_v2g_stream(host, port, scope_id) as stream:
        try:
            await drive(stream, car, loop_period=0, step=0)
        except (SessionFailed, ConnectionError) as e:
            return str(e)
    return "stopped"
