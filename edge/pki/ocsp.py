"""OCSP for Plug & Charge (sans-IO: certificates, DER/base64 responses and a time in; request data, verdicts
and a cache out; no network, ``cryptography`` only).

What the charger does with OCSP, and where each piece lives here:

* **Request data** (:func:`ocsp_request_data`, :meth:`OcspRequestData.for_chain`): OCPP 2.0.1's
  OCSPRequestDataType (hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber, responderURL) for the
  Authorize ``iso15118CertificateHashData`` (leaf and sub-CAs of the contract chain, at most 4 entries) and for
  GetCertificateStatus. The hashes are the RFC 6960 CertID values as lowercase hex (computed by
  :func:`edge.pki.store.certificate_hash_data`, the same helper OCPP's CertificateHashData uses), the serial
  is hex without leading zeros, the URL is the OCSP access location of the certificate's authorityInfoAccess.
  :func:`ocsp_request_der` gives the DER OCSPRequest for talking to a responder directly.
* **Checking a response** (:class:`OcspResponseChecker`): the DER OCSPResponse the CSMS relays base64 in
  GetCertificateStatusResponse.ocspResult. It must be successful, answer for exactly this certificate (CertID
  match, in whatever hash the responder used), be signed by the issuer or by a delegated responder (a
  certificate the issuer signed, carrying id-kp-OCSPSigning, valid now) and be current
  (thisUpdate <= now <= nextUpdate, within a small clock skew; without nextUpdate, at most ``max_age`` old).
  Every refusal is an :class:`OcspError` with a :class:`OcspFailure` and a sentence.
* **Cache and revocation hook** (:class:`OcspCache`, :class:`CachedOcspRevocation`): checked answers are kept
  until they expire and keyed by CertID; the :class:`~edge.pki.chain.RevocationChecker` answers GOOD, REVOKED
  or UNKNOWN from them and lists the request data of its misses (:meth:`CachedOcspRevocation.needed`) so the
  OCPP side can fetch them and hand the answers back (:meth:`CachedOcspRevocation.accept`).

Stapling (the SECC's own certificate in the TLS handshake) is :mod:`edge.pki.stapling`: Python's ``ssl`` has
no status callback, so :func:`edge.v2g.tls.enable_ocsp_stapling` installs OpenSSL's through ``ctypes``; the
responses come from :class:`OcspCache`-checked answers (the station's GetCertificateStatus) or the PKI folder.
OpenSSL staples the leaf only: no RFC 6961 status_request_v2 for -2's TLS 1.2 and no per-certificate staples
for the sub-CAs in TLS 1.3 (wolfSSL and GnuTLS can, from C).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from edge.pki.chain import RevocationStatus
from edge.pki.paths import issued_by
from edge.pki.store import CertificateHashData, certificate_hash_data

#: OCPP 2.0.1 limits (OCSPRequestDataType and AuthorizeRequest.iso15118CertificateHashData)
MAX_CHAIN_ENTRIES = 4
MAX_SERIAL_LENGTH = 40
MAX_RESPONDER_URL_LENGTH = 512
#: how far the responder's clock and ours may differ when judging thisUpdate / nextUpdate
DEFAULT_CLOCK_SKEW = dt.timedelta(minutes=5)
#: how long an answer without nextUpdate counts as current (RFC 6960: "newer information is always available")
DEFAULT_MAX_AGE = dt.timedelta(hours=24)

_OCSP_HASHES: dict[str, hashes.HashAlgorithm] = {
    "SHA1": hashes.SHA1(),  # responders still answer with SHA-1 CertIDs; only used to match those
    "SHA224": hashes.SHA224(),
    "SHA256": hashes.SHA256(),
    "SHA384": hashes.SHA384(),
    "SHA512": hashes.SHA512(),
}


class OcspFailure(Enum):
    """Why OCSP data was refused."""

    MALFORMED = "not a DER OCSPResponse"
    UNSUCCESSFUL = "responder did not answer successfully"
    CERT_ID_MISMATCH = "response is not about this certificate"
    BAD_SIGNATURE = "response signature does not verify"
    UNAUTHORIZED_RESPONDER = "responder is neither the issuer nor delegated by it"
    NOT_YET_VALID = "response not yet valid"
    EXPIRED = "response expired"
    UNSUPPORTED_ALGORITHM = "unsupported algorithm"
    NO_RESPONDER_URL = "certificate names no OCSP responder"
    NOT_REQUESTED = "no request is waiting for this response"


class OcspError(Exception):
    """A refused OCSP response or request; ``reason`` says what was wrong in one sentence."""

    def __init__(self, failure: OcspFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


class CertId(NamedTuple):
    """RFC 6960 CertID, the cache key: hash name (OCPP spelling), issuer name and key hashes, serial."""

    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int

    @classmethod
    def of(cls, cert: x509.Certificate, issuer: x509.Certificate, hash_algorithm: str = "SHA256") -> CertId:
        return cls.from_hash_data(certificate_hash_data(cert, issuer, hash_algorithm))

    @classmethod
    def from_hash_data(cls, data: CertificateHashData) -> CertId:
        """From OCPP's hex strings; ValueError if they are not hex."""
        try:
            return cls(data.hash_algorithm.upper(), bytes.fromhex(data.issuer_name_hash),
                       bytes.fromhex(data.issuer_key_hash), int(data.serial_number, 16))
        except ValueError:
            raise ValueError(f"CertificateHashData is not hex: {data}") from None


def _utc(moment: dt.datetime) -> dt.datetime:
    # a naive time is taken as UTC, like X.509 and OCSP times
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


# --- request data ------------------------------------------------------------------------------------------


def ocsp_responder_url(cert: x509.Certificate) -> str | None:
    """The first OCSP access location in the certificate's authorityInfoAccess, or None."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # duplicate or undecodable extension: treat as absent, the caller says so
        return None
    for description in access:
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            description.access_location, x509.UniformResourceIdentifier
        ):
            return description.access_location.value
    return None


@dataclass(frozen=True)
class OcspRequestData:
    """OCPP 2.0.1 OCSPRequestDataType for one certificate (see :func:`ocsp_request_data`)."""

    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str
    responder_url: str

    @property
    def hash_data(self) -> CertificateHashData:
        return CertificateHashData(self.hash_algorithm, self.issuer_name_hash, self.issuer_key_hash,
                                   self.serial_number)

    @property
    def cert_id(self) -> CertId:
        return CertId.from_hash_data(self.hash_data)

    def to_ocpp(self) -> dict[str, str]:
        return {**self.hash_data.to_ocpp(), "responderURL": self.responder_url}

    @classmethod
    def from_ocpp(cls, data: dict[str, str]) -> OcspRequestData:
        """From an OCPP JSON object; ValueError naming the missing field."""
        hash_data = CertificateHashData.from_ocpp(data)
        if "responderURL" not in data:
            raise ValueError("OCSPRequestData lacks responderURL")
        return cls(hash_data.hash_algorithm, hash_data.issuer_name_hash, hash_data.issuer_key_hash,
                   hash_data.serial_number, data["responderURL"])

    @classmethod
    def for_chain(
        cls, path: Sequence[x509.Certificate], *, include_root: bool = False, hash_algorithm: str = "SHA256"
    ) -> list[OcspRequestData]:
        """Authorize ``iso15118CertificateHashData``: one entry per certificate of ``path`` (leaf first, each
        issued by the next, the root last, as :attr:`edge.pki.chain.ChainVerdict.path`) except the trusted
        root, which no OCSP answer can revoke; ``include_root`` adds it as its own issuer (Josev sends it).
        ValueError for a path shorter than leaf + issuer or longer than OCPP's 4 entries."""
        if len(path) < 2:
            raise ValueError("a chain for OCSP needs at least the leaf and its issuer")
        pairs = list(itertools.pairwise(path))
        if include_root:
            pairs.append((path[-1], path[-1]))
        if len(pairs) > MAX_CHAIN_ENTRIES:
            raise ValueError(f"OCPP allows at most {MAX_CHAIN_ENTRIES} OCSP request entries, the chain needs "
                             f"{len(pairs)}")
        return [ocsp_request_data(cert, issuer, hash_algorithm=hash_algorithm) for cert, issuer in pairs]


def ocsp_request_data(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    hash_algorithm: str = "SHA256",
    responder_url: str | None = None,
) -> OcspRequestData:
    """The OCSPRequestDataType of ``cert`` (``issuer`` signed it). ``responder_url`` overrides the one from the
    certificate's authorityInfoAccess; OcspError(NO_RESPONDER_URL) when there is neither (OCPP requires one).
    ValueError for a hash OCPP does not allow (SHA256, SHA384, SHA512)."""
    hash_data = certificate_hash_data(cert, issuer, hash_algorithm)
    url = responder_url or ocsp_responder_url(cert)
    if not url:
        raise OcspError(OcspFailure.NO_RESPONDER_URL,
                        f"{_name(cert)} has no OCSP URL in its authorityInfoAccess and none was configured")
    if len(url) > MAX_RESPONDER_URL_LENGTH:
        raise OcspError(OcspFailure.NO_RESPONDER_URL,
                        f"OCSP URL of {_name(cert)} is longer than OCPP's {MAX_RESPONDER_URL_LENGTH} characters")
    if len(hash_data.serial_number) > MAX_SERIAL_LENGTH:
        # RFC 5280 caps serials at 20 octets; a longer one cannot be sent in OCPP
        raise ValueError(f"serial of {_name(cert)} is longer than OCPP's {MAX_SERIAL_LENGTH} hex digits")
    return OcspRequestData(hash_data.hash_algorithm, hash_data.issuer_name_hash, hash_data.issuer_key_hash,
                           hash_data.serial_number, url)


def ocsp_request_der(
    cert: x509.Certificate, issuer: x509.Certificate, *, hash_algorithm: str = "SHA256", nonce: bytes | None = None
) -> bytes:
    """A DER OCSPRequest for ``cert`` (to POST to the responder directly, RFC 6960 Appendix A)."""
    algorithm = _OCSP_HASHES.get(hash_algorithm.upper())
    if algorithm is None or hash_algorithm.upper() == "SHA1":
        raise ValueError(f"OCSP requests here use SHA256, SHA384 or SHA512, not {hash_algorithm!r}")
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def decode_ocsp_result(ocsp_result: str | bytes) -> bytes:
    """The DER bytes of GetCertificateStatusResponse.ocspResult (base64); OcspError(MALFORMED) if not base64."""
    try:
        return base64.b64decode(ocsp_result, validate=True)
    except (binascii.Error, ValueError):
        raise OcspError(OcspFailure.MALFORMED, "ocspResult is not base64") from None


# --- checking responses ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OcspStatus:
    """A checked OCSP answer for one certificate, current until ``expires_at``; ``der`` is the response as
    received (what a TLS server would staple)."""

    cert_id: CertId
    status: RevocationStatus
    this_update: dt.datetime
    next_update: dt.datetime | None
    expires_at: dt.datetime
    produced_at: dt.datetime
    der: bytes = field(repr=False)
    revocation_time: dt.datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None
    responder: str = ""  # subject of the certificate that signed the answer

    def is_current(self, now: dt.datetime) -> bool:
        return _utc(now) <= self.expires_at


_STATUSES = {
    ocsp.OCSPCertStatus.GOOD: RevocationStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: RevocationStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: RevocationStatus.UNKNOWN,
}


class OcspResponseChecker:
    """Checks DER OCSPResponses against the certificate and issuer they should be about (see module doc)."""

    def __init__(
        self, *, clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW, max_age: dt.timedelta = DEFAULT_MAX_AGE
    ) -> None:
        self.clock_skew = clock_skew
        self.max_age = max_age

    def check(
        self, response: bytes | str, cert: x509.Certificate, issuer: x509.Certificate, *, now: dt.datetime
    ) -> OcspStatus:
        """The checked status of ``cert`` from ``response`` (DER, or the base64 text of an ocspResult);
        OcspError for anything that does not hold."""
        der = decode_ocsp_result(response) if isinstance(response, str) else bytes(response)
        moment = _utc(now)
        parsed = _parse(der)
        try:
            single = self._matching_single_response(parsed, cert, issuer)
            signer = self._signer(parsed, issuer, moment)
            _verify_signature(parsed, signer)
            cert_status = single.certificate_status
            this_update, next_update = single.this_update_utc, single.next_update_utc
            produced_at = parsed.produced_at_utc
            revocation_time = single.revocation_time_utc
            revocation_reason = single.revocation_reason
        except UnsupportedAlgorithm as e:  # e.g. a CertID hash outside SHA-1/SHA-2
            raise OcspError(OcspFailure.UNSUPPORTED_ALGORITHM, f"OCSP response uses an unsupported algorithm: {e}") \
                from None
        except ValueError as e:  # a field cryptography parses lazily is broken
            raise OcspError(OcspFailure.MALFORMED, f"OCSP response field not decodable: {e}") from None
        if this_update > moment + self.clock_skew:
            raise OcspError(OcspFailure.NOT_YET_VALID,
                            f"OCSP response for {_name(cert)} is from the future (thisUpdate "
                            f"{this_update.isoformat()})")
        expires_at = next_update if next_update is not None else this_update + self.max_age
        if moment > expires_at + self.clock_skew:
            raise OcspError(OcspFailure.EXPIRED,
                            f"OCSP response for {_name(cert)} expired at {expires_at.isoformat()}")
        return OcspStatus(
            cert_id=CertId.of(cert, issuer),
            status=_STATUSES[cert_status],
            this_update=this_update,
            next_update=next_update,
            expires_at=expires_at,
            produced_at=produced_at,
            der=der,
            revocation_time=revocation_time,
            revocation_reason=revocation_reason,
            responder=_name(signer),
        )

    @staticmethod
    def _matching_single_response(
        response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
    ) -> ocsp.OCSPSingleResponse:
        """The SingleResponse whose CertID is ``cert``'s, computed with the hash the responder chose."""
        seen: list[str] = []
        for single in response.responses:
            algorithm = single.hash_algorithm
            expected = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
            if (
                single.serial_number == expected.serial_number
                and single.issuer_name_hash == expected.issuer_name_hash
                and single.issuer_key_hash == expected.issuer_key_hash
            ):
                return single
            seen.append(f"serial {single.serial_number:x}")
        raise OcspError(
            OcspFailure.CERT_ID_MISMATCH,
            f"OCSP response answers for {', '.join(seen) or 'no certificate'}, not for {_name(cert)} "
            f"(serial {cert.serial_number:x}) issued by {_name(issuer)}",
        )

    def _signer(self, response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime) -> x509.Certificate:
        """The issuer, or a delegated responder certificate carried in the response (RFC 6960 4.2.2.2)."""
        if _is_responder(response, issuer):
            return issuer
        candidates = [c for c in response.certificates if _is_responder(response, c)]
        if not candidates:
            raise OcspError(OcspFailure.UNAUTHORIZED_RESPONDER,
                            f"OCSP response is signed by {_responder_text(response)}, which is not {_name(issuer)} "
                            "and whose certificate is not in the response")
        delegate = candidates[0]
        if delegate.issuer != issuer.subject or not issued_by(delegate, issuer, require_ca=False):
            raise OcspError(OcspFailure.UNAUTHORIZED_RESPONDER,
                            f"OCSP responder {_name(delegate)} was not issued by {_name(issuer)}")
        if not _has_ocsp_signing(delegate):
            raise OcspError(OcspFailure.UNAUTHORIZED_RESPONDER,
                            f"OCSP responder {_name(delegate)} lacks extendedKeyUsage id-kp-OCSPSigning")
        if not delegate.not_valid_before_utc - self.clock_skew <= now <= delegate.not_valid_after_utc + self.clock_skew:
            raise OcspError(OcspFailure.UNAUTHORIZED_RESPONDER,
                            f"OCSP responder certificate {_name(delegate)} is not valid now")
        return delegate


def _parse(der: bytes) -> ocsp.OCSPResponse:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise OcspError(OcspFailure.MALFORMED, f"not a DER OCSPResponse ({e})") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(OcspFailure.UNSUCCESSFUL,
                        f"OCSP responder answered {response.response_status.name.lower()}, not successful")
    return response


def _key_hash(cert: x509.Certificate) -> bytes:
    # RFC 6960 ResponderID byKey: SHA-1 of the subjectPublicKey BIT STRING value (what RFC 5280's SKI method 1 is)
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _is_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    return response.responder_key_hash == _key_hash(cert)


def _responder_text(response: ocsp.OCSPResponse) -> str:
    if response.responder_name is not None:
        return response.responder_name.rfc4514_string() or "(empty name)"
    return f"key hash {(response.responder_key_hash or b'').hex()}"


def _has_ocsp_signing(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in usage


def _verify_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """The response's signature over its tbsResponseData, with the signer's key and the algorithm it names."""
    key = signer.public_key()
    signature, data = response.signature, response.tbs_response_bytes
    hash_algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, ed448.Ed448PublicKey | ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, ec.EllipticCurvePublicKey) and hash_algorithm is not None:
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and hash_algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        else:
            raise OcspError(OcspFailure.UNSUPPORTED_ALGORITHM,
                            f"cannot verify an OCSP signature {response.signature_algorithm_oid.dotted_string} "
                            f"with the {type(key).__name__} of {_name(signer)}")
    except InvalidSignature:
        raise OcspError(OcspFailure.BAD_SIGNATURE,
                        f"OCSP response signature does not verify with the key of {_name(signer)}") from None
    except TypeError as e:  # the signature algorithm does not fit the key (e.g. Ed448 signature, EC key)
        raise OcspError(OcspFailure.BAD_SIGNATURE, f"OCSP signature does not fit the key of {_name(signer)}: {e}") \
            from None


# --- cache and the revocation hook -------------------------------------------------------------------------


class OcspCache:
    """Checked OCSP answers by CertID, each kept while current (until nextUpdate, or the checker's max age
    after thisUpdate when the responder gave none). Holds at most ``max_entries``; the soonest to expire
    goes first when full."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("an OCSP cache needs room for at least one entry")
        self.max_entries = max_entries
        self._entries: dict[CertId, OcspStatus] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, status: OcspStatus) -> None:
        if status.cert_id not in self._entries and len(self._entries) >= self.max_entries:
            soonest = min(self._entries.values(), key=lambda s: s.expires_at)
            del self._entries[soonest.cert_id]
        self._entries[status.cert_id] = status

    def get(self, cert_id: CertId, now: dt.datetime) -> OcspStatus | None:
        """The current answer for ``cert_id``; an expired one is dropped and None returned."""
        status = self._entries.get(cert_id)
        if status is None:
            return None
        if not status.is_current(now):
            del self._entries[cert_id]
            return None
        return status

    def lookup(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> OcspStatus | None:
        return self.get(CertId.of(cert, issuer), now)

    def purge(self, now: dt.datetime) -> list[CertId]:
        """Drop every expired answer; returns their CertIDs (to re-fetch those still needed)."""
        expired = [cert_id for cert_id, status in self._entries.items() if not status.is_current(now)]
        for cert_id in expired:
            del self._entries[cert_id]
        return expired

    def staple(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> bytes | None:
        """The DER response a TLS server would staple for ``cert``: a current GOOD answer, else None."""
        status = self.lookup(cert, issuer, now)
        return status.der if status is not None and status.status is RevocationStatus.GOOD else None


Clock = Callable[[], dt.datetime]


class CachedOcspRevocation:
    """A :class:`~edge.pki.chain.RevocationChecker` answering from an :class:`OcspCache`.

    The validator passes the time to judge at; ``now`` (a datetime or a callable) is the time
    :meth:`needed` and :meth:`accept` use, updated to the last validation's time.
    A miss answers UNKNOWN (the validator decides whether that rejects) and is remembered; :meth:`needed`
    lists the request data of the misses still open, and :meth:`accept` checks the answer the OCPP side got
    (GetCertificateStatusResponse.ocspResult) and caches it.
    """

    def __init__(
        self, cache: OcspCache, *, now: dt.datetime | Clock | None = None,
        checker: OcspResponseChecker | None = None
    ) -> None:
        self.cache = cache
        self.now = now
        self.checker = checker or OcspResponseChecker()
        self._pending: dict[CertId, tuple[x509.Certificate, x509.Certificate]] = {}
        #: missed certificates no request can be made for (no OCSP URL, say): subject -> why
        self.cannot_request: dict[str, str] = {}

    def _now(self) -> dt.datetime:
        if self.now is None:
            return dt.datetime.now(dt.UTC)
        return _utc(self.now() if callable(self.now) else self.now)

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> RevocationStatus:
        self.now = now
        cert_id = CertId.of(cert, issuer)
        cached = self.cache.get(cert_id, _utc(now))
        if cached is not None:
            self._pending.pop(cert_id, None)
            return cached.status
        self._pending[cert_id] = (cert, issuer)
        return RevocationStatus.UNKNOWN

    def needed(self) -> list[OcspRequestData]:
        """GetCertificateStatus request data for every miss not answered since (one per certificate)."""
        now = self._now()
        requests: list[OcspRequestData] = []
        for cert_id, (cert, issuer) in list(self._pending.items()):
            if self.cache.get(cert_id, now) is not None:
                del self._pending[cert_id]
                continue
            try:
                requests.append(ocsp_request_data(cert, issuer))
            except OcspError as e:
                self.cannot_request[_name(cert)] = e.reason
            except ValueError as e:  # a serial longer than OCPP allows
                self.cannot_request[_name(cert)] = str(e)
        return requests

    def accept(self, request: OcspRequestData | CertId, response: bytes | str) -> OcspStatus:
        """Check the answer to one of :meth:`needed`'s requests and cache it. ``response``: DER, or the
        base64 ocspResult text. OcspError if it was not asked for or does not hold."""
        cert_id = request.cert_id if isinstance(request, OcspRequestData) else request
        pair = self._pending.get(cert_id)
        if pair is None:
            raise OcspError(OcspFailure.NOT_REQUESTED,
                            f"no OCSP request is waiting for serial {cert_id.serial_number:x}")
        status = self.checker.check(response, *pair, now=self._now())
        self.cache.put(status)
        del self._pending[cert_id]
        return status

    def prime(self, entries: Iterable[tuple[x509.Certificate, x509.Certificate, bytes | str]]) -> list[OcspStatus]:
        """Check and cache answers obtained some other way (a stored response, the CSMS pushing one)."""
        now = self._now()
        statuses = [self.checker.check(response, cert, issuer, now=now) for cert, issuer, response in entries]
        for status in statuses:
            self.cache.put(status)
            self._pending.pop(status.cert_id, None)
        return statuses
