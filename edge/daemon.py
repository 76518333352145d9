"""``edge run``: the daemon charger makers install. One station nursery holds the OCPP station (when
configured) and one supervised child nursery per EVSE; each EVSE serves SDP and its V2G sessions on its
interface with its own charging point (power lease, watchdog) and controller.

Supervision: an EVSE whose tasks raise is logged with the traceback, its power is switched off, and it
starts again after a back-off (1 s doubling to 30 s; reset once it has run for a minute), while the other
EVSEs and the OCPP connection carry on. An EVSE that cannot start at all (its interface is missing) is
retried the same way and reported, and the daemon serves the others.

Start-up: ``ready`` (systemd's READY=1) once every EVSE has had its first start (listening, or failed and
reported). SIGTERM/SIGINT: every charging point's power off first, then the sessions end (their
transactions end), then the OCPP queue gets ``flush_timeout`` seconds to reach the CSMS; exit 0.
"""

from __future__ import annotations

import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from edge.chargingpoint import ChargingPoint
from edge.hardware import ChargerHardware
from edge.logs import bind_log_fields
from edge.ocpp.station import OcppStation
from edge.v2g import sap
from edge.v2g.admission import ConnectionAdmission
from edge.v2g.charger import EvseConfig

log = logging.getLogger("edge.daemon")

#: restart back-off of a failed EVSE: first wait, cap, and how long a run must last to reset it
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
RESTART_STABLE_S = 60.0
#: how long the OCPP queue may take to reach the CSMS on SIGTERM (what is left waits for the next start)
FLUSH_TIMEOUT_S = 5.0


@dataclass
class DaemonEvse:
    """One EVSE as the daemon runs it."""

    evse_id: int
    interface: str
    hardware: ChargerHardware
    config: EvseConfig  # identity, PnC, controller, quirks, the charging point
    protocols: list[sap.Protocol] | None = None
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    tls_only: bool = False
    state: str = "starting"  # starting, listening, restarting, stopped
    ports: tuple[int | None, int | None] = (None, None)
    restarts: int = 0
    last_error: str | None = None
    failures: list[str] = field(default_factory=list)  # the last few, for `edge status` and tests

    @property
    def point(self) -> ChargingPoint:
        return self.config.charging_point(self.hardware, name=f"evse{self.evse_id}")

    def describe(self) -> str:
        holder = self.point.holder
        power = "charging" if self.point.closed else ("leased" if holder is not None else "idle")
        return f"EVSE {self.evse_id} ({self.interface}): {self.state}, {power}"


@dataclass
class Daemon:
    evses: list[DaemonEvse]
    station: OcppStation | None = None
    ready: Callable[[], None] = lambda: None  # systemd READY=1
    status: Callable[[str], None] = lambda text: None  # systemd STATUS=
    flush_timeout: float = FLUSH_TIMEOUT_S
    control_socket: Path | None = None  # `edge status` asks here (edge.control)
    on_stop: Callable[[str], None] = lambda reason: None  # systemd STOPPING=1
    last_tick: float = 0.0  # the main loop's last turn (the systemd watchdog is fed only while it turns)
    tick: float = 1.0  # how often the main loop turns (status line, watchdog liveness)
    _last_status: str = ""
    _evse_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _flushed: trio.Event = field(default_factory=trio.Event)
    _evses_stopped: trio.Event = field(default_factory=trio.Event)

    def alive(self, within: float = 5.0) -> bool:
        """The main loop turned recently (the watchdog feeder asks)."""
        return trio.current_time() - self.last_tick < within

    def summary(self) -> str:
        return "; ".join(e.describe() for e in self.evses)

    def status_document(self) -> dict[str, Any]:
        """What `edge status` shows: every EVSE's state and power, and the CSMS connection."""
        evses = []
        for evse in self.evses:
            point = evse.point
            voltage, current = evse.hardware.present()
            evses.append({"id": evse.evse_id, "interface": evse.interface, "state": evse.state,
                          "ports": list(evse.ports), "restarts": evse.restarts, "last_error": evse.last_error,
                          "session": point.holder.label if point.holder is not None else None,
                          "contactors": "closed" if point.closed else "open",
                          "voltage_v": round(voltage, 1), "current_a": round(current, 1),
                          "energy_imported_wh": round(evse.hardware.energy_wh(), 1),
                          "energy_exported_wh": round(evse.hardware.energy_exported_wh(), 1)})
        ocpp = None
        if self.station is not None:
            ocpp = {"url": self.station.settings.url(), "online": self.station.online(),
                    "version": self.station.version or None, "boot": self.station.boot.status,
                    "queued": self.station.store.queued()}
        return {"evses": evses, "ocpp": ocpp}

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: the station, the EVSEs, the status line."""
        async with trio.open_nursery() as outer:
            if self.station is not None:
                await outer.start(self.station.run)
            if self.control_socket is not None:
                from edge.control import serve_control

                await outer.start(serve_control, self.control_socket, self.status_document)
            with self._evse_scope:
                async with trio.open_nursery() as evses:
                    for evse in self.evses:
                        await evses.start(self._supervise, evse)
                    self.ready()
                    self._last_status = self.summary()
                    log.info("edge daemon ready: %s", self.summary())
                    task_status.started()
                    evses.start_soon(self._heartbeat)
            self._evses_stopped.set()  # every EVSE task ended: their sessions (and transactions) too
            await self._flushed.wait()  # stop(): the sessions ended, the OCPP queue had its time
            outer.cancel_scope.cancel()

    async def stop(self, reason: str) -> None:
        """Power off everywhere, end the sessions, give the OCPP queue its time, stop."""
        self.on_stop(reason)
        if self.station is not None:  # the transactions end because the station stops (stoppedReason Local)
            for link in self.station.evses:
                if link.transactions is not None:
                    link.transactions.stop_requested("ChargingStateChanged", "Local")
        for evse in self.evses:
            evse.point.shutdown(reason)
        self._evse_scope.cancel()  # connections close: sessions (and their transactions) end
        await self._evses_stopped.wait()
        if self.station is not None:
            with trio.move_on_after(self.flush_timeout):
                await self.station.drained()
            left = self.station.store.queued()
            if left:
                log.warning("OCPP: %d message(s) not delivered yet: kept for the next start", left)
        for evse in self.evses:
            evse.state = "stopped"
        self._flushed.set()

    async def _heartbeat(self) -> None:
        while True:
            self.last_tick = trio.current_time()
            summary = self.summary()
            if summary != self._last_status:  # STATUS= only when something changed
                self._last_status = summary
                self.status(summary)
            await trio.sleep(self.tick)

    async def _supervise(self, evse: DaemonEvse, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        """Run the EVSE; after a crash, power off, wait, run it again. ``started`` after the first attempt."""
        from edge.secc import run_secc

        bind_log_fields(EVSE=evse.evse_id)  # every line of this EVSE's tasks says which EVSE (journald: EVSE=)
        wait, started = RESTART_FIRST_S, False
        while True:
            began = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    evse.ports = await nursery.start(partial(
                        run_secc, evse.interface, evse.port, evse.hardware, evse.protocols, config=evse.config,
                        ssl_context=evse.ssl_context, tls_only=evse.tls_only, admission=ConnectionAdmission()))
                    evse.state, evse.last_error = "listening", None
                    log.info("EVSE %d on %s: TCP %s, TLS %s", evse.evse_id, evse.interface, *evse.ports)
                    if not started:
                        started = True
                        task_status.started()
            except Exception as e:  # this EVSE only: the others and the CSMS connection go on
                evse.restarts += 1
                evse.state, evse.last_error = "restarting", _failure_text(e)
                evse.failures = [*evse.failures[-9:], evse.last_error]
                log.exception("EVSE %d on %s failed (restart %d in %g s)", evse.evse_id, evse.interface,
                              evse.restarts, wait)
                if evse.point.holder is not None or evse.point.closed:
                    evse.point.shutdown(f"EVSE {evse.evse_id} failed")
                if not started:
                    started = True
                    task_status.started()
            if trio.current_time() - began >= RESTART_STABLE_S:
                wait = RESTART_FIRST_S
            await trio.sleep(wait)
            wait = min(wait * 2, RESTART_MAX_S)


def _failure_text(error: BaseException) -> str:
    """One line for an EVSE's failure, through exception groups to the exceptions that caused it."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_failure_text(e) for e in error.exceptions)
    return f"{type(error).__name__}: {error}"


async def run_until_signal(daemon: Daemon, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> str:
    """The daemon until SIGTERM or SIGINT; returns the signal's name once it stopped safely."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                log.info("%s received: stopping (power off first)", name)
                await daemon.stop(f"{name} received")
                nursery.cancel_scope.cancel()
                return name
    raise AssertionError("unreachable: the signal receiver never ends")
