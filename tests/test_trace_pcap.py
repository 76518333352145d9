"""``edge trace pcap`` (edge.trace_pcap): a trace with every kind of record, a real TLS 1.3 connection among them,
becomes a pcapng capture that tshark dissects (HomePlug AV, UDP, TCP, decrypted TLS, WebSocket) without malformed
packets or bad checksums."""

from __future__ import annotations

import datetime
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import exi
from edge.trace import SessionTraceWriter
from edge.trace_pcap import (
    CSMS_PORT,
    DEFAULT_CHARGER_TCP_PORT,
    TCP_MSS,
    PcapExportError,
    v2gtp_message,
    write_pcapng,
)
from edge.v2g.sdp import SECURITY_NONE, SdpRequest, SdpResponse
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq, supportedAppProtocolRes
from slac.messages import SlacMatchCnf, SlacMatchReq, SlacParmCnf, SlacParmReq, encode_frame

REPO = Path(__file__).resolve().parents[1]
WALL = 1_796_400_000.0  # 2026-12-04 16:00 UTC
CAR_MAC = bytes.fromhex("02aabbccddee")
CHARGER_MAC = bytes.fromhex("021122334455")
CHARGER_PORT = 50000  # what the trace's SDP response announces
PLAIN_PEER = "[fe80::2]:50123"
TLS_PEER = "[fe80::2]:50124"
BOOT = '[2,"19223201","BootNotification",{"reason":"PowerUp","chargingStation":{"model":"edge","vendorName":"x"}}]'
BOOT_RESULT = '[3,"19223201",{"currentTime":"2026-12-04T16:00:02Z","interval":300,"status":"Accepted"}]'
# longer than one segment: the WebSocket frame is reassembled from several
BIG_OCPP = '[2,"19223202","DataTransfer",{"vendorId":"edge","data":"' + "é" * 2000 + '"}]'


def _apphand_messages() -> tuple[bytes, bytes]:
    """A real supportedAppProtocolReq and its Res, EXI without the V2GTP header."""
    request = exi.encode("apphand", supportedAppProtocolReq(
        [AppProtocolType("urn:iso:15118:2:2013:MsgDef", 2, 0, 1, 1)]))
    response = exi.encode("apphand", supportedAppProtocolRes("OK_SuccessfulNegotiation", 1))
    return request, response


@dataclass
class TlsSession:
    """One TLS 1.3 connection made in memory: the bytes each way in the order they crossed, and its key log."""

    transfers: list[tuple[str, bytes]] = field(default_factory=list)  # ("rx" car->charger | "tx", bytes)
    handshake_transfers: int = 0  # the first ones: everything before the application data
    key_log: list[str] = field(default_factory=list)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "charger")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "charger.pem", tmp_path / "charger.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tls_session(tmp_path: Path, request: bytes, response: bytes) -> TlsSession:
    """The car (client) sends ``request``, the charger (server) answers ``response``, over TLS 1.3 between two
    SSLObjects on memory BIOs: every byte is captured, nothing touches a network."""
    cert_path, key_path = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(cert_path)
    client_context.minimum_version = ssl.TLSVersion.TLSv1_3
    key_log_path = tmp_path / "keylog.txt"
    client_context.keylog_filename = str(key_log_path)
    to_server, from_client, to_client, from_server = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(to_client, from_client, server_hostname="charger")
    server = server_context.wrap_bio(to_server, from_server, server_side=True)
    session = TlsSession()

    def carry() -> None:
        while True:
            if data := from_client.read():
                session.transfers.append(("rx", data))
                to_server.write(data)
            elif data := from_server.read():
                session.transfers.append(("tx", data))
                to_client.write(data)
            else:
                return

    def step(end: ssl.SSLObject) -> None:
        try:
            end.do_handshake()
        except ssl.SSLWantReadError:
            pass

    for _ in range(4):
        step(client)
        carry()
        step(server)
        carry()
    assert client.version() == "TLSv1.3" and server.version() == "TLSv1.3"
    session.handshake_transfers = len(session.transfers)
    client.write(request)
    carry()
    assert server.read(65536) == request
    server.write(response)
    carry()
    assert client.read(65536) == response  # (reads the session tickets too)
    session.key_log = [line for line in key_log_path.read_text().splitlines() if line and not line.startswith("#")]
    assert len(session.key_log) >= 4  # handshake and traffic secrets both ways
    return session


@dataclass
class Trace:
    path: Path
    slac_frames: list[bytes]
    sdp_request: bytes
    sdp_response: bytes
    plain_messages: list[tuple[str, bytes]]  # dir, V2GTP message as it crossed (header included)
    tls_request: bytes
    tls_response: bytes
    ocpp: list[tuple[str, str]]


def write_trace(path: Path, tls: TlsSession, tls_request: bytes, tls_response: bytes, *,
                with_keys: bool = True) -> Trace:
    """A session with every kind of record: SLAC, SDP, a plain TCP connection with supportedAppProtocol and a
    message longer than a segment, a TLS connection (its wire bytes, key log and plaintext), OCPP, hardware,
    state and end. The TLS connection's open record follows its handshake, as the charger writes it."""
    request, response = _apphand_messages()
    big_payload = bytes(range(256)) * 20  # 5120 bytes: four segments
    writer = SessionTraceWriter(path, evse="evse1", interface="eth1", session="pcap1", now=0.0, wall=WALL,
                                software="test")
    run_id = bytes(range(8))
    slac_frames = [encode_frame(b"\xff" * 6, CAR_MAC, SlacParmReq(run_id=run_id)),
                   encode_frame(CAR_MAC, CHARGER_MAC, SlacParmCnf(forwarding_sta=CAR_MAC, run_id=run_id)),
                   encode_frame(CHARGER_MAC, CAR_MAC, SlacMatchReq(pev_mac=CAR_MAC, evse_mac=CHARGER_MAC,
                                                                   run_id=run_id)),
                   encode_frame(CAR_MAC, CHARGER_MAC, SlacMatchCnf(pev_mac=CAR_MAC, evse_mac=CHARGER_MAC,
                                                                   run_id=run_id, nmk=bytes(16)))]
    for index, frame in enumerate(slac_frames):
        writer.slac("rx" if index % 2 == 0 else "tx", frame, now=0.1 + index * 0.01)
    sdp_request = SdpRequest(SECURITY_NONE, 0).encode()
    sdp_response = SdpResponse(bytes.fromhex("fe80" + "00" * 13 + "01"), CHARGER_PORT, SECURITY_NONE).encode()
    writer.sdp(sdp_request, sdp_response, now=0.2, peer="[fe80::2]:61000")

    conn = writer.connection_opened(PLAIN_PEER, now=0.3)
    plain = [("rx", 0x8001, request), ("tx", 0x8001, response), ("rx", 0x8001, big_payload)]
    for index, (direction, payload_type, payload) in enumerate(plain):
        writer.v2gtp(direction, payload_type, payload, now=0.31 + index * 0.01, conn=conn, peer=PLAIN_PEER)
    writer.state("Charging", note="plain connection done", now=0.35)
    writer.connection_closed(conn, "car closed", now=0.4)

    t = 1.0
    if with_keys:
        for line in tls.key_log:
            writer.tls_key(line, now=t)
    for index, (direction, data) in enumerate(tls.transfers):
        if index == tls.handshake_transfers:
            tls_conn = writer.connection_opened(TLS_PEER, now=t, tls="TLSv1.3")
            writer.v2gtp("rx", 0x8001, tls_request[8:], now=t, conn=tls_conn, peer=TLS_PEER)
            writer.v2gtp("tx", 0x8001, tls_response[8:], now=t, conn=tls_conn, peer=TLS_PEER)
        t += 0.01
        writer.wire(direction, data, peer=TLS_PEER, now=t)
    writer.connection_closed(tls_conn, "car closed", now=t + 0.01)

    ocpp = [("tx", BOOT), ("rx", BOOT_RESULT), ("tx", BIG_OCPP)]
    for index, (direction, text) in enumerate(ocpp):
        writer.ocpp(direction, text, now=2.0 + index * 0.1)
    writer.hardware({"present_voltage": 400.0, "present_current": 10.0}, now=2.5)
    writer.close("done", now=3.0, energy_wh=12.5)
    return Trace(path, slac_frames, sdp_request, sdp_response,
                 [(d, v2gtp_message(pt, p)) for d, pt, p in plain], tls_request, tls_response, ocpp)


# ------------------------------------------------------------------------------------------ tshark


# (the tshark fixture is in conftest.py: the mission's tests open captures too)


CHECKSUMS = ["-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]


def fields(tshark: str, capture: Path, display_filter: str, *names: str) -> list[list[str]]:
    """``tshark -T fields``: one row per packet that passes the filter, one column per field."""
    args = [tshark, "-n", "-r", str(capture), *CHECKSUMS, "-Y", display_filter, "-T", "fields", "-E", "occurrence=a",
            "-E", "aggregator=,"]
    for name in names:
        args += ["-e", name]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, TlsSession]:
    request, response = _apphand_messages()
    tls_request, tls_response = v2gtp_message(0x8001, request), v2gtp_message(0x8001, response)
    return tls_request, tls_response, tls_session(tmp_path_factory.mktemp("tls"), tls_request, tls_response)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory,
            exchange: tuple[bytes, bytes, TlsSession]) -> tuple[Trace, Path]:
    directory = tmp_path_factory.mktemp("pcap")
    trace = write_trace(directory / "session.cbor", exchange[2], exchange[0], exchange[1])
    out = directory / "session.pcapng"
    summary = write_pcapng(trace.path, out)
    assert summary.error is None and summary.truncated_at is None
    assert summary.key_log_lines == len(exchange[2].key_log)
    assert summary.packets["slac"] == 4 and summary.packets["sdp"] == 2
    # the plain connection's handshake and close, the TLS one's close: its handshake came with its first bytes
    assert summary.packets["connection"] == 3 + 4 + 4
    assert summary.packets["v2gtp"] == 2 + 4  # two messages, then one of four segments
    assert summary.packets["wire"] == 3 + len(exchange[2].transfers)
    # state, hardware, end, and the TLS connection's open (no SYN of its own: it came with the first wire bytes)
    assert summary.comments == 4
    return trace, out


# ------------------------------------------------------------------------------------------ the capture


def test_slac_frames_are_written_as_recorded_and_dissect_as_homeplug_av(tshark: str,
                                                                      capture: tuple[Trace, Path]) -> None:
    trace, out = capture
    rows = fields(tshark, out, "homeplug-av", "frame.time_epoch", "eth.src", "homeplug_av.mmhdr.mmtype")
    assert [row[2] for row in rows] == ["0x6064", "0x6065", "0x607c", "0x607d"]
    assert float(rows[0][0]) == pytest.approx(WALL + 0.1, abs=1e-6)  # wall + t
    from scapy.utils import rdpcap

    packets = rdpcap(str(out))
    assert [bytes(p) for p in packets[:4]] == trace.slac_frames


def test_sdp_is_udp_to_and_from_port_15118(tshark: str, capture: tuple[Trace, Path]) -> None:
    trace, out = capture
    rows = fields(tshark, out, "udp.port == 15118", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport",
                  "udp.payload")
    assert rows == [["fe80::2", "ff02::1", "61000", "15118", trace.sdp_request.hex()],
                    ["fe80::1", "fe80::2", "15118", "61000", trace.sdp_response.hex()]]


def test_v2gtp_messages_travel_in_one_tcp_stream_to_the_announced_port(tshark: str,
                                                                       capture: tuple[Trace, Path]) -> None:
    trace, out = capture
    rows = fields(tshark, out, f"tcp.port == {CHARGER_PORT} && tcp.len > 0 && !tls", "ipv6.src", "tcp.srcport",
                  "tcp.dstport", "tcp.stream", "tcp.len", "tcp.payload")
    assert len({row[3] for row in rows}) == 1
    assert all(int(row[4]) <= TCP_MSS for row in rows)
    car_to_charger = b"".join(bytes.fromhex(r[5]) for r in rows if r[0] == "fe80::2" and r[2] == str(CHARGER_PORT))
    charger_to_car = b"".join(bytes.fromhex(r[5]) for r in rows if r[0] == "fe80::1" and r[1] == str(CHARGER_PORT))
    assert car_to_charger == b"".join(m for d, m in trace.plain_messages if d == "rx")
    assert charger_to_car == b"".join(m for d, m in trace.plain_messages if d == "tx")
    assert {r[1] for r in rows if r[0] == "fe80::2"} == {"50123"}  # the car's port from the peer
    assert bytes.fromhex(rows[0][5])[:4] == bytes.fromhex("01fe8001")  # the V2GTP header rebuilt


def test_every_stream_opens_once_and_tcp_analysis_finds_nothing_wrong(tshark: str,
                                                                      capture: tuple[Trace, Path]) -> None:
    _, out = capture
    syns = fields(tshark, out, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "tcp.stream", "tcp.dstport")
    assert sorted(row[1] for row in syns) == sorted([str(CHARGER_PORT), str(CHARGER_PORT), str(CSMS_PORT)])
    assert len({row[0] for row in syns}) == 3
    fins = fields(tshark, out, "tcp.flags.fin == 1", "tcp.stream")
    assert len(fins) == 4  # both ways on both V2G connections; the OCPP one stays open
    # wrong sequence or acknowledgement numbers show as lost, unseen or retransmitted segments
    assert fields(tshark, out, "tcp.analysis.flags && !tcp.analysis.window_update", "frame.number") == []


def test_no_packet_is_malformed_or_has_a_bad_checksum(tshark: str, capture: tuple[Trace, Path]) -> None:
    _, out = capture
    problems = "_ws.malformed || tcp.checksum.status == 0 || udp.checksum.status == 0 || ip.checksum.status == 0"
    assert fields(tshark, out, problems, "frame.number") == []
    assert fields(tshark, out, "_ws.expert.severity >= 6291456", "_ws.expert.message") == []  # warnings, errors
    every_tcp = fields(tshark, out, "tcp", "tcp.checksum.status")
    assert len(every_tcp) > 20 and {row[0] for row in every_tcp} == {"1"}  # verified and good, not unchecked
    assert {row[0] for row in fields(tshark, out, "udp", "udp.checksum.status")} == {"1"}
    assert {row[0] for row in fields(tshark, out, "ip", "ip.checksum.status")} == {"1"}


def test_the_tls_connection_carries_its_wire_bytes_and_decrypts_with_the_embedded_keys(
        tshark: str, capture: tuple[Trace, Path], exchange: tuple[bytes, bytes, TlsSession]) -> None:
    trace, out = capture
    tls = exchange[2]
    rows = fields(tshark, out, "tcp.srcport == 50124 || tcp.dstport == 50124", "tcp.srcport", "tcp.payload")
    sent = b"".join(bytes.fromhex(r[1]) for r in rows if r[0] == "50124" and r[1])
    assert sent == b"".join(data for direction, data in tls.transfers if direction == "rx")
    assert trace.tls_request not in sent  # the plaintext v2gtp records are not put on the wire
    decrypted = fields(tshark, out, "tls && data.data", "tcp.srcport", "data.data")
    assert [(r[0], bytes.fromhex(r[1])) for r in decrypted] == [("50124", trace.tls_request),
                                                               (str(CHARGER_PORT), trace.tls_response)]
    versions = {row[0] for row in fields(tshark, out, "tls.handshake.type == 2", "tls.handshake.extensions."
                                                                                  "supported_version")}
    assert versions == {"0x0304"}
    assert len(fields(tshark, out, "tls.handshake.type == 11", "frame.number")) == 1  # decrypted handshake


def test_without_key_log_lines_the_tls_connection_stays_encrypted(
        tshark: str, tmp_path: Path, exchange: tuple[bytes, bytes, TlsSession]) -> None:
    trace = write_trace(tmp_path / "nokeys.cbor", exchange[2], exchange[0], exchange[1], with_keys=False)
    out = tmp_path / "nokeys.pcapng"
    assert write_pcapng(trace.path, out).key_log_lines == 0
    assert len(fields(tshark, out, "tls.app_data", "frame.number")) >= 2
    assert fields(tshark, out, "tls && data.data", "frame.number") == []
    assert fields(tshark, out, "tls.handshake.type == 11", "frame.number") == []  # the certificate: encrypted


def test_ocpp_frames_are_websocket_text_masked_from_the_station(tshark: str, capture: tuple[Trace, Path]) -> None:
    trace, out = capture
    upgrade = fields(tshark, out, "http", "http.request.method", "http.response.code")
    assert upgrade == [["GET", ""], ["", "101"]]
    rows = fields(tshark, out, "websocket", "websocket.mask", "websocket.payload.text", "tcp.dstport")
    assert [(row[1], row[0]) for row in rows] == [(text, "1" if d == "tx" else "0") for d, text in trace.ocpp]
    assert [row[2] for row in rows] == [str(CSMS_PORT), rows[1][2], str(CSMS_PORT)]


def test_records_without_packets_become_comments(tshark: str, capture: tuple[Trace, Path]) -> None:
    _, out = capture
    comments = ",".join(row[0] for row in fields(tshark, out, "frame.comment", "frame.comment"))
    assert "state: state=Charging note=plain connection done" in comments
    assert "hardware: present_voltage=400.0 present_current=10.0" in comments
    assert "end: outcome=done energy_wh=12.5" in comments
    assert "connection: event=open conn=2 peer=[fe80::2]:50124 tls=TLSv1.3" in comments


def test_without_sdp_the_charger_gets_the_default_port_and_unknown_peers_an_ephemeral_one(
        tshark: str, tmp_path: Path) -> None:
    request, _ = _apphand_messages()
    path = tmp_path / "nosdp.cbor"
    with SessionTraceWriter(path, evse="evse1", now=0.0, wall=WALL, software="test") as writer:
        conn = writer.connection_opened(None, now=0.1)
        writer.v2gtp("rx", 0x8001, request, now=0.2, conn=conn)
        writer.v2gtp("rx", 0x8001, request, now=0.3, conn=conn + 1)  # a connection begun before the trace
    out = tmp_path / "nosdp.pcapng"
    write_pcapng(path, out)
    rows = fields(tshark, out, "tcp.len > 0", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.stream")
    assert [row[:2] for row in rows] == [["fe80::2", "fe80::1"]] * 2
    assert {row[3] for row in rows} == {str(DEFAULT_CHARGER_TCP_PORT)}
    assert rows[0][2] != rows[1][2] and rows[0][4] != rows[1][4]  # two streams, two ports
    assert len(fields(tshark, out, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "frame.number")) == 2


def test_wire_bytes_after_the_close_become_a_comment_not_a_new_connection(tshark: str, tmp_path: Path) -> None:
    path = tmp_path / "late.cbor"
    with SessionTraceWriter(path, evse="evse1", now=0.0, wall=WALL, software="test") as writer:
        writer.wire("rx", b"\x16\x03\x01\x00\x01\x01", peer=TLS_PEER, now=0.1)  # before the open record
        conn = writer.connection_opened(TLS_PEER, now=0.2, tls="TLSv1.3")
        writer.connection_closed(conn, "car closed", now=0.3)
        writer.wire("tx", b"\x15\x03\x03\x00\x02\x01\x00", peer=TLS_PEER, now=0.4)  # a late close_notify
    out = tmp_path / "late.pcapng"
    summary = write_pcapng(path, out)
    assert summary.packets == {"wire": 4, "connection": 4}
    assert len(fields(tshark, out, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "frame.number")) == 1
    assert fields(tshark, out, "tcp.len > 0", "tcp.len") == [["6"]]
    comments = ",".join(row[0] for row in fields(tshark, out, "frame.comment", "frame.comment"))
    assert "wire: 7 bytes tx from [fe80::2]:50124 after its connection closed" in comments


def test_a_trace_cut_inside_a_record_exports_every_record_before_it(tshark: str, tmp_path: Path,
                                                                    capture: tuple[Trace, Path]) -> None:
    trace, _ = capture
    data = trace.path.read_bytes()
    cut = tmp_path / "cut.cbor"
    cut.write_bytes(data[: len(data) - 5])  # inside the end record
    out = tmp_path / "cut.pcapng"
    summary = write_pcapng(cut, out)
    assert summary.truncated_at is not None and summary.records["end"] == 0
    assert summary.records["ocpp"] == 3
    assert len(fields(tshark, out, "websocket", "frame.number")) == 3


def test_a_file_that_is_not_a_trace_writes_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.cbor"
    garbage.write_bytes(b"\x19\x00\x01not a trace at all")
    with pytest.raises(PcapExportError, match="not a session trace"):
        write_pcapng(garbage, tmp_path / "out.pcapng")
    assert not (tmp_path / "out.pcapng").exists()


def test_the_exporter_does_not_import_scapy() -> None:
    """The daemon may import it: it must stay pure Python."""
    code = "import sys, edge.trace_pcap; print(sorted(m for m in sys.modules if m.split('.')[0] == 'scapy'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ the command


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_edge_trace_pcap_writes_the_capture(tshark: str, tmp_path: Path, capture: tuple[Trace, Path],
                                            exchange: tuple[bytes, bytes, TlsSession]) -> None:
    trace, reference = capture
    tls = exchange[2]
    out = tmp_path / "cli.pcapng"
    result = _edge("trace", "pcap", str(trace.path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    wire = 3 + len(tls.transfers)
    assert result.stdout == (f"{out}: {33 + wire} packets (connection 11, ocpp 10, sdp 2, slac 4, v2gtp 6, "
                             f"wire {wire}), 4 comments, {len(tls.key_log)} TLS key-log lines\n")
    assert out.read_bytes() == reference.read_bytes()  # the same trace gives the same capture
    assert len(fields(tshark, out, "homeplug-av", "frame.number")) == 4


def test_edge_trace_pcap_of_a_cut_trace_says_so_and_succeeds(tmp_path: Path, capture: tuple[Trace, Path]) -> None:
    trace, _ = capture
    cut = tmp_path / "cut.cbor"
    cut.write_bytes(trace.path.read_bytes()[:-5])
    result = _edge("trace", "pcap", str(cut), "-o", str(tmp_path / "cut.pcapng"))
    assert result.returncode == 0, result.stderr
    assert "ends inside a record" in result.stderr and (tmp_path / "cut.pcapng").stat().st_size > 1000


def test_edge_trace_pcap_of_garbage_fails_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.cbor"
    garbage.write_bytes(bytes(range(7, 250)))
    out = tmp_path / "garbage.pcapng"
    result = _edge("trace", "pcap", str(garbage), "-o", str(out))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "not a session trace" in result.stderr
    assert not out.exists()
    missing = _edge("trace", "pcap", str(tmp_path / "missing.cbor"), "-o", str(out))
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
