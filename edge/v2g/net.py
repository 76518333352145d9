"""trio shells for SDP: the charger's responder and the car's discovery, on one interface."""

from __future__ import annotations

import logging
import socket
import struct

import trio

from .sdp import SDP_PORT, SdpRequest, SdpResponse, SdpServer
from .v2gtp import V2gtpError

log = logging.getLogger("edge.sdp")
ALL_NODES = "ff02::1"


def _ifindex(iface: str) -> int:
    return socket.if_nametoindex(iface)


async def serve_sdp(server: SdpServer, iface: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Answer SECCDiscoveryReqs arriving on ``iface`` until cancelled (unicast to the asker)."""
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        await sock.bind(("::", SDP_PORT, 0, 0))
        index = _ifindex(iface)
        group = socket.inet_pton(socket.AF_INET6, ALL_NODES) + struct.pack("@I", index)
        try:  # all-nodes is joined by every interface already; joining again is harmless or EADDRINUSE
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        except OSError:
            pass
        task_status.started()
        while True:
            data, addr = await sock.recvfrom(512)
            answer = server.handle(data)
            if answer is None:
                log.info("dropped a malformed SDP request from %s", addr[0])
                continue
            await sock.sendto(answer, addr)


async def discover(iface: str, security: int, *, attempts: int = 50, wait: float = 0.25) -> SdpResponse:
    """The car's SDP: up to ``attempts`` requests, ``wait`` seconds each ([V2G2-159], [V2G2-161])."""
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with sock:
        index = _ifindex(iface)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        await sock.bind(("::", 0, 0, index))
        request = SdpRequest(security, 0).encode()
        for _ in range(attempts):
            await sock.sendto(request, (ALL_NODES, SDP_PORT, 0, index))
            with trio.move_on_after(wait):
                while True:
                    data, _addr = await sock.recvfrom(512)
                    try:
                        return SdpResponse.decode(data)
                    except V2gtpError:
                        continue
    raise TimeoutError(f"no SDP response on {iface} after {attempts} requests")
