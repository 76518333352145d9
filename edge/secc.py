"""The charger's communication on one interface without SLAC (rigs with plain Ethernet, and after
SLAC on the PLC interface): SDP responder plus the V2GTP server (TCP and/or TLS), sessions on
simulated hardware. The car's counterpart is :func:`edge.ev.run.run_ev`."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
from functools import partial

import trio

import exi
from edge.chargingpoint import ChargingPoint
from edge.hardware import ChargerHardware, SimulatedCharger
from edge.ocpp.station import OcppStation
from edge.v2g import sap
from edge.v2g.admission import ConnectionAdmission
from edge.v2g.charger import DEFAULT_PROTOCOLS, ChargerConnection, EvseConfig
from edge.v2g.net import serve_sdp
from edge.v2g.sdp import SdpServer
from edge.v2g.server import serve_tcp

log = logging.getLogger("edge.secc")


def link_local_address(iface: str) -> str:
    """The interface's IPv6 link-local address (via netlink)."""
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        found = ip.link_lookup(ifname=iface)
        if not found:
            raise ValueError(f"no network interface {iface!r}")
        for addr in ip.get_addr(family=socket.AF_INET6, index=found[0]):
            value = addr.get_attr("IFA_ADDRESS")
            if value.startswith("fe80"):
                return value
    raise ValueError(f"{iface} has no IPv6 link-local address")


def preload_codecs(protocols: list[sap.Protocol], *, signatures: bool) -> None:
    """Import the codecs a charger will need now: the first response must not pay for it (~0.5 s each
    when Python compiles them)."""
    names = {"apphand", *(p.name for p in protocols)}
    if any(p.name.startswith("iso20") for p in protocols):
        names.add("iso20-common")  # -20 sessions start with common messages
    if signatures:
        names.add("xmldsig")  # SignedInfo of every PnC signature
    for name in sorted(names):
        exi.load(name)


async def run_secc(iface: str, port: int = 0, hardware: ChargerHardware | None = None,
                   protocols: list[sap.Protocol] | None = None, *, config: EvseConfig | None = None,
                   ssl_context: ssl.SSLContext | None = None, tls_only: bool = False,
                   admission: ConnectionAdmission | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve SDP and V2G sessions on ``iface`` (one charging point) until cancelled. With
    ``ssl_context`` a TLS listener is offered too (only it with ``tls_only``); SDP answers each car
    with the security it asked for when offered. Both listeners share one connection admission
    (default caps: :mod:`edge.v2g.admission`) and one power lease with its watchdog
    (:mod:`edge.chargingpoint`). ``task_status.started`` gets the ports ``(tcp, tls)`` (None for one
    not offered). However it ends, the charging point's power is off."""
    evse = config or EvseConfig()
    hw = hardware or (evse.point.hardware if evse.point is not None else SimulatedCharger())
    point = evse.charging_point(hw, name=iface)
    admission = admission or ConnectionAdmission()
    enabled = protocols or list(DEFAULT_PROTOCOLS)
    if tls_only and ssl_context is None:
        raise ValueError("TLS only needs a TLS context (a PKI)")
    preload_codecs(enabled, signatures=evse.pnc is not None)
    # loopback (`edge simulate` without root): no link-local address and no multicast, so no SDP; the cars
    # are told the ports directly
    loopback = iface == "lo"
    address = "::1" if loopback else link_local_address(iface)
    host = "::1" if loopback else "::"
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard_power, point)
            tcp_port = tls_port = None
            if not tls_only:
                tcp_port = await nursery.start(partial(serve_tcp, port, lambda: ChargerConnection(hw, enabled, evse),
                                                       host=host, admission=admission))
            if ssl_context is not None:
                tls_port = await nursery.start(partial(
                    serve_tcp, port + 1 if port and not tls_only else port,
                    lambda: ChargerConnection(hw, enabled, evse, tls=True), host=host, ssl_context=ssl_context,
                    admission=admission, tap=_tls_recorder(evse)))
            if not loopback:
                await nursery.start(partial(serve_sdp, SdpServer(address, tcp_port, tls_port), iface,
                                            record=_sdp_recorder(evse)))
            log.info("SECC on %s: [%s] TCP %s, TLS %s", iface, address, tcp_port, tls_port)
            task_status.started((tcp_port, tls_port))
    finally:
        if point.holder is not None or point.closed:
            point.shutdown("SECC stopped")


def _sdp_recorder(evse: EvseConfig):
    """The EVSE's trace gets every SDP exchange (None without a trace)."""
    trace = evse.trace
    if trace is None:
        return None

    def record(request: bytes, response: bytes, peer: str) -> None:
        writer = trace.writer(trio.current_time())
        if writer is not None:
            writer.sdp(request, response, peer=peer)

    return record


def _tls_recorder(evse: EvseConfig):
    """With key logging into the EVSE's traces: the TLS connections' bytes and their session keys go into the
    trace, so `edge trace pcap` rebuilds a capture Wireshark decrypts (None otherwise)."""
    trace = evse.trace
    if trace is None or not trace.keylog or trace.keylog_file is None:
        return None
    from edge.trace import KeyLogTail

    tail = KeyLogTail(trace.keylog_file)

    def record(direction: str, data: bytes, peer: str) -> None:
        writer = trace.writer(trio.current_time())
        if writer is None:
            return
        if direction == "handshake":
            for line in tail.read_new():
                writer.tls_key(line)
        else:
            writer.wire(direction, data, peer=peer)

    return record


#: how often the guard looks at a charging point when nothing is armed (a lease taken arms the watchdog
#: at least one watchdog period after its last request, so this only bounds the start of watching)
GUARD_IDLE_POLL = 0.1


async def guard_power(point: ChargingPoint) -> None:
    """The charging point's safety layer in time: runs :meth:`ChargingPoint.check` whenever it asks."""
    while True:
        next_check = point.check(trio.current_time())
        await trio.sleep_until(next_check if next_check is not None else trio.current_time() + GUARD_IDLE_POLL)


#: on SIGTERM, how long the OCPP queue may take to reach the CSMS before the process exits anyway (what is
#: left stays in the durable queue for the next start)
OCPP_FLUSH_TIMEOUT = 5.0


async def run_secc_until_signal(iface: str, port: int = 0, *, config: EvseConfig,
                                protocols: list[sap.Protocol] | None = None,
                                ssl_context: ssl.SSLContext | None = None, tls_only: bool = False,
                                station: OcppStation | None = None) -> str:
    """``edge secc``: :func:`run_secc` (and the OCPP ``station`` when given) until SIGTERM or SIGINT; then
    the power goes off first (one log line per charging point), then the connections close, then the
    OCPP queue gets :data:`OCPP_FLUSH_TIMEOUT` to reach the CSMS. Returns the signal's name."""
    name = ""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as outer:
            if station is not None:
                await outer.start(station.run)
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(run_secc, iface, port, protocols=protocols, config=config,
                                            ssl_context=ssl_context, tls_only=tls_only))
                async for signum in signals:
                    name = signal.Signals(signum).name
                    log.info("%s received: stopping", name)
                    if config.point is not None:
                        config.point.shutdown(f"{name} received")
                    nursery.cancel_scope.cancel()
                    break
            if station is not None:
                with trio.move_on_after(OCPP_FLUSH_TIMEOUT):
                    await station.drained()
                left = station.store.queued()
                if left:
                    log.warning("OCPP: %d message(s) not delivered yet: kept for the next start", left)
            outer.cancel_scope.cancel()
    return name
