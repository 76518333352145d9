"""A session trace (edge.trace) as a pcapng capture that Wireshark and tshark open: ``edge trace pcap FILE -o OUT``.

The trace holds what was said, not the packets that carried it, so most frames are synthesized:

* ``slac``: the recorded Ethernet frames as they are (HomePlug AV).
* ``sdp``: UDP over IPv6, the request from the car's address and port to [ff02::1]:15118, the response back from
  the charger's port 15118 (both datagrams carry their V2GTP headers already).
* ``v2gtp``: one TCP stream per connection between the car (its ``peer`` "[addr]:port", else fe80::2 and an
  ephemeral port) and the charger (the address and port of the last SDP response before it, else the header's
  ``meta["tcp_port"]``, else fe80::1 and :data:`DEFAULT_CHARGER_TCP_PORT`): SYN, SYN-ACK, ACK where the connection
  opens, each message one write with its 8-byte V2GTP header rebuilt, FIN/ACK both ways where it closes.
* ``wire``: a TLS connection's bytes as they crossed the socket replace that connection's ``v2gtp`` records (their
  plaintext is what Wireshark decrypts), with every ``tls`` key-log line in a Decryption Secrets Block before the
  packets, so the capture decrypts without a key-log file. A connection's stream begins at its first record
  (wire bytes of the handshake may come before the ``connection`` open record); wire bytes after its close
  become a comment (a TCP stream carries nothing after both FINs).
* ``ocpp``: WebSocket text frames in one TCP stream from the station (192.0.2.1) to a CSMS (192.0.2.2:80) that
  begins with a synthesized HTTP Upgrade and its 101 answer; the station's frames are masked (RFC 6455).
* ``header``, ``hardware``, ``state``, ``end``, connection events and later kinds: packet comments (on the next
  packet, or the last one), the header's on the section.

Every frame gets correct lengths and checksums; payloads are cut into segments of at most :data:`TCP_MSS` bytes.
Timestamps are the records' wall times (header ``wall`` + ``t``), in microseconds. Output is deterministic: the
same trace gives the same bytes (sequence numbers and masks derive from the trace, not from randomness).
Pure Python (struct), no capture library: the daemon may import this module.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edge.trace import TraceReader, TraceRecord, read_trace

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# pcapng (draft-ietf-opsawg-pcapng) block and option codes
BLOCK_SECTION_HEADER = 0x0A0D0D0A
BLOCK_INTERFACE_DESCRIPTION = 0x00000001
BLOCK_ENHANCED_PACKET = 0x00000006
BLOCK_DECRYPTION_SECRETS = 0x0000000A
BYTE_ORDER_MAGIC = 0x1A2B3C4D
SECRETS_TLS_KEY_LOG = 0x544C534B  # "TLSK": NSS key-log lines
OPT_END_OF_OPT = 0
OPT_COMMENT = 1
OPT_SHB_USERAPPL = 4
OPT_IF_NAME = 2
LINKTYPE_ETHERNET = 1

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IP_PROTO_TCP = 6
IP_PROTO_UDP = 17
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10
#: payload bytes per synthesized TCP segment (what a 1500-byte Ethernet MTU carries with room for options)
TCP_MSS = 1440
TCP_WINDOW = 64240
#: the receiver of this many unacknowledged bytes sends a pure ACK (so no analysis sees a full window)
ACK_AFTER_BYTES = 32 * 1024
FIRST_EPHEMERAL_PORT = 49152

SDP_PORT = 15118
V2GTP_VERSION = 0x01
#: the charger's TCP port when neither an SDP response in the trace nor the header's meta["tcp_port"] names one
DEFAULT_CHARGER_TCP_PORT = 15119
CHARGER_MAC = bytes.fromhex("020000000001")  # locally administered: used when no SLAC frame shows the real ones
CAR_MAC = bytes.fromhex("020000000002")
ALL_NODES_MAC = bytes.fromhex("333300000001")  # ff02::1 on Ethernet (RFC 2464)
CHARGER_ADDRESS = ipaddress.IPv6Address("fe80::1")
CAR_ADDRESS = ipaddress.IPv6Address("fe80::2")
ALL_NODES_ADDRESS = ipaddress.IPv6Address("ff02::1")
# OCPP runs on the station's backend network: documentation addresses (RFC 5737), plain ws so it dissects
STATION_MAC = bytes.fromhex("020000000101")
CSMS_MAC = bytes.fromhex("020000000102")
STATION_ADDRESS = ipaddress.IPv4Address("192.0.2.1")
CSMS_ADDRESS = ipaddress.IPv4Address("192.0.2.2")
CSMS_PORT = 80
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# SLAC messages whose sender tells the car's MAC (received) or the charger's (sent), rather than a modem's
_ETHERTYPE_HOMEPLUG = 0x88E1
_CAR_SLAC_MMTYPES = frozenset({0x6064, 0x607C})  # CM_SLAC_PARM.REQ, CM_SLAC_MATCH.REQ
_CHARGER_SLAC_MMTYPES = frozenset({0x6065, 0x607D})  # CM_SLAC_PARM.CNF, CM_SLAC_MATCH.CNF
_PEER = re.compile(r"^\[(?P<address>[^\]]+)\]:(?P<port>\d{1,5})$")


class PcapExportError(Exception):
    """The trace cannot be exported (no trace header: not a trace, or corrupt from its start)."""


@dataclass
class PcapSummary:
    """What went into the capture."""

    records: Counter[str] = field(default_factory=Counter)  # records read, per kind
    packets: Counter[str] = field(default_factory=Counter)  # frames written, per kind of the record they carry
    comments: int = 0  # records written as packet comments
    key_log_lines: int = 0  # in the Decryption Secrets Block
    truncated_at: int | None = None  # the trace ends inside a record here (everything before it is exported)
    error: str | None = None  # a corrupt record stopped the reading (everything before it is exported)

    @property
    def total_packets(self) -> int:
        return sum(self.packets.values())


# =========================================================================== pcapng blocks


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _options(options: list[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    out = b"".join(struct.pack("<HH", code, len(value)) + _pad4(value) for code, value in options)
    return out + struct.pack("<HH", OPT_END_OF_OPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)  # type, two lengths and the (already padded) body
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


class PcapngWriter:
    """Little-endian pcapng, one section with one Ethernet interface (microsecond timestamps, the default)."""

    def __init__(self, out: IO[bytes], *, application: str = "edge trace pcap", comment: str | None = None,
                 interface_name: str | None = None) -> None:
        self.out = out
        options = [(OPT_SHB_USERAPPL, application.encode())]
        if comment:
            options.append((OPT_COMMENT, comment.encode("utf-8", "replace")))
        # section length -1: not given (the file is written in one pass)
        self.out.write(_block(BLOCK_SECTION_HEADER, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
                              + _options(options)))
        idb_options = [(OPT_IF_NAME, interface_name.encode("utf-8", "replace"))] if interface_name else []
        self.out.write(_block(BLOCK_INTERFACE_DESCRIPTION, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0)
                              + _options(idb_options)))

    def decryption_secrets(self, secrets_type: int, data: bytes) -> None:
        self.out.write(_block(BLOCK_DECRYPTION_SECRETS, struct.pack("<II", secrets_type, len(data)) + _pad4(data)))

    def packet(self, timestamp_us: int, frame: bytes, comments: list[str] | tuple[str, ...] = ()) -> None:
        timestamp_us = max(timestamp_us, 0)
        body = struct.pack("<IIIII", 0, timestamp_us >> 32, timestamp_us & 0xFFFFFFFF, len(frame), len(frame))
        body += _pad4(frame) + _options([(OPT_COMMENT, c.encode("utf-8", "replace")) for c in comments])
        self.out.write(_block(BLOCK_ENHANCED_PACKET, body))


# =========================================================================== frames


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    # no padding to 60 bytes: a capture on the sending host sees frames before the NIC pads them
    return dst + src + struct.pack("!H", ethertype) + payload


def _pseudo_header(src: IPAddress, dst: IPAddress, protocol: int, length: int) -> bytes:
    if isinstance(src, ipaddress.IPv6Address):
        return src.packed + dst.packed + struct.pack("!I3xB", length, protocol)
    return src.packed + dst.packed + struct.pack("!xBH", protocol, length)


def ip_packet(src: IPAddress, dst: IPAddress, protocol: int, payload: bytes, *, hop_limit: int = 64) -> bytes:
    """An IPv6 header (or IPv4, checksummed, for IPv4 addresses) before ``payload``."""
    if isinstance(src, ipaddress.IPv6Address):
        return struct.pack("!IHBB", 6 << 28, len(payload), protocol, hop_limit) + src.packed + dst.packed + payload
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0x4000, hop_limit, protocol, 0)  # DF set
    header += src.packed + dst.packed
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:] + payload


def tcp_segment(src: IPAddress, dst: IPAddress, src_port: int, dst_port: int, seq: int, ack: int, flags: int,
                payload: bytes = b"", options: bytes = b"") -> bytes:
    """A TCP header (checksum over the pseudo-header) and ``payload``; ``options`` a multiple of 4 bytes."""
    offset_words = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", src_port, dst_port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset_words << 4,
                         flags, TCP_WINDOW, 0, 0) + options
    segment = header + payload
    checksum = internet_checksum(_pseudo_header(src, dst, IP_PROTO_TCP, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", checksum) + segment[18:]


def udp_datagram(src: IPAddress, dst: IPAddress, src_port: int, dst_port: int, payload: bytes) -> bytes:
    datagram = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    checksum = internet_checksum(_pseudo_header(src, dst, IP_PROTO_UDP, len(datagram)) + datagram) or 0xFFFF
    return datagram[:6] + struct.pack("!H", checksum) + datagram[8:]


def v2gtp_message(payload_type: int, payload: bytes) -> bytes:
    """The V2GTP header (version, its inverse, payload type, length; big-endian) and the payload."""
    return struct.pack("!BBHI", V2GTP_VERSION, V2GTP_VERSION ^ 0xFF, payload_type, len(payload)) + payload


def websocket_frame(text: str, mask_key: bytes | None) -> bytes:
    """One final text frame (opcode 1); masked with ``mask_key`` (4 bytes) as a client sends it."""
    payload = text.encode("utf-8", "replace")
    mask_bit = 0x80 if mask_key is not None else 0
    if len(payload) < 126:
        header = struct.pack("!BB", 0x81, mask_bit | len(payload))
    elif len(payload) < 1 << 16:
        header = struct.pack("!BBH", 0x81, mask_bit | 126, len(payload))
    else:
        header = struct.pack("!BBQ", 0x81, mask_bit | 127, len(payload))
    if mask_key is None:
        return header + payload
    key = (mask_key * (len(payload) // 4 + 1))[: len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")
    return header + mask_key + masked


@dataclass(frozen=True)
class Endpoint:
    mac: bytes
    address: IPAddress
    port: int


class TcpStream:
    """One synthesized TCP connection: the frames of its handshake, data and close, sequence numbers kept."""

    def __init__(self, client: Endpoint, server: Endpoint, client_isn: int, server_isn: int) -> None:
        self.client, self.server = client, server
        self.next_seq = {True: client_isn, False: server_isn}  # keyed by "from the client"
        self.unacked = {True: 0, False: 0}  # bytes each side sent that the other has not acknowledged
        self.closed = False

    def _frame(self, from_client: bool, flags: int, payload: bytes = b"", options: bytes = b"") -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        ack = self.next_seq[not from_client] if flags & TCP_ACK else 0
        segment = tcp_segment(src.address, dst.address, src.port, dst.port, self.next_seq[from_client], ack,
                              flags, payload, options)
        if flags & TCP_ACK:
            self.unacked[not from_client] = 0
        self.next_seq[from_client] += len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        self.unacked[from_client] += len(payload)
        ethertype = ETHERTYPE_IPV6 if isinstance(src.address, ipaddress.IPv6Address) else ETHERTYPE_IPV4
        return ethernet(dst.mac, src.mac, ethertype, ip_packet(src.address, dst.address, IP_PROTO_TCP, segment))

    def open(self) -> list[bytes]:
        mss = struct.pack("!BBH", 2, 4, TCP_MSS)  # option kind 2, length 4
        return [self._frame(True, TCP_SYN, options=mss), self._frame(False, TCP_SYN | TCP_ACK, options=mss),
                self._frame(True, TCP_ACK)]

    def send(self, from_client: bool, data: bytes) -> list[bytes]:
        """``data`` as one write: segments of at most :data:`TCP_MSS` bytes, PSH on the last one."""
        frames = []
        for start in range(0, len(data), TCP_MSS):
            chunk = data[start:start + TCP_MSS]
            last = start + TCP_MSS >= len(data)
            frames.append(self._frame(from_client, TCP_ACK | (TCP_PSH if last else 0), chunk))
            if self.unacked[from_client] >= ACK_AFTER_BYTES:
                frames.append(self._frame(not from_client, TCP_ACK))
        return frames

    def close(self, client_first: bool = False) -> list[bytes]:
        """FIN/ACK from one side, the other's ACK, then the same the other way."""
        self.closed = True
        first = client_first
        return [self._frame(first, TCP_FIN | TCP_ACK), self._frame(not first, TCP_ACK),
                self._frame(not first, TCP_FIN | TCP_ACK), self._frame(first, TCP_ACK)]


def _derived(*parts: object, size: int = 4) -> int:
    """A number fixed by ``parts`` (sequence numbers, masks: the same trace gives the same capture)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:size], "big")


def parse_peer(peer: object) -> tuple[ipaddress.IPv6Address | None, int | None]:
    """``"[fe80::2]:50123"`` -> (address, port); None for what is not there or not IPv6 (the PLC link is)."""
    if not isinstance(peer, str):
        return None, None
    m = _PEER.match(peer)
    if m is None:
        return None, None
    port = int(m["port"]) if 0 < int(m["port"]) < 65536 else None
    try:
        return ipaddress.IPv6Address(m["address"]), port
    except ValueError:
        return None, port


# =========================================================================== the export


@dataclass
class _Scan:
    """What the first pass learns: the secrets go before every packet, and whether a peer's connection is
    carried by its wire bytes decides what its v2gtp records become."""

    header: dict[str, Any] | None = None
    key_log: list[str] = field(default_factory=list)
    wire_peers: set[str] = field(default_factory=set)
    car_mac: bytes | None = None
    charger_mac: bytes | None = None


def _scan(reader: TraceReader) -> _Scan:
    scan = _Scan()
    seen_lines: set[str] = set()
    for record in reader:
        if record.kind == "tls":
            line = record.get("line")
            if isinstance(line, str) and line and line not in seen_lines:
                seen_lines.add(line)
                scan.key_log.append(line)
        elif record.kind == "wire" and isinstance(record.get("peer"), str):
            scan.wire_peers.add(record.get("peer"))
        elif record.kind == "slac":
            frame = record.get("frame")
            if not isinstance(frame, bytes) or len(frame) < 17:
                continue
            ethertype, mmtype = struct.unpack_from(">H", frame, 12)[0], struct.unpack_from("<H", frame, 15)[0]
            if ethertype != _ETHERTYPE_HOMEPLUG:
                continue
            if record.get("dir") == "rx" and mmtype in _CAR_SLAC_MMTYPES and scan.car_mac is None:
                scan.car_mac = frame[6:12]
            elif record.get("dir") == "tx" and mmtype in _CHARGER_SLAC_MMTYPES and scan.charger_mac is None:
                scan.charger_mac = frame[6:12]
    scan.header = reader.header
    return scan


def _describe(record: TraceRecord) -> str:
    """A comment's text for a record that is not a packet."""
    values = record.get("values") if record.kind == "hardware" else None
    if isinstance(values, dict):
        text = " ".join(f"{k}={v}" for k, v in values.items())
    else:
        text = " ".join(f"{k}={v}" for k, v in record.fields.items() if not isinstance(v, bytes | dict | list))
    return f"edge trace t={record.t:.6f} s {record.kind}: {text}".rstrip()


class _CaptureBuilder:
    """The second pass: records in, packets out (one packet held back so that comments after the last
    packet still find one)."""

    def __init__(self, writer: PcapngWriter, scan: _Scan, summary: PcapSummary) -> None:
        self.writer = writer
        self.summary = summary
        self.wire_peers = scan.wire_peers
        header = scan.header or {}
        self.wall = float(header["wall"]) if isinstance(header.get("wall"), int | float) else 0.0
        meta = header.get("meta") if isinstance(header.get("meta"), dict) else {}
        port = meta.get("tcp_port")
        self.charger = Endpoint(scan.charger_mac or CHARGER_MAC, CHARGER_ADDRESS,
                                port if isinstance(port, int) and 0 < port < 65536 else DEFAULT_CHARGER_TCP_PORT)
        self.car_mac = scan.car_mac or CAR_MAC
        self.session = str(header.get("session", ""))
        self.streams_by_conn: dict[int, TcpStream] = {}
        self.streams_by_peer: dict[str, TcpStream] = {}
        self.closed_peers: set[str] = set()  # their connection's FIN is out: later wire bytes are not a new one
        self.stream_count = 0
        self.ocpp: TcpStream | None = None
        self.ocpp_frames = 0
        self.held: tuple[int, bytes, list[str]] | None = None
        self.pending_comments: list[str] = []

    # ------------------------------------------------------------------ output
    def emit(self, record: TraceRecord, frames: list[bytes], comment: str | None = None) -> None:
        if not frames:
            if comment is not None:
                self.comment(comment)
            return
        timestamp_us = round((self.wall + record.t) * 1e6)
        for index, frame in enumerate(frames):
            if self.held is not None:
                self.writer.packet(*self.held)
            comments, self.pending_comments = self.pending_comments, []
            if comment is not None and index == 0:
                comments.append(comment)
            self.held = (timestamp_us, frame, comments)
        self.summary.packets[record.kind] += len(frames)

    def comment(self, text: str) -> None:
        self.pending_comments.append(text)
        self.summary.comments += 1

    def finish(self) -> None:
        if self.held is not None:
            timestamp_us, frame, comments = self.held
            self.writer.packet(timestamp_us, frame, comments + self.pending_comments)
            self.held, self.pending_comments = None, []

    # ------------------------------------------------------------------ records
    def add(self, record: TraceRecord) -> None:
        handler = {"slac": self.slac, "sdp": self.sdp, "v2gtp": self.v2gtp, "wire": self.wire, "ocpp": self.ocpp_text,
                   "connection": self.connection, "tls": self.key_log_line}.get(record.kind)
        if handler is not None:
            handler(record)
        elif record.kind != "header":  # the header is the section's comment
            self.comment(_describe(record))

    def key_log_line(self, record: TraceRecord) -> None:
        """Already in the Decryption Secrets Block."""

    def slac(self, record: TraceRecord) -> None:
        frame = record.get("frame")
        if isinstance(frame, bytes) and len(frame) >= 14:
            self.emit(record, [frame])

    def sdp(self, record: TraceRecord) -> None:
        request, response = record.get("req"), record.get("res")
        address, port = parse_peer(record.get("peer"))
        car = Endpoint(self.car_mac, address or CAR_ADDRESS, port or FIRST_EPHEMERAL_PORT)
        frames = []
        if isinstance(request, bytes):
            datagram = udp_datagram(car.address, ALL_NODES_ADDRESS, car.port, SDP_PORT, request)
            frames.append(ethernet(ALL_NODES_MAC, car.mac, ETHERTYPE_IPV6,
                                   ip_packet(car.address, ALL_NODES_ADDRESS, IP_PROTO_UDP, datagram, hop_limit=1)))
        if isinstance(response, bytes):
            self._learn_charger(response)
            datagram = udp_datagram(self.charger.address, car.address, SDP_PORT, car.port, response)
            frames.append(ethernet(car.mac, self.charger.mac, ETHERTYPE_IPV6,
                                   ip_packet(self.charger.address, car.address, IP_PROTO_UDP, datagram)))
        self.emit(record, frames)

    def _learn_charger(self, response: bytes) -> None:
        """The address and port an SDP response announced are where the car connects next."""
        if len(response) != 28 or struct.unpack_from("!H", response, 2)[0] != 0x9001:
            return
        address = ipaddress.IPv6Address(response[8:24])
        port = struct.unpack_from("!H", response, 24)[0]
        if port and not address.is_unspecified:
            self.charger = Endpoint(self.charger.mac, address, port)

    def _stream(self, record: TraceRecord, conn: object, peer: object) -> tuple[TcpStream, list[bytes]]:
        """The open stream of ``conn`` or ``peer``, or a new one (and its handshake's frames)."""
        stream = self.streams_by_conn.get(conn) if isinstance(conn, int) else None
        if stream is None and isinstance(peer, str):
            stream = self.streams_by_peer.get(peer)
        if stream is not None and not stream.closed:
            if isinstance(conn, int):
                self.streams_by_conn[conn] = stream
            return stream, []
        address, port = parse_peer(peer)
        self.stream_count += 1
        car = Endpoint(self.car_mac, address or CAR_ADDRESS, port or FIRST_EPHEMERAL_PORT + self.stream_count)
        stream = TcpStream(car, self.charger, _derived(self.session, "car", conn, peer, self.stream_count),
                           _derived(self.session, "charger", conn, peer, self.stream_count))
        if isinstance(conn, int):
            self.streams_by_conn[conn] = stream
        if isinstance(peer, str):
            self.streams_by_peer[peer] = stream
        return stream, stream.open()

    def connection(self, record: TraceRecord) -> None:
        conn, event = record.get("conn"), record.get("event")
        if event == "open":
            if isinstance(record.get("peer"), str):
                self.closed_peers.discard(record.get("peer"))
            _, frames = self._stream(record, conn, record.get("peer"))
            self.emit(record, frames, _describe(record))
        elif event == "close" and isinstance(conn, int) and conn in self.streams_by_conn:
            stream = self.streams_by_conn.pop(conn)
            self.closed_peers.update(p for p, s in self.streams_by_peer.items() if s is stream)
            self.streams_by_peer = {p: s for p, s in self.streams_by_peer.items() if s is not stream}
            self.emit(record, stream.close() if not stream.closed else [], _describe(record))
        else:
            self.comment(_describe(record))

    def v2gtp(self, record: TraceRecord) -> None:
        conn, peer, data, payload_type = record.get("conn"), record.get("peer"), record.get("data"), record.get("pt")
        stream = self.streams_by_conn.get(conn) if isinstance(conn, int) else None
        if (isinstance(peer, str) and peer in self.wire_peers) or (
                stream is not None and self._peer_of(stream) in self.wire_peers):
            return  # that connection's wire bytes carry it, encrypted
        if not isinstance(data, bytes) or not isinstance(payload_type, int) or not 0 <= payload_type < 1 << 16:
            return
        stream, frames = self._stream(record, conn, peer)
        self.emit(record, frames + stream.send(record.get("dir") == "rx", v2gtp_message(payload_type, data)))

    def _peer_of(self, stream: TcpStream) -> str | None:
        return next((p for p, s in self.streams_by_peer.items() if s is stream), None)

    def wire(self, record: TraceRecord) -> None:
        data, peer = record.get("data"), record.get("peer")
        # e.g. a close_notify recorded after the connection's close record
        if isinstance(peer, str) and peer in self.closed_peers and isinstance(data, bytes):
            self.comment(f"edge trace t={record.t:.6f} s wire: {len(data)} bytes {record.get('dir')} from {peer} "
                         "after its connection closed, not in the TCP stream")
        elif isinstance(data, bytes) and data and isinstance(peer, str):
            stream, frames = self._stream(record, None, peer)
            self.emit(record, frames + stream.send(record.get("dir") == "rx", data))

    def ocpp_text(self, record: TraceRecord) -> None:
        text = record.get("text")
        if not isinstance(text, str):
            return
        frames = []
        if self.ocpp is None:
            self.ocpp = TcpStream(Endpoint(STATION_MAC, STATION_ADDRESS, FIRST_EPHEMERAL_PORT),
                                  Endpoint(CSMS_MAC, CSMS_ADDRESS, CSMS_PORT),
                                  _derived(self.session, "station"), _derived(self.session, "csms"))
            frames = self.ocpp.open() + self._websocket_upgrade(self.ocpp)
        from_station = record.get("dir") == "tx"
        self.ocpp_frames += 1
        mask_key = _derived(self.session, "mask", self.ocpp_frames).to_bytes(4, "big") if from_station else None
        self.emit(record, frames + self.ocpp.send(from_station, websocket_frame(text, mask_key)))

    def _websocket_upgrade(self, stream: TcpStream) -> list[bytes]:
        """The opening handshake (RFC 6455 4.1/4.2.2); no subprotocol offered: the trace does not say which."""
        key = base64.b64encode(_derived(self.session, "ws-key", size=16).to_bytes(16, "big"))
        accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
        request = (b"GET /ocpp HTTP/1.1\r\nHost: " + str(CSMS_ADDRESS).encode() + b"\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        return stream.send(True, request) + stream.send(False, response)


def _section_comment(header: dict[str, Any], source: Path) -> str:
    fields = " ".join(f"{k}={header[k]}" for k in ("evse", "iface", "session", "sw") if header.get(k) not in (None, ""))
    return f"edge session trace {source.name}: {fields}".rstrip()


def write_pcapng(trace_path: Path | str, out_path: Path | str) -> PcapSummary:
    """Write the capture of one trace to ``out_path``; OSError if a file cannot be read or written,
    :class:`PcapExportError` for a file that is not a trace (nothing is written then). A trace cut inside a
    record, or corrupt after its header, gives the capture of every record before that (``truncated_at``,
    ``error`` in the summary)."""
    trace_path, out_path = Path(trace_path), Path(out_path)
    scan_reader = read_trace(trace_path)
    scan = _scan(scan_reader)
    if scan.header is None:
        why = scan_reader.error or "no header record"
        raise PcapExportError(f"{trace_path}: not a session trace ({why})")
    summary = PcapSummary(key_log_lines=len(scan.key_log))
    with open(out_path, "wb") as out:
        writer = PcapngWriter(out, comment=_section_comment(scan.header, trace_path),
                              interface_name=str(scan.header.get("iface") or "") or None)
        if scan.key_log:
            writer.decryption_secrets(SECRETS_TLS_KEY_LOG, "".join(line + "\n" for line in scan.key_log).encode())
        builder = _CaptureBuilder(writer, scan, summary)
        reader = read_trace(trace_path)
        for record in _counted(reader, summary):
            builder.add(record)
        builder.finish()
    summary.truncated_at, summary.error = reader.truncated_at, reader.error
    return summary


def _counted(records: Iterator[TraceRecord], summary: PcapSummary) -> Iterator[TraceRecord]:
    for record in records:
        summary.records[record.kind] += 1
        yield record
