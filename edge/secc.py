"""The charger's communication on one interface without SLAC (rigs with plain Ethernet, and after
SLAC on the PLC interface): SDP responder plus the V2GTP server (TCP and/or TLS), sessions on
simulated hardware. The car's counterpart is :func:`edge.ev.run.run_ev`."""

from __future__ import annotations

import logging
import socket
import ssl
from functools import partial

import trio

import exi
from edge.hardware import ChargerHardware, SimulatedCharger
from edge.v2g import sap
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
                   task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve SDP and V2G sessions on ``iface`` until cancelled; one car at a time per connection.
    With ``ssl_context`` a TLS listener is offered too (only it with ``tls_only``); SDP answers each
    car with the security it asked for when offered. ``task_status.started`` gets the ports
    ``(tcp, tls)`` (None for one not offered)."""
    hw = hardware or SimulatedCharger()
    enabled = protocols or list(DEFAULT_PROTOCOLS)
    evse = config or EvseConfig()
    if tls_only and ssl_context is None:
        raise ValueError("TLS only needs a TLS context (a PKI)")
    preload_codecs(enabled, signatures=evse.pnc is not None)
    address = link_local_address(iface)
    async with trio.open_nursery() as nursery:
        tcp_port = tls_port = None
        if not tls_only:
            tcp_port = await nursery.start(partial(serve_tcp, port, lambda: ChargerConnection(hw, enabled, evse),
                                                   host="::"))
        if ssl_context is not None:
            tls_port = await nursery.start(partial(
                serve_tcp, port + 1 if port and not tls_only else port,
                lambda: ChargerConnection(hw, enabled, evse, tls=True), host="::", ssl_context=ssl_context))
        await nursery.start(serve_sdp, SdpServer(address, tcp_port, tls_port), iface)
        log.info("SECC on %s: [%s] TCP %s, TLS %s", iface, address, tcp_port, tls_port)
        task_status.started((tcp_port, tls_port))
