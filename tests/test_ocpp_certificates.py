"""StationCertificates (edge.ocpp.certificates): OCPP certificate management (M03-M06, A02/A03) over a real
CertificateStore in a temporary directory, with certificates from tests/pki_builders.py and CSRs signed here as a
CSMS's CA would. Every payload the station returns or sends is checked against the official 2.0.1 and 2.1
schemas (requests that exist in 2.1 only against 2.1, and shown invalid for 2.0.1)."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from edge.ocpp.adapter import SchemaViolation, validate
from edge.ocpp.certificates import (
    OCSP_RETRY,
    SECURITY_EVENTS,
    StationCertificates,
    security_event_notification,
)
from edge.ocpp.device_model import DeviceModel
from edge.pki.algorithms import KeyAlgorithm
from edge.pki.chain import RevocationStatus
from edge.pki.ocsp import OcspError, OcspFailure, ocsp_request_data
from edge.pki.store import CertificateStore, CertificateUse, certificate_hash_data
from edge.pki.testpki import key_usage
from tests.pki_builders import NOW, Issued, make_cert
from tests.test_pki_ocsp import build_response
from tests.test_pki_store import cpo_pki, pem

VERSIONS = ("2.0.1", "2.1")
SECC_ID = "DEEDGE0001"
IDENTITY = "CS-0001"
OCSP_URL = "http://ocsp.example.com/"
SECC_USAGE = ("digitalSignature", "keyAgreement")


@dataclass
class Clock:
    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def valid(action: str, kind: str, payload: dict[str, Any], versions: Iterable[str] = VERSIONS) -> dict[str, Any]:
    for version in versions:
        validate(version, action, kind, payload)
    return payload


def device_model(*, profile: int = 1, **overrides: str) -> DeviceModel:
    device = DeviceModel.standard(1, model="edge", vendor="edge", secc_id=SECC_ID, identity=IDENTITY,
                                  organization="Edge GmbH", country="DE",
                                  overrides={k.replace("__", "/"): v for k, v in overrides.items()})
    device.update("SecurityCtrlr", "SecurityProfile", str(profile))
    return device


def certificates(root: Path, clock: Clock, device: DeviceModel | None = None, **options: Any) -> StationCertificates:
    """A station's certificates as after a (re)start: a fresh store object over ``root``."""
    return StationCertificates(CertificateStore(root), device or device_model(), clock, **options)


def install(station: StationCertificates, kind: str, certificate: str) -> dict[str, Any]:
    request = valid("InstallCertificate", "request", {"certificateType": kind, "certificate": certificate},
                    ("2.1",) if kind == "OEMRootCertificate" else VERSIONS)
    return valid("InstallCertificate", "response", station.install_certificate(request))


def delete(station: StationCertificates, hash_data: dict[str, str]) -> dict[str, Any]:
    request = valid("DeleteCertificate", "request", {"certificateHashData": hash_data})
    return valid("DeleteCertificate", "response", station.delete_certificate(request))


def installed_ids(station: StationCertificates, kinds: list[str] | None = None,
                  version: str = "2.0.1") -> dict[str, Any]:
    request = valid("GetInstalledCertificateIds", "request", {"certificateType": kinds} if kinds else {}, (version,))
    return valid("GetInstalledCertificateIds", "response",
                 station.get_installed_certificate_ids(request, version=version), (version,))


def signed(station: StationCertificates, chain: list[x509.Certificate], kind: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"certificateChain": "".join(c.public_bytes(serialization.Encoding.PEM).decode()
                                                           for c in chain)}
    if kind:
        request["certificateType"] = kind
    valid("CertificateSigned", "request", request)
    return valid("CertificateSigned", "response", station.certificate_signed(request))


def issue(csr_pem: str, issuer: Issued, *, usage: tuple[str, ...] | None = SECC_USAGE, ca: bool = False,
          eku: list[x509.ObjectIdentifier] | None = None, ocsp_url: str | None = None,
          not_before: dt.datetime = NOW - dt.timedelta(days=1), days: int = 60,
          public_key: Any = None) -> x509.Certificate:
    """What the CSMS's CA makes of our CSR (``public_key``: put another key in, as a confused CA would)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    builder = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(issuer.cert.subject)
               .public_key(public_key or csr.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(key_usage(usage), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if ocsp_url is not None:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None) -> dict[str, str]:
    return certificate_hash_data(cert, issuer).to_ocpp()


def event_kinds(station: StationCertificates) -> list[str]:
    events = station.take_security_events()
    for event in events:
        valid("SecurityEventNotification", "request", event.payload())
    return [event.kind for event in events]


@dataclass
class Secc:
    """A V2G root installed, the SECC chain issued from the station's CSR by CPO sub-CA 2 and installed."""

    station: StationCertificates
    root: Issued
    sub1: Issued
    sub2: Issued
    leaf: x509.Certificate


def secc_installed(root_dir: Path, clock: Clock, *, ocsp_url: str | None = OCSP_URL) -> Secc:
    station = certificates(root_dir, clock)
    v2g_root, sub1, sub2 = cpo_pki()
    assert install(station, "V2GRootCertificate", pem(v2g_root))["status"] == "Accepted"
    csr = station.sign_request("V2GCertificate")["csr"]
    leaf = issue(csr, sub2, ocsp_url=ocsp_url)
    assert signed(station, [leaf, sub2.cert, sub1.cert], "V2GCertificate") == {"status": "Accepted"}
    return Secc(station, v2g_root, sub1, sub2, leaf)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- InstallCertificate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate",
                                  "ManufacturerRootCertificate"])
def test_each_root_type_is_installed_and_listed(tmp_path: Path, clock: Clock, kind: str) -> None:
    station = certificates(tmp_path, clock)
    root = make_cert(f"{kind} root", None)
    assert installed_ids(station, [kind]) == {"status": "NotFound"}
    assert install(station, kind, pem(root)) == {"status": "Accepted"}
    assert install(station, kind, pem(root)) == {"status": "Accepted"}  # again: nothing added
    assert installed_ids(station, [kind]) == {
        "status": "Accepted",
        "certificateHashDataChain": [{"certificateType": kind, "certificateHashData": hash_data(root.cert)}]}
    other = "MORootCertificate" if kind != "MORootCertificate" else "V2GRootCertificate"
    assert installed_ids(station, [other]) == {"status": "NotFound"}
    assert station.device.value("SecurityCtrlr", "CertificateEntries") == "1"
    # after a restart, from the files
    assert installed_ids(certificates(tmp_path, clock), [kind])["certificateHashDataChain"][0][
        "certificateHashData"] == hash_data(root.cert)


def test_oem_roots_exist_for_2_1_only(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    root = make_cert("OEM root", None, domain_component="OEM")
    with pytest.raises(SchemaViolation):
        validate("2.0.1", "InstallCertificate", "request", {"certificateType": "OEMRootCertificate",
                                                            "certificate": pem(root)})
    assert install(station, "OEMRootCertificate", pem(root)) == {"status": "Accepted"}
    assert station.store.roots(CertificateUse.OEM_ROOT) == [root.cert]
    assert installed_ids(station, version="2.1")["certificateHashDataChain"] == [
        {"certificateType": "OEMRootCertificate", "certificateHashData": hash_data(root.cert)}]
    assert installed_ids(station, version="2.0.1") == {"status": "NotFound"}  # 2.0.1 has no such type


@pytest.mark.parametrize("case", ["garbage", "two certificates", "not a CA", "no basicConstraints", "expired",
                                  "not yet valid"])
def test_install_refuses_what_cannot_be_a_root(tmp_path: Path, clock: Clock, case: str) -> None:
    station = certificates(tmp_path, clock)
    root = make_cert("Root", None)
    certificate = {
        "garbage": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "two certificates": pem(root) + pem(make_cert("Other Root", None)),
        "not a CA": pem(make_cert("Leaf", root, ca=False, usage=("digitalSignature",))),
        "no basicConstraints": pem(make_cert("Bare", None, ca=None)),
        "expired": pem(make_cert("Old Root", None, not_after=NOW - dt.timedelta(days=1))),
        "not yet valid": pem(make_cert("New Root", None, not_before=NOW + dt.timedelta(days=1))),
    }[case]
    answer = install(station, "MORootCertificate", certificate)
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == "InvalidCertificate"
    assert answer["statusInfo"]["additionalInfo"]
    assert station.store.roots(CertificateUse.MO_ROOT) == []
    assert station.device.value("SecurityCtrlr", "CertificateEntries") == "0"


def test_install_beyond_the_certificate_limit_is_refused(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock, max_certificate_entries=2)
    first, second, third = (make_cert(f"Root {n}", None) for n in range(3))
    assert install(station, "MORootCertificate", pem(first))["status"] == "Accepted"
    assert install(station, "CSMSRootCertificate", pem(second))["status"] == "Accepted"
    answer = install(station, "V2GRootCertificate", pem(third))
    assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == "OutOfStorage"
    assert station.store.roots(CertificateUse.V2G_ROOT) == []
    assert install(station, "MORootCertificate", pem(first))["status"] == "Accepted"  # already there: no new entry
    assert delete(station, hash_data(first.cert))["status"] == "Accepted"
    assert install(station, "V2GRootCertificate", pem(third))["status"] == "Accepted"


def test_the_limit_is_certificate_entries_max_limit(tmp_path: Path, clock: Clock) -> None:
    device = device_model()
    device.variable("SecurityCtrlr", "CertificateEntries").max_limit = 1
    station = certificates(tmp_path, clock, device)
    assert station.max_certificate_entries == 1
    assert install(station, "MORootCertificate", pem(make_cert("A", None)))["status"] == "Accepted"
    assert install(station, "MORootCertificate", pem(make_cert("B", None)))["status"] == "Rejected"


def test_a_storage_error_is_failed(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    for folder in ("MORootCertificate", "ManufacturerRootCertificate"):
        (tmp_path / folder).write_text("a file where the folder should be")
    for kind in ("MORootCertificate", "ManufacturerRootCertificate"):
        answer = install(station, kind, pem(make_cert("Root", None)))
        assert answer["status"] == "Failed" and answer["statusInfo"]["reasonCode"] == "InternalError"


# --- DeleteCertificate and GetInstalledCertificateIds -------------------------------------------------------

@pytest.mark.parametrize("kind", ["MORootCertificate", "ManufacturerRootCertificate"])
def test_delete_then_not_found(tmp_path: Path, clock: Clock, kind: str) -> None:
    station = certificates(tmp_path, clock)
    root, kept = make_cert("Root", None), make_cert("Kept", None)
    install(station, kind, pem(root))
    install(station, "V2GRootCertificate", pem(kept))
    [entry] = installed_ids(station, [kind])["certificateHashDataChain"]
    asked = dict(entry["certificateHashData"], issuerNameHash=entry["certificateHashData"]["issuerNameHash"].upper())
    assert delete(station, asked) == {"status": "Accepted"}
    assert delete(station, asked) == {"status": "NotFound"}
    assert installed_ids(station, [kind]) == {"status": "NotFound"}
    assert [e["certificateType"] for e in installed_ids(station)["certificateHashDataChain"]] == ["V2GRootCertificate"]
    assert station.device.value("SecurityCtrlr", "CertificateEntries") == "1"


def test_delete_with_another_hash_algorithm(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    root = make_cert("Root", None)
    install(station, "MORootCertificate", pem(root))
    assert delete(station, certificate_hash_data(root.cert, None, "SHA384").to_ocpp()) == {"status": "Accepted"}


def test_the_only_csms_root_is_kept_under_tls_profiles(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock, device_model(profile=2))
    first, second = make_cert("CSMS Root 1", None), make_cert("CSMS Root 2", None)
    install(station, "CSMSRootCertificate", pem(first))
    answer = delete(station, hash_data(first.cert))
    assert answer["status"] == "Failed" and answer["statusInfo"]["reasonCode"] == "UnsupportedRequest"
    assert station.store.roots(CertificateUse.CSMS_ROOT) == [first.cert]
    install(station, "CSMSRootCertificate", pem(first))  # again: nothing changed, no event
    install(station, "CSMSRootCertificate", pem(second))
    assert delete(station, hash_data(first.cert)) == {"status": "Accepted"}
    assert delete(station, hash_data(second.cert))["status"] == "Failed"
    assert event_kinds(station) == ["ReconfigurationOfSecurityParameters"] * 3  # two installs, one delete

    unsecured = certificates(tmp_path, clock, device_model(profile=1))
    assert delete(unsecured, hash_data(second.cert)) == {"status": "Accepted"}
    assert unsecured.store.roots(CertificateUse.CSMS_ROOT) == []


def test_all_types_are_listed_without_a_filter(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    mo = make_cert("MO Root", None)
    install(secc.station, "MORootCertificate", pem(mo))
    listed = installed_ids(secc.station, version="2.1")["certificateHashDataChain"]
    assert sorted(e["certificateType"] for e in listed) == ["MORootCertificate", "V2GCertificateChain",
                                                            "V2GRootCertificate"]
    assert installed_ids(secc.station, ["V2GRootCertificate", "MORootCertificate"])["certificateHashDataChain"] == [
        {"certificateType": "V2GRootCertificate", "certificateHashData": hash_data(secc.root.cert)},
        {"certificateType": "MORootCertificate", "certificateHashData": hash_data(mo.cert)}]


# --- SignCertificate ----------------------------------------------------------------------------------------

def test_v2g_csr(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    request = valid("SignCertificate", "request", station.sign_request("V2GCertificate"))
    assert request["certificateType"] == "V2GCertificate"
    csr = x509.load_pem_x509_csr(request["csr"].encode())
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    attributes = {(a.oid, a.value) for a in csr.subject}
    assert attributes == {(NameOID.COMMON_NAME, SECC_ID), (NameOID.ORGANIZATION_NAME, "Edge GmbH"),
                          (NameOID.COUNTRY_NAME, "DE"), (NameOID.DOMAIN_COMPONENT, "CPO")}
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1)
    pending = tmp_path / "secc" / "secp256r1" / "pending.key"  # the store's slot
    assert pending.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(pending.read_bytes(), None)
    assert key.public_key() == public_key
    assert station.sign_request("V2GCertificate")["csr"] != request["csr"]  # a new request, a new key


def test_station_csr(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    request = valid("SignCertificate", "request", station.sign_request("ChargingStationCertificate"))
    assert request["certificateType"] == "ChargingStationCertificate"
    csr = x509.load_pem_x509_csr(request["csr"].encode())
    assert csr.is_signature_valid
    assert {(a.oid, a.value) for a in csr.subject} == {(NameOID.COMMON_NAME, IDENTITY),
                                                        (NameOID.ORGANIZATION_NAME, "Edge GmbH")}
    pending = tmp_path / "station" / "pending.key"
    assert pending.stat().st_mode & 0o777 == 0o600
    assert serialization.load_pem_private_key(pending.read_bytes(), None).public_key() == csr.public_key()


@pytest.mark.parametrize(("algorithm", "key_type"), [(KeyAlgorithm.P521_SHA512, ec.EllipticCurvePublicKey),
                                                     (KeyAlgorithm.ED448, ed448.Ed448PublicKey)])
def test_v2g20_csr_is_2_1_only_with_a_minus_20_key(tmp_path: Path, clock: Clock, algorithm: KeyAlgorithm,
                                                   key_type: type) -> None:
    station = certificates(tmp_path, clock, v2g20_algorithm=algorithm)
    request = valid("SignCertificate", "request", station.sign_request("V2G20Certificate"), ("2.1",))
    with pytest.raises(SchemaViolation):
        validate("2.0.1", "SignCertificate", "request", request)
    csr = x509.load_pem_x509_csr(request["csr"].encode())
    assert csr.is_signature_valid and isinstance(csr.public_key(), key_type)
    assert (tmp_path / "secc" / algorithm.value / "pending.key").is_file()


def test_a_csr_needs_its_subject_values(tmp_path: Path, clock: Clock) -> None:
    device = DeviceModel.standard(1, model="edge", vendor="edge")  # no SeccId, identity, organization
    station = certificates(tmp_path, clock, device)
    with pytest.raises(ValueError, match="SeccId"):
        station.sign_request("V2GCertificate")
    with pytest.raises(ValueError, match="Identity"):
        station.sign_request("ChargingStationCertificate")
    assert station.pending_signing() == {}


# --- CertificateSigned --------------------------------------------------------------------------------------

def test_a_signed_secc_chain_is_installed_and_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    assert secc.station.pending_signing() == {}
    assert not (tmp_path / "signing" / "V2GCertificate.json").exists()
    assert event_kinds(secc.station) == []

    reopened = certificates(tmp_path, clock)
    assert reopened.store.secc_chain() == [secc.leaf, secc.sub2.cert, secc.sub1.cert]
    key = reopened.store.secc_key()
    assert key is not None and key.public_key() == secc.leaf.public_key()
    assert installed_ids(reopened, ["V2GCertificateChain"])["certificateHashDataChain"] == [{
        "certificateType": "V2GCertificateChain",
        "certificateHashData": hash_data(secc.leaf, secc.sub2.cert),
        "childCertificateHashData": [hash_data(secc.sub2.cert, secc.sub1.cert),
                                     hash_data(secc.sub1.cert, secc.root.cert)]}]
    assert reopened.device.value("SecurityCtrlr", "CertificateEntries") == "2"
    assert reopened.due_sign_request(NOW + dt.timedelta(days=30)) is None

    assert delete(reopened, hash_data(secc.leaf, secc.sub2.cert)) == {"status": "Accepted"}
    assert reopened.store.secc_chain() == []
    assert installed_ids(reopened, ["V2GCertificateChain"]) == {"status": "NotFound"}


def test_a_pending_key_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    csr = certificates(tmp_path, clock).sign_request("V2GCertificate")["csr"]
    _, sub1, sub2 = cpo_pki()
    leaf = issue(csr, sub2)
    restarted = certificates(tmp_path, clock)
    assert signed(restarted, [leaf, sub2.cert, sub1.cert]) == {"status": "Accepted"}  # no type: the key says
    assert restarted.store.secc_chain() == [leaf, sub2.cert, sub1.cert]


def test_a_reissue_for_the_installed_key_leaves_a_newer_request_open(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    newer_csr = secc.station.sign_request("V2GCertificate")["csr"]
    reissued = issue(newer_csr, secc.sub2, public_key=secc.leaf.public_key(), days=90)
    assert signed(secc.station, [reissued, secc.sub2.cert, secc.sub1.cert]) == {"status": "Accepted"}
    assert secc.station.store.secc_chain()[0] == reissued
    assert "V2GCertificate" in secc.station.pending_signing()
    answered = issue(newer_csr, secc.sub2)
    assert signed(secc.station, [answered, secc.sub2.cert, secc.sub1.cert]) == {"status": "Accepted"}
    key = secc.station.store.secc_key()
    assert key is not None and key.public_key() == answered.public_key()
    assert secc.station.pending_signing() == {}


def test_a_leaf_with_another_key_is_refused(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    csr = station.sign_request("V2GCertificate")["csr"]
    _, sub1, sub2 = cpo_pki()
    stranger = issue(csr, sub2, public_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    answer = signed(station, [stranger, sub2.cert, sub1.cert], "V2GCertificate")
    assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == "InvalidCertificate"
    assert event_kinds(station) == ["InvalidChargingStationCertificate"]
    assert station.store.secc_chain() == []
    assert "V2GCertificate" in station.pending_signing()  # still waiting for the right one
    assert signed(station, [issue(csr, sub2), sub2.cert, sub1.cert], "V2GCertificate") == {"status": "Accepted"}


@pytest.mark.parametrize("case", ["expired", "not yet valid", "a CA", "no keyUsage", "no digitalSignature",
                                  "client-only extendedKeyUsage", "broken link", "unknown V2G root", "garbage",
                                  "station type", "longer than MaxCertificateChainSize"])
def test_certificate_signed_refusals(tmp_path: Path, clock: Clock, case: str) -> None:
    device = device_model(**({"SecurityCtrlr__MaxCertificateChainSize": "1000"}
                             if case == "longer than MaxCertificateChainSize" else {}))
    station = certificates(tmp_path, clock, device)
    v2g_root, sub1, sub2 = cpo_pki()
    install(station, "V2GRootCertificate", pem(v2g_root))
    csr = station.sign_request("V2GCertificate")["csr"]
    _, other_sub1, other_sub2 = cpo_pki()
    good_leaf = issue(csr, sub2)
    leaves = {
        "expired": issue(csr, sub2, not_before=NOW - dt.timedelta(days=90), days=30),
        "not yet valid": issue(csr, sub2, not_before=NOW + dt.timedelta(hours=1)),
        "a CA": issue(csr, sub2, ca=True, usage=("keyCertSign", "digitalSignature")),
        "no keyUsage": issue(csr, sub2, usage=None),
        "no digitalSignature": issue(csr, sub2, usage=("keyAgreement",)),
        "client-only extendedKeyUsage": issue(csr, sub2, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
    }
    chains = {
        "broken link": [good_leaf, sub1.cert],
        "unknown V2G root": [issue(csr, other_sub2), other_sub2.cert, other_sub1.cert],
        "station type": [good_leaf, sub2.cert, sub1.cert],
        "longer than MaxCertificateChainSize": [good_leaf, sub2.cert, sub1.cert],
    }
    if case == "garbage":
        request = {"certificateChain": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}
        answer = valid("CertificateSigned", "response", station.certificate_signed(request))
    else:
        chain = chains.get(case) or [leaves[case], sub2.cert, sub1.cert]
        answer = signed(station, chain, "ChargingStationCertificate" if case == "station type" else None)
    assert answer["status"] == "Rejected"
    expected = "TooLargeElement" if case.startswith("longer") else "InvalidCertificate"
    assert answer["statusInfo"]["reasonCode"] == expected, answer
    assert event_kinds(station) == ["InvalidChargingStationCertificate"]
    assert station.store.secc_chain() == []
    assert signed(station, [issue(csr, sub2), sub2.cert, sub1.cert])["status"] == (
        "Rejected" if case.startswith("longer") else "Accepted")  # the key is still pending


def test_a_signed_station_certificate_is_installed_with_its_key(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    cso_root = make_cert("CSO Root", None)
    cso_sub = make_cert("CSO Sub", cso_root, path_length=0)
    csr = station.sign_request("ChargingStationCertificate")["csr"]
    leaf = issue(csr, cso_sub, usage=("digitalSignature",), eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    assert signed(station, [leaf, cso_sub.cert]) == {"status": "Accepted"}  # no type: the key says
    path = station.station_certificate_file()
    assert path == tmp_path / "station" / "certificate.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "station" / "pending.key").exists()
    assert station.station_chain() == [leaf, cso_sub.cert]
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(path)  # key and chain fit together
    assert station.store.secc_chain() == []  # not the SECC's
    assert event_kinds(station) == ["ReconfigurationOfSecurityParameters"]
    assert installed_ids(station) == {"status": "NotFound"}  # OCPP lists no station certificate

    answer = delete(station, hash_data(leaf, cso_sub.cert))  # M04.FR.06
    assert answer["status"] == "Failed" and answer["statusInfo"]["reasonCode"] == "UnsupportedRequest"
    assert station.station_chain() == [leaf, cso_sub.cert]

    renewed_csr = station.sign_request("ChargingStationCertificate")["csr"]
    renewed = issue(renewed_csr, cso_sub, usage=("digitalSignature",))
    assert signed(station, [renewed, cso_sub.cert], "ChargingStationCertificate") == {"status": "Accepted"}
    assert station.station_chain()[0] == renewed
    assert station.revert_station_certificate()
    assert certificates(tmp_path, clock).station_chain()[0] == leaf
    assert not station.revert_station_certificate()


def test_a_station_certificate_without_client_authentication_is_refused(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    cso_root = make_cert("CSO Root", None)
    csr = station.sign_request("ChargingStationCertificate")["csr"]
    leaf = issue(csr, cso_root, usage=("digitalSignature",), eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    answer = signed(station, [leaf], "ChargingStationCertificate")
    assert answer["status"] == "Rejected" and "client" in answer["statusInfo"]["additionalInfo"]
    assert station.station_certificate_file() is None
    assert event_kinds(station) == ["InvalidChargingStationCertificate"]


# --- the retry rule -----------------------------------------------------------------------------------------

def test_sign_requests_are_repeated_with_a_doubling_wait(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)  # CertSigningWaitMinimum 60 s, CertSigningRepeatTimes 3
    first = station.sign_request("V2GCertificate")
    second_at = NOW + dt.timedelta(seconds=60)
    assert station.next_sign_request_at() == second_at
    assert station.due_sign_request(second_at - dt.timedelta(seconds=1)) is None
    assert valid("SignCertificate", "request", station.due_sign_request(second_at)) == first  # the same CSR
    assert station.due_sign_request(second_at) is None  # counted as sent

    restarted = certificates(tmp_path, clock)  # the schedule is kept on disk
    third_at = second_at + dt.timedelta(seconds=120)
    assert restarted.due_sign_request(third_at - dt.timedelta(seconds=1)) is None
    assert restarted.due_sign_request(third_at) == first
    fourth_at = third_at + dt.timedelta(seconds=240)
    assert restarted.due_sign_request(fourth_at - dt.timedelta(seconds=1)) is None
    assert restarted.due_sign_request(fourth_at) == first
    assert restarted.due_sign_request(fourth_at + dt.timedelta(days=30)) is None  # 3 repeats, no more
    assert restarted.next_sign_request_at() is None


def test_a_shorter_wait_and_fewer_repeats_from_the_device_model(tmp_path: Path, clock: Clock) -> None:
    device = device_model(SecurityCtrlr__CertSigningWaitMinimum="10", SecurityCtrlr__CertSigningRepeatTimes="1")
    station = certificates(tmp_path, clock, device)
    station.sign_request("ChargingStationCertificate")
    assert station.due_sign_request(NOW + dt.timedelta(seconds=10)) is not None
    assert station.due_sign_request(NOW + dt.timedelta(days=1)) is None


def test_a_refused_sign_request_is_not_repeated(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    station.sign_request("V2GCertificate")
    station.sign_request_answered("V2GCertificate", None)  # the CALL failed: the rule asks again
    assert station.due_sign_request(NOW + dt.timedelta(seconds=60)) is not None
    station.sign_request_answered("V2GCertificate", {"status": "Rejected", "statusInfo": {"reasonCode": "X"}})
    assert station.due_sign_request(NOW + dt.timedelta(days=1)) is None
    assert certificates(tmp_path, clock).due_sign_request(NOW + dt.timedelta(days=1)) is None


def test_each_pending_type_is_repeated(tmp_path: Path, clock: Clock) -> None:
    station = certificates(tmp_path, clock)
    v2g = station.sign_request("V2GCertificate")
    own = station.sign_request("ChargingStationCertificate")
    later = NOW + dt.timedelta(seconds=60)
    due = [station.due_sign_request(later), station.due_sign_request(later), station.due_sign_request(later)]
    assert sorted(p["certificateType"] for p in due[:2]) == ["ChargingStationCertificate", "V2GCertificate"]
    assert {p["csr"] for p in due[:2]} == {v2g["csr"], own["csr"]} and due[2] is None


# --- GetCertificateStatus -----------------------------------------------------------------------------------

def ocsp_result(cert: x509.Certificate, issuer: x509.Certificate, signer: Issued, **options: Any) -> str:
    return base64.b64encode(build_response(cert, issuer, signer, **options)).decode()


def test_a_valid_ocsp_response_is_kept_for_stapling(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    station = secc.station
    assert station.ocsp_due() == NOW
    [request] = [valid("GetCertificateStatus", "request", r) for r in station.ocsp_requests()]
    assert request == {"ocspRequestData": ocsp_request_data(secc.leaf, secc.sub2.cert).to_ocpp()}
    assert request["ocspRequestData"]["responderURL"] == OCSP_URL
    assert set(station.ocsp_unavailable) == {secc.sub2.cert.subject.rfc4514_string(),
                                             secc.sub1.cert.subject.rfc4514_string()}  # no OCSP URL in them
    assert station.ocsp_requests() == []  # asked: not again at once

    response = valid("GetCertificateStatus", "response",
                     {"status": "Accepted", "ocspResult": ocsp_result(secc.leaf, secc.sub2.cert, secc.sub2)})
    status = station.ocsp_answer(request, response)
    assert status.status is RevocationStatus.GOOD
    der = base64.b64decode(response["ocspResult"])
    kept = list((tmp_path / "ocsp").iterdir())
    assert [p.read_bytes() for p in kept] == [der]
    assert station.cached_ocsp(secc.leaf) == der
    assert station.cached_ocsp(secc.sub2.cert) is None

    # this_update NOW - 1 h, next_update 24 h later: refreshed 1 h before it expires
    refresh = NOW + dt.timedelta(hours=22)
    reopened = certificates(tmp_path, clock)
    assert reopened.cached_ocsp(secc.leaf) == der  # read back from the file
    assert reopened.ocsp_due() == refresh
    assert reopened.ocsp_requests(refresh - dt.timedelta(seconds=1)) == []
    assert reopened.ocsp_requests(refresh) == [request]
    assert reopened.cached_ocsp(secc.leaf, NOW + dt.timedelta(hours=24)) is None  # expired


@pytest.mark.parametrize(("next_update", "refresh"), [
    (NOW - dt.timedelta(hours=1) + dt.timedelta(days=7), NOW + dt.timedelta(hours=23)),  # daily, however long valid
    (None, NOW + dt.timedelta(hours=22)),  # no nextUpdate: good for 24 h after thisUpdate, refreshed 1 h before
    (NOW + dt.timedelta(hours=2), NOW + dt.timedelta(minutes=75)),  # short-lived: a quarter of 3 h before
])
def test_when_a_kept_response_is_refreshed(tmp_path: Path, clock: Clock, next_update: dt.datetime | None,
                                           refresh: dt.datetime) -> None:
    secc = secc_installed(tmp_path, clock)
    [request] = secc.station.ocsp_requests()
    result = ocsp_result(secc.leaf, secc.sub2.cert, secc.sub2, next_update=next_update)
    secc.station.ocsp_answer(request, {"status": "Accepted", "ocspResult": result})
    assert secc.station.ocsp_due() == refresh
    assert certificates(tmp_path, clock).ocsp_due() == refresh


def test_a_response_about_another_certificate_is_refused(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    [request] = secc.station.ocsp_requests()
    about_sub2 = {"status": "Accepted", "ocspResult": ocsp_result(secc.sub2.cert, secc.sub1.cert, secc.sub1)}
    with pytest.raises(OcspError) as refused:
        secc.station.ocsp_answer(request, about_sub2)
    assert refused.value.failure is OcspFailure.CERT_ID_MISMATCH
    assert secc.station.cached_ocsp(secc.leaf) is None
    assert not (tmp_path / "ocsp").exists()


def test_a_response_signed_by_a_stranger_is_refused(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    [request] = secc.station.ocsp_requests()
    forged = {"status": "Accepted", "ocspResult": ocsp_result(secc.leaf, secc.sub2.cert, make_cert("Mallory", None))}
    with pytest.raises(OcspError) as refused:
        secc.station.ocsp_answer(request, forged)
    assert refused.value.failure is OcspFailure.UNAUTHORIZED_RESPONDER
    assert secc.station.cached_ocsp(secc.leaf) is None


def test_a_failed_answer_is_asked_again_later(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    [request] = secc.station.ocsp_requests()
    failed = valid("GetCertificateStatus", "response", {"status": "Failed"})
    with pytest.raises(OcspError) as refused:
        secc.station.ocsp_answer(request, failed)
    assert refused.value.failure is OcspFailure.UNSUCCESSFUL
    assert secc.station.ocsp_due() == NOW + OCSP_RETRY
    assert secc.station.ocsp_requests(NOW + OCSP_RETRY) == [request]


def test_a_revoked_status_is_kept_but_not_stapled(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    [request] = secc.station.ocsp_requests()
    revoked = {"status": "Accepted",
               "ocspResult": ocsp_result(secc.leaf, secc.sub2.cert, secc.sub2, status=ocsp.OCSPCertStatus.REVOKED)}
    assert secc.station.ocsp_answer(request, revoked).status is RevocationStatus.REVOKED
    assert secc.station.cached_ocsp(secc.leaf) is None
    assert len(list((tmp_path / "ocsp").iterdir())) == 1


def test_an_answer_for_no_certificate_of_ours(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    stranger_root = make_cert("Other Root", None)
    stranger = make_cert("Other", stranger_root, ca=False, usage=("digitalSignature",))
    request = {"ocspRequestData": ocsp_request_data(stranger.cert, stranger_root.cert,
                                                    responder_url=OCSP_URL).to_ocpp()}
    with pytest.raises(OcspError) as refused:
        secc.station.ocsp_answer(request, {"status": "Accepted",
                                           "ocspResult": ocsp_result(stranger.cert, stranger_root.cert,
                                                                     stranger_root)})
    assert refused.value.failure is OcspFailure.NOT_REQUESTED


def test_no_ocsp_without_a_secc_chain_or_an_ocsp_url(tmp_path: Path, clock: Clock) -> None:
    assert certificates(tmp_path / "empty", clock).ocsp_due() is None
    secc = secc_installed(tmp_path / "no-url", clock, ocsp_url=None)
    assert secc.station.ocsp_due() is None and secc.station.ocsp_requests() == []
    assert len(secc.station.ocsp_unavailable) == 3


def test_a_new_secc_chain_drops_the_old_ocsp_responses(tmp_path: Path, clock: Clock) -> None:
    secc = secc_installed(tmp_path, clock)
    [request] = secc.station.ocsp_requests()
    secc.station.ocsp_answer(request, {"status": "Accepted",
                                       "ocspResult": ocsp_result(secc.leaf, secc.sub2.cert, secc.sub2)})
    csr = secc.station.sign_request("V2GCertificate")["csr"]
    renewed = issue(csr, secc.sub2, ocsp_url=OCSP_URL)
    assert signed(secc.station, [renewed, secc.sub2.cert, secc.sub1.cert]) == {"status": "Accepted"}
    assert list((tmp_path / "ocsp").iterdir()) == []
    [renewed_request] = secc.station.ocsp_requests()
    assert renewed_request["ocspRequestData"]["serialNumber"] == format(renewed.serial_number, "x")


# --- SecurityEventNotification ------------------------------------------------------------------------------

def test_security_event_payloads() -> None:
    payload = valid("SecurityEventNotification", "request",
                    security_event_notification("InvalidChargingStationCertificate", NOW, "x" * 400))
    assert payload == {"type": "InvalidChargingStationCertificate", "timestamp": "2025-06-01T12:00:00.000Z",
                       "techInfo": "x" * 255}
    assert "techInfo" not in security_event_notification("StartupOfTheDevice", NOW)
    assert {"InvalidCsmsCertificate", "ReconfigurationOfSecurityParameters"} <= SECURITY_EVENTS
    with pytest.raises(ValueError, match="not an OCPP security event"):
        security_event_notification("InvalidChargingstationCertificate", NOW)
