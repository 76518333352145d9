"""trio shells for SDP: the charger's responder and the car's discovery, on one interface."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

import trio

from edge.logs import RateLimitedLog

from .sdp import SDP_PORT, SdpRequest, SdpResponse, SdpServer
from .v2gtp import V2gtpError

log = logging.getLogger("edge.sdp")
ALL_NODES = "ff02::1"


def _ifindex(iface: str) -> int:
    return socket.if_nametoindex(iface)


class InterfaceInUse(Exception):
    """Another SDP responder already serves this interface (a second charger process on one link)."""


def _unanswerable(addr: tuple) -> str | None:
    """Why a datagram's source cannot be answered (None: it can be)."""
    host, port = addr[0], addr[1]
    if port == 0:
        return "source port 0"
    try:
        ip = ipaddress.IPv6Address(host.split("%")[0])
    except ValueError:
        return "no IPv6 source address"
    if ip.is_unspecified or ip.is_multicast:
        return f"source address {ip}"
    return None


#: what a responder tells about each answered request: (request, response, "[addr]:port")
SdpRecorder = Callable[[bytes, bytes, str], None]


async def serve_sdp(server: SdpServer, iface: str, *, record: SdpRecorder | None = None,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Answer SECCDiscoveryReqs arriving on ``iface`` until cancelled (unicast to the asker). No
    datagram ends it: a source that cannot be answered (port 0, ``::``, multicast), a malformed
    request, or an answer the kernel cannot send (no route) is dropped with a rate-limited log line.
    A second responder on the same interface is refused (:class:`InterfaceInUse`): the port is bound
    to the interface without SO_REUSEADDR."""
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    quiet = RateLimitedLog(log, burst=5, interval=10.0)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        try:
            await sock.bind(("::", SDP_PORT, 0, 0))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise InterfaceInUse(f"another SDP responder already serves {iface} (UDP port {SDP_PORT} is "
                                     "taken there): is a second charger process running on it?") from None
            raise
        index = _ifindex(iface)
        group = socket.inet_pton(socket.AF_INET6, ALL_NODES) + struct.pack("@I", index)
        try:  # all-nodes is joined by every interface already; joining again is harmless or EADDRINUSE
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        except OSError:
            pass
        task_status.started()
        try:
            await _answer_forever(sock, server, iface, quiet, record)
        finally:
            quiet.flush("SDP log lines (dropped or unanswerable datagrams)")


async def _answer_forever(sock: trio.socket.SocketType, server: SdpServer, iface: str, quiet: RateLimitedLog,
                          record: SdpRecorder | None = None) -> None:
    """The responder's loop: every datagram answered or dropped, none can end it."""
    while True:
        try:
            data, addr = await sock.recvfrom(512)
        except OSError as e:  # e.g. a queued ICMP error: the socket itself is fine
            quiet.warning("SDP receive error on %s: %s", iface, e)
            await trio.sleep(0.01)
            continue
        why = _unanswerable(addr)
        if why is not None:
            quiet.info("dropped an SDP datagram on %s: %s", iface, why)
            continue
        answer = server.handle(data)
        if answer is None:
            quiet.info("dropped a malformed SDP request from [%s]:%s", addr[0], addr[1])
            continue
        if record is not None:  # only well-formed requests: a flood of junk never writes a trace
            record(data, answer, f"[{addr[0]}]:{addr[1]}")
        try:
            await sock.sendto(answer, addr)
        except OSError as e:  # no route back (a global source on the link), a full buffer, ...
            quiet.info("could not answer SDP from [%s]:%s: %s", addr[0], addr[1], e.strerror or e)


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
