"""The station's OCPP security profiles against ``edge csms``: 2 (TLS, the CSMS's certificate checked, and
Basic auth) and 3 (mutual TLS with the station certificate); the wrong password or a station certificate
from another CA does not get in."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.controller import ChargingController
from edge.ocpp.bridge import MeterReading
from edge.ocpp.station import EvseLink, OcppStation, StationSettings
from tests.test_ocpp_csms import CsmsProcess

NOW = dt.datetime.now(dt.UTC)


def _issue(folder: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *,
           server: bool = False, client: bool = False) -> tuple[Path, Path, x509.Certificate,
                                                                ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if server:
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return cert_path, key_path, cert, key


async def _boots(settings: StationSettings, seconds: float = 6.0) -> bool:
    evse = EvseLink(1, ChargingController(), lambda: MeterReading(0.0, 0.0, 0.0))
    station = OcppStation(settings, [evse], overrides={"OCPPCommCtrlr/RetryBackOffWaitMinimum": "1"})
    assert station.device.security_profile == settings.security_profile
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(station.run)
            with trio.move_on_after(seconds):
                while not station.online():
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        return station.online() or station.boot.status == "Accepted"
    finally:
        station.close()


async def test_profile_2_tls_and_basic_auth(tmp_path: Path) -> None:
    ca_pem, _, ca, ca_key = _issue(tmp_path, "csms-ca", None)
    server_pem, server_key, _, _ = _issue(tmp_path, "csms", (ca, ca_key), server=True)
    csms = CsmsProcess(tmp_path, 0, ["--tls-cert", str(server_pem), "--tls-key", str(server_key),
                                     "--password", "s3cret-password-0001"])
    try:
        def settings(password: str, state: str, ca_file: Path = ca_pem) -> StationSettings:
            return StationSettings(csms.url, "CP1", tmp_path / state, security_profile=2, password=password,
                                   ca_file=ca_file)

        assert await _boots(settings("s3cret-password-0001", "good"))
        assert not await _boots(settings("wrong-password-000001", "bad"), 3)
        other_ca, _, _, _ = _issue(tmp_path, "other-ca", None)
        assert not await _boots(settings("s3cret-password-0001", "untrusted", other_ca), 3)  # CSMS not trusted
        refused = [r for r in csms.log() if r.get("event") == "refused"]
        assert refused and "401" in str(refused[0])
    finally:
        csms.stop()


async def test_profile_3_mutual_tls(tmp_path: Path) -> None:
    ca_pem, _, ca, ca_key = _issue(tmp_path, "csms-ca", None)
    server_pem, server_key, _, _ = _issue(tmp_path, "csms", (ca, ca_key), server=True)
    station_pem, station_key, _, _ = _issue(tmp_path, "CP1", (ca, ca_key), client=True)
    other_ca = _issue(tmp_path, "other-ca", None)
    stranger_pem, stranger_key, _, _ = _issue(tmp_path, "CP1-forged", (other_ca[2], other_ca[3]), client=True)
    csms = CsmsProcess(tmp_path, 0, ["--tls-cert", str(server_pem), "--tls-key", str(server_key),
                                     "--client-ca", str(ca_pem)])
    try:
        good = StationSettings(csms.url, "CP1", tmp_path / "good", security_profile=3, ca_file=ca_pem,
                               cert_file=station_pem, key_file=station_key)
        assert await _boots(good)
        forged = StationSettings(csms.url, "CP1", tmp_path / "forged", security_profile=3, ca_file=ca_pem,
                                 cert_file=stranger_pem, key_file=stranger_key)
        assert not await _boots(forged, 3)
    finally:
        csms.stop()


def test_profiles_need_what_they_need(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="wss"):
        StationSettings("ws://127.0.0.1:1", "CP1", tmp_path, security_profile=2).ssl_context()
    with pytest.raises(ValueError, match="station certificate"):
        StationSettings("wss://127.0.0.1:1", "CP1", tmp_path, security_profile=3).ssl_context()
