"""SDP (SECC Discovery Protocol, ISO 15118-2 section 7.10): the car multicasts a SECCDiscoveryReq
(security, transport) to [ff02::1]:15118; the charger answers unicast with its IPv6 address, TCP
port, security and transport. Sans-IO: ``SdpServer.handle(datagram)`` returns the answer datagram
or None (malformed requests are dropped quietly).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .v2gtp import PayloadType, V2gtpError, frame, parse_datagram

SDP_PORT = 15118
SECURITY_TLS = 0x00
SECURITY_NONE = 0x10
TRANSPORT_TCP = 0x00


@dataclass(frozen=True, slots=True)
class SdpRequest:
    security: int
    transport: int

    def encode(self) -> bytes:
        return frame(PayloadType.SDP_REQUEST, bytes([self.security, self.transport]))


@dataclass(frozen=True, slots=True)
class SdpResponse:
    address: bytes  # 16 bytes, the SECC's IPv6 (link-local) address
    port: int
    security: int
    transport: int = TRANSPORT_TCP

    def encode(self) -> bytes:
        return frame(PayloadType.SDP_RESPONSE,
                     self.address + struct.pack(">HBB", self.port, self.security, self.transport))

    @classmethod
    def decode(cls, datagram: bytes) -> SdpResponse:
        msg = parse_datagram(datagram)
        if msg.payload_type != PayloadType.SDP_RESPONSE or len(msg.payload) != 20:
            raise V2gtpError("not an SDP response (payload type 0x9001, 20 bytes)")
        port, security, transport = struct.unpack_from(">HBB", msg.payload, 16)
        return cls(msg.payload[:16], port, security, transport)


def parse_request(datagram: bytes) -> SdpRequest:
    msg = parse_datagram(datagram)
    if msg.payload_type != PayloadType.SDP_REQUEST:
        raise V2gtpError(f"payload type {msg.payload_type:#06x} is not an SDP request")
    if len(msg.payload) != 2:
        raise V2gtpError(f"SDP request payload of {len(msg.payload)} bytes, expected 2")
    security, transport = msg.payload
    if security not in (SECURITY_TLS, SECURITY_NONE):
        raise V2gtpError(f"unknown SDP security {security:#04x}")
    if transport != TRANSPORT_TCP:
        raise V2gtpError(f"SDP transport {transport:#04x}: only TCP (0x00) is defined for V2G")
    return SdpRequest(security, transport)


@dataclass
class SdpServer:
    address: str  # the SECC's IPv6 address (link-local on the PLC interface)
    tcp_port: int | None  # plain TCP listener, or None if only TLS is offered
    tls_port: int | None = None  # TLS listener, or None

    def __post_init__(self) -> None:
        self._addr = ipaddress.IPv6Address(self.address.split("%")[0]).packed
        if self.tcp_port is None and self.tls_port is None:
            raise ValueError("SDP needs at least one of a TCP or a TLS port")

    def handle(self, datagram: bytes) -> bytes | None:
        """The response to one request datagram, or None to stay silent (malformed input)."""
        try:
            req = parse_request(datagram)
        except (V2gtpError, IndexError):
            return None
        # answer with what the car asked for when we have it: a car that gets a security it did not
        # ask for may abort (Josev does); otherwise offer what we have
        if (req.security == SECURITY_TLS and self.tls_port is not None) or self.tcp_port is None:
            return SdpResponse(self._addr, self.tls_port, SECURITY_TLS).encode()  # type: ignore[arg-type]
        return SdpResponse(self._addr, self.tcp_port, SECURITY_NONE).encode()
