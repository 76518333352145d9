"""The charger's communication on one interface without SLAC (rigs with plain Ethernet, and after
SLAC on the PLC interface): SDP responder plus the V2GTP server, sessions on simulated hardware.
And the car's counterpart for testbench runs: SDP discovery, TCP, one DIN session."""

from __future__ import annotations

import logging
import socket

import trio

import exi
from edge.ev import drive
from edge.ev.din import DinCar
from edge.hardware import ChargerHardware, SimulatedDcCharger
from edge.v2g import sap
from edge.v2g.charger import ChargerConnection
from edge.v2g.net import discover, serve_sdp
from edge.v2g.sdp import SECURITY_NONE, SdpServer
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


async def run_secc(iface: str, port: int = 0, hardware: ChargerHardware | None = None,
                   protocols: list[sap.Protocol] | None = None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve SDP and V2G sessions on ``iface`` until cancelled; one car at a time per connection."""
    hw = hardware or SimulatedDcCharger()
    enabled = protocols or [sap.ISO2, sap.DIN]
    for proto in ["apphand", *(p.name for p in enabled)]:
        exi.load(proto)  # import the codecs now: the first SessionSetupRes must not pay for it
    address = link_local_address(iface)
    async with trio.open_nursery() as nursery:
        tcp_port = await nursery.start(lambda task_status: serve_tcp(
            port, lambda: ChargerConnection(hw, enabled), host="::", task_status=task_status))
        await nursery.start(serve_sdp, SdpServer(address, tcp_port), iface)
        log.info("SECC on %s: [%s]:%d", iface, address, tcp_port)
        task_status.started(tcp_port)


async def run_ev_din(iface: str, car: DinCar) -> DinCar:
    """The simulated car on ``iface``: SDP, TCP to the answer, one DIN session."""
    answer = await discover(iface, SECURITY_NONE)
    host = socket.inet_ntop(socket.AF_INET6, answer.address)
    scope = socket.if_nametoindex(iface)
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    await sock.connect((host, answer.port, 0, scope))
    async with trio.SocketStream(sock) as stream:
        await drive(stream, car, loop_period=0.02, step=0.02)
    return car
