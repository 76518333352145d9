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

import json
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
#: how long the stop waits for external boards to be sent the power-off commands
BOARD_FLUSH_S = 0.5


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
    cp: str = "?"  # the CP state last seen (IEC 61851-1 A-F)
    cp_changes: int = 0
    admission: ConnectionAdmission = field(default_factory=ConnectionAdmission)  # this EVSE's V2G connections
    plc_interface: str | None = None  # SLAC (ISO 15118-3) runs here when set
    slac_options: dict[str, Any] = field(default_factory=dict)  # slac.evse.EvseMatcher keywords besides the MAC
    slac: str = "off"  # off, waiting (no car), matching, matched, failed
    slac_matches: int = 0
    _slac_wake: trio.MemorySendChannel[tuple[str, bytes]] | None = None

    @property
    def point(self) -> ChargingPoint:
        return self.config.charging_point(self.hardware, name=f"evse{self.evse_id}")

    def describe(self) -> str:
        holder = self.point.holder
        power = "charging" if self.point.closed else ("leased" if holder is not None else "idle")
        return f"EVSE {self.evse_id} ({self.interface}): {self.state}, CP {self.cp}, {power}"

    def cp_changed(self, state: str, now: float) -> None:
        """The control pilot went to ``state``: unplugged (A) or an error (E, F) takes the power back at once and
        ends the V2G connections (the car is gone or must not charge); the session ends as the car left."""
        before, self.cp = self.cp, state
        self.cp_changes += 1
        log.info("EVSE %d: CP %s -> %s", self.evse_id, before, state)
        trace = self.config.trace
        if trace is not None and (state != "A" or trace.current is not None):
            writer = trace.writer(now)
            if writer is not None:
                writer.state(f"CP {state}", now=now)
        if self._slac_wake is not None:
            try:
                self._slac_wake.send_nowait(("cp", b""))
            except trio.WouldBlock:
                pass  # the SLAC task has events to handle and compares the CP state after each one
        if state not in ("A", "E", "F"):
            return
        why = "ev_disconnected" if state == "A" else "cp_error"
        text = "car unplugged (CP A)" if state == "A" else f"CP {state}: error"
        if self.point.holder is not None or self.point.closed:
            self.point.shutdown(text, why)
        for slot in list(self.admission.slots):  # its connections end now, not at their sequence timeout
            slot.evict()


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
            evses.append({"id": evse.evse_id, "interface": evse.interface, "state": evse.state, "cp": evse.cp,
                          "slac": evse.slac, "plc_interface": evse.plc_interface,
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
        with trio.move_on_after(BOARD_FLUSH_S):  # external boards hear "contactors open" before we hang up
            for evse in self.evses:
                flush = getattr(evse.hardware, "flush", None)
                if flush is not None:
                    await flush()
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
                    run_board = getattr(evse.hardware, "run", None)  # an external board's connection
                    if run_board is not None:
                        await nursery.start(run_board)
                    evse.admission = ConnectionAdmission()
                    nursery.start_soon(watch_cp, evse)
                    if evse.plc_interface is not None:
                        await nursery.start(run_slac, evse)
                    evse.ports = await nursery.start(partial(
                        run_secc, evse.interface, evse.port, evse.hardware, evse.protocols, config=evse.config,
                        ssl_context=evse.ssl_context, tls_only=evse.tls_only, admission=evse.admission))
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
                _record_failure(evse, e)
                if not started:
                    started = True
                    task_status.started()
            if trio.current_time() - began >= RESTART_STABLE_S:
                wait = RESTART_FIRST_S
            await trio.sleep(wait)
            wait = min(wait * 2, RESTART_MAX_S)


class OcppTraceRouter:
    """Each OCPP frame into the trace of the EVSE it is about (``OcppStation.frames``): a CALL naming an
    evseId, an evse or a transaction of that EVSE, and the answer to such a CALL. Only into a session's
    open trace: the station's own traffic (boot, heartbeats) belongs to no session."""

    MEMORY = 256  # message and transaction ids remembered (bounded: a CSMS cannot grow it)

    def __init__(self, evses: list[DaemonEvse], clock: Callable[[], float] = trio.current_time) -> None:
        self.evses = {e.evse_id: e for e in evses}
        self.clock = clock
        self.calls: dict[str, int] = {}  # CALL message id -> EVSE id
        self.transactions: dict[str, int] = {}  # transactionId -> EVSE id

    def _remember(self, table: dict[str, int], key: object, evse_id: int) -> None:
        if isinstance(key, str):
            table[key] = evse_id
            while len(table) > self.MEMORY:
                del table[next(iter(table))]

    def _evse_of(self, payload: dict[str, Any]) -> int | None:
        evse = payload.get("evse")
        evse_id = payload.get("evseId", evse.get("id") if isinstance(evse, dict) else None)
        info = payload.get("transactionInfo")
        tx = info.get("transactionId") if isinstance(info, dict) else payload.get("transactionId")
        if isinstance(evse_id, int) and not isinstance(evse_id, bool):
            self._remember(self.transactions, tx, evse_id)
            return evse_id
        return self.transactions.get(tx) if isinstance(tx, str) else None

    def __call__(self, direction: str, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[1], str):
            return
        evse_id: int | None = None
        if frame[0] == 2 and len(frame) >= 4 and isinstance(frame[3], dict):
            evse_id = self._evse_of(frame[3])
            if evse_id is not None:
                self._remember(self.calls, frame[1], evse_id)
        elif frame[0] in (3, 4):
            evse_id = self.calls.pop(frame[1], None)
        evse = self.evses.get(evse_id) if evse_id is not None else None
        trace = evse.config.trace if evse is not None else None
        if trace is not None and trace.current is not None:
            trace.current.ocpp(direction, text, now=self.clock())


#: how often the CP state is looked at (a board's own interlock opens the contactors on unplug in hardware;
#: this is the software's reaction: power command to 0, lease revoked, connections closed)
CP_POLL_S = 0.05


async def watch_cp(evse: DaemonEvse) -> None:
    """Follow the EVSE's CP state and act on each change (:meth:`DaemonEvse.cp_changed`)."""
    evse.cp = evse.hardware.cp_state()
    while True:
        await trio.sleep(CP_POLL_S)
        state = evse.hardware.cp_state()
        if state != evse.cp:
            evse.cp_changed(state, trio.current_time())


#: SLAC frames waiting for the matcher; beyond this a flood's frames are dropped (counted), never queued
SLAC_QUEUE = 64
#: after a failed match with the car still plugged in, listen again after this pause (the car retries)
SLAC_RELISTEN_S = 1.0


async def run_slac(evse: DaemonEvse, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """ISO 15118-3 SLAC on the EVSE's PLC interface, driven by the CP: a car plugged in (B, C, D) starts the
    matcher with a fresh network key; unplugged (A) or a CP error leaves the logical network with a new key
    nobody else knows. Frames from other EVSEs' cars on the same wire are the matcher's to ignore."""
    from slac.evse import EvseMatcher, Failed, Matched, Note, Send
    from slac.link import RawLink

    assert evse.plc_interface is not None
    link = RawLink(evse.plc_interface)  # OSError (no such interface, no CAP_NET_RAW): this EVSE fails, retried
    matcher = EvseMatcher(link.mac, **evse.slac_options)
    wake_send, wake = trio.open_memory_channel[tuple[str, bytes]](SLAC_QUEUE)
    dropped = 0

    async def frames() -> None:
        nonlocal dropped
        while True:
            data = await link.recv()
            try:
                wake_send.send_nowait(("frame", data))
            except trio.WouldBlock:
                dropped += 1

    def record(direction: str, frame: bytes) -> None:
        trace = evse.config.trace
        if trace is not None and evse.cp not in ("A", "?"):
            writer = trace.writer(trio.current_time())
            if writer is not None:
                writer.slac(direction, frame)

    with link:
        evse._slac_wake = wake_send
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(frames)
                evse.slac = "waiting"
                task_status.started()
                plugged = False
                relisten_at: float | None = None
                pending: list[Any] = []
                while True:
                    now = trio.current_time()
                    car_there = evse.cp in ("B", "C", "D")
                    if car_there and not plugged:
                        plugged, relisten_at = True, None
                        evse.slac = "matching"
                        log.info("EVSE %d: car plugged in: SLAC on %s", evse.evse_id, evse.plc_interface)
                        pending += matcher.plugged(now)
                    elif plugged and not car_there:
                        plugged, relisten_at = False, None
                        evse.config.car_mac = None
                        evse.slac = "waiting"
                        pending += matcher.unplugged(now)
                    elif relisten_at is not None and now >= relisten_at and plugged:
                        relisten_at = None
                        evse.slac = "matching"
                        pending += matcher.plugged(now)
                    for action in pending:
                        if isinstance(action, Send):
                            record("tx", action.frame)
                            await link.send(action.frame)
                        elif isinstance(action, Note):
                            log.debug("EVSE %d SLAC: %s", evse.evse_id, action.text)
                        elif isinstance(action, Matched):
                            evse.slac, evse.slac_matches = "matched", evse.slac_matches + 1
                            evse.config.car_mac = action.peer_mac  # quirk profiles by MAC OUI use it
                            log.info("EVSE %d: SLAC matched car %s (%.1f dB)", evse.evse_id, action.peer_mac.hex(":"),
                                     action.attenuation_db)
                            bind_log_fields(EV_MAC=action.peer_mac.hex(":"))
                        elif isinstance(action, Failed):
                            evse.slac = "failed"
                            log.warning("EVSE %d: SLAC failed: %s", evse.evse_id, action.reason)
                            if plugged:
                                relisten_at = now + SLAC_RELISTEN_S
                    pending = []
                    deadlines = [t for t in (matcher.deadline, relisten_at) if t is not None]
                    with trio.move_on_at(min(deadlines) if deadlines else float("inf")):
                        kind, data = await wake.receive()
                        if kind == "frame":
                            record("rx", data)
                            pending = matcher.receive(data, trio.current_time())
                        continue
                    if matcher.deadline is not None and trio.current_time() >= matcher.deadline:
                        pending = matcher.timeout(trio.current_time())
        finally:
            evse._slac_wake = None
            evse.slac = "off"
            if dropped:
                log.warning("EVSE %d: %d SLAC frames dropped (more than the matcher could take)", evse.evse_id,
                            dropped)


def _record_failure(evse: DaemonEvse, error: BaseException) -> None:
    """The session going on when the EVSE failed ends its trace with the failure and its traceback."""
    trace = evse.config.trace
    if trace is None or trace.current is None:
        return
    import traceback

    now = trio.current_time()
    text = "".join(traceback.format_exception(error))[-8000:]
    trace.current.state("EVSE failed", note=f"{evse.last_error}\n{text}", now=now)
    trace.end_session(f"EVSE failed: {evse.last_error}", now=now, energy_wh=evse.hardware.energy_wh())


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
