"""The external board adapter (edge.hardware.external) against the reference board (edge.hardware.board_sim),
and against a board that misbehaves: what edge accepts, what it refuses, and that no board makes it unsafe."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio

from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.hardware.board_sim import SimulatedBoard, serve_board
from edge.hardware.external import MAX_BAD_LINES, BoardProtocolError, BoardState, ExternalBoard

HELLO = {"type": "hello", "protocol": 1, "board": "b", "dc": {"max_voltage": 500, "max_current": 200,
                                                               "max_power": 100000}}


def _line(message: object) -> bytes:
    return json.dumps(message).encode()


def test_board_state_takes_hello_then_state_messages() -> None:
    state = BoardState()
    with pytest.raises(BoardProtocolError, match="before hello"):
        state.receive(_line({"type": "cp", "state": "B"}))
    assert state.receive(_line(HELLO)).startswith("board 'b'")
    assert state.dc is not None and state.dc.max_power == 100000 and state.ac is None
    assert state.receive(_line({"type": "cp", "state": "B"})) == "CP B"
    assert state.receive(_line({"type": "cp", "state": "B"})) is None  # no change, no line
    state.receive(_line({"type": "measurement", "voltage": 400.5, "current": -20, "energy_imported_wh": 12}))
    assert (state.voltage, state.current, state.energy_imported_wh) == (400.5, -20.0, 12.0)
    assert state.receive(_line({"type": "fault", "active": True, "code": "GF", "text": "ground fault"})) == (
        "fault GF: ground fault")
    assert state.receive(_line({"type": "fault", "active": False})).startswith("fault cleared")


@pytest.mark.parametrize(("message", "says"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (_line({**HELLO, "protocol": 2}), "protocol 2 not spoken"),
    (_line({**HELLO, "dc": None}), "without dc and ac"),
    (_line({**HELLO, "dc": {"max_voltage": 500, "max_current": 200}}), "max_power: required"),
    (_line({**HELLO, "dc": {"max_voltage": -1, "max_current": 200, "max_power": 1}}), "at least 0"),
    (_line({**HELLO, "ac": {"max_current": 16, "phases": 2}}), "ac.phases: 1 or 3"),
    (_line({**HELLO, "dc": {"max_voltage": "500", "max_current": 1, "max_power": 1}}), "finite number"),
    (b'{"type":"hello","protocol":1,"dc":{"max_voltage":NaN,"max_current":1,"max_power":1}}', "finite number"),
])
def test_board_state_refuses_bad_hellos_and_keeps_its_state(message: bytes, says: str) -> None:
    state = BoardState()
    with pytest.raises(BoardProtocolError, match=says):
        state.receive(message)
    assert not state.hello and state.dc is None


@pytest.mark.parametrize(("message", "says"), [
    ({"type": "cp", "state": "G"}, "cp.state"),
    ({"type": "measurement", "voltage": float("inf")}, "finite"),
    ({"type": "measurement", "energy_imported_wh": -5}, "at least 0"),
    ({"type": "isolation", "state": "Good"}, "isolation.state"),
    ({"type": "contactors", "closed": 1}, "true or false"),
    ({"type": "fault", "active": "yes"}, "true or false"),
    ({"type": "firmware_update"}, "unknown message type"),
])
def test_board_state_refuses_bad_state_messages(message: dict, says: str) -> None:
    state = BoardState()
    state.receive(_line(HELLO))
    state.receive(_line({"type": "cp", "state": "B"}))
    with pytest.raises(BoardProtocolError, match=says):
        state.receive(json.dumps(message, allow_nan=True).encode())
    assert state.cp == "B" and state.voltage == 0.0 and state.energy_imported_wh == 0.0 and state.fault is None


async def _until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_edge_drives_the_reference_board_and_sees_unplug_fault_and_loss(tmp_path: Path) -> None:
    path = tmp_path / "board.sock"
    sim = SimulatedBoard(bidirectional_charger(voltage_tau=0.05, isolation_s=0.1))
    board = ExternalBoard(path, name="evse1")
    assert board.cp_state() == "F" and board.dc_limits() is None  # no board yet: nothing may be offered
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_board, sim, path)
        await nursery.start(board.run)
        await _until(lambda: board.dc_limits() is not None and board.cp_state() == "B")
        assert board.dc_limits().max_discharge_current == 100.0 and board.ac_limits() is not None
        board.start_isolation_check()
        await _until(lambda: board.isolation() == "Valid")
        board.set_contactors(True)  # the car's side pulls CP to C once asked; the board closes
        await _until(lambda: board.closed and board.cp_state() == "C")
        board.set_dc_target(400.0, 50.0)
        await _until(lambda: board.present()[1] > 40)
        board.set_dc_target(400.0, -30.0)  # export: the sign reaches the board as it is
        await _until(lambda: board.present()[1] < -25)
        assert sim.charger.target_i == -30.0
        # the car is unplugged: the board opens by itself and says CP A
        assert sim.script("unplug") is None
        await _until(lambda: board.cp_state() == "A" and not board.closed)
        sim.script("plug")
        await _until(lambda: board.cp_state() == "B")
        sim.script("fault GF ground fault")
        await _until(lambda: board.state.fault == "GF: ground fault")
        assert board.cp_state() == "F"  # a board fault: no power, whatever the CP says
        sim.script("clear")
        await _until(lambda: board.cp_state() == "B")
        assert board.energy_wh() > 0 and board.energy_exported_wh() > 0
        # the board service dies: CP F, no limits, no voltage; the meter registers stay
        nursery.cancel_scope.cancel()
    assert board.cp_state() == "F" and board.dc_limits() is None and board.present() == (0.0, 0.0)
    assert board.energy_wh() > 0


async def test_a_board_reconnecting_gets_contactors_open_and_edge_comes_back_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "board.sock"
    board = ExternalBoard(path, name="evse1")
    async with trio.open_nursery() as outer:
        await outer.start(board.run)  # no board yet: started anyway, retrying
        sim = SimulatedBoard(SimulatedCharger())
        async with trio.open_nursery() as first:
            await first.start(serve_board, sim, path)
            await _until(lambda: board.cp_state() == "B")
            board.set_contactors(True)
            await _until(lambda: board.closed)
            first.cancel_scope.cancel()
        await _until(lambda: board.cp_state() == "F")
        assert not board.closed
        sim2 = SimulatedBoard(SimulatedCharger())
        async with trio.open_nursery() as second:
            await second.start(serve_board, sim2, path)
            await _until(lambda: board.cp_state() == "B", timeout=10)
            kinds = [c["type"] for c in sim2.commands]
            assert kinds[:3] == ["hello", "contactors", "pwm"] and sim2.commands[1]["closed"] is False
            assert board.connections == 2
            second.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def _fake_board(path: Path, lines: list[bytes | float], received: list[bytes], *, keep_open: float = 2.0,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A board that says ``lines`` (a float: a pause) while it collects what edge sends."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(1)
    task_status.started()
    conn, _ = await sock.accept()
    stream = trio.SocketStream(conn)

    async def collect() -> None:
        try:
            while data := await stream.receive_some(65536):
                received.append(data)
        except trio.BrokenResourceError:
            pass  # edge cut the connection (with our lines unread: a reset)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        for line in lines:
            if isinstance(line, float):
                await trio.sleep(line)
                continue
            try:
                await stream.send_all(line)
            except trio.BrokenResourceError:
                break
        await trio.sleep(keep_open)
        nursery.cancel_scope.cancel()


async def test_a_board_flooding_bad_lines_is_answered_rate_limited_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "board.sock"
    board = ExternalBoard(path, name="evse1")
    flood: list[bytes | float] = [_line(HELLO) + b"\n", _line({"type": "cp", "state": "B"}) + b"\n"]
    flood += [b"garbage\n"] * 20 + [0.5]  # answered, still connected
    flood += [b"garbage\n"] * (MAX_BAD_LINES + 5)  # then cut off
    received: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(_fake_board, path, flood, received)
        await nursery.start(board.run)
        await _until(lambda: board.bad_lines == 20)
        assert board.cp_state() == "B"  # bad lines alone are refused, not fatal
        await _until(lambda: board.bad_lines > MAX_BAD_LINES, timeout=5)
        await _until(lambda: board.cp_state() == "F")  # cut off: nothing it said holds
        nursery.cancel_scope.cancel()
    errors = [json.loads(line) for line in b"".join(received).splitlines() if b'"error"' in line]
    assert errors and all(e["error"].startswith("not JSON") for e in errors)
    assert len(errors) <= 8  # coalesced: a flood is not echoed line for line


async def test_a_board_line_without_end_does_not_grow_memory(tmp_path: Path) -> None:
    path = tmp_path / "board.sock"
    board = ExternalBoard(path, name="evse1")
    endless = [_line(HELLO) + b"\n"] + [b"x" * 65536] * 4  # 256 KiB without a newline
    async with trio.open_nursery() as nursery:
        await nursery.start(_fake_board, path, endless, [])
        await nursery.start(board.run)
        await _until(lambda: board.connections == 1 and board.cp_state() == "F" and not board.state.connected)
        nursery.cancel_scope.cancel()


async def test_the_daemons_stop_tells_an_external_board_to_open_before_hanging_up(tmp_path: Path) -> None:
    from edge.controller import ChargingController
    from edge.daemon import Daemon, DaemonEvse
    from edge.v2g.charger import EvseConfig

    path = tmp_path / "board.sock"
    sim = SimulatedBoard(SimulatedCharger())
    board = ExternalBoard(path, name="evse1")
    daemon = Daemon([DaemonEvse(1, "lo", board, EvseConfig(controller=ChargingController()))])
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_board, sim, path)
        await nursery.start(daemon.run)
        await _until(lambda: board.cp_state() == "B")
        board.set_contactors(True)  # (as a session's lease would)
        await _until(lambda: sim.charger.closed)
        daemon.evses[0].point.closed = True
        await daemon.stop("SIGTERM received")
        contactor_commands = [c["closed"] for c in sim.commands if c.get("type") == "contactors"]
        assert contactor_commands[-1] is False and True in contactor_commands  # from edge, before the hang-up
        nursery.cancel_scope.cancel()
