"""The simulated car on a network interface: SDP (asking for TLS when it has a TLS context), TCP or
TLS to the charger that answered, one session; and when the car paused its session, the pause, then
SDP, a new connection and the resumed session, until the car ends it. :func:`run_ev_until_signal` is
the shell ``edge ev`` runs: the same, stopped early by SIGINT, SIGTERM or an overall deadline."""

from __future__ import annotations

import logging
import math
import signal
import ssl
from dataclasses import dataclass, field
from typing import Any

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
    started: float | None = None  # trio's clock when the run began
    duration_s: float = 0.0  # how long it has run (updated as it goes: an interrupted run has it too)

    def summary(self) -> dict:
        return {**self.car.summary(), "connections": self.connections, "tls": any(self.tls),
                "duration_s": round(self.duration_s, 3)}


async def run_ev(iface: str, car: SimulatedCar, *, ssl_context: ssl.SSLContext | None = None,
                 require_tls: bool = False, pause_s: float = 2.0, loop_period: float = 0.05, step: float = 0.02,
                 timeout_factor: float | None = 1.0, sdp_attempts: int = 50, max_resumes: int = 10,
                 record: EvRun | None = None) -> EvRun:
    """Run ``car`` against the charger found on ``iface``. A car that ends a connection paused (its
    ``paused`` flag) is resumed after ``pause_s`` seconds on a new connection. Errors propagate:
    TimeoutError (no SDP answer, a response too late), OSError/ConnectionError (connect, TLS),
    RuntimeError (the session failed). ``record``: the EvRun to fill in as it goes (the caller can
    report a run that was cancelled half-way); a new one otherwise."""
    run = record if record is not None else EvRun(car)
    run.started = trio.current_time()
    try:
        return await _connections(iface, run, ssl_context=ssl_context, require_tls=require_tls, pause_s=pause_s,
                                  loop_period=loop_period, step=step, timeout_factor=timeout_factor,
                                  sdp_attempts=sdp_attempts, max_resumes=max_resumes)
    finally:
        run.duration_s = trio.current_time() - run.started


async def _connections(iface: str, run: EvRun, *, ssl_context: ssl.SSLContext | None, require_tls: bool,
                       pause_s: float, loop_period: float, step: float, timeout_factor: float | None,
                       sdp_attempts: int, max_resumes: int) -> EvRun:
    car = run.car
    while True:
        log.info("looking for a charger on %s (SDP%s)", iface, ", TLS asked" if ssl_context is not None else "")
        stream = await connect_to_charger(iface, ssl_context, require_tls=require_tls, sdp_attempts=sdp_attempts)
        run.connections += 1
        run.tls.append(isinstance(stream, trio.SSLStream))
        async with stream:  # closed after the session, paused or not, as the car would
            await drive(stream, car, loop_period=loop_period, step=step, timeout_factor=timeout_factor,
                        origin=run.started)
        if not car.paused:
            return run
        if run.connections > max_resumes:
            raise RuntimeError(f"the car paused {run.connections} times; giving up")
        log.info("session paused; resuming in %g s", pause_s)
        await trio.sleep(pause_s)
        car.resume()


#: what stopped a run early, besides its own end: a signal's name, or the overall deadline
DEADLINE = "timeout"


async def run_ev_until_signal(iface: str, run: EvRun, *, deadline_s: float | None = None, **options: Any
                              ) -> str | None:
    """:func:`run_ev` for ``run.car`` until it ends, SIGINT or SIGTERM arrives, or ``deadline_s`` seconds
    pass: None when it ended by itself, else the signal's name ("SIGINT", "SIGTERM") or DEADLINE. ``run``
    holds what happened either way (connections, the car's records). Errors propagate as from run_ev."""
    stopped_by: str | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                nonlocal stopped_by
                async for signum in signals:
                    stopped_by = signal.Signals(signum).name
                    log.info("%s: stopping the car", stopped_by)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch_signals)
            with trio.move_on_after(math.inf if deadline_s is None else deadline_s) as deadline:
                await run_ev(iface, run.car, record=run, **options)
            if deadline.cancelled_caught:
                stopped_by = DEADLINE
            nursery.cancel_scope.cancel()
    return stopped_by
