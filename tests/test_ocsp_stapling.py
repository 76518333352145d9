"""OCSP stapling of the SECC certificate: ``openssl s_client -status`` against ``edge secc --tls`` sees a stapled,
good, verifiable response in -2 (TLS 1.2, status_request) and -20 (TLS 1.3, P-521 and Ed448, mutual
authentication); with no fresh response the car is still served and the log says why; the stapler itself picks
only a response about its leaf, current and GOOD."""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from edge.pki.stapling import SeccStapler
from edge.pki.testpki import (
    DEFAULT_PASSWORD,
    ISO2_FOLDER,
    ISO20_ED448_FOLDER,
    ISO20_FOLDER,
    PkiPaths,
    create_test_pki,
    write_secc_ocsp_responses,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line tool")


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        return probe.getsockname()[1]


class Secc:
    """``edge secc --tls-only`` on loopback with a PKI folder, its log kept."""

    def __init__(self, pki: Path, log: Path) -> None:
        self.port = _free_port()
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "secc", "--iface", "lo", "--port", str(self.port), "--tls-only",
             "--pki", str(pki)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 20
        while f"TLS {self.port}" not in log.read_text():
            assert self.process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(10)
        return self.log.read_text()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    out = tmp_path / "pki"
    create_test_pki(out)  # certificates and OCSP responses current from now
    return out


@pytest.fixture
def secc(pki: Path, tmp_path: Path) -> Iterator[Secc]:
    server = Secc(pki, tmp_path / "secc.log")
    yield server
    server.stop()


def s_client(port: int, pki: Path, folder: str) -> str:
    """One handshake by ``openssl s_client -status`` as a -2 car (TLS 1.2) or a -20 car (TLS 1.3 with its OEM
    chain, the folder's group and signature scheme), trusting only the folder's V2G root."""
    paths = PkiPaths(pki, folder)
    command = ["openssl", "s_client", "-connect", f"[::1]:{port}", "-status", "-CAfile", str(paths.cert("v2gRootCA"))]
    if folder == ISO2_FOLDER:
        command += ["-tls1_2"]
    else:
        group, scheme = ("secp521r1", "ecdsa_secp521r1_sha512") if folder == ISO20_FOLDER else ("X448", "ed448")
        command += ["-tls1_3", "-groups", group, "-sigalgs", scheme, "-cert", str(paths.cert("oemLeaf")),
                    "-key", str(paths.key("oemLeaf")), "-pass", f"pass:{DEFAULT_PASSWORD}",
                    "-cert_chain", str(paths.certs / "oemCertChain.pem")]
    result = subprocess.run(command, input=b"", capture_output=True, timeout=20)
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


@pytest.mark.parametrize(("folder", "protocol"), [(ISO2_FOLDER, "TLSv1.2"), (ISO20_FOLDER, "TLSv1.3"),
                                                  (ISO20_ED448_FOLDER, "TLSv1.3")])
def test_s_client_sees_a_stapled_good_response(pki: Path, secc: Secc, folder: str, protocol: str) -> None:
    output = s_client(secc.port, pki, folder)
    assert "Verify return code: 0 (ok)" in output, output
    assert re.search(rf"Protocol\s*:\s*{protocol}|New, {protocol}, Cipher", output), output
    assert "OCSP Response Status: successful" in output and "Cert Status: good" in output, output
    leaf = x509.load_pem_x509_certificate(PkiPaths(pki, folder).cert("seccLeaf").read_bytes())
    assert f"Serial Number: {leaf.serial_number:04X}" in output  # about the leaf the server sent
    if folder == ISO20_ED448_FOLDER:
        assert "peer signature type: ed448" in output.lower(), output
    # what was stapled is the response on file: the same thisUpdate, to the second
    from cryptography.x509 import ocsp

    on_file = ocsp.load_der_ocsp_response((pki / folder / "ocsp" / "seccLeafCert.ocsp.der").read_bytes())
    assert f"This Update: {on_file.this_update_utc:%b %e %H:%M:%S %Y} GMT" in output, output


def test_no_fresh_response_still_serves_the_car_with_a_warning(pki: Path, tmp_path: Path) -> None:
    write_secc_ocsp_responses(pki, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))  # expired a while ago
    (pki / ISO20_FOLDER / "ocsp" / "seccLeafCert.ocsp.der").unlink()  # and none at all for P-521
    server = Secc(pki, tmp_path / "secc.log")
    try:
        for folder in (ISO2_FOLDER, ISO20_FOLDER):
            output = s_client(server.port, pki, folder)
            assert "Verify return code: 0 (ok)" in output, output  # the handshake completed
            assert "OCSP response: no response sent" in output, output
    finally:
        log = server.stop()
    assert "asked for the SECC certificate's status; the OCSP response on file expired at" in log, log
    assert "no OCSP response (none fetched by GetCertificateStatus, none in the PKI's ocsp/ folder)" in log, log


def test_revoked_response_is_never_stapled(pki: Path, tmp_path: Path) -> None:
    from edge.pki.cli import main

    assert main(["pki", "ocsp", "--pki", str(pki), "--revoked"]) == 0
    server = Secc(pki, tmp_path / "secc.log")
    try:
        output = s_client(server.port, pki, ISO2_FOLDER)
        assert "Verify return code: 0 (ok)" in output and "OCSP response: no response sent" in output, output
    finally:
        log = server.stop()
    assert "the OCSP response on file says REVOKED" in log, log


# --- the stapler alone ---------------------------------------------------------------------------------------

def _chain(pki: Path, folder: str) -> tuple[x509.Certificate, x509.Certificate]:
    paths = PkiPaths(pki, folder)
    return (x509.load_pem_x509_certificate(paths.cert("seccLeaf").read_bytes()),
            x509.load_pem_x509_certificate(paths.cert("cpoSubCA2").read_bytes()))


def test_stapler_takes_the_newest_response_about_its_leaf_and_rereads_the_folder(pki: Path, tmp_path: Path) -> None:
    leaf, issuer = _chain(pki, ISO2_FOLDER)
    folder = tmp_path / "ocsp"
    folder.mkdir()
    now = dt.datetime.now(dt.UTC)
    clock = [now]
    stapler = SeccStapler(leaf, issuer, label="test", folder=folder, clock=lambda: clock[0])
    assert stapler() is None and stapler.declined == 1  # empty folder
    other = tmp_path / "other"  # another PKI's response (another leaf): ignored
    create_test_pki(other)
    (folder / "a-other.der").write_bytes((other / ISO2_FOLDER / "ocsp" / "seccLeafCert.ocsp.der").read_bytes())
    (folder / "b-garbage.der").write_bytes(b"not OCSP")
    assert stapler() is None
    old = write_secc_ocsp_responses(pki, now=now - dt.timedelta(days=2))[0].read_bytes()
    new = write_secc_ocsp_responses(pki, now=now - dt.timedelta(hours=1))[0].read_bytes()
    (folder / "c-old.der").write_bytes(old)
    (folder / "d-new.der").write_bytes(new)
    assert stapler() == new and stapler.stapled == 1
    clock[0] = now + dt.timedelta(days=7)  # the newest one has expired too by now
    assert stapler() is None
    fetched = {leaf: old}
    stapler = SeccStapler(leaf, issuer, label="test", folder=folder, fetched=fetched.get)
    assert stapler() == old  # what the station fetched (and checked) comes first


def test_tls_refuses_nothing_when_the_stapler_fails(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stapler that raises inside OpenSSL's callback: the handshake goes on unstapled."""
    import ssl

    import trio

    from edge.v2g.tls import enable_ocsp_stapling, server_context_combined

    ctx = server_context_combined(pki, iso20_folders=())
    iso2 = ctx.iso2.context  # type: ignore[union-attr]

    def broken() -> bytes | None:
        raise RuntimeError("boom")

    assert enable_ocsp_stapling(iso2, broken, label="test")

    async def main() -> str:
        async def serve(stream: trio.SocketStream) -> None:
            tls = trio.SSLStream(stream, ctx, server_side=True)
            try:
                await tls.do_handshake()
                await tls.aclose()
            except (trio.BrokenResourceError, ssl.SSLError):
                pass

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="::1"))
            port = listeners[0].socket.getsockname()[1]
            output = await trio.to_thread.run_sync(s_client, port, pki, ISO2_FOLDER)
            nursery.cancel_scope.cancel()
        return output

    output = trio.run(main)
    assert "Verify return code: 0 (ok)" in output and "OCSP response: no response sent" in output, output
    assert "OCSP stapling failed; the handshake goes on without a staple" in caplog.text
