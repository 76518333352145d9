"""TLS for ISO 15118-2: the charger's and the car's contexts (edge.v2g.tls), the V2GTP server over TLS
(edge.v2g.server), the car's connection (edge.ev.connect). Over loopback and memory streams (no root),
and between two network namespaces (SDP asking for TLS, then a TLS session; root only).

What is on the wire is checked from the recorded TLS 1.2 handshake itself (its plaintext part): the
certificates the charger sent and the ClientHello's random, which the key log must name.
"""

from __future__ import annotations

import datetime
import logging
import re
import ssl
import struct
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import exi
from edge.ev import drive
from edge.ev.connect import connect_to_charger, open_v2g_stream
from edge.ev.iso2 import Iso2Car
from edge.hardware import SimulatedCharger
from edge.pki.testpki import create_test_pki
from edge.v2g import sap, sdp
from edge.v2g.charger import ChargerConnection
from edge.v2g.net import serve_sdp
from edge.v2g.server import serve_connection, serve_tcp, tls_handshake
from edge.v2g.tls import PkiFiles, client_context, client_context_from_pki, server_context, server_context_from_pki
from edge.v2g.v2gtp import PayloadType, V2gtpMessage, frame
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq
from tests.netns import inside, link_local, require_root, two_namespaces

# --- a PKI in Josev's layout --------------------------------------------------------------------------


def _chain_der(pki_dir: Path) -> list[bytes]:
    chain = x509.load_pem_x509_certificates(PkiFiles.in_folder(pki_dir).chain.read_bytes())
    return [c.public_bytes(serialization.Encoding.DER) for c in chain]


# --- reading the plaintext part of a TLS 1.2 handshake ---------------------------------------------------


class Recorder(trio.abc.Stream):
    """A transport that keeps every chunk it sends and receives."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner, self.sent, self.received = inner, [], []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.received.append(data)
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


def tls_records(data: bytes) -> list[tuple[int, bytes]]:
    """(content type, fragment) of each whole record in ``data``."""
    records, i = [], 0
    while i + 5 <= len(data):
        ctype, _version, length = struct.unpack_from(">BHH", data, i)
        records.append((ctype, data[i + 5:i + 5 + length]))
        i += 5 + length
    assert i == len(data), "a partial TLS record"
    return records


def handshake_messages(data: bytes) -> dict[int, bytes]:
    """The plaintext handshake messages (type -> body) before ChangeCipherSpec."""
    plain = b""
    for ctype, fragment in tls_records(data):
        if ctype == 20:  # ChangeCipherSpec: what follows is encrypted
            break
        if ctype == 22:
            plain += fragment
    messages, i = {}, 0
    while i + 4 <= len(plain):
        mtype, length = plain[i], int.from_bytes(plain[i + 1:i + 4], "big")
        messages[mtype] = plain[i + 4:i + 4 + length]
        i += 4 + length
    return messages


def certificates_sent(server_bytes: bytes) -> list[bytes]:
    body = handshake_messages(server_bytes)[11]  # Certificate
    certs, i = [], 3
    while i < len(body):
        n = int.from_bytes(body[i:i + 3], "big")
        certs.append(body[i + 3:i + 3 + n])
        i += 3 + n
    return certs


def client_random(client_bytes: bytes) -> bytes:
    return handshake_messages(client_bytes)[1][2:34]  # ClientHello: version, then 32 random bytes


# --- loopback ---------------------------------------------------------------------------------------------


def _charger(connections: list[ChargerConnection], *, tls: bool = True):
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)

    def factory() -> ChargerConnection:
        connections.append(ChargerConnection(hw, tls=tls))
        return connections[-1]

    return hw, factory


async def test_dc_eim_session_over_tls_with_key_log(pki: Path, tmp_path: Path) -> None:
    """Our car runs a whole -2 DC EIM session over TLS 1.2 / ECDHE-ECDSA-AES128-SHA256; the charger
    sends leaf + both CPO sub-CAs and logs the session's keys under the ClientHello's random."""
    keylog = tmp_path / "keys.log"
    connections: list[ChargerConnection] = []
    hw, factory = _charger(connections)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(
            0, factory, host="::1", ssl_context=server_context_from_pki(pki, keylog=keylog), task_status=task_status))
        transport = Recorder(await trio.open_tcp_stream("::1", port))
        stream = trio.SSLStream(transport, client_context_from_pki(pki), server_side=False)
        car = Iso2Car(soc=30.0, target_soc=30.02, capacity_wh=2_000.0)
        with trio.fail_after(60):
            await stream.do_handshake()
            assert stream.version() == "TLSv1.2"
            assert stream.cipher()[0] == "ECDHE-ECDSA-AES128-SHA256"
            async with stream:
                await drive(stream, car, loop_period=0.02, step=0.0)
        nursery.cancel_scope.cancel()

    assert car.stopped_cleanly and car.energy_wh > 0 and hw.energy_wh() > 0
    assert len(connections) == 1 and connections[0].session.state == "stopped"
    assert connections[0].protocol == sap.ISO2
    assert certificates_sent(b"".join(transport.received)) == _chain_der(pki)  # leaf, sub-CA 2, sub-CA 1
    lines = keylog.read_text().splitlines()
    random_hex = client_random(b"".join(transport.sent)).hex()
    assert any(re.fullmatch(rf"CLIENT_RANDOM {random_hex} [0-9a-f]{{96}}", line) for line in lines), lines


async def test_one_response_is_one_tls_record(pki: Path) -> None:
    """Josev reads one read as one message: every response must leave as one record in one send,
    up to the 7000 bytes Josev reads at a time."""

    class Echo:
        def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage:
            return V2gtpMessage(message.payload_type, message.payload * 2)

    car_side, charger_side = trio.testing.memory_stream_pair()
    recorder = Recorder(charger_side)
    car = trio.SSLStream(car_side, client_context_from_pki(pki), server_side=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(car.do_handshake)
        tls = await tls_handshake(recorder, server_context_from_pki(pki), 5.0)
        assert tls is not None
        nursery.start_soon(serve_connection, tls, Echo())
        sends_before = len(recorder.sent)
        for size in (10, 1000, 3496):
            await car.send_all(frame(PayloadType.EXI, b"x" * size))
            want = frame(PayloadType.EXI, b"x" * 2 * size)
            got = b""
            while len(got) < len(want):
                got += await car.receive_some()
            assert got == want
        nursery.cancel_scope.cancel()
    responses = recorder.sent[sends_before:]
    assert len(responses) == 3
    for data in responses:
        assert [ctype for ctype, _ in tls_records(data)] == [23]  # one application-data record each


def _sap_request() -> bytes:
    offer = supportedAppProtocolReq([AppProtocolType(sap.ISO2.namespace, 2, 0, 1, 1)])
    return frame(PayloadType.EXI, exi.encode("apphand", offer))


async def test_refused_clients_do_not_stop_the_next(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A TLS 1.3-only client and a client offering only other suites fail the handshake (and get no
    session); a client that never finishes its handshake is cut after the handshake timeout; all while
    the next good client is served."""
    caplog.set_level(logging.INFO, logger="edge")
    connections: list[ChargerConnection] = []
    _hw, factory = _charger(connections)
    tls13_only = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls13_only.minimum_version = ssl.TLSVersion.TLSv1_3
    other_suites = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other_suites.maximum_version = ssl.TLSVersion.TLSv1_2
    other_suites.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:AES128-SHA")
    for ctx in (tls13_only, other_suites):
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(
            0, factory, host="::1", ssl_context=server_context_from_pki(pki), handshake_timeout=0.5,
            task_status=task_status))
        silent = await trio.open_tcp_stream("::1", port)  # connects, never says hello
        opened = trio.current_time()
        for ctx in (tls13_only, other_suites):
            bad = trio.SSLStream(await trio.open_tcp_stream("::1", port), ctx, server_side=False)
            with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
                await bad.do_handshake()
            await trio.aclose_forcefully(bad)
        good = await open_v2g_stream("::1", port, 0, client_context_from_pki(pki))
        await good.send_all(_sap_request())
        with trio.fail_after(5):
            answer = await good.receive_some()
        assert answer[:4] == bytes([0x01, 0xFE, 0x80, 0x01])
        with trio.fail_after(5):
            assert await silent.receive_some() == b""  # cut by the charger
        waited = trio.current_time() - opened
        await good.aclose()
        nursery.cancel_scope.cancel()

    assert 0.45 <= waited < 3, waited
    assert len(connections) == 1  # sessions only for completed handshakes
    warnings = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(warnings) == 3, warnings
    assert sum("not completed within 0.5 s" in w for w in warnings) == 1, warnings
    assert any("failed: unsupported protocol" in w for w in warnings), warnings  # the TLS 1.3-only client
    assert any("failed: no shared cipher" in w for w in warnings), warnings


async def test_car_refuses_a_charger_from_another_root(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    create_test_pki(other)  # same names, different keys: a root the charger's chain does not lead to
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(
            0, lambda: ChargerConnection(SimulatedCharger()), host="::1",
            ssl_context=server_context_from_pki(pki), task_status=task_status))
        with pytest.raises(ConnectionError, match=r"TLS handshake with .* failed: .*certificate verify failed"):
            await open_v2g_stream("::1", port, 0, client_context_from_pki(other))
        nursery.cancel_scope.cancel()


# --- loading errors: one line each --------------------------------------------------------------------


def _other_key(path: Path, rsa_key: bool = False) -> Path:
    key = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def test_loading_errors_are_one_line(pki: Path, tmp_path: Path) -> None:
    files = PkiFiles.in_folder(pki)
    cases = [
        (lambda: server_context(files.chain, files.key, key_password="wrong"), "wrong password"),
        (lambda: server_context(files.chain, files.key, key_password=None), "is encrypted: a key password is needed"),
        (lambda: server_context(tmp_path / "nope.pem", files.key, key_password="12345"), "cannot read the SECC"),
        (lambda: server_context(files.chain, _other_key(tmp_path / "k.pem"), key_password=None),
         "is not the private key of the first certificate"),
        (lambda: server_context(files.chain, files.key, key_password="12345", keylog=tmp_path / "no" / "k.log"),
         "cannot write the TLS key log"),
        (lambda: server_context(files.key, files.key, key_password="12345"), "holds no PEM certificates"),
        (lambda: server_context_from_pki(tmp_path), "is not a PKI folder"),
        (lambda: client_context([tmp_path / "nope.pem"]), "cannot read the V2G root"),
        (lambda: client_context([]), "at least one V2G root"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            make()
        assert "\n" not in str(err.value)


def test_chain_out_of_order_and_root_in_chain(pki: Path, tmp_path: Path) -> None:
    files = PkiFiles.in_folder(pki)
    leaf, sub2, sub1 = x509.load_pem_x509_certificates(files.chain.read_bytes())
    pem = serialization.Encoding.PEM
    swapped = tmp_path / "swapped.pem"
    swapped.write_bytes(b"".join(c.public_bytes(pem) for c in (leaf, sub1, sub2)))
    with pytest.raises(ValueError, match="out of order"):
        server_context(swapped, files.key, key_password="12345")
    with_root = tmp_path / "with_root.pem"
    with_root.write_bytes(files.chain.read_bytes() + files.v2g_root.read_bytes())
    assert isinstance(server_context(with_root, files.key, key_password="12345"), ssl.SSLContext)


async def test_root_in_the_chain_file_is_not_sent(pki: Path, tmp_path: Path) -> None:
    files = PkiFiles.in_folder(pki)
    with_root = tmp_path / "with_root.pem"
    with_root.write_bytes(files.chain.read_bytes() + files.v2g_root.read_bytes())
    car_side, charger_side = trio.testing.memory_stream_pair()
    recorder = Recorder(car_side)
    car = trio.SSLStream(recorder, client_context([files.v2g_root]), server_side=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tls_handshake, charger_side, server_context(with_root, files.key, key_password="12345"),
                           5.0)
        await car.do_handshake()
    assert certificates_sent(b"".join(recorder.received)) == _chain_der(pki)


def test_rsa_leaf_is_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    with pytest.raises(ValueError, match="no EC key"):
        server_context(tmp_path / "c.pem", tmp_path / "k.pem", key_password=None)


# --- two network namespaces --------------------------------------------------------------------------


async def test_tls_session_between_namespaces(pki: Path) -> None:
    """The car asks SDP for TLS, gets the TLS port (the charger offers both), runs a -2 DC EIM session
    over TLS to the link-local address; a car without TLS asking the same SDP server gets the TCP port."""
    require_root()
    connections: list[ChargerConnection] = []
    hw, factory = _charger(connections)
    plain_connections: list[ChargerConnection] = []
    _, plain_factory = _charger(plain_connections, tls=False)
    with two_namespaces("secc0", "ev0") as (secc_ns, ev_ns):
        address = link_local(secc_ns, "secc0")
        link_local(ev_ns, "ev0")
        async with trio.open_nursery() as nursery:
            with inside(secc_ns):
                tls_port = await nursery.start(lambda task_status: serve_tcp(
                    0, factory, ssl_context=server_context_from_pki(pki), task_status=task_status))
                tcp_port = await nursery.start(serve_tcp, 0, plain_factory)
                await nursery.start(serve_sdp, sdp.SdpServer(address, tcp_port, tls_port), "secc0")
            with inside(ev_ns):
                with trio.fail_after(60):
                    stream = await connect_to_charger("ev0", client_context_from_pki(pki), require_tls=True)
                    assert isinstance(stream, trio.SSLStream)
                    assert stream.cipher()[0] == "ECDHE-ECDSA-AES128-SHA256"
                    car = Iso2Car(soc=30.0, target_soc=30.02, capacity_wh=2_000.0)
                    async with stream:
                        await drive(stream, car, loop_period=0.02, step=0.0)
                    plain = await connect_to_charger("ev0")
                    assert isinstance(plain, trio.SocketStream)
                    assert plain.socket.getpeername()[1] == tcp_port
                    await plain.aclose()
            nursery.cancel_scope.cancel()
    assert car.stopped_cleanly and car.energy_wh > 0 and hw.energy_wh() > 0
    assert len(connections) == 1 and connections[0].session.state == "stopped" and not hw.closed
