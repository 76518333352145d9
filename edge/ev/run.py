"""The simulated car on a network interface: SDP (asking for TLS when it has a TLS context), TCP or
TLS to the charger that answered, one session; and when the car paused its session, the pause, then
SDP, a new connection and the resumed session, until the car ends it."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

import trio

from edge.ev import drive
from edge.ev.base import SimulatedCar
from edge.ev.connect import connect_to_charger

log = logging.getLogger("edge.ev")


@dataclass
class EvRun:
    """What a run did, besides what the car itself records."""

    car: SimulatedCar
    connections: int = 0
    tls: list[bool] = field(default_factory=list)  # per connection: was it TLS

    def summary(self) -> dict:
        return {**self.car.summary(), "connections": self.connections, "tls": any(self.tls)}


async def run_ev(iface: str, car: SimulatedCar, *, ssl_context: ssl.SSLContext | None = None,
                 require_tls: bool = False, pause_s: float = 2.0, loop_period: float = 0.05, step: float = 0.02,
                 timeout_factor: float | None = 1.0, sdp_attempts: int = 50, max_resumes: int = 10) -> EvRun:
    """Run ``car`` against the charger found on ``iface``. A car that ends a connection paused (its
    ``paused`` flag) is resumed after ``pause_s`` seconds on a new connection. Errors propagate:
    TimeoutError (no SDP answer, a response too late), OSError/ConnectionError (connect, TLS),
    RuntimeError (the session failed)."""
    run = EvRun(car)
    while True:
        stream = await connect_to_charger(iface, ssl_context, require_tls=require_tls, sdp_attempts=sdp_attempts)
        run.connections += 1
        run.tls.append(isinstance(stream, trio.SSLStream))
        async with stream:  # closed after the session, paused or not, as the car would
            await drive(stream, car, loop_period=loop_period, step=step, timeout_factor=timeout_factor)
        if not car.paused:
            return run
        if run.connections > max_resumes:
            raise RuntimeError(f"the car paused {run.connections} times; giving up")
        log.info("session paused; resuming in %g s", pause_s)
        await trio.sleep(pause_s)
        car.resume()
