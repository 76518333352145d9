"""The charger as an attacker on the charging link would try it, between network namespaces: hostile
SDP datagrams, extra connections and TLS handshakes mid-charge, a flood of dripping connections
against a process limited to 1024 files, SIGTERM mid-charge, a car that freezes mid-charge.

Each test reproduces a defect that once stopped the charger or cut (or kept) a car's power."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from edge.ev.base import SimulatedCar
from edge.ev.connect import connect_to_charger, open_v2g_stream
from edge.ev.din import DinCar
from edge.ev.faults import FreezingStream
from edge.ev.iso2 import Iso2Car
from edge.ev.run import run_ev
from edge.hardware import SimulatedCharger
from edge.v2g import sdp
from edge.v2g.charger import EvseConfig
from edge.v2g.net import discover
from edge.v2g.server import _accept_forever
from tests.netns import charger_between_namespaces, inside, link_local, require_root, two_namespaces

ATTACKER_ADDRESS = "fe80::bad:1"


async def until(condition, timeout: float = 30.0, step: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(step)


def sdp_frames(src_mac: bytes, link_local_src: str, count: int, seed: int = 15118) -> list[bytes]:
    """Ethernet frames carrying SDP datagrams no kernel socket would send: source port 0, source ``::``,
    a global source with no route back, then random payloads, ports and sources (valid or not)."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    valid = sdp.SdpRequest(sdp.SECURITY_NONE, sdp.TRANSPORT_TCP).encode()
    mac = ":".join(f"{b:02x}" for b in src_mac)

    def frame(src: str, sport: int, payload: bytes) -> bytes:
        return bytes(Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=src, dst="ff02::1", hlim=1)
                     / UDP(sport=sport, dport=sdp.SDP_PORT) / Raw(payload))

    out = [frame(link_local_src, 0, valid), frame("::", 50000, valid), frame("2001:db8::1", 50000, valid)]
    rng = random.Random(seed)
    sources = [link_local_src, "::", "2001:db8::1", "fe80::1", "fe80::dead:beef", "ff02::1"]
    for _ in range(count):
        payload = rng.choice([valid, valid[:rng.randrange(len(valid))], rng.randbytes(rng.randrange(0, 64)),
                              valid[:8] + rng.randbytes(2), bytes([1, 0xFE, 0x90, 0, 0, 0, 0, 2, 0x10, 0])])
        out.append(frame(rng.choice(sources), rng.choice([0, 1, 15118, 65535, rng.randrange(65536)]), payload))
    return out


def send_raw(ns: str, ifname: str, frames: list[bytes]) -> None:
    with inside(ns):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with raw:
        raw.bind((ifname, 0))
        for f in frames:
            raw.send(f)


def mac_of(ns: str, ifname: str) -> bytes:
    from pyroute2 import NetNS

    with NetNS(ns) as ip:
        link = ip.get_links(ip.link_lookup(ifname=ifname)[0])[0]
        return bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))


async def test_hostile_sdp_datagrams_do_not_stop_the_charger(caplog) -> None:
    """SDP from source port 0, from ``::`` and from an unroutable global address (each once ended the
    server), then 400 fuzzed datagrams, while a car charges: the car finishes, SDP still answers,
    and the log stays short."""
    caplog.set_level(logging.INFO, "edge.sdp")
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    car = DinCar(soc=60, target_soc=60.5, capacity_wh=10_000)
    async with charger_between_namespaces(hw) as (ev_ns, _ports, _conns), trio.open_nursery() as nursery:
        frames = sdp_frames(mac_of(ev_ns, "ev0"), link_local(ev_ns, "ev0"), 400)

        async def charge() -> None:
            with inside(ev_ns):
                await run_ev("ev0", car)

        nursery.start_soon(charge)
        await until(lambda: car.in_charge_loop)
        send_raw(ev_ns, "ev0", frames)
        await until(lambda: car.stopped_cleanly, timeout=60)
        with inside(ev_ns):
            answer = await discover("ev0", sdp.SECURITY_NONE, attempts=10)
        assert answer.port > 0
    sdp_lines = [r.getMessage() for r in caplog.records if r.name == "edge.sdp"]
    assert any("source port 0" in m for m in sdp_lines) and any("source address ::" in m for m in sdp_lines)
    assert len(sdp_lines) <= 10, sdp_lines  # 403 hostile datagrams, a handful of lines
    assert hw.energy_wh() > 0 and not hw.closed


async def test_other_connections_mid_charge_do_not_touch_the_power(pki: Path) -> None:
    """A TCP connect+close, a TLS handshake+close and an idle connection that times out, each while a -2
    car charges on the same charging point (each once opened its contactors): the car's energy keeps
    rising through all three and it finishes."""
    from edge.v2g.tls import client_context_from_pki, server_context_combined

    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    car = Iso2Car(soc=50, target_soc=52.0, capacity_wh=10_000)
    config = EvseConfig(setup_timeout=1.0)
    energy: list[float] = []
    async with charger_between_namespaces(hw, config=config, ssl_context=server_context_combined(pki)) as (
            ev_ns, (tcp_port, tls_port), connections), trio.open_nursery() as nursery:
        async def charge() -> None:
            with inside(ev_ns):
                await run_ev("ev0", car)

        nursery.start_soon(charge)
        await until(lambda: car.in_charge_loop and hw.closed)
        with inside(ev_ns):
            answer = await discover("ev0", sdp.SECURITY_NONE)
        secc = socket.inet_ntop(socket.AF_INET6, answer.address)
        index = _ifindex(ev_ns, "ev0")
        energy.append(hw.energy_wh())
        with inside(ev_ns):
            plain = await open_v2g_stream(secc, tcp_port, index)
        await plain.aclose()  # connect + close
        await trio.sleep(0.3)
        assert hw.closed
        energy.append(hw.energy_wh())
        with inside(ev_ns):
            tls = await open_v2g_stream(secc, tls_port, index, client_context_from_pki(pki))
        await tls.aclose()  # TLS handshake + close
        await trio.sleep(0.3)
        assert hw.closed
        energy.append(hw.energy_wh())
        with inside(ev_ns):
            idle = await open_v2g_stream(secc, tcp_port, index)
        await trio.sleep(1.5)  # the charger times it out after its 1 s setup timeout
        assert await idle.receive_some(10) == b""  # closed by the charger
        await idle.aclose()
        assert hw.closed
        energy.append(hw.energy_wh())
        await until(lambda: car.stopped_cleanly, timeout=60)
    assert energy == sorted(energy) and energy[-1] > energy[0], energy
    assert car.soc >= 52.0 and not hw.closed
    assert sum(1 for c in connections if c.session is None) == 3  # plain, TLS (handshake done) and idle


def _ifindex(ns: str, ifname: str) -> int:
    from pyroute2 import NetNS

    with NetNS(ns) as ip:
        return ip.link_lookup(ifname=ifname)[0]


def add_attacker_address(ns: str, ifname: str) -> None:
    """A second link-local address on the car's interface, deprecated so the car's own connections never
    pick it as their source: the attacker binds to it explicitly (another machine on the link)."""
    subprocess.run(["ip", "-n", ns, "addr", "add", f"{ATTACKER_ADDRESS}/64", "dev", ifname, "nodad",
                    "preferred_lft", "0"], check=True)


def limit_files_to_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


class SeccProcess:
    """``edge secc`` as its own process in a namespace (limited to 1024 open files), log to a file."""

    def __init__(self, ns: str, iface: str, log: Path, *extra: str) -> None:
        edge = Path(sys.executable).with_name("edge")
        self.log = log
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, str(edge), "secc", "--iface", iface, *extra],
                                     stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                                     preexec_fn=limit_files_to_1024)

    async def wait_ready(self) -> None:
        await until(lambda: "SECC on" in self.text() or self.proc.poll() is not None, timeout=30)
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, within: float = 5.0) -> int:
        self.proc.send_signal(sig)
        await until(lambda: self.proc.poll() is not None, timeout=within)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def test_dripping_connections_cannot_lock_cars_out(tmp_path: Path) -> None:
    """1,100 connections dripping one byte a second (more than the 1024 files the charger may open)
    once kept every car out and wrote ~850 KB of EMFILE tracebacks: now a car is served meanwhile, the
    server ends on SIGTERM with exit 0, and its log stays small."""
    require_root()
    with two_namespaces("secc0", "ev0") as (secc_ns, ev_ns):
        link_local(secc_ns, "secc0")
        link_local(ev_ns, "ev0")
        add_attacker_address(ev_ns, "ev0")
        secc = SeccProcess(secc_ns, "secc0", tmp_path / "secc.log")
        try:
            await secc.wait_ready()
            with inside(ev_ns):
                answer = await discover("ev0", sdp.SECURITY_NONE)
            host = socket.inet_ntop(socket.AF_INET6, answer.address)
            scope = _ifindex(ev_ns, "ev0")
            car = DinCar(soc=60, target_soc=61, capacity_wh=10_000)
            # the flood from two processes of 550 connections each (under any file limit this test runs with)
            flooders = [subprocess.Popen(["ip", "netns", "exec", ev_ns, sys.executable, "-m", "tests.dripper",
                                          ATTACKER_ADDRESS, host, str(answer.port), str(scope), "550", "12"],
                                         stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
                         for _ in range(2)]
            try:
                await trio.sleep(2.0)  # the flood is on
                with inside(ev_ns):
                    result = await run_ev("ev0", car)
                assert result.car.stopped_cleanly
                await until(lambda: all(f.poll() is not None for f in flooders), timeout=30)
                counts = [json.loads(f.stdout.read()) for f in flooders]
            finally:
                for f in flooders:
                    if f.poll() is None:
                        f.kill()
            assert sum(c["cut"] + c["survived"] for c in counts) == 1100, counts
            assert sum(c["connected"] for c in counts) >= 1000 and sum(c["survived"] for c in counts) <= 4, counts
            assert await secc.stop() == 0
        finally:
            secc.kill()
        log = secc.text()
    assert "Too many open files" not in log and "Traceback" not in log
    assert len(log) < 30_000 and len(log.splitlines()) < 200, f"{len(log)} bytes, {len(log.splitlines())} lines"
    # the flood was counted, not written: inline ("and N more like it since") or when the server stopped
    counted = [int(a or b) for a, b in re.findall(r"and (\d+) more like it since|(\d+) more connection log lines", log)]
    assert sum(counted) >= 1000, counted
    assert "contactors closed" in log and "contactors open" in log


async def test_sigterm_mid_charge_switches_the_power_off_and_exits_0(tmp_path: Path) -> None:
    require_root()
    car = DinCar(soc=20, target_soc=90)
    with two_namespaces("secc0", "ev0") as (secc_ns, ev_ns):
        link_local(secc_ns, "secc0")
        link_local(ev_ns, "ev0")
        secc = SeccProcess(secc_ns, "secc0", tmp_path / "secc.log", "--trace-dir", str(tmp_path / "traces"))
        try:
            await secc.wait_ready()
            async with trio.open_nursery() as nursery:
                async def charge() -> None:
                    with inside(ev_ns), pytest.raises((ConnectionError, OSError, trio.BrokenResourceError)):
                        await run_ev("ev0", car)

                nursery.start_soon(charge)
                await until(lambda: car.in_charge_loop and car.log.count("CurrentDemandReq") > 5)
                assert await secc.stop(signal.SIGTERM, within=5.0) == 0
        finally:
            secc.kill()
    log = secc.text()
    lines = log.splitlines()
    closed = next(i for i, line in enumerate(lines) if "contactors closed" in line)
    off = next(i for i, line in enumerate(lines) if "secc0: power off (SIGTERM received)" in line)
    assert closed < off and any("contactors open (SIGTERM received)" in line for line in lines[closed:])
    assert "Traceback" not in log and not car.stopped_cleanly
    # the session's trace is complete up to the stop: the charge loop's messages and the end
    from edge.trace import read_trace

    [trace] = list((tmp_path / "traces").glob("evse1-*.cbor"))
    records = list(read_trace(trace))
    rx = [r for r in records if r.kind == "v2gtp" and r.get("dir") == "rx"]
    assert len(rx) >= len(car.log) and records[-1].kind == "end"


async def test_sigint_stops_without_a_traceback(tmp_path: Path) -> None:
    require_root()
    with two_namespaces("secc0", "ev0") as (secc_ns, _ev_ns):
        link_local(secc_ns, "secc0")
        secc = SeccProcess(secc_ns, "secc0", tmp_path / "secc.log")
        try:
            await secc.wait_ready()
            second = SeccProcess(secc_ns, "secc0", tmp_path / "second.log")  # the same interface again
            await until(lambda: second.proc.poll() is not None, timeout=30)
            assert second.proc.returncode == 2 and "another SDP responder already serves secc0" in second.text()
            assert await secc.stop(signal.SIGINT) == 0
        finally:
            secc.kill()
    assert "Traceback" not in secc.text() and "power off (SIGINT received)" in secc.text()


async def test_a_frozen_car_loses_its_current_within_the_watchdog_time() -> None:
    """A -2 DC car at ~125 A stops sending mid-charge without closing TCP: once kept its current for the
    60 s sequence timeout. Now: current 0 and contactors open within the 1 s watchdog plus the 0.5 s
    ramp, while the session itself still waits."""
    from edge.ev import drive

    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    car: SimulatedCar = Iso2Car(soc=20, target_soc=90)
    async with charger_between_namespaces(hw) as (ev_ns, _ports, connections), trio.open_nursery() as nursery:
        with inside(ev_ns):
            stream = FreezingStream(await connect_to_charger("ev0"))
        nursery.start_soon(drive, stream, car)
        await until(lambda: car.in_charge_loop and hw.present()[1] > 100)
        flowing = hw.present()[1]
        stream.freeze()
        await until(lambda: stream.last_send < trio.current_time() - 0.1)  # its last request is out
        silent_from = stream.last_send
        await trio.sleep_until(silent_from + 0.8)
        assert hw.closed, "power went off before the watchdog time"
        await until(lambda: not hw.closed, timeout=1.0 + 0.5 + 0.5)
        assert trio.current_time() - silent_from <= 1.0 + 0.5 + 0.2
        assert hw.present()[1] == 0 and hw.target_i == 0
        assert connections[0].ended is None and not connections[0].session.done  # still waiting for the car
        nursery.cancel_scope.cancel()
    assert flowing > 100


async def test_out_of_file_descriptors_is_one_line_and_a_back_off(caplog) -> None:
    """accept() failing with EMFILE (trio's own loop logs a traceback per attempt): one line when it
    starts, one when it recovers, exponential back-off between."""
    caplog.set_level(logging.INFO, "edge.v2gtp")
    accepted: list[object] = []

    class Listener:
        failures = 0

        async def accept(self) -> object:
            await trio.sleep(0)
            if self.failures < 8:
                self.failures += 1
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return object()

    async def handle(stream: object) -> None:
        accepted.append(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_accept_forever, Listener(), handle, nursery)
        start = trio.current_time()
        await until(lambda: len(accepted) >= 3, timeout=10)
        waited = trio.current_time() - start
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "Too many open files" in lines[0] and "again" in lines[1], lines
    assert waited >= 2.0  # 10 ms doubling up to 1 s, 8 times: 2.27 s of back-off
