"""TLS 1.3 for ISO 15118-20 beside TLS 1.2 for -2 (edge.v2g.tls): the -20 server and car contexts for
both -20 PKI flavours (P-521, Ed448), mutual authentication, the -20 profile (Tables 6-8 and the
certificate_authorities lists), one listener serving -2 and -20 cars, TLS 1.3 key logs, loading errors.

TLS 1.3 encrypts everything after the ServerHello, so what was sent is read from the peer's side through
``SSLContext._msg_callback`` (CPython's hook that sees each handshake message after decryption; private,
used here only to look). The ClientHello and ServerHello are plaintext and parsed from the same hook.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from edge.ev.connect import connect_to_charger, open_v2g_stream
from edge.pki.testpki import ISO2_FOLDER, ISO20_ED448_FOLDER, ISO20_FOLDER
from edge.v2g import sdp
from edge.v2g.net import serve_sdp
from edge.v2g.server import serve_connection, serve_tcp, tls_handshake
from edge.v2g.tls import (
    SIGNATURE_SCHEMES,
    ClientAuth,
    ClientHello,
    CombinedServerContext,
    PkiFiles,
    ServedChain,
    VehiclePkiFiles,
    client_context_from_pki,
    client_context_iso20,
    client_context_iso20_from_files,
    configure_openssl,
    openssl_tuning_available,
    parse_client_hello,
    server_context_combined,
    server_context_from_pki,
    server_context_iso20,
    server_context_iso20_from_pki,
)
from edge.v2g.v2gtp import PayloadType, V2gtpMessage, frame
from tests.netns import inside, link_local, require_root, two_namespaces

SECP521R1, X448, X25519 = 0x0019, 0x001E, 0x001D
ECDSA_P521, ED448 = SIGNATURE_SCHEMES["ecdsa_secp521r1_sha512"], SIGNATURE_SCHEMES["ed448"]


def _pem_chain_der(path: Path) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(path.read_bytes())]


def _subject_der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).subject.public_bytes()


# --- what the handshake carried, seen from one side --------------------------------------------------------


class _Fields:
    """Bounds-checked reading of TLS vectors (the test's own, independent of edge.v2g.tls)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        assert self.at + n <= len(self.data), "field runs past the message"
        self.at += n
        return self.data[self.at - n:self.at]

    def vector(self, size: int) -> _Fields:
        return _Fields(self.take(int.from_bytes(self.take(size), "big")))

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def _extensions(fields: _Fields) -> dict[int, bytes]:
    found = {}
    while fields.left:
        kind = int.from_bytes(fields.take(2), "big")
        found[kind] = fields.vector(2).data
    return found


class HandshakeLog:
    """Every handshake message a context's connections send and receive (decrypted)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.messages: list[tuple[str, int, bytes]] = []
        ctx._msg_callback = self._record  # type: ignore[attr-defined]

    def _record(self, _conn: object, direction: str, _version: object, content_type: object, _msg_type: object,
                data: bytes) -> None:
        if content_type == 22 and len(data) >= 4:  # _TLSContentType.HANDSHAKE
            self.messages.append((direction, data[0], bytes(data)))

    def bodies(self, direction: str, msg_type: int) -> list[bytes]:
        return [data[4:] for d, t, data in self.messages if d == direction and t == msg_type]

    def client_hello(self) -> ClientHello:
        message = next(data for d, t, data in self.messages if d == "write" and t == 1)
        hello = parse_client_hello(bytes([22, 3, 1]) + len(message).to_bytes(2, "big") + message)
        assert hello is not None
        return hello

    def client_random(self) -> bytes:
        return self.bodies("write", 1)[0][2:34]

    def server_group(self) -> int:
        fields = _Fields(self.bodies("read", 2)[0])
        fields.take(2 + 32)
        fields.vector(1)
        fields.take(3)  # cipher suite, compression
        key_share = _extensions(fields.vector(2))[51]
        return int.from_bytes(key_share[:2], "big")

    def chain_received(self, tls13: bool = True) -> list[bytes]:
        fields = _Fields(self.bodies("read", 11)[0])
        if tls13:
            fields.vector(1)  # certificate_request_context
        entries, chain = fields.vector(3), []
        while entries.left:
            chain.append(entries.vector(3).data)
            if tls13:
                entries.vector(2)  # per-certificate extensions
        return chain

    def certificate_request(self) -> tuple[list[int], list[bytes]]:
        """(signature_algorithms, certificate_authorities) of the CertificateRequest received."""
        fields = _Fields(self.bodies("read", 13)[0])
        fields.vector(1)
        extensions = _extensions(fields.vector(2))
        algorithms = _Fields(extensions[13]).vector(2)
        schemes = [int.from_bytes(algorithms.take(2), "big") for _ in range(algorithms.left // 2)]
        names, authorities = [], _Fields(extensions.get(47, b"\x00\x00")).vector(2)
        while authorities.left:
            names.append(authorities.vector(2).data)
        return schemes, names


# --- running handshakes ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    server: trio.SSLStream | None  # None: the charger refused the handshake
    car: trio.SSLStream
    car_error: BaseException | None


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Outcome:
    """One handshake over a memory stream: the charger side through server.py's tls_handshake."""
    car_side, charger_side = trio.testing.memory_stream_pair()
    car = trio.SSLStream(car_side, client_ctx, server_side=False)
    result: dict[str, trio.SSLStream | None] = {}
    car_error = None

    async def charger() -> None:
        result["server"] = await tls_handshake(charger_side, server_ctx, 5.0)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(charger)
            try:
                await car.do_handshake()
            except trio.BrokenResourceError as e:
                car_error = e.__cause__ or e
    return Outcome(result["server"], car, car_error)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]


def _tls13_client(pki: Path, *, folder: str = ISO20_FOLDER, **lists: object) -> ssl.SSLContext:
    """Our -20 car's context with some OpenSSL lists replaced, to play a car that offers other things."""
    ctx = client_context_iso20(pki, folder=folder)
    assert configure_openssl(ctx, **lists)  # type: ignore[arg-type]
    return ctx


def _anonymous_tls13_client(pki: Path, folder: str = ISO20_FOLDER) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(PkiFiles.in_folder(pki, folder).v2g_root)
    return ctx


# --- the -20 contexts ---------------------------------------------------------------------------------------


def test_openssl_tuning_is_available_here() -> None:
    """The rest of this file relies on it: this Python's _ssl is linked to a libssl we can reach."""
    assert openssl_tuning_available()


@pytest.mark.parametrize("folder", [ISO20_FOLDER, ISO20_ED448_FOLDER])
async def test_iso20_mutual_handshake_follows_the_profile(pki: Path, folder: str) -> None:
    """Each -20 flavour: TLS 1.3 with TLS_AES_256_GCM_SHA384 on secp521r1, the SECC chain (leaf and
    both CPO sub-CAs, no root) to the car, a CertificateRequest with Table 8's schemes naming the OEM
    root, the car's vehicle chain to the charger, and a ClientHello offering only Tables 6-8 and
    naming the car's V2G root."""
    server_ctx = server_context_iso20_from_pki(pki, folder=folder)
    client_ctx = client_context_iso20(pki, folder=folder)
    seen = HandshakeLog(client_ctx)
    outcome = await _handshake(server_ctx, client_ctx)

    assert outcome.car_error is None and outcome.server is not None
    assert outcome.car.version() == outcome.server.version() == "TLSv1.3"
    assert outcome.car.cipher()[0] == "TLS_AES_256_GCM_SHA384"
    assert seen.server_group() == SECP521R1
    assert seen.chain_received() == _pem_chain_der(PkiFiles.in_folder(pki, folder).chain)
    vehicle = VehiclePkiFiles.in_folder(pki, folder)
    assert outcome.server.getpeercert(binary_form=True) == _pem_chain_der(vehicle.chain)[0]
    schemes, authorities = seen.certificate_request()
    assert schemes == [ECDSA_P521, ED448]
    # the charger trusts the OEM roots of every -20 folder (a P-521 charger accepts an Ed448 car)
    assert sorted(authorities) == sorted(_subject_der(PkiFiles.in_folder(pki, f).oem_root)
                                         for f in ("iso15118_20", "iso15118_20_ed448"))
    hello = seen.client_hello()
    assert hello.versions == {0x0304}
    assert hello.signature_algorithms == (ECDSA_P521, ED448) and hello.groups == (SECP521R1, X448)
    assert hello.certificate_authorities == (_subject_der(vehicle.v2g_root),)
    ciphers = [c["name"] for c in client_ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    assert ciphers == ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]


async def test_iso20_cipher_suites_and_groups(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Table 6 in the charger's order whatever the car prefers; ChaCha20 when that is all the car has;
    x448 when the car offers only that; AES-128-GCM or x25519 alone are refused."""
    server_ctx = server_context_iso20_from_pki(pki)
    chacha_first = _tls13_client(pki, ciphersuites=["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_256_GCM_SHA384"])
    outcome = await _handshake(server_ctx, chacha_first)
    assert outcome.server is not None and outcome.car.cipher()[0] == "TLS_AES_256_GCM_SHA384"

    chacha_only = _tls13_client(pki, ciphersuites=["TLS_CHACHA20_POLY1305_SHA256"])
    outcome = await _handshake(server_ctx, chacha_only)
    assert outcome.server is not None and outcome.car.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"

    x448_only = _tls13_client(pki, groups=["X448"])
    seen = HandshakeLog(x448_only)
    outcome = await _handshake(server_ctx, x448_only)
    assert outcome.server is not None and seen.server_group() == X448

    caplog.set_level(logging.WARNING, logger="edge")
    for refused in (_tls13_client(pki, ciphersuites=["TLS_AES_128_GCM_SHA256"]),
                    _tls13_client(pki, groups=["X25519", "P-256"])):
        outcome = await _handshake(server_ctx, refused)
        assert outcome.server is None and outcome.car_error is not None
    warnings = _warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "failed: no shared cipher" in warnings[0], warnings
    assert "failed: no suitable key share" in warnings[1], warnings


async def test_iso20_refuses_a_car_offering_other_signature_schemes(pki: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A car that can only check ecdsa_secp256r1_sha256 signatures gets no -20 handshake."""
    caplog.set_level(logging.WARNING, logger="edge")
    outcome = await _handshake(server_context_iso20_from_pki(pki),
                               _tls13_client(pki, signature_algorithms=["ecdsa_secp256r1_sha256"]))
    assert outcome.server is None and outcome.car_error is not None
    assert any("failed: no shared signature algorithms" in w for w in _warnings(caplog)), _warnings(caplog)


async def test_client_certificate_required_or_optional(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A car without a certificate: refused when the charger requires one, let through (with no peer
    certificate) when it is optional; a car with one is checked either way."""
    caplog.set_level(logging.WARNING, logger="edge")
    required = server_context_iso20_from_pki(pki)
    optional = server_context_iso20_from_pki(pki, client_auth=ClientAuth.OPTIONAL)

    outcome = await _handshake(required, _anonymous_tls13_client(pki))
    assert outcome.server is None
    assert any("failed: peer did not return a certificate" in w for w in _warnings(caplog)), _warnings(caplog)
    with trio.fail_after(5):  # TLS 1.3: the car's handshake ends first; the refusal shows at its next read
        with pytest.raises(trio.BrokenResourceError):
            await outcome.car.receive_some()

    outcome = await _handshake(optional, _anonymous_tls13_client(pki))
    assert outcome.server is not None and outcome.server.getpeercert(binary_form=True) is None

    outcome = await _handshake(optional, client_context_iso20(pki))
    assert outcome.server is not None and outcome.server.getpeercert(binary_form=True) is not None


@pytest.mark.parametrize("client_auth", [ClientAuth.REQUIRED, ClientAuth.OPTIONAL])
async def test_wrong_vehicle_chain_is_refused(pki: Path, other_pki: Path, client_auth: ClientAuth,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A vehicle chain from another OEM root is refused, also when client certificates are optional."""
    caplog.set_level(logging.WARNING, logger="edge")
    stranger = VehiclePkiFiles.in_folder(other_pki)
    car = client_context_iso20_from_files(stranger.chain, stranger.key, key_password=stranger.key_password(),
                                          v2g_roots=[VehiclePkiFiles.in_folder(pki).v2g_root])
    outcome = await _handshake(server_context_iso20_from_pki(pki, client_auth=client_auth), car)
    assert outcome.server is None
    assert any("failed: certificate verify failed" in w for w in _warnings(caplog)), _warnings(caplog)


async def test_vehicle_chain_of_the_other_flavour_is_accepted(pki: Path) -> None:
    """The charger trusts the OEM roots of every -20 folder: a P-521 charger takes a car whose
    vehicle chain is Ed448 (the car trusting the P-521 V2G root)."""
    car = VehiclePkiFiles.in_folder(pki, ISO20_ED448_FOLDER)
    mixed = client_context_iso20_from_files(car.chain, car.key, key_password=car.key_password(),
                                            v2g_roots=[VehiclePkiFiles.in_folder(pki, ISO20_FOLDER).v2g_root])
    outcome = await _handshake(server_context_iso20_from_pki(pki, folder=ISO20_FOLDER), mixed)
    assert outcome.server is not None
    assert outcome.server.getpeercert(binary_form=True) == _pem_chain_der(car.chain)[0]
    files = PkiFiles.in_folder(pki, ISO20_FOLDER)
    assert files.oem_root is not None
    only_own = server_context_iso20(files.chain, files.key, key_password=files.key_password(),
                                    oem_roots=[files.oem_root])
    assert (await _handshake(only_own, mixed)).server is None  # and without that root: refused


async def test_iso20_context_refuses_tls12(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The -2 car (TLS 1.2 only) and a generic TLS 1.2 client are refused by the -20-only context."""
    caplog.set_level(logging.WARNING, logger="edge")
    generic = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    generic.maximum_version = ssl.TLSVersion.TLSv1_2
    generic.check_hostname, generic.verify_mode = False, ssl.CERT_NONE
    for client in (client_context_from_pki(pki), generic):
        outcome = await _handshake(server_context_iso20_from_pki(pki), client)
        assert outcome.server is None and outcome.car_error is not None
    warnings = _warnings(caplog)
    assert len(warnings) == 2 and all("failed: unsupported protocol" in w for w in warnings), warnings


async def test_car_refuses_a_charger_from_another_root(pki: Path, other_pki: Path) -> None:
    outcome = await _handshake(server_context_iso20_from_pki(other_pki), client_context_iso20(pki))
    assert outcome.car_error is not None and "certificate verify failed" in str(outcome.car_error)


async def test_tls13_key_log(pki: Path, tmp_path: Path) -> None:
    """The charger's key log names the ClientHello's random in the five TLS 1.3 secrets (SHA-384:
    48 bytes each), enough for Wireshark to decrypt the session."""
    keylog = tmp_path / "keys.log"
    client_ctx = client_context_iso20(pki)
    seen = HandshakeLog(client_ctx)
    outcome = await _handshake(server_context_iso20_from_pki(pki, keylog=keylog), client_ctx)
    assert outcome.server is not None
    random_hex = seen.client_random().hex()
    labels = set()
    for line in keylog.read_text().splitlines():
        if line.startswith("#"):  # Python writes a header line into a new key log
            continue
        match = re.fullmatch(rf"([A-Z_0-9]+) {random_hex} ([0-9a-f]{{96}})", line)
        assert match, line
        labels.add(match[1])
    assert labels == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                      "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"}


async def test_without_ctypes_the_contexts_keep_openssl_defaults(pki: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Where libssl cannot be reached the -20 contexts still work, say so, and offer OpenSSL's lists."""
    import edge.v2g.tls as tls

    monkeypatch.setattr(tls, "_libssl", lambda: None)
    caplog.set_level(logging.WARNING, logger="edge.tls")
    client_ctx = client_context_iso20(pki)
    outcome = await _handshake(server_context_iso20_from_pki(pki), client_ctx)
    assert outcome.server is not None and outcome.server.version() == "TLSv1.3"
    assert "TLS_AES_128_GCM_SHA256" in [c["name"] for c in client_ctx.get_ciphers()]
    assert sum("keeps OpenSSL's default" in r.getMessage() for r in caplog.records) == 2
    assert not openssl_tuning_available() and not configure_openssl(client_ctx, groups=["X448"])


def test_configure_openssl_refuses_unknown_names() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for lists, message in (({"ciphersuites": ["TLS_NO_SUCH_SUITE"]}, "TLS 1.3 cipher suites"),
                           ({"groups": ["secp999r1"]}, "groups"),
                           ({"signature_algorithms": ["ecdsa_nonsense"]}, "signature algorithms")):
        with pytest.raises(ValueError, match=f"OpenSSL does not (know|accept) the {message}") as err:
            configure_openssl(ctx, **lists)  # type: ignore[arg-type]
        assert "\n" not in str(err.value)


# --- one OpenSSL context, several chains: the finding behind the combined context ---------------------------


async def test_one_openssl_context_keeps_one_chain_per_key_type(pki: Path) -> None:
    """P-256 and Ed448 chains live side by side in one context (picked by the client's signature
    algorithms); a P-521 chain loaded after the P-256 one replaces it (both ECDSA)."""
    def loaded(*folders: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        for folder in folders:
            files = PkiFiles.in_folder(pki, folder)
            ctx.load_cert_chain(files.chain, files.key, password=files.key_password())
        return ctx

    def iso2_car() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.maximum_version, ctx.check_hostname = ssl.TLSVersion.TLSv1_2, False
        ctx.load_verify_locations(PkiFiles.in_folder(pki).v2g_root)
        return ctx

    ed448_car = _anonymous_tls13_client(pki, ISO20_ED448_FOLDER)
    assert configure_openssl(ed448_car, signature_algorithms=["ed448"])
    both = loaded(ISO2_FOLDER, ISO20_ED448_FOLDER)
    assert (await _handshake(both, iso2_car())).server is not None
    assert (await _handshake(both, ed448_car)).server is not None
    replaced = loaded(ISO2_FOLDER, ISO20_FOLDER)
    outcome = await _handshake(replaced, iso2_car())
    assert outcome.server is None and "certificate verify failed" in str(outcome.car_error)


# --- one listener for -2 and -20 cars ---------------------------------------------------------------------


class Echo:
    def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage:
        return V2gtpMessage(message.payload_type, message.payload[::-1])


async def _echo_once(stream: trio.abc.Stream) -> None:
    await stream.send_all(frame(PayloadType.EXI, b"\x80\x01\x02"))
    want, got = frame(PayloadType.EXI, b"\x02\x01\x80"), b""
    with trio.fail_after(5):
        while len(got) < len(want):
            got += await stream.receive_some()
    assert got == want


async def test_combined_listener_serves_iso2_and_iso20_cars(pki: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """One serve_tcp listener: the -2 car gets TLS 1.2 with the P-256 chain and no CertificateRequest;
    a -20 car preferring ecdsa_secp521r1_sha512 gets TLS 1.3 with the P-521 chain, one preferring
    ed448 the Ed448 chain, both asked for their vehicle certificate and given no session ticket; each
    then talks V2GTP; one key log holds all three sessions."""
    keylog = tmp_path / "keys.log"
    combined = server_context_combined(pki, keylog=keylog)
    cars = {
        ISO2_FOLDER: client_context_from_pki(pki),
        ISO20_FOLDER: client_context_iso20(pki, folder=ISO20_FOLDER),
        ISO20_ED448_FOLDER: client_context_iso20(pki, folder=ISO20_ED448_FOLDER,
                                                 signature_algorithms=["ed448", "ecdsa_secp521r1_sha512"]),
    }
    logs = {folder: HandshakeLog(ctx) for folder, ctx in cars.items()}
    caplog.set_level(logging.WARNING, logger="edge")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(0, Echo, host="::1", ssl_context=combined,
                                                                 task_status=task_status))
        for folder, ctx in cars.items():
            with trio.fail_after(10):
                stream = await open_v2g_stream("::1", port, 0, ctx)
                assert isinstance(stream, trio.SSLStream)
                assert stream.version() == ("TLSv1.2" if folder == ISO2_FOLDER else "TLSv1.3")
                await _echo_once(stream)
                await stream.aclose()
        nursery.cancel_scope.cancel()

    assert not _warnings(caplog)
    for folder, seen in logs.items():
        chain = seen.chain_received(tls13=folder != ISO2_FOLDER)
        assert chain == _pem_chain_der(PkiFiles.in_folder(pki, folder).chain), folder
        assert bool(seen.bodies("read", 13)) == (folder != ISO2_FOLDER), folder  # CertificateRequest
        assert bool(seen.bodies("write", 11)) == (folder != ISO2_FOLDER), folder  # the car's Certificate
        if folder != ISO2_FOLDER:  # no session tickets: no resumption without the vehicle certificate
            assert not seen.bodies("read", 4), folder
    lines = keylog.read_text().splitlines()
    assert any(line.startswith(f"CLIENT_RANDOM {logs[ISO2_FOLDER].client_random().hex()} ") for line in lines)
    for folder in (ISO20_FOLDER, ISO20_ED448_FOLDER):
        assert any(line.startswith(f"CLIENT_TRAFFIC_SECRET_0 {logs[folder].client_random().hex()} ")
                   for line in lines), folder


async def test_combined_refusals(pki: Path, other_pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Through the combined context, -20 rules stay -20 rules (no certificate, a stranger's chain:
    refused) and -2 rules stay -2 rules (no CertificateRequest); plain V2GTP on the TLS port and a car
    that closes mid-ClientHello fail cleanly."""
    caplog.set_level(logging.WARNING, logger="edge")
    combined = server_context_combined(pki)
    assert (await _handshake(combined, _anonymous_tls13_client(pki))).server is None
    stranger = VehiclePkiFiles.in_folder(other_pki)
    outcome = await _handshake(combined, client_context_iso20_from_files(
        stranger.chain, stranger.key, key_password=stranger.key_password(),
        v2g_roots=[VehiclePkiFiles.in_folder(pki).v2g_root]))
    assert outcome.server is None
    outcome = await _handshake(combined, client_context_from_pki(pki))
    assert outcome.server is not None and outcome.server.getpeercert(binary_form=True) is None

    for opening in (frame(PayloadType.EXI, b"\x80\x00"), bytes([22, 3, 1, 0, 200, 1, 0, 0])):
        car_side, charger_side = trio.testing.memory_stream_pair()
        with trio.fail_after(5):
            await car_side.send_all(opening)
            if opening[0] == 22:  # a ClientHello that never completes: the car gives up
                await car_side.send_eof()
            assert await tls_handshake(charger_side, combined, 2.0) is None
    warnings = _warnings(caplog)
    assert sum("peer did not return a certificate" in w for w in warnings) == 1, warnings
    assert sum("certificate verify failed" in w for w in warnings) == 1, warnings
    assert sum("wrong version number" in w for w in warnings) == 1, warnings
    assert sum("unexpected eof while reading" in w for w in warnings) == 1, warnings


async def test_combined_serves_a_tls13_capable_iso2_car_with_tls12(pki: Path) -> None:
    """Josev's EV with ENABLE_TLS_1_3 (iso15118/shared/security.py) offers TLS 1.3 and 1.2 with P-256
    as its only group and trusts the -2 root: it cannot do -20, so it gets -2 over TLS 1.2."""
    josev_like = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    josev_like.check_hostname = False
    josev_like.load_verify_locations(PkiFiles.in_folder(pki).v2g_root)
    josev_like.set_ecdh_curve("prime256v1")
    outcome = await _handshake(server_context_combined(pki), josev_like)
    assert outcome.server is not None and outcome.car.version() == "TLSv1.2"


async def test_combined_context_with_one_iso20_folder_only(pki: Path, tmp_path: Path) -> None:
    """Without an iso15118_2 folder the combined context serves -20 only and refuses TLS 1.2."""
    combined = server_context_combined(pki, iso20_folders=[ISO20_ED448_FOLDER])
    assert combined.iso2 is not None and [c.label for c in combined.iso20] == [ISO20_ED448_FOLDER]
    only20 = tmp_path / "only20"
    only20.mkdir()
    (only20 / ISO20_FOLDER).symlink_to(pki / ISO20_FOLDER)
    combined = server_context_combined(only20)
    assert combined.iso2 is None and [c.label for c in combined.iso20] == [ISO20_FOLDER]
    assert (await _handshake(combined, client_context_iso20(pki))).server is not None
    assert (await _handshake(combined, client_context_from_pki(pki))).server is None


def test_combined_choice() -> None:
    """The rules, with distinct root names: a named root first ([V2G20-2379]), then the car's
    signature-scheme preference; TLS 1.2-only cars and non-TLS openings go to -2; a TLS 1.3 car that
    also speaks 1.2 goes to -2 when it names only the -2 root or offers no Table 7 group."""
    iso2 = ServedChain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "iso2", b"root-2", 0x0403)
    p521 = ServedChain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "p521", b"root-p521", ECDSA_P521)
    ed = ServedChain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "ed448", b"root-ed448", ED448)
    combined = CombinedServerContext(iso2, [p521, ed])

    def hello(versions: set[int], schemes: tuple[int, ...] = (ECDSA_P521, ED448),
              names: tuple[bytes, ...] = (), groups: tuple[int, ...] = (SECP521R1,)) -> ClientHello:
        return ClientHello(frozenset(versions), schemes, groups, names)

    assert combined.choose(None) is iso2
    assert combined.choose(hello({0x0303})) is iso2
    assert combined.choose(hello({0x0304})) is p521
    assert combined.choose(hello({0x0304}, (ED448, ECDSA_P521))) is ed
    assert combined.choose(hello({0x0304}, (ECDSA_P521, ED448), (b"root-ed448",))) is ed
    assert combined.choose(hello({0x0304}, (0x0403,))) is p521  # nothing fits: OpenSSL will refuse it
    assert combined.choose(hello({0x0304, 0x0303}, names=(b"root-2",))) is iso2
    assert combined.choose(hello({0x0304}, names=(b"root-2",))) is p521  # no TLS 1.2: -20 or nothing
    assert combined.choose(hello({0x0304}, names=(b"unknown",))) is p521  # [V2G20-2378]-like free choice
    assert combined.choose(hello({0x0304, 0x0303}, groups=(0x0017,))) is iso2
    assert combined.choose(hello({0x0304, 0x0303}, groups=(0x0017, X448))) is p521
    assert combined.choose(hello({0x0304}, groups=(0x0017,))) is p521  # TLS 1.3 only: -20 or nothing
    only20 = CombinedServerContext(None, [ed])
    assert only20.choose(hello({0x0303})) is ed and only20.choose(None) is ed
    with pytest.raises(ValueError, match="needs a -2 or a -20 chain"):
        CombinedServerContext(None, [])
    with pytest.raises(ValueError, match="charger's side only"):
        combined.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=False)


def test_client_hello_arriving_byte_by_byte(pki: Path) -> None:
    """The combined context's stand-in SSLObject waits (SSLWantReadError) until the ClientHello is
    whole, however it is cut, and the handshake then completes as if nothing had waited."""
    combined = server_context_combined(pki)
    car_in, car_out, charger_in, charger_out = (ssl.MemoryBIO() for _ in range(4))
    car = client_context_iso20(pki).wrap_bio(car_in, car_out, server_side=False)
    charger = combined.wrap_bio(charger_in, charger_out, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        car.do_handshake()
    hello = car_out.read()
    assert charger.version() is None and charger.context is combined
    for byte in hello[:-1]:
        charger_in.write(bytes([byte]))
        with pytest.raises(ssl.SSLWantReadError):
            charger.do_handshake()
        assert not charger_out.pending  # nothing answered before the ClientHello is whole
    charger_in.write(hello[-1:])
    for _ in range(10):
        for side in (charger, car):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        car_in.write(charger_out.read())
        charger_in.write(car_out.read())
    assert car.version() == charger.version() == "TLSv1.3"
    assert charger.context is combined.iso20[0].context


# --- parsing the ClientHello --------------------------------------------------------------------------------


def _real_client_hello(ctx: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    with pytest.raises(ssl.SSLWantReadError):
        ctx.wrap_bio(incoming, outgoing, server_side=False).do_handshake()
    return outgoing.read()


def test_parse_client_hello(pki: Path) -> None:
    """A real -20 ClientHello, whole, cut anywhere (None: wait), split into two records (same result),
    and openings that are no ClientHello (ValueError)."""
    data = _real_client_hello(client_context_iso20(pki))
    hello = parse_client_hello(data)
    assert hello is not None and hello.offers_tls13 and not hello.offers_tls12
    assert hello.groups == (SECP521R1, X448)
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) is None
    message = data[5:]
    split = b"".join(bytes([22, 3, 1]) + len(part).to_bytes(2, "big") + part
                     for part in (message[:100], message[100:]))
    assert parse_client_hello(split) == hello
    tls12 = parse_client_hello(_real_client_hello(client_context_from_pki(pki)))
    assert tls12 is not None and tls12.offers_tls12 and not tls12.offers_tls13
    for bad, message_part in ((frame(PayloadType.EXI, b"\x80"), "not a TLS handshake record"),
                              (bytes([22, 3, 3, 0, 4, 2, 0, 0, 0]), "not ClientHello"),
                              (bytes([22, 3, 3, 0, 0]), "not allowed"),
                              (bytes([22, 3, 3, 0, 4, 1, 0xFF, 0, 0]), "too long"),
                              (bytes([22, 3, 3, 0, 6, 1, 0, 0, 2, 3, 3]), "runs past its end")):
        with pytest.raises(ValueError, match=message_part):
            parse_client_hello(bad)


@given(st.binary(max_size=300))
def test_parse_client_hello_never_crashes(data: bytes) -> None:
    try:
        parse_client_hello(bytes([22, 3, 1]) + len(data).to_bytes(2, "big") + data)
        parse_client_hello(data)
    except ValueError:
        pass


# --- loading errors: one line each --------------------------------------------------------------------


def test_loading_errors_are_one_line(pki: Path, tmp_path: Path) -> None:
    p521 = PkiFiles.in_folder(pki, ISO20_FOLDER)
    p256 = PkiFiles.in_folder(pki, ISO2_FOLDER)
    car = VehiclePkiFiles.in_folder(pki, ISO20_FOLDER)
    ed_key = PkiFiles.in_folder(pki, ISO20_ED448_FOLDER).key
    roots = [p521.oem_root]
    cases = [
        (lambda: server_context_iso20(p521.chain, p521.key, key_password="wrong", oem_roots=roots), "wrong password"),
        (lambda: server_context_iso20(p256.chain, p256.key, key_password="12345", oem_roots=roots),
         "neither secp521r1 nor Ed448"),
        (lambda: server_context_iso20(p521.chain, ed_key, key_password="12345", oem_roots=roots),
         "is not the private key of the first certificate"),
        (lambda: server_context_iso20(p521.chain, p521.key, key_password="12345", oem_roots=[]),
         "at least one OEM root"),
        (lambda: server_context_iso20(p521.chain, p521.key, key_password="12345", oem_roots=[tmp_path / "x.pem"]),
         "cannot read the OEM root certificate"),
        (lambda: server_context_iso20(p521.chain, p521.key, key_password="12345", oem_roots=[p521.key]),
         "is not a PEM certificate"),
        (lambda: server_context_iso20(p521.chain, p521.key, key_password="12345", oem_roots=roots,
                                      keylog=tmp_path / "no" / "k.log"), "cannot write the TLS key log"),
        (lambda: server_context_iso20_from_pki(pki, folder="nope"), "is not a PKI folder"),
        (lambda: client_context_iso20(tmp_path), "is not a PKI folder"),
        (lambda: client_context_iso20(pki, signature_algorithms=["rsa_pss_rsae_sha256"]),
         "signature algorithms must be taken from"),
        (lambda: client_context_iso20(pki, signature_algorithms=[]), "signature algorithms must be taken from"),
        (lambda: client_context_iso20_from_files(car.chain, car.key, key_password="12345", v2g_roots=[]),
         "at least one V2G root"),
        (lambda: client_context_iso20_from_files(tmp_path / "c.pem", car.key, key_password="12345",
                                                 v2g_roots=[car.v2g_root]), "cannot read the vehicle certificate"),
        (lambda: client_context_iso20_from_files(car.chain, car.key, key_password=None, v2g_roots=[car.v2g_root]),
         "is encrypted: a key password is needed"),
        (lambda: server_context_combined(tmp_path), "is not a PKI folder"),
        (lambda: server_context_combined(pki, iso20_folders=["iso15118_21"]), "is not a PKI folder"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            make()
        assert "\n" not in str(err.value)


def test_iso2_pki_files_are_unchanged(pki: Path) -> None:
    """The -2 loader still reads iso15118_2 by default (what edge.cli and the -2 tests use)."""
    files = PkiFiles.in_folder(pki)
    assert files.chain == pki / ISO2_FOLDER / "certs" / "cpoCertChain.pem"
    assert isinstance(server_context_from_pki(pki), ssl.SSLContext)


# --- two network namespaces --------------------------------------------------------------------------------


async def test_iso20_car_finds_the_combined_listener_over_sdp(pki: Path) -> None:
    """Our -20 car asks SDP for TLS on a veth link and gets TLS 1.3 with mutual authentication from
    the combined listener; a -2 car on the same link gets TLS 1.2 from the same port."""
    require_root()
    with two_namespaces("secc0", "ev0") as (secc_ns, ev_ns):
        address = link_local(secc_ns, "secc0")
        link_local(ev_ns, "ev0")
        async with trio.open_nursery() as nursery:
            with inside(secc_ns):
                tls_port = await nursery.start(lambda task_status: serve_tcp(
                    0, Echo, ssl_context=server_context_combined(pki), task_status=task_status))
                await nursery.start(serve_sdp, sdp.SdpServer(address, None, tls_port), "secc0")
            with inside(ev_ns), trio.fail_after(30):
                for ctx, version in ((client_context_iso20(pki), "TLSv1.3"), (client_context_from_pki(pki), "TLSv1.2")):
                    stream = await connect_to_charger("ev0", ctx, require_tls=True)
                    assert isinstance(stream, trio.SSLStream) and stream.version() == version
                    await _echo_once(stream)
                    await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_serve_connection_over_the_combined_context(pki: Path) -> None:
    """serve_connection runs over the stream tls_handshake returns for a -20 car (memory streams)."""
    car_side, charger_side = trio.testing.memory_stream_pair()
    car = trio.SSLStream(car_side, client_context_iso20(pki), server_side=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(car.do_handshake)
        tls = await tls_handshake(charger_side, server_context_combined(pki), 5.0)
        assert tls is not None and tls.version() == "TLSv1.3"
        nursery.start_soon(serve_connection, tls, Echo())
        await _echo_once(car)
        nursery.cancel_scope.cancel()
