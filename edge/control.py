"""The daemon's local control socket: a Unix stream socket (mode 0660, under the runtime or state
directory) speaking JSON lines, one request, one answer. ``edge status`` asks it.

Requests: ``{"request": "status"}`` -> ``{"ok": true, "evses": [...], "ocpp": {...}}``. A request that is
not JSON, too long or unknown gets ``{"ok": false, "error": ...}``; the socket serves at most
``MAX_CLIENTS`` clients at once, each for ``CLIENT_TIMEOUT`` s: a local process cannot stall the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger("edge.control")

MAX_REQUEST = 4096  # bytes of one request line
MAX_CLIENTS = 8
CLIENT_TIMEOUT = 5.0

StatusSource = Callable[[], dict[str, Any]]


def answer(line: bytes, status: StatusSource) -> dict[str, Any]:
    """The answer to one request line (sans-IO)."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return {"ok": False, "error": "not a JSON request"}
    if not isinstance(request, dict) or request.get("request") != "status":
        return {"ok": False, "error": "unknown request (known: status)"}
    return {"ok": True, **status()}


async def serve_control(path: Path, status: StatusSource, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                        ) -> None:
    """Serve the control socket at ``path`` until cancelled (an old socket file there is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o660)
    sock.listen(MAX_CLIENTS)
    listener = trio.SocketListener(sock)
    limit = trio.CapacityLimiter(MAX_CLIENTS)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                if limit.borrowed_tokens >= MAX_CLIENTS:
                    await stream.aclose()  # busy: refuse rather than queue
                    continue
                nursery.start_soon(_client, stream, status, limit)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        path.unlink(missing_ok=True)


async def _client(stream: trio.SocketStream, status: StatusSource, limit: trio.CapacityLimiter) -> None:
    async with limit, stream:
        with trio.move_on_after(CLIENT_TIMEOUT):
            data = b""
            while b"\n" not in data and len(data) <= MAX_REQUEST:
                chunk = await stream.receive_some(MAX_REQUEST)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\n", 1)[0]
            reply = answer(line, status) if len(line) <= MAX_REQUEST else {"ok": False, "error": "request too long"}
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except trio.BrokenResourceError:
                pass


async def query(path: Path, request: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """``edge status``'s side: one request, its answer."""
    with trio.fail_after(timeout):
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(json.dumps(request or {"request": "status"}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    return json.loads(data)
