"""V2GTP (ISO 15118-2 section 7.8.3): an 8-byte header (version 0x01, inverse 0xFE, payload type,
payload length, big-endian) before every EXI message and SDP datagram. Sans-IO: the decoder is fed
bytes from a stream and returns whole messages; it never buffers more than the length limit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct(">BBHI")
HEADER_SIZE = HEADER.size
VERSION = 0x01
#: The largest payload we accept. -2 CertificateInstallationRes is a few kB; Josev cannot receive
#: more than 7,000 bytes in one read anyway.
DEFAULT_MAX_PAYLOAD = 65_536


class PayloadType(IntEnum):
    EXI = 0x8001  # supportedAppProtocol, DIN SPEC 70121, ISO 15118-2
    ISO20_COMMON = 0x8002
    ISO20_AC = 0x8003
    ISO20_DC = 0x8004
    ISO20_ACDP = 0x8005
    ISO20_WPT = 0x8006
    SDP_REQUEST = 0x9000
    SDP_RESPONSE = 0x9001


class V2gtpError(ValueError):
    """A header we must not accept; the connection is closed (no payload is trusted after it)."""


@dataclass(frozen=True, slots=True)
class V2gtpMessage:
    payload_type: int
    payload: bytes


#: a connection handler's "not yet": the server waits and hands the same request in again (see
#: :class:`edge.v2g.session.AnswerLater`)
ANSWER_LATER = V2gtpMessage(0, b"")


def frame(payload_type: int, payload: bytes) -> bytes:
    """Header and payload as one bytes object: send it in one write (Josev reads one message per read)."""
    return HEADER.pack(VERSION, VERSION ^ 0xFF, payload_type, len(payload)) + payload


def parse_header(data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple[int, int]:
    """(payload type, payload length) of a complete 8-byte header; V2gtpError if it is not acceptable."""
    version, inverse, ptype, length = HEADER.unpack_from(data)
    if version != VERSION or inverse != VERSION ^ 0xFF:
        raise V2gtpError(f"V2GTP version {version:#04x}/{inverse:#04x}, expected 0x01/0xfe")
    if ptype not in PayloadType.__members__.values():
        raise V2gtpError(f"unknown V2GTP payload type {ptype:#06x}")
    if length > max_payload:
        raise V2gtpError(f"V2GTP payload length {length} exceeds the limit of {max_payload}")
    return ptype, length


def parse_datagram(data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> V2gtpMessage:
    """One whole UDP datagram (SDP): the header's length must match what follows."""
    if len(data) < HEADER_SIZE:
        raise V2gtpError(f"datagram of {len(data)} bytes is shorter than the V2GTP header")
    ptype, length = parse_header(data, max_payload)
    if length != len(data) - HEADER_SIZE:
        raise V2gtpError(f"V2GTP length {length} but {len(data) - HEADER_SIZE} payload bytes")
    return V2gtpMessage(ptype, bytes(data[HEADER_SIZE:]))


class V2gtpDecoder:
    """Reassembles V2GTP messages from a TCP/TLS byte stream (which may split or join them)."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[V2gtpMessage]:
        self._buf += data
        out: list[V2gtpMessage] = []
        while len(self._buf) >= HEADER_SIZE:
            ptype, length = parse_header(self._buf, self.max_payload)
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                break
            out.append(V2gtpMessage(ptype, bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)
