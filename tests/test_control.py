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
