"""``edge board simulate --socket PATH``: the board side of the external adapter protocol
(:mod:`edge.hardware.external`) around the simulated physics of :class:`edge.hardware.SimulatedCharger`.

It is a reference for integrators writing their board service (what to send when, what to refuse) and the
test board of the daemon's tests. It listens on a Unix socket and serves one edge connection at a time;
lines on stdin script the car and the board: ``plug``, ``unplug``, ``fault CODE TEXT``, ``clear``, ``quit``.

Safety as a real board must do it: contactors close only in CP C/D (the simulated car pulls CP to C while it
is plugged and the contactors are asked closed, as a car does once it is ready); when edge goes silent for
:data:`SILENCE_S` or disconnects, the contactors open and the power module goes to 0 at once.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import trio

from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.hardware.external import PROTOCOL_VERSION

log = logging.getLogger("edge.board")

SILENCE_S = 3.0  # edge keeps the line alive every second; three missed: it is gone
MEASUREMENT_PERIOD_S = 0.1
MAX_LINE = 4096


class SimulatedBoard:
    """The board's state machine (sans-IO but for the clock it is given)."""

    def __init__(self, charger: SimulatedCharger, name: str = "simulated-board") -> None:
        self.charger, self.name = charger, name
        self.plugged = True
        self.fault: tuple[str, str] | None = None
        self.commands: list[dict[str, Any]] = []  # every command edge sent, for tests (bounded)
        self.asked_closed = False

    def hello(self) -> dict[str, Any]:
        dc, ac = self.charger.dc_limits(), self.charger.ac_limits()
        return {"type": "hello", "protocol": PROTOCOL_VERSION, "board": self.name,
                "dc": None if dc is None else {"max_voltage": dc.max_voltage, "max_current": dc.max_current,
                                               "max_power": dc.max_power, "min_voltage": dc.min_voltage,
                                               "max_discharge_current": dc.max_discharge_current,
                                               "max_discharge_power": dc.max_discharge_power},
                "ac": None if ac is None else {"max_current": ac.max_current, "nominal_voltage": ac.nominal_voltage,
                                               "phases": ac.phases, "min_current": ac.min_current,
                                               "max_discharge_current": ac.max_discharge_current}}

    def cp(self) -> str:
        if self.fault is not None:
            return "F"
        if not self.plugged:
            return "A"
        return "C" if self.asked_closed or self.charger.closed else "B"

    def safe_state(self, why: str) -> None:
        """Contactors open, power module to 0: what a board does by itself when edge is gone."""
        if self.charger.closed or self.charger.target_i:
            log.warning("board: %s: contactors open, power 0", why)
        self.asked_closed = False
        self.charger.set_dc_target(0.0, 0.0)
        self.charger.set_ac_current_limit(0.0)
        self.charger.set_contactors(False)

    def command(self, message: Any) -> str | None:
        """One command from edge; an error text for one the protocol does not allow (it is ignored)."""
        if not isinstance(message, dict):
            return "expected a JSON object"
        self.commands = [*self.commands[-999:], message]
        kind = message.get("type")
        try:
            if kind == "hello":
                return None if message.get("protocol") == PROTOCOL_VERSION else "protocol version not spoken"
            if kind == "pwm":
                self.charger.set_pwm(_finite(message, "duty"))
            elif kind == "contactors":
                closed = message.get("closed")
                if not isinstance(closed, bool):
                    return "contactors.closed: true or false"
                self.asked_closed = closed and self.plugged and self.fault is None
                if closed and self.cp() not in ("C", "D"):
                    return f"contactors not closed in CP {self.cp()}"
                self.charger.set_contactors(closed)
            elif kind == "dc_target":
                self.charger.set_dc_target(_finite(message, "voltage"), _finite(message, "current"))
            elif kind == "ac_limit":
                self.charger.set_ac_current_limit(_finite(message, "current"))
            elif kind == "isolation_check":
                self.charger.start_isolation_check()
            elif kind == "error":
                log.warning("board: edge refused our line %s: %s", message.get("line"), message.get("error"))
            else:
                return f"unknown command {kind!r}"
        except ValueError as e:
            return str(e)
        return None

    def measurement(self) -> dict[str, Any]:
        voltage, current = self.charger.present()
        return {"type": "measurement", "voltage": round(voltage, 3), "current": round(current, 3),
                "energy_imported_wh": round(self.charger.energy_wh(), 4),
                "energy_exported_wh": round(self.charger.energy_exported_wh(), 4)}

    def status_messages(self) -> list[dict[str, Any]]:
        messages = [{"type": "cp", "state": self.cp()}, {"type": "isolation", "state": self.charger.isolation()},
                    {"type": "contactors", "closed": self.charger.closed}, self.measurement()]
        code, text = self.fault or ("", "")
        messages.append({"type": "fault", "active": self.fault is not None, "code": code, "text": text})
        return messages

    def script(self, line: str) -> str | None:
        """One stdin command; a text to log, or None."""
        word, _, rest = line.strip().partition(" ")
        if word == "plug":
            self.plugged = True
        elif word == "unplug":
            self.plugged = False
            self.safe_state("car unplugged")
        elif word == "fault":
            code, _, text = rest.partition(" ")
            self.fault = (code or "Fault", text)
            self.safe_state(f"fault {code}")
        elif word == "clear":
            self.fault = None
        elif word:
            return f"unknown script command {word!r} (plug, unplug, fault CODE TEXT, clear, quit)"
        return None


def _finite(message: dict[str, Any], key: str) -> float:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    return float(value)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


async def serve_board(board: SimulatedBoard, path: Path, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                      ) -> None:
    """Listen at ``path``; one edge connection at a time (a second one waits)."""
    path.unlink(missing_ok=True)
    listeners = [trio.SocketListener(sock) for sock in [await _unix_listener(path)]]
    lock = trio.Lock()

    async def connection(stream: trio.abc.Stream) -> None:
        async with lock, stream:
            await _serve_edge(board, stream)
            board.safe_state("edge disconnected")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_physics, board)
        await nursery.start(trio.serve_listeners, connection, listeners)
        task_status.started()


async def _unix_listener(path: Path) -> trio.socket.SocketType:
    import socket

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(4)
    return sock


async def _physics(board: SimulatedBoard) -> None:
    while True:
        board.charger.update(trio.current_time())
        await trio.sleep(0.02)


async def _serve_edge(board: SimulatedBoard, stream: trio.abc.Stream) -> None:
    log.info("board: edge connected")
    await stream.send_all(_line(board.hello()))
    last_heard = trio.current_time()
    last_sent: dict[str, Any] = {}

    async def report() -> None:
        while True:
            for message in board.status_messages():
                kind = message["type"]
                if kind == "measurement" or last_sent.get(kind) != message:  # state messages on change
                    last_sent[kind] = message
                    await stream.send_all(_line(message))
            await trio.sleep(MEASUREMENT_PERIOD_S)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report)
        buffer = bytearray()
        number = 0
        while True:
            with trio.move_on_at(last_heard + SILENCE_S) as silence:
                chunk = await stream.receive_some(65536)
            if silence.cancelled_caught:
                board.safe_state("edge silent")
                break
            if not chunk:
                break
            last_heard = trio.current_time()
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                raw, buffer = bytes(buffer[:end]), buffer[end + 1:]
                number += 1
                try:
                    message = json.loads(raw)
                except ValueError:
                    message = None
                error = board.command(message) if message is not None else "not JSON"
                if error is not None:
                    await stream.send_all(_line({"type": "error", "error": error, "line": number}))
            if len(buffer) > MAX_LINE:
                break
        nursery.cancel_scope.cancel()
    log.info("board: edge gone")


async def _stdin_script(board: SimulatedBoard, done: trio.Event) -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    buffer = b""
    while chunk := await stdin.receive_some(4096):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text == "quit":
                done.set()
                return
            problem = board.script(text)
            if problem:
                log.warning("board: %s", problem)
            else:
                print(f"ok {text}", flush=True)


async def main(path: Path, charge_only: bool) -> None:
    board = SimulatedBoard(SimulatedCharger(voltage_tau=0.05, isolation_s=0.2) if charge_only
                           else bidirectional_charger(voltage_tau=0.05, isolation_s=0.2))
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_board, board, path)
        print(f"listening {path}", flush=True)
        nursery.start_soon(_stdin_script, board, done)
        await done.wait()
        board.safe_state("quit")
        nursery.cancel_scope.cancel()
