"""The daemon's control socket (edge/control.py): status over JSON lines, hostile clients bounded."""

from __future__ import annotations

from pathlib import Path

import trio

from edge.control import MAX_REQUEST, answer, query, serve_control


def test_answers() -> None:
    status = lambda: {"evses": [{"id": 1}]}  # noqa: E731
    assert answer(b'{"request": "status"}', status) == {"ok": True, "evses": [{"id": 1}]}
    assert answer(b"nope", status)["ok"] is False
    assert answer(b'{"request": "reboot"}', status)["error"].startswith("unknown request")
    assert answer(b"[1]", status)["ok"] is False


async def test_status_over_the_socket_and_hostile_clients(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"
    calls = []

    def status() -> dict:
        calls.append(1)
        return {"evses": [{"id": 1, "state": "listening"}], "ocpp": None}

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, status)
        assert oct(path.stat().st_mode & 0o777) == "0o660"
        assert (await query(path))["evses"][0]["state"] == "listening"
        # a client that never finishes its line, one that floods: neither stops the next answer
        silent = await trio.open_unix_socket(str(path))
        flood = await trio.open_unix_socket(str(path))
        await flood.send_all(b"x" * (MAX_REQUEST * 4))
        assert (await query(path))["ok"] is True
        await silent.aclose()
        await flood.aclose()
        nursery.cancel_scope.cancel()
    assert not path.exists() and len(calls) == 2


async def test_edge_status_reads_the_daemon(tmp_path: Path) -> None:
    import json
    import sys

    path = tmp_path / "control.sock"
    document = {"evses": [{"id": 1, "interface": "secc0", "state": "listening", "cp": "C", "slac": "matched",
                           "plc_interface": "plc0", "contactors": "closed",
                           "voltage_v": 400.0, "current_a": 100.0, "energy_imported_wh": 12.5,
                           "energy_exported_wh": 0.0, "session": "connection #1", "restarts": 0,
                           "last_error": None, "ports": [1, None]}],
                "ocpp": {"url": "ws://127.0.0.1:9/CS1", "online": True, "version": "2.1", "boot": "Accepted",
                         "queued": 0}}
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, lambda: document)
        text = await trio.run_process([sys.executable, "-m", "edge.cli", "status", "--socket", str(path)],
                                      capture_stdout=True)
        as_json = await trio.run_process([sys.executable, "-m", "edge.cli", "status", "--socket", str(path),
                                          "--json"], capture_stdout=True)
        nursery.cancel_scope.cancel()
    lines = text.stdout.decode().splitlines()
    assert lines[0].startswith("EVSE 1 (secc0): listening, CP C, SLAC matched, contactors closed, 400.0 V 100.0 A")
    assert lines[1] == "CSMS ws://127.0.0.1:9/CS1: online, OCPP 2.1, boot Accepted, 0 message(s) queued"
    assert json.loads(as_json.stdout)["evses"][0]["state"] == "listening"
    missing = await trio.run_process([sys.executable, "-m", "edge.cli", "status", "--socket",
                                      str(tmp_path / "none.sock")], capture_stderr=True, check=False)
    assert missing.returncode == 2 and b"no daemon answers" in missing.stderr
