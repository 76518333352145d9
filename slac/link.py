"""trio shells for SLAC: a raw HomePlug socket on an interface, and the loops that run the sans-IO
matchers and the powerline emulator on real interfaces (veth pairs in tests, the PLC modem's
Ethernet interface on a charger).

No threads: the socket is non-blocking and waits with ``trio.lowlevel.wait_readable``; every timer
of a matcher is its ``deadline`` turned into a ``trio.move_on_at``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable

import trio

from . import messages as m
from .emulator import PowerlineEmulator
from .ev import EvMatcher
from .evse import EvseMatcher, Failed, Matched, Note, Send

log = logging.getLogger("edge.slac")


class RawLink:
    """An AF_PACKET socket for ethertype 0x88E1 on one interface."""

    def __init__(self, iface: str) -> None:
        self.iface = iface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(m.ETHERTYPE_HOMEPLUG))
        try:
            self.sock.bind((iface, 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.mac: bytes = self.sock.getsockname()[4]

    async def send(self, frame: bytes) -> None:
        while True:
            try:
                self.sock.send(frame)
                return
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)

    async def recv(self) -> bytes:
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue  # our own frames, looped back by the kernel
            return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoteLimiter:
    """One log line per distinct note text per interval: a flood of bad frames is one line."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def note(self, text: str) -> None:
        now = time.monotonic()
        key = text.split(":")[0]
        if now - self.last.get(key, -1e9) >= self.interval:
            extra = self.suppressed.pop(key, 0)
            log.info("%s%s", text, f" (+{extra} similar)" if extra else "")
            self.last[key] = now
        else:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1


async def _run(link: RawLink, matcher: EvseMatcher | EvMatcher, first: Iterable) -> Matched | Failed:
    try:
        return await _loop(link, matcher, first)
    except OSError as e:  # the interface went away or down: a result, not a crash of the EVSE's tasks
        return Failed(f"link {link.iface}: {e.strerror or e}")


async def _loop(link: RawLink, matcher: EvseMatcher | EvMatcher, first: Iterable) -> Matched | Failed:
    notes = _NoteLimiter()
    pending = list(first)
    while True:
        for action in pending:
            if isinstance(action, Send):
                await link.send(action.frame)
            elif isinstance(action, Note):
                notes.note(action.text)
            elif isinstance(action, Matched | Failed):
                return action
        pending = []
        deadline = matcher.deadline
        if deadline is None:
            return Failed("the matcher stopped without a result")
        with trio.move_on_at(deadline):
            data = await link.recv()
            pending = matcher.receive(data, trio.current_time())
            continue
        pending = matcher.timeout(trio.current_time())


async def run_evse(link: RawLink, matcher: EvseMatcher) -> Matched | Failed:
    """One EVSE match from plug-in; returns the result (the caller handles CP and teardown)."""
    return await _run(link, matcher, matcher.plugged(trio.current_time()))


async def run_ev(link: RawLink, matcher: EvMatcher) -> Matched | Failed:
    """One EV match (testbench side)."""
    return await _run(link, matcher, matcher.start(trio.current_time()))


async def run_emulator(emulator: PowerlineEmulator, links: dict[bytes, RawLink]) -> None:
    """Serve the emulated powerline: ``links`` maps each host's MAC to the emulator-side interface
    of that host's cable (the other end of its veth). Runs until cancelled."""

    async def serve(host: bytes, link: RawLink) -> None:
        while True:
            data = await link.recv()
            for dst, frame in emulator.from_host(host, data):
                out = links.get(dst)
                if out is not None:
                    await out.send(frame)

    async with trio.open_nursery() as nursery:
        for host, link in links.items():
            nursery.start_soon(serve, host, link)
