"""The station's certificates as the CSMS manages them (OCPP 2.0.1 and 2.1), sans-IO: wire-form payloads in
and out, the clock given, files only through the certificate store.

:class:`StationCertificates` answers the CSMS's CALLs and builds the station's own:

- InstallCertificate (M05) :meth:`~StationCertificates.install_certificate`: V2G, MO, CSMS, Manufacturer and
  (2.1) OEM roots. A CA certificate valid now is Accepted (again if already there); anything else is Rejected with
  reasonCode InvalidCertificate; a new certificate beyond the limit of ``SecurityCtrlr.CertificateEntries``
  (its maxLimit, else :data:`DEFAULT_MAX_CERTIFICATE_ENTRIES`) is Rejected with OutOfStorage; a storage error is
  Failed (InternalError).
- DeleteCertificate (M04) :meth:`~StationCertificates.delete_certificate`: Accepted / NotFound / Failed. Refused
  (Failed): the ChargingStationCertificate (M04.FR.06: never through DeleteCertificate) and the last
  CSMSRootCertificate while the security profile is 2 or 3 (the station could not verify the CSMS at its next
  connection: OCPP 1.6's M04.FR.06 "in use" rule, kept because a station that deleted it is lost to its CSMS).
- GetInstalledCertificateIds (M03) :meth:`~StationCertificates.get_installed_certificate_ids`: the roots by type
  and, for V2GCertificateChain, each SECC leaf with its sub-CAs as childCertificateHashData. OEM roots exist only
  in 2.1's enum: a 2.0.1 answer leaves them out.
- SignCertificate / CertificateSigned (A02 station certificate, A03 the ISO 15118 SECC certificate):
  :meth:`~StationCertificates.sign_request` makes a fresh key and a PKCS#10 CSR, the key kept pending (a 0600 file
  in the store) until :meth:`~StationCertificates.certificate_signed` brings a chain whose leaf holds that key; the
  retry rule (A02/A03: no CertificateSigned within CertSigningWaitMinimum seconds: ask again, the wait doubling
  each time, at most CertSigningRepeatTimes times) is :meth:`~StationCertificates.due_sign_request`.
- GetCertificateStatus (M06) for the SECC chains: :meth:`~StationCertificates.ocsp_requests` gives the requests,
  :meth:`~StationCertificates.ocsp_answer` checks the CSMS's ``ocspResult`` and keeps it in a file per certificate
  (for stapling: :meth:`~StationCertificates.cached_ocsp`), :meth:`~StationCertificates.ocsp_due` says when the
  next refresh is due.
- SecurityEventNotification: what these raise is queued as :class:`SecurityEvent` (:meth:`take_security_events`);
  :func:`security_event_notification` builds the payload for any event of the specification's list.

Files (beside the store's own, see :mod:`edge.pki.store`; every write atomic)::

    ROOT/ManufacturerRootCertificate/<sha256 of the DER>.pem   one root per file (the store has no such use)
    ROOT/station/certificate.pem    the station certificate: private key, leaf, sub-CAs in one 0600 file, so
                                    key and chain change together (``ssl.SSLContext.load_cert_chain(path)``)
    ROOT/station/previous.pem       the one it replaced (to fall back to if the CSMS refuses the new one)
    ROOT/station/pending.key        the key of the last station CSR (0600)
    ROOT/signing/<type>.json        an open SignCertificate: its CSR, attempts and when the last went out
    ROOT/ocsp/<sha256 of the DER>.der   the last checked OCSP response for that SECC chain certificate

The SECC keys (pending and installed) are the store's (``ROOT/secc/<algorithm>/``).

Decisions:

- Key algorithms: V2GCertificate (ISO 15118-2) secp256r1 with ECDSA-SHA256; V2G20Certificate (2.1 only; ISO
  15118-20) ``v2g20_algorithm``, secp521r1 with ECDSA-SHA512 by default or Ed448, each in its own store slot; the
  station certificate secp256r1 (what OCPP's TLS cipher suites with ECDSA use).
- CSR subjects: SECC CN = ISO15118Ctrlr.SeccId, O = ISO15118Ctrlr.OrganizationName, C = ISO15118Ctrlr.CountryName,
  DC = CPO (ISO 15118's SECC certificate profile); station CN = SecurityCtrlr.Identity (the id it connects
  with), O = SecurityCtrlr.OrganizationName (OCPP's Charging Station certificate profile). A value that is not set
  makes :meth:`~StationCertificates.sign_request` raise ValueError naming it (TriggerMessage answers Rejected).
- A resent SignCertificateRequest carries the same CSR (same key), so a late CertificateSigned for an earlier
  attempt still fits; a new :meth:`~StationCertificates.sign_request` replaces the pending key. The schedule
  survives a restart (``ROOT/signing``). The CSMS answering SignCertificate Rejected ends the retries.
- CertificateSigned: refused (Rejected, reasonCode InvalidCertificate, and a SecurityEventNotification
  InvalidChargingStationCertificate, for the SECC certificate too) unless the leaf's key is one this station
  generated for that type (the pending one, or the installed one for a re-issue), the leaf is no CA and valid now
  (:data:`CLOCK_SKEW` of slack for the CSMS's clock), its keyUsage allows digitalSignature (required for the SECC
  certificate, whose profile has one), an extendedKeyUsage, if present, allows TLS client (station) or server
  (SECC) authentication, and each certificate is signed by the next; the SECC chain must also lead to an installed
  V2G root when there is one (the store's rule). A chain longer than MaxCertificateChainSize is Rejected
  (TooLargeElement). Without certificateType, the leaf's key says which certificate it is.
- Security events: InvalidChargingStationCertificate as above; ReconfigurationOfSecurityParameters when a CSMS root
  is installed or deleted or a new station certificate is installed (what the OCPP connection trusts or presents
  changed). InvalidCsmsCertificate belongs to the TLS shell, not here.
- CertificateEntries (ReadOnly) is kept at the number of entries GetInstalledCertificateIds lists (roots and SECC
  chains); the station certificate is not among them, as OCPP lists it nowhere.
- OCSP (M06): one GetCertificateStatusRequest per SECC chain certificate with an OCSP URL and a known issuer (the
  next in the chain, the last one's an installed V2G root). A certificate is due when it has no current response,
  else at the earlier of thisUpdate + :data:`OCSP_REFRESH_INTERVAL` (24 h, however long the responder says it
  holds) and its expiry (nextUpdate, or thisUpdate + 24 h without one) less a margin (1 h, a quarter of the
  validity when that is shorter); never sooner than :data:`OCSP_RETRY` after it was last asked (a failed or
  refused answer is asked again then; after a restart at once). Every checked response is kept, GOOD or not;
  only a current GOOD one is handed out for stapling.

Not here: SignCombinedCertificate (one certificate for both uses), 2.1's requestId/hashRootCertificate (both
optional: not sent, ignored when received), AdditionalRootCertificateCheck (fixed false in the device model),
and revoking a station certificate the CSMS refuses at the next connection (:meth:`revert_station_certificate`
is the hook for the shell).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.pki.algorithms import KeyAlgorithm, PrivateKey
from edge.pki.chain import RevocationStatus, parse_certificates
from edge.pki.ocsp import (
    CertId,
    OcspError,
    OcspFailure,
    OcspRequestData,
    OcspResponseChecker,
    OcspStatus,
    ocsp_request_data,
)
from edge.pki.paths import issued_by
from edge.pki.store import (
    CertificateHashData,
    CertificateStore,
    CertificateUse,
    DeleteStatus,
    InstalledCertificate,
    InstallStatus,
    atomic_write,
    certificate_hash_data,
)

from .bridge import timestamp
from .device_model import DeviceModel, InvalidValue

log = logging.getLogger("edge.ocpp.certificates")

#: CertificateEntries' limit when the device model gives it no maxLimit
DEFAULT_MAX_CERTIFICATE_ENTRIES = 64
#: slack for a CSMS whose clock runs ahead when it signs (a leaf "not valid before" a few seconds from now)
CLOCK_SKEW = dt.timedelta(minutes=5)
#: a cached OCSP response is refreshed at least this often
OCSP_REFRESH_INTERVAL = dt.timedelta(hours=24)
#: ... and this long before it expires (or a quarter of its validity, when shorter)
OCSP_EXPIRY_MARGIN = dt.timedelta(hours=1)
#: no certificate's status is asked again sooner than this after the last request (failed answers wait this long)
OCSP_RETRY = dt.timedelta(minutes=10)

#: the schemas' bounds: StatusInfo.additionalInfo (512 in 2.0.1, 1024 in 2.1), SecurityEvent techInfo
MAX_ADDITIONAL_INFO = 512
MAX_TECH_INFO = 255

MANUFACTURER_ROOT = "ManufacturerRootCertificate"

#: OCPP 2.0.1 Part 2 appendix "Security events" (2.1 keeps them)
SECURITY_EVENTS: frozenset[str] = frozenset({
    "FirmwareUpdated", "FailedToAuthenticateAtCsms", "CsmsFailedToAuthenticate", "SettingSystemTime",
    "StartupOfTheDevice", "ResetOrReboot", "SecurityLogWasCleared", "ReconfigurationOfSecurityParameters",
    "MemoryExhaustion", "InvalidMessages", "AttemptedReplayAttacks", "TamperDetectionActivated",
    "InvalidFirmwareSignature", "InvalidFirmwareSigningCertificate", "InvalidCsmsCertificate",
    "InvalidChargingStationCertificate", "InvalidTLSVersion", "InvalidTLSCipherSuite", "MaintenanceLoginAccepted",
    "MaintenanceLoginFailed",
})

#: InstallCertificateUseEnumType -> the store's use (Manufacturer roots are kept here, see the module doc)
_ROOT_USES: dict[str, CertificateUse] = {
    "V2GRootCertificate": CertificateUse.V2G_ROOT,
    "MORootCertificate": CertificateUse.MO_ROOT,
    "CSMSRootCertificate": CertificateUse.CSMS_ROOT,
    "OEMRootCertificate": CertificateUse.OEM_ROOT,
}
#: GetCertificateIdUseEnumType values a 2.0.1 CSMS may be told
_USES_2_0_1 = frozenset({"V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate", "V2GCertificateChain",
                         MANUFACTURER_ROOT})
_MAX_CHILDREN = 4  # CertificateHashDataChainType.childCertificateHashData maxItems


class SigningUse(StrEnum):
    """What a SignCertificateRequest asks to have signed (CertificateSigningUseEnumType)."""

    STATION = "ChargingStationCertificate"
    V2G = "V2GCertificate"
    V2G20 = "V2G20Certificate"  # OCPP 2.1 only


class ReasonCode(StrEnum):
    """The reasonCodes used here, from the specification's reason code list."""

    INVALID_CERTIFICATE = "InvalidCertificate"
    OUT_OF_STORAGE = "OutOfStorage"
    INTERNAL_ERROR = "InternalError"
    TOO_LARGE_ELEMENT = "TooLargeElement"
    UNSUPPORTED_REQUEST = "UnsupportedRequest"


@dataclass(frozen=True)
class SecurityEvent:
    """One SecurityEventNotification to send: ``kind`` from :data:`SECURITY_EVENTS`."""

    kind: str
    tech_info: str
    at: dt.datetime

    def payload(self) -> dict[str, Any]:
        return security_event_notification(self.kind, self.at, self.tech_info)


def security_event_notification(kind: str, at: dt.datetime, tech_info: str = "") -> dict[str, Any]:
    """A SecurityEventNotificationRequest payload; ValueError for a kind not in the specification's list (a typo
    would reach the CSMS as a vendor event)."""
    if kind not in SECURITY_EVENTS:
        raise ValueError(f"{kind!r} is not an OCPP security event")
    payload: dict[str, Any] = {"type": kind, "timestamp": timestamp(_utc(at))}
    if tech_info:
        payload["techInfo"] = tech_info[:MAX_TECH_INFO]
    return payload


@dataclass
class PendingSigning:
    """An open SignCertificate: its CSR, how often it was sent, when last, and whether the CSMS refused it."""

    use: SigningUse
    csr: str
    attempts: int
    last_sent: dt.datetime
    refused: bool = False

    def public_key_der(self) -> bytes:
        return _public_der(x509.load_pem_x509_csr(self.csr.encode()).public_key())

    def to_json(self) -> bytes:
        return json.dumps({"certificateType": self.use.value, "csr": self.csr, "attempts": self.attempts,
                           "lastSent": self.last_sent.isoformat(), "refused": self.refused}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PendingSigning:
        """ValueError for anything but what :meth:`to_json` wrote."""
        try:
            raw = json.loads(data)
            return cls(SigningUse(raw["certificateType"]), str(raw["csr"]), int(raw["attempts"]),
                       _utc(dt.datetime.fromisoformat(raw["lastSent"])), bool(raw.get("refused", False)))
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a pending signing record: {e}") from None


class Refusal(Exception):
    """A request answered with a non-Accepted status: ``reason_code`` (<= 20 characters) and a sentence."""

    def __init__(self, reason_code: ReasonCode, info: str) -> None:
        super().__init__(info)
        self.reason_code, self.info = reason_code, info

    def status_info(self) -> dict[str, str]:
        return {"reasonCode": self.reason_code.value, "additionalInfo": self.info[:MAX_ADDITIONAL_INFO]}


class StationCertificates:
    """OCPP certificate management over a :class:`~edge.pki.store.CertificateStore`; see the module doc.

    ``now`` is the wall clock (UTC; certificates and OCSP responses are judged by it); ``identity`` is the
    station certificate's CN when SecurityCtrlr.Identity is not set."""

    def __init__(self, store: CertificateStore, device: DeviceModel, now: Callable[[], dt.datetime], *,
                 identity: str | None = None, v2g20_algorithm: KeyAlgorithm = KeyAlgorithm.P521_SHA512,
                 max_certificate_entries: int | None = None, checker: OcspResponseChecker | None = None) -> None:
        if v2g20_algorithm is KeyAlgorithm.P256_SHA256:
            raise ValueError("ISO 15118-20 SECC certificates use secp521r1 or Ed448")
        self.store = store
        self.device = device
        self._clock = now
        self.identity = identity
        self.v2g20_algorithm = v2g20_algorithm
        self._max_entries = max_certificate_entries
        self.checker = checker or OcspResponseChecker()
        self._events: list[SecurityEvent] = []
        self._pending: dict[SigningUse, PendingSigning] = {}
        self._ocsp: dict[str, OcspStatus] = {}  # by certificate fingerprint: the checked response in the file
        self._ocsp_asked: dict[str, dt.datetime] = {}  # by certificate fingerprint: when last handed out
        #: SECC chain certificates no status can be asked for (no OCSP URL, say): subject -> why
        self.ocsp_unavailable: dict[str, str] = {}
        self._load_pending()
        self._update_entries()

    def now(self) -> dt.datetime:
        return _utc(self._clock())

    # --- paths ---------------------------------------------------------------------------------------------

    @property
    def _manufacturer_dir(self) -> Path:
        return self.store.root / MANUFACTURER_ROOT

    @property
    def _station_dir(self) -> Path:
        return self.store.root / "station"

    def _signing_file(self, use: SigningUse) -> Path:
        return self.store.root / "signing" / f"{use.value}.json"

    def _ocsp_file(self, cert: x509.Certificate) -> Path:
        return self.store.root / "ocsp" / f"{_fingerprint(cert)}.der"

    # --- security events -----------------------------------------------------------------------------------

    def take_security_events(self) -> list[SecurityEvent]:
        """The events raised since the last call, oldest first (the station sends each as a
        SecurityEventNotification)."""
        events, self._events = self._events, []
        return events

    def _raise_event(self, kind: str, tech_info: str) -> None:
        self._events.append(SecurityEvent(kind, tech_info[:MAX_TECH_INFO], self.now()))

    # --- InstallCertificate (M05) --------------------------------------------------------------------------

    def install_certificate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """InstallCertificateResponse for an InstallCertificateRequest payload."""
        kind, pem = payload["certificateType"], payload["certificate"]
        try:
            if kind != MANUFACTURER_ROOT and kind not in _ROOT_USES:  # the schemas let no other through
                raise Refusal(ReasonCode.UNSUPPORTED_REQUEST, f"no certificates of type {kind}")
            cert = _root_candidate(pem, self.now())
            new = not self._holds_root(kind, cert)
            if new and self.certificate_entries() >= self.max_certificate_entries:
                raise Refusal(ReasonCode.OUT_OF_STORAGE,
                              f"the station holds {self.max_certificate_entries} certificates, its limit")
        except Refusal as refusal:
            log.warning("InstallCertificate %s refused: %s", kind, refusal.info)
            return {"status": InstallStatus.REJECTED.value, "statusInfo": refusal.status_info()}
        if kind == MANUFACTURER_ROOT:
            try:
                atomic_write(self._manufacturer_dir / f"{_fingerprint(cert)}.pem", _pem(cert))
            except OSError as e:
                return _failed(InstallStatus.FAILED, f"cannot store it: {e}")
        else:
            result = self.store.install_root(_ROOT_USES[kind], pem, now=self.now())
            if not result.ok:  # the checks above hold, so this is the store's disk
                return _failed(result.status, result.reason)
        log.info("InstallCertificate: %s %s installed", kind, _subject(cert))
        if kind == "CSMSRootCertificate" and new:
            self._raise_event("ReconfigurationOfSecurityParameters", f"CSMS root {_subject(cert)} installed")
        self._update_entries()
        return {"status": InstallStatus.ACCEPTED.value}

    def _holds_root(self, kind: str, cert: x509.Certificate) -> bool:
        if kind == MANUFACTURER_ROOT:
            return any(c == cert for c, _ in self._manufacturer_roots())
        return cert in self.store.roots(_ROOT_USES[kind])

    def _manufacturer_roots(self) -> list[tuple[x509.Certificate, Path]]:
        directory = self._manufacturer_dir
        if not directory.is_dir():
            return []
        found: list[tuple[x509.Certificate, Path]] = []
        for path in sorted(directory.glob("*.pem")):
            try:
                found.extend((cert, path) for cert in parse_certificates(path.read_bytes()))
            except ValueError:
                log.error("%s is not a certificate: ignored", path)
        return found

    @property
    def max_certificate_entries(self) -> int:
        if self._max_entries is not None:
            return self._max_entries
        limit = self.device.variable("SecurityCtrlr", "CertificateEntries").max_limit
        return int(limit) if limit is not None else DEFAULT_MAX_CERTIFICATE_ENTRIES

    def certificate_entries(self) -> int:
        """How many certificates GetInstalledCertificateIds lists (SecurityCtrlr.CertificateEntries)."""
        return len(self._installed(None, "SHA256"))

    def _update_entries(self) -> None:
        try:
            self.device.update("SecurityCtrlr", "CertificateEntries", str(self.certificate_entries()))
        except (KeyError, InvalidValue) as e:  # a device model without it, or a maxLimit below what is stored
            log.warning("SecurityCtrlr.CertificateEntries not updated: %s", e)

    # --- GetInstalledCertificateIds (M03) ------------------------------------------------------------------

    def get_installed_certificate_ids(self, payload: Mapping[str, Any], *, version: str = "2.0.1") -> dict[str, Any]:
        """GetInstalledCertificateIdsResponse; ``version`` the negotiated one (OEM roots only for 2.1)."""
        asked = payload.get("certificateType")
        wanted = set(asked) if asked else None
        if version == "2.0.1":
            wanted = (wanted or set(_USES_2_0_1)) & _USES_2_0_1
        chains = []
        for kind, entry_hash, children in self._installed(wanted, "SHA256"):
            item: dict[str, Any] = {"certificateType": kind, "certificateHashData": entry_hash.to_ocpp()}
            if children:
                item["childCertificateHashData"] = [c.to_ocpp() for c in children[:_MAX_CHILDREN]]
            chains.append(item)
        if not chains:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashDataChain": chains}

    def _installed(self, kinds: Iterable[str] | None,
                   hash_algorithm: str) -> list[tuple[str, CertificateHashData, tuple[CertificateHashData, ...]]]:
        """(GetCertificateIdUse, hash data, children) of every installed entry of ``kinds`` (None: all)."""
        wanted = set(kinds) if kinds is not None else None
        uses = [use for use in CertificateUse if wanted is None or use.value in wanted]
        entries: list[InstalledCertificate] = self.store.installed(uses, hash_algorithm=hash_algorithm) if uses else []
        found = [(entry.use.value, entry.hash_data, entry.children) for entry in entries]
        if wanted is None or MANUFACTURER_ROOT in wanted:
            found += [(MANUFACTURER_ROOT, certificate_hash_data(cert, None, hash_algorithm), ())
                      for cert, _ in self._manufacturer_roots()]
        return found

    # --- DeleteCertificate (M04) ---------------------------------------------------------------------------

    def delete_certificate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """DeleteCertificateResponse for a DeleteCertificateRequest payload."""
        try:
            asked = CertificateHashData.from_ocpp(payload["certificateHashData"])
        except ValueError as e:  # the schema makes every field required: not reached from the network
            return _failed(DeleteStatus.FAILED, str(e))
        try:
            self._refuse_protected_deletion(asked)
        except Refusal as refusal:
            log.warning("DeleteCertificate refused: %s", refusal.info)
            return {"status": DeleteStatus.FAILED.value, "statusInfo": refusal.status_info()}
        deleted_csms_root = self._matching_csms_roots(asked)
        for cert, path in self._manufacturer_roots():
            if certificate_hash_data(cert, None, asked.hash_algorithm).matches(asked):
                try:
                    path.unlink()
                except OSError as e:
                    return _failed(DeleteStatus.FAILED, f"cannot delete it: {e}")
                self._update_entries()
                return {"status": DeleteStatus.ACCEPTED.value}
        result = self.store.delete(asked)
        if result.status is DeleteStatus.NOT_FOUND:
            return {"status": DeleteStatus.NOT_FOUND.value}
        if not result.ok:
            return _failed(result.status, result.reason)
        if deleted_csms_root:
            self._raise_event("ReconfigurationOfSecurityParameters",
                              f"CSMS root {_subject(deleted_csms_root[0])} deleted")
        self._prune_ocsp()
        self._update_entries()
        return {"status": DeleteStatus.ACCEPTED.value}

    def _refuse_protected_deletion(self, asked: CertificateHashData) -> None:
        if _names_leaf(self.station_chain(), asked):
            raise Refusal(ReasonCode.UNSUPPORTED_REQUEST,
                          "the ChargingStationCertificate cannot be deleted with DeleteCertificate (M04.FR.06)")
        if self._matching_csms_roots(asked) and self.device.security_profile >= 2 \
                and len(self.store.roots(CertificateUse.CSMS_ROOT)) == 1:
            raise Refusal(ReasonCode.UNSUPPORTED_REQUEST,
                          f"the only CSMSRootCertificate cannot be deleted under security profile "
                          f"{self.device.security_profile}: the station could not verify its CSMS any more")

    def _matching_csms_roots(self, asked: CertificateHashData) -> list[x509.Certificate]:
        try:
            return [entry.certificate
                    for entry in self.store.installed([CertificateUse.CSMS_ROOT], hash_algorithm=asked.hash_algorithm)
                    if entry.hash_data.matches(asked)]
        except ValueError:  # a hash algorithm OCPP does not have: nothing matches
            return []

    # --- SignCertificate (A02, A03) ------------------------------------------------------------------------

    def sign_request(self, certificate_type: str | SigningUse) -> dict[str, Any]:
        """A SignCertificateRequest payload with a fresh key's CSR (the key kept pending, see the module doc).
        ValueError when a subject value is not set or the type is unknown."""
        use = SigningUse(certificate_type)
        if use is SigningUse.STATION:
            csr = self._station_csr()
        else:
            csr = self.store.create_secc_csr(common_name=self._required("ISO15118Ctrlr", "SeccId"),
                                             organization=self._required("ISO15118Ctrlr", "OrganizationName"),
                                             country=self._required("ISO15118Ctrlr", "CountryName"),
                                             algorithm=self._secc_algorithm(use))
        pending = PendingSigning(use, csr, attempts=1, last_sent=self.now())
        self._save_pending(pending)
        log.info("SignCertificate %s: new key and CSR", use.value)
        return _sign_payload(pending)

    def sign_request_answered(self, certificate_type: str | SigningUse, response: Mapping[str, Any] | None) -> None:
        """The CSMS's SignCertificateResponse (None: the CALL failed; the retry rule asks again). Rejected ends
        the retries of this request."""
        pending = self._pending.get(SigningUse(certificate_type))
        if pending is None or response is None or response.get("status") != "Rejected":
            return
        pending.refused = True
        self._save_pending(pending)
        info = (response.get("statusInfo") or {}).get("reasonCode", "")
        log.warning("SignCertificate %s: the CSMS refused it %s", pending.use.value, info)

    def due_sign_request(self, now: dt.datetime | None = None) -> dict[str, Any] | None:
        """The SignCertificateRequest to send again now (A02/A03 retry rule), counted as sent; None when none is
        due. Call again after sending it: another type may be due too."""
        moment = _utc(now) if now is not None else self.now()
        for pending in self._pending.values():
            if pending.refused or pending.attempts > self._repeat_times():
                continue
            if moment >= pending.last_sent + self._wait(pending.attempts):
                pending.attempts += 1
                pending.last_sent = moment
                self._save_pending(pending)
                log.info("SignCertificate %s: no CertificateSigned yet, asking again (attempt %d)",
                         pending.use.value, pending.attempts)
                return _sign_payload(pending)
        return None

    def next_sign_request_at(self) -> dt.datetime | None:
        """When :meth:`due_sign_request` will next have something (for the shell's sleep)."""
        times = [p.last_sent + self._wait(p.attempts) for p in self._pending.values()
                 if not p.refused and p.attempts <= self._repeat_times()]
        return min(times, default=None)

    def pending_signing(self) -> dict[SigningUse, PendingSigning]:
        return dict(self._pending)

    def _wait(self, attempts: int) -> dt.timedelta:
        minimum = self.device.value("SecurityCtrlr", "CertSigningWaitMinimum", as_type=int) or 60
        return dt.timedelta(seconds=minimum * 2 ** (attempts - 1))

    def _repeat_times(self) -> int:
        repeat = self.device.value("SecurityCtrlr", "CertSigningRepeatTimes", as_type=int)
        return repeat if repeat is not None else 0

    def _required(self, component: str, variable: str) -> str:
        value = self.device.value(component, variable)
        if not value:
            raise ValueError(f"{component}.{variable} is not set: no CSR without it")
        return value

    def _secc_algorithm(self, use: SigningUse) -> KeyAlgorithm:
        return KeyAlgorithm.P256_SHA256 if use is SigningUse.V2G else self.v2g20_algorithm

    def _station_csr(self) -> str:
        common_name = self.device.identity or self.identity
        if not common_name:
            raise ValueError("SecurityCtrlr.Identity is not set: no CSR without it")
        organization = self._required("SecurityCtrlr", "OrganizationName")
        key = KeyAlgorithm.P256_SHA256.generate()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
        csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_LEAF_KEY_USAGE, critical=True)
               .sign(key, KeyAlgorithm.P256_SHA256.signature_hash()))
        atomic_write(self._station_dir / "pending.key", _key_pem(key), mode=0o600)
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def _save_pending(self, pending: PendingSigning) -> None:
        atomic_write(self._signing_file(pending.use), pending.to_json())
        self._pending[pending.use] = pending

    def _drop_pending(self, use: SigningUse) -> None:
        self._pending.pop(use, None)
        self._signing_file(use).unlink(missing_ok=True)

    def _load_pending(self) -> None:
        for use in SigningUse:
            path = self._signing_file(use)
            if not path.is_file():
                continue
            try:
                self._pending[use] = PendingSigning.from_json(path.read_bytes())
            except ValueError as e:
                log.error("%s ignored: %s", path, e)

    # --- CertificateSigned (A02, A03) ----------------------------------------------------------------------

    def certificate_signed(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """CertificateSignedResponse for a CertificateSignedRequest payload: the chain installed as the station
        (or SECC) certificate, or Rejected (and an InvalidChargingStationCertificate event)."""
        now = self.now()
        try:
            use, chain = self._signed_chain(payload, now)
            if use is SigningUse.STATION:
                self._install_station_chain(chain)
            else:
                result = self.store.install_secc_chain(payload["certificateChain"], now=now + CLOCK_SKEW)
                if not result.ok:
                    raise Refusal(ReasonCode.INVALID_CERTIFICATE if result.status is InstallStatus.REJECTED
                                  else ReasonCode.INTERNAL_ERROR, result.reason)
        except Refusal as refusal:
            log.warning("CertificateSigned refused: %s", refusal.info)
            self._raise_event("InvalidChargingStationCertificate", refusal.info)
            return {"status": "Rejected", "statusInfo": refusal.status_info()}
        log.info("CertificateSigned: %s %s installed", use.value, _subject(chain[0]))
        pending = self._pending.get(use)
        if pending is not None and pending.public_key_der() == _public_der(chain[0].public_key()):
            self._drop_pending(use)  # answered (a re-issue for the installed key leaves a newer request open)
        if use is SigningUse.STATION:
            self._raise_event("ReconfigurationOfSecurityParameters",
                              f"new ChargingStationCertificate {_subject(chain[0])}")
        else:
            self._prune_ocsp()
            self._update_entries()
        return {"status": "Accepted"}

    def _signed_chain(self, payload: Mapping[str, Any], now: dt.datetime) -> tuple[SigningUse, list[x509.Certificate]]:
        text: str = payload["certificateChain"]
        limit = self.device.value("SecurityCtrlr", "MaxCertificateChainSize", as_type=int)
        if limit is not None and len(text) > limit:
            raise Refusal(ReasonCode.TOO_LARGE_ELEMENT,
                          f"the chain has {len(text)} characters, MaxCertificateChainSize is {limit}")
        try:
            chain = parse_certificates(text.encode())
        except ValueError as e:
            raise Refusal(ReasonCode.INVALID_CERTIFICATE, f"not a PEM certificate chain: {e}") from None
        leaf = chain[0]
        asked = payload.get("certificateType")
        if asked and asked not in {use.value for use in SigningUse}:
            raise Refusal(ReasonCode.UNSUPPORTED_REQUEST, f"no certificates of type {asked}")
        candidates = [SigningUse(asked)] if asked else list(SigningUse)
        use = next((u for u in candidates if self._generated_key_for(u, leaf)), None)
        if use is None:
            which = asked or "any certificate"
            raise Refusal(ReasonCode.INVALID_CERTIFICATE,
                          f"the leaf {_subject(leaf)} does not hold a key this station generated for {which}")
        problem = _leaf_problem(leaf, use, now) or _link_problem(chain)
        if problem:
            raise Refusal(ReasonCode.INVALID_CERTIFICATE, problem)
        return use, chain

    def _generated_key_for(self, use: SigningUse, leaf: x509.Certificate) -> bool:
        """``leaf`` holds the pending key of ``use`` or, for a re-issue, the installed one."""
        leaf_key = _public_der(leaf.public_key())
        pending = self._pending.get(use)
        if pending is not None and pending.public_key_der() == leaf_key:
            return True
        if use is SigningUse.STATION:
            keys = [self._station_key(), _read_key(self._station_dir / "pending.key")]
        else:
            keys = [self.store.secc_key(self._secc_algorithm(use))]
        return any(key is not None and _public_der(key.public_key()) == leaf_key for key in keys)

    # --- the station certificate -----------------------------------------------------------------------------

    def station_certificate_file(self) -> Path | None:
        """The station's key and certificate chain in one PEM file, for ``SSLContext.load_cert_chain(path)``
        (security profile 3), or None before the first CertificateSigned."""
        path = self._station_dir / "certificate.pem"
        return path if path.is_file() else None

    def station_chain(self) -> list[x509.Certificate]:
        path = self.station_certificate_file()
        if path is None:
            return []
        try:
            return parse_certificates(path.read_bytes())
        except ValueError:
            return []

    def _station_key(self) -> PrivateKey | None:
        return _read_key(self._station_dir / "certificate.pem")

    def _install_station_chain(self, chain: list[x509.Certificate]) -> None:
        pending_path = self._station_dir / "pending.key"
        leaf_key = _public_der(chain[0].public_key())
        key = next((k for k in (_read_key(pending_path), self._station_key())
                    if k is not None and _public_der(k.public_key()) == leaf_key), None)
        if key is None:  # the pending record matched but its key file is gone
            raise Refusal(ReasonCode.INTERNAL_ERROR, "the key of this certificate is no longer on the station")
        current = self.station_certificate_file()
        try:
            if current is not None:
                atomic_write(self._station_dir / "previous.pem", current.read_bytes(), mode=0o600)
            atomic_write(self._station_dir / "certificate.pem", _key_pem(key) + b"".join(_pem(c) for c in chain),
                         mode=0o600)
            if _read_key(pending_path) is not None and _public_der(key.public_key()) == leaf_key:
                pending_path.unlink(missing_ok=True)
        except OSError as e:
            raise Refusal(ReasonCode.INTERNAL_ERROR, f"cannot store it: {e}") from None

    def revert_station_certificate(self) -> bool:
        """Put back the station certificate the last CertificateSigned replaced (the shell: the CSMS refused the
        new one at connect); False when there is none."""
        previous = self._station_dir / "previous.pem"
        if not previous.is_file():
            return False
        atomic_write(self._station_dir / "certificate.pem", previous.read_bytes(), mode=0o600)
        previous.unlink()
        return True

    # --- GetCertificateStatus (M06) ------------------------------------------------------------------------

    def ocsp_requests(self, now: dt.datetime | None = None, *, due_only: bool = True) -> list[dict[str, Any]]:
        """GetCertificateStatusRequest payloads for the SECC chain certificates that are due (all with
        ``due_only`` False), each counted as asked now."""
        moment = _utc(now) if now is not None else self.now()
        requests = []
        for cert, issuer, data in self._ocsp_targets():
            if due_only and self._ocsp_refresh_at(cert, issuer, moment) > moment:
                continue
            self._ocsp_asked[_fingerprint(cert)] = moment
            requests.append({"ocspRequestData": data.to_ocpp()})
        return requests

    def ocsp_due(self, now: dt.datetime | None = None) -> dt.datetime | None:
        """When the next GetCertificateStatus is due (maybe already: <= now); None: nothing to ask about."""
        moment = _utc(now) if now is not None else self.now()
        return min((self._ocsp_refresh_at(cert, issuer, moment) for cert, issuer, _ in self._ocsp_targets()),
                   default=None)

    def ocsp_answer(self, request: Mapping[str, Any], response: Mapping[str, Any]) -> OcspStatus:
        """Check the CSMS's GetCertificateStatusResponse to ``request`` (the payload sent) and keep its
        ocspResult for stapling. OcspError when it was not Accepted, is not about the certificate asked for (or
        about none of ours), or does not hold (signature, responder, currency)."""
        asked = OcspRequestData.from_ocpp(dict(request["ocspRequestData"]))
        pair = self._ocsp_pair(asked.cert_id)
        if pair is None:
            raise OcspError(OcspFailure.NOT_REQUESTED,
                            f"serial {asked.serial_number} is not a certificate of the installed SECC chains")
        cert, issuer = pair
        if response.get("status") != "Accepted" or not response.get("ocspResult"):
            reason = (response.get("statusInfo") or {}).get("reasonCode", "no ocspResult")
            raise OcspError(OcspFailure.UNSUCCESSFUL,
                            f"the CSMS got no OCSP status for {_subject(cert)}: {response.get('status')} {reason}")
        status = self.checker.check(response["ocspResult"], cert, issuer, now=self.now())
        atomic_write(self._ocsp_file(cert), status.der)
        self._ocsp[_fingerprint(cert)] = status
        if status.status is not RevocationStatus.GOOD:
            log.error("OCSP: %s is %s", _subject(cert), status.status.name)
        return status

    def cached_ocsp(self, cert: x509.Certificate, now: dt.datetime | None = None) -> bytes | None:
        """The DER OCSP response to staple for a SECC chain certificate: current and GOOD, else None."""
        moment = _utc(now) if now is not None else self.now()
        pair = next(((c, i) for c, i in self._ocsp_pairs() if c == cert), None)
        if pair is None:
            return None
        status = self._cached_status(*pair, moment)
        return status.der if status is not None and status.status is RevocationStatus.GOOD else None

    def _ocsp_pairs(self) -> list[tuple[x509.Certificate, x509.Certificate]]:
        """Each certificate of the installed SECC chains with its issuer (the last one's: an installed V2G
        root), no root itself."""
        roots = self.store.roots(CertificateUse.V2G_ROOT)
        pairs: dict[str, tuple[x509.Certificate, x509.Certificate]] = {}
        for algorithm in KeyAlgorithm:
            chain = self.store.secc_chain(algorithm)
            if not chain:
                continue
            links = list(itertools.pairwise(chain))
            root = next((r for r in roots if r.subject == chain[-1].issuer and issued_by(chain[-1], r)), None)
            if root is not None:
                links.append((chain[-1], root))
            for cert, issuer in links:
                pairs.setdefault(_fingerprint(cert), (cert, issuer))
        return list(pairs.values())

    def _ocsp_targets(self) -> list[tuple[x509.Certificate, x509.Certificate, OcspRequestData]]:
        """The SECC chain certificates a GetCertificateStatus can be sent for, with issuer and request data."""
        targets = []
        for cert, issuer in self._ocsp_pairs():
            try:
                targets.append((cert, issuer, ocsp_request_data(cert, issuer)))
            except OcspError as e:
                self.ocsp_unavailable[_subject(cert)] = e.reason
            except ValueError as e:  # a serial longer than OCPP carries
                self.ocsp_unavailable[_subject(cert)] = str(e)
        return targets

    def _ocsp_pair(self, cert_id: CertId) -> tuple[x509.Certificate, x509.Certificate] | None:
        for cert, issuer in self._ocsp_pairs():
            if CertId.of(cert, issuer, cert_id.hash_algorithm) == cert_id:
                return cert, issuer
        return None

    def _cached_status(self, cert: x509.Certificate, issuer: x509.Certificate,
                       now: dt.datetime) -> OcspStatus | None:
        """The kept response of ``cert`` while current (read from its file after a restart)."""
        fingerprint = _fingerprint(cert)
        status = self._ocsp.get(fingerprint)
        if status is None:
            path = self._ocsp_file(cert)
            if not path.is_file():
                return None
            try:
                status = self.checker.check(path.read_bytes(), cert, issuer, now=now)
            except OcspError as e:  # expired while the station was off, say: gone, so it is not read again
                log.info("OCSP: the kept response for %s is of no use (%s): removed", _subject(cert), e.reason)
                path.unlink(missing_ok=True)
                return None
            self._ocsp[fingerprint] = status
        return status if status.is_current(now) else None

    def _ocsp_refresh_at(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> dt.datetime:
        status = self._cached_status(cert, issuer, now)
        if status is None:
            refresh = now
        else:
            margin = min(OCSP_EXPIRY_MARGIN, (status.expires_at - status.this_update) / 4)
            refresh = min(status.this_update + OCSP_REFRESH_INTERVAL, status.expires_at - margin)
        asked = self._ocsp_asked.get(_fingerprint(cert))
        return max(refresh, asked + OCSP_RETRY) if asked is not None else refresh

    def _prune_ocsp(self) -> None:
        """Drop kept responses of certificates no SECC chain holds any more."""
        directory = self.store.root / "ocsp"
        if not directory.is_dir():
            return
        current = {_fingerprint(cert) for cert, _ in self._ocsp_pairs()}
        for path in directory.glob("*.der"):
            if path.stem not in current:
                path.unlink(missing_ok=True)
                self._ocsp.pop(path.stem, None)


# --- helpers -------------------------------------------------------------------------------------------------

_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _public_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _read_key(path: Path) -> PrivateKey | None:
    """The (first) unencrypted private key in a PEM file, or None when there is none."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    start = data.find(b"-----BEGIN PRIVATE KEY-----")
    end = data.find(b"-----END PRIVATE KEY-----")
    if start < 0 or end < 0:
        return None
    try:
        key = serialization.load_pem_private_key(data[start:end + len(b"-----END PRIVATE KEY-----")], None)
    except ValueError:
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey) else None


def _sign_payload(pending: PendingSigning) -> dict[str, Any]:
    return {"csr": pending.csr, "certificateType": pending.use.value}


def _failed(status: InstallStatus | DeleteStatus, info: str) -> dict[str, Any]:
    log.error("certificate store: %s", info)
    return {"status": status.value,
            "statusInfo": {"reasonCode": ReasonCode.INTERNAL_ERROR.value, "additionalInfo": info[:MAX_ADDITIONAL_INFO]}}


def _root_candidate(pem: str, now: dt.datetime) -> x509.Certificate:
    """The one certificate of an InstallCertificateRequest, if it can be a root: a CA valid now."""
    try:
        certs = parse_certificates(pem.encode())
    except ValueError as e:
        raise Refusal(ReasonCode.INVALID_CERTIFICATE, f"not a PEM certificate: {e}") from None
    if len(certs) != 1:
        raise Refusal(ReasonCode.INVALID_CERTIFICATE, f"expected one certificate, got {len(certs)}")
    cert = certs[0]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        constraints = None
    if constraints is None or not constraints.ca:
        raise Refusal(ReasonCode.INVALID_CERTIFICATE, f"{_subject(cert)} is not a CA certificate")
    if now < cert.not_valid_before_utc:
        raise Refusal(ReasonCode.INVALID_CERTIFICATE,
                      f"{_subject(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}")
    if now > cert.not_valid_after_utc:
        raise Refusal(ReasonCode.INVALID_CERTIFICATE,
                      f"{_subject(cert)} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M}")
    return cert


def _leaf_problem(leaf: x509.Certificate, use: SigningUse, now: dt.datetime) -> str | None:
    """Why ``leaf`` cannot be the station's (or SECC's) certificate, or None."""
    name = _subject(leaf)
    try:
        extensions = leaf.extensions
    except ValueError as e:  # duplicate or undecodable extensions
        return f"{name} has broken extensions: {e}"
    try:
        if extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return f"{name} is a CA certificate, not a leaf"
    except x509.ExtensionNotFound:
        pass
    if now + CLOCK_SKEW < leaf.not_valid_before_utc:
        return f"{name} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M}"
    if now > leaf.not_valid_after_utc:
        return f"{name} expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M}"
    try:
        usage: x509.KeyUsage | None = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None and use is not SigningUse.STATION:
        return f"{name} has no keyUsage (the SECC certificate profile requires digitalSignature)"
    if usage is not None and not usage.digital_signature:
        return f"{name}'s keyUsage does not allow digitalSignature (TLS needs it)"
    try:
        purposes: x509.ExtendedKeyUsage | None = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        purposes = None
    needed = ExtendedKeyUsageOID.CLIENT_AUTH if use is SigningUse.STATION else ExtendedKeyUsageOID.SERVER_AUTH
    if purposes is not None and needed not in purposes and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in purposes:
        role = "client" if use is SigningUse.STATION else "server"
        return f"{name}'s extendedKeyUsage does not allow TLS {role} authentication"
    return None


def _link_problem(chain: Sequence[x509.Certificate]) -> str | None:
    for cert, issuer in itertools.pairwise(chain):
        if cert.issuer != issuer.subject or not issued_by(cert, issuer, require_ca=False):
            return f"{_subject(cert)} is not signed by the next certificate in the chain, {_subject(issuer)}"
    return None


def _names_leaf(chain: Sequence[x509.Certificate], asked: CertificateHashData) -> bool:
    """``asked`` names the leaf of ``chain`` (its issuer's key hash is compared when the chain holds the issuer;
    without it, serial and issuer name decide)."""
    if not chain:
        return False
    leaf = chain[0]
    try:
        if int(asked.serial_number, 16) != leaf.serial_number:
            return False
        name_hash = hashlib.new(asked.hash_algorithm.lower(), leaf.issuer.public_bytes()).hexdigest()
    except ValueError:  # not hex, or a hash OCPP does not have
        return False
    if name_hash != asked.issuer_name_hash.lower():
        return False
    return len(chain) < 2 or certificate_hash_data(leaf, chain[1], asked.hash_algorithm).matches(asked)
