"""A slow peer flood for tests/test_attacks.py, as its own process (so the flood's sockets never count
against the test's own file limit): COUNT connections from SOURCE to [HOST]:PORT on interface index
SCOPE, each dripping one byte of a V2GTP header per second for SECONDS; prints JSON counts.

    python -m tests.dripper SOURCE HOST PORT SCOPE COUNT SECONDS
"""

from __future__ import annotations

import json
import socket
import sys

import trio

HEADER = bytes([0x01, 0xFE, 0x80, 0x01, 0x00, 0x00, 0x00, 0x40])


async def drip(source: str, host: str, port: int, scope: int, stats: dict[str, int], until: float) -> None:
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with sock:
        try:
            await sock.bind((source, 0, 0, scope))
            await sock.connect((host, port, 0, scope))
            stats["connected"] += 1
            i = 0
            while trio.current_time() < until:
                await sock.send(HEADER[i % 8:i % 8 + 1])
                i += 1
                await trio.sleep(1.0)
            stats["survived"] += 1
        except OSError:
            stats["cut"] += 1


async def flood(source: str, host: str, port: int, scope: int, count: int, seconds: float) -> dict[str, int]:
    stats = {"connected": 0, "cut": 0, "survived": 0}
    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(drip, source, host, port, scope, stats, until)
    return stats


if __name__ == "__main__":
    source, host, port, scope, count, seconds = sys.argv[1:7]
    print(json.dumps(trio.run(flood, source, host, int(port), int(scope), int(count), float(seconds))))
