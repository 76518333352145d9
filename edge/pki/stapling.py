"""OCSP stapling of the SECC certificate (sans-IO: certificates, DER responses and a clock in, the response to
staple out). The TLS side (:func:`edge.v2g.tls.enable_ocsp_stapling`) asks :class:`SeccStapler` once per
handshake in which the car sent status_request (-2 TLS 1.2) or asked for the status in its TLS 1.3 ClientHello
(-20: the response travels in the leaf's CertificateEntry).

Where responses come from, freshest first:

* **fetched**: the station's GetCertificateStatus answers (OCPP M06, :meth:`edge.ocpp.certificates.
  StationCertificates.cached_ocsp`), which the station keeps fresh;
* **files**: DER OCSPResponses in the PKI folder's ``ocsp/`` directory (testbenches; ``edge pki ocsp`` writes
  and refreshes them), re-read when the directory changes.

A response is stapled only when it is about this leaf (CertID), signed by its issuer or a delegated responder,
current, and GOOD (:class:`edge.pki.ocsp.OcspResponseChecker`): a stale or revoked answer is never sent. When
the car asks and there is none, the handshake goes on without a staple and a warning says why (at most a few
lines a minute: every car asks).

What OpenSSL cannot do, and so we do not: staple the sub-CAs (RFC 6961 status_request_v2 in TLS 1.2, per-entry
status for intermediates in TLS 1.3): only the leaf's status is sent.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.x509 import ocsp

from edge.logs import RateLimitedLog
from edge.pki.chain import RevocationStatus
from edge.pki.ocsp import OcspError, OcspFailure, OcspResponseChecker, OcspStatus

log = logging.getLogger(__name__)

#: the folder of a PKI protocol folder holding OCSP responses for its SECC chain (testbenches)
OCSP_FOLDER = "ocsp"
MAX_RESPONSE_FILE_BYTES = 64 * 1024  # an OCSP response is ~0.5-2 kB; anything bigger is not one

FetchedResponse = Callable[[x509.Certificate], bytes | None]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SeccStapler:
    """The OCSP response to staple for one SECC leaf (issued by ``issuer``), or None; callable per handshake."""

    def __init__(self, leaf: x509.Certificate, issuer: x509.Certificate, *, label: str,
                 folder: Path | None = None, fetched: FetchedResponse | None = None,
                 clock: Callable[[], dt.datetime] = _utc_now, checker: OcspResponseChecker | None = None) -> None:
        self.leaf, self.issuer, self.label = leaf, issuer, label
        self.folder, self.fetched, self.clock = folder, fetched, clock
        self.checker = checker or OcspResponseChecker()
        self._from_files: OcspStatus | None = None
        self._folder_stamp: tuple[int, int] | None = None
        self._warnings = RateLimitedLog(log, burst=3, interval=60.0)
        self.stapled = 0  # handshakes that got a staple
        self.declined = 0  # handshakes that asked and got none

    def __call__(self) -> bytes | None:
        """The DER response for a handshake whose client asked for the certificate status."""
        now = self.clock()
        why = "no OCSP response (none fetched by GetCertificateStatus, none in the PKI's ocsp/ folder)"
        if self.fetched is not None:
            der = self.fetched(self.leaf)
            if der is not None:
                self.stapled += 1
                return der
        status = self._file_response(now)
        if status is not None:
            if status.status is RevocationStatus.GOOD and status.is_current(now):
                self.stapled += 1
                return status.der
            why = (f"the OCSP response on file says {status.status.name}" if status.status is not RevocationStatus.GOOD
                   else f"the OCSP response on file expired at {status.expires_at.isoformat()}")
        self.declined += 1
        self._warnings.warning("TLS (%s): the car asked for the SECC certificate's status; %s: served without a "
                               "staple", self.label, why)
        return None

    def _file_response(self, now: dt.datetime) -> OcspStatus | None:
        """The checked response from the folder (re-read when the folder or a file in it changed)."""
        if self.folder is None:
            return None
        try:
            stat = self.folder.stat()
            files = sorted(p for p in self.folder.iterdir() if p.is_file())
            stamp = (stat.st_mtime_ns, max((p.stat().st_mtime_ns for p in files), default=0))
        except OSError:
            return None
        if stamp != self._folder_stamp:
            self._folder_stamp = stamp
            self._from_files = self._load(files, now)
        return self._from_files

    def _load(self, files: list[Path], now: dt.datetime) -> OcspStatus | None:
        """Of the folder's responses about this leaf, the newest that checks (CertID, signature), each judged at
        its own thisUpdate: a stale one is kept as such, so that the warning can say it expired."""
        best: OcspStatus | None = None
        for path in files:
            try:
                if path.stat().st_size > MAX_RESPONSE_FILE_BYTES:
                    continue
                der = path.read_bytes()
                produced = ocsp.load_der_ocsp_response(der)
                moment = produced.this_update_utc if produced.response_status is \
                    ocsp.OCSPResponseStatus.SUCCESSFUL else now
                status = self.checker.check(der, self.leaf, self.issuer, now=moment)
            except OcspError as e:
                if e.failure is not OcspFailure.CERT_ID_MISMATCH:  # another certificate's answer: not ours
                    log.warning("TLS (%s): %s is not a usable OCSP response for the SECC certificate: %s",
                                self.label, path, e.reason)
                continue
            except ValueError:
                log.warning("TLS (%s): %s is not a DER OCSP response", self.label, path)
                continue
            except OSError as e:
                log.warning("TLS (%s): cannot read %s: %s", self.label, path, e.strerror or e)
                continue
            if best is None or status.this_update > best.this_update:
                best = status
        return best


def stapler_for_chain(chain: list[x509.Certificate], *, label: str, folder: Path | None,
                      fetched: FetchedResponse | None = None,
                      clock: Callable[[], dt.datetime] = _utc_now) -> SeccStapler | None:
    """A stapler for a SECC chain file's leaf (leaf first, its issuer next); None when the chain holds no issuer
    to check responses against (a lone leaf), which is logged."""
    if len(chain) < 2:
        log.warning("TLS (%s): the SECC chain holds no sub-CA, so no OCSP response can be checked: no stapling",
                    label)
        return None
    return SeccStapler(chain[0], chain[1], label=label, folder=folder, fetched=fetched, clock=clock)
