"""Contract certificate chain validation for ISO 15118-2 and -20 (sans-IO: certificates, roots and a time in,
a verdict with the exact ResponseCode out).

Why not pyca's built-in X.509 verifier: it is a WebPKI verifier (it demands a SAN, refuses Ed448 and
knows nothing of the ISO 15118 profiles). Plain OpenSSL gets ISO cases wrong too. So the path is built
here, every link checked with ``Certificate.verify_directly_issued_by`` (which checks P-256, P-521 and
Ed448 signatures), and the ISO profile rules are checked on top:

* path: leaf -> at most 2 sub-CAs -> a trusted MO or V2G root (the sub-CAs may come in any order; extra
  certificates the car sends, such as its copy of the root, are ignored);
* algorithms: -2 all secp256r1 with ecdsa-with-SHA256; -20 all secp521r1 with ecdsa-with-SHA512, or all Ed448;
* sub-CAs: basicConstraints CA (pathLen respected along the path), keyUsage keyCertSign, DC=MO;
* contract leaf: not a CA, keyUsage digitalSignature, DC=MO, an EMAID in its CN;
* roots are trust anchors: only their signature over the next certificate, their validity time and a
  pathLen they may carry count. Their extendedKeyUsage (Hubject-style roots carry one) does not;
* validity of every certificate at the given time, then the EMAID against the one the car sent, then
  revocation through a pluggable :class:`RevocationChecker` (OCSP later).

ResponseCodes. -2 (PaymentDetailsRes): expired or not yet valid -> FAILED_CertificateExpired (the -2
schema has no "not yet valid" code, [V2G2-824]); revoked -> FAILED_CertificateRevoked; no trust anchor
installed at all -> FAILED_NoCertificateAvailable; every other chain, profile or EMAID failure ->
FAILED_CertChainError (as EVerest does, also for an EMAID mismatch). -20 (AuthorizationRes):
WARNING_CertificateExpired, WARNING_CertificateNotYetValid, WARNING_CertificateRevoked,
WARNING_NoCertificateAvailable, and WARNING_CertificateValidationError for the rest.
FAILED_ContractCanceled is a backend decision and never comes from here.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from edge.pki.algorithms import KeyAlgorithm
from exi.model.iso2_msgdatatypes import responseCodeType as Iso2ResponseCode
from exi.model.iso20_commontypes import responseCodeType as Iso20ResponseCode

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)

#: ISO 15118-2 and -20 allow at most two sub-CAs between a leaf and its root
MAX_SUB_CAS = 2
MO_DOMAIN_COMPONENT = "MO"

# EMAID (ISO 15118-2 Annex H / DIN SPEC 91286): country (2 letters), provider (3), instance (9), optional
# check character; hyphens are optional separators and case does not matter.
_EMAID = re.compile(r"[A-Za-z]{2}[A-Za-z0-9]{3}[A-Za-z0-9]{9}[A-Za-z0-9]?")


class ContractProtocol(StrEnum):
    ISO2 = "iso2"
    ISO20 = "iso20"


class ChainFailure(Enum):
    """Why a chain was refused (finer than the ResponseCode; e.g. UNKNOWN_ROOT may be worth asking the CSMS)."""

    NO_TRUST_ANCHOR = "no trust anchor installed"
    NO_CERTIFICATE = "no certificate"
    MALFORMED = "certificate not parseable"
    UNKNOWN_ROOT = "no path to a trusted root"
    BAD_SIGNATURE = "signature does not verify"
    PATH_TOO_LONG = "too many sub-CAs"
    PROFILE = "certificate profile violated"
    ALGORITHM = "wrong key or signature algorithm"
    NOT_YET_VALID = "certificate not yet valid"
    EXPIRED = "certificate expired"
    EMAID_MISMATCH = "EMAID mismatch"
    REVOKED = "certificate revoked"
    REVOCATION_UNKNOWN = "revocation status unknown"


_ISO2_CODES: dict[ChainFailure | None, Iso2ResponseCode] = {
    None: Iso2ResponseCode.OK,
    ChainFailure.NO_TRUST_ANCHOR: Iso2ResponseCode.FAILED_NoCertificateAvailable,
    ChainFailure.NOT_YET_VALID: Iso2ResponseCode.FAILED_CertificateExpired,  # [V2G2-824]: no own code in -2
    ChainFailure.EXPIRED: Iso2ResponseCode.FAILED_CertificateExpired,
    ChainFailure.REVOKED: Iso2ResponseCode.FAILED_CertificateRevoked,
}
_ISO20_CODES: dict[ChainFailure | None, Iso20ResponseCode] = {
    None: Iso20ResponseCode.OK,
    ChainFailure.NO_TRUST_ANCHOR: Iso20ResponseCode.WARNING_NoCertificateAvailable,
    ChainFailure.NOT_YET_VALID: Iso20ResponseCode.WARNING_CertificateNotYetValid,
    ChainFailure.EXPIRED: Iso20ResponseCode.WARNING_CertificateExpired,
    ChainFailure.REVOKED: Iso20ResponseCode.WARNING_CertificateRevoked,
}


def response_code_for(
    protocol: ContractProtocol, failure: ChainFailure | None
) -> Iso2ResponseCode | Iso20ResponseCode:
    """The ResponseCode the SECC sends for ``failure`` (None: success) in ``protocol``."""
    if protocol is ContractProtocol.ISO2:
        return _ISO2_CODES.get(failure, Iso2ResponseCode.FAILED_CertChainError)
    return _ISO20_CODES.get(failure, Iso20ResponseCode.WARNING_CertificateValidationError)


class RevocationStatus(Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class RevocationChecker(Protocol):
    """Answers the revocation status of one certificate (``issuer`` signed it); OCSP plugs in here."""

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> RevocationStatus: ...


@dataclass(frozen=True)
class ChainVerdict:
    """The outcome of one validation. ``path`` is leaf first, root last, when a path was found."""

    ok: bool
    response_code: Iso2ResponseCode | Iso20ResponseCode
    reason: str
    leaf: x509.Certificate | None
    emaid: str | None
    protocol: ContractProtocol
    failure: ChainFailure | None = None
    path: tuple[x509.Certificate, ...] = field(default=(), repr=False)


class ChainError(Exception):
    """Internal: one refused check, carried to the single place that builds the verdict."""

    def __init__(self, failure: ChainFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


def protocol_for_key(public_key: object) -> ContractProtocol:
    """-2 for secp256r1 keys, -20 for secp521r1 and Ed448 keys; ValueError for anything else."""
    return ContractProtocol.ISO2 if KeyAlgorithm.of(public_key) is KeyAlgorithm.P256_SHA256 else ContractProtocol.ISO20


def protocol_for_leaf(leaf: x509.Certificate) -> ContractProtocol:
    """The protocol a contract leaf belongs to, from its key algorithm."""
    return protocol_for_key(leaf.public_key())


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates in ``data``: one DER certificate, or any number of PEM blocks. ValueError if none."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def normalize_emaid(emaid: str) -> str:
    """EMAIDs compare without '-' separators and without case (as EVerest does)."""
    return emaid.replace("-", "").upper()


def is_valid_emaid(emaid: str) -> bool:
    return _EMAID.fullmatch(emaid.replace("-", "")) is not None


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _domain_components(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)]


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as e:  # a duplicate or undecodable extension
        raise ChainError(ChainFailure.MALFORMED, f"{_name(cert)}: bad extensions ({e})") from None


def _as_utc(moment: dt.datetime) -> dt.datetime:
    # a naive time is taken as UTC, like X.509 times
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _check_algorithm(cert: x509.Certificate, protocol: ContractProtocol, family: str, role: str) -> None:
    """All certificates of one chain use the protocol's algorithm (``family``: p256, p521 or ed448)."""
    key = cert.public_key()
    if family == "p256":
        key_ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
        sig_ok = cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
        wanted = "secp256r1 with ecdsa-with-SHA256"
    elif family == "p521":
        key_ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP521R1)
        sig_ok = cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA512
        wanted = "secp521r1 with ecdsa-with-SHA512 (or Ed448), the same in the whole chain"
    else:
        key_ok = isinstance(key, ed448.Ed448PublicKey)
        sig_ok = cert.signature_algorithm_oid == SignatureAlgorithmOID.ED448
        wanted = "Ed448, the same in the whole chain"
    if not (key_ok and sig_ok):
        raise ChainError(
            ChainFailure.ALGORITHM,
            f"{role} {_name(cert)}: {_describe_algorithm(cert)}, ISO 15118-{protocol.value[3:]} wants {wanted}",
        )


_SIGNATURE_NAMES = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SignatureAlgorithmOID.ED448: "Ed448",
    SignatureAlgorithmOID.ED25519: "Ed25519",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
}


def _describe_algorithm(cert: x509.Certificate) -> str:
    key = cert.public_key()
    key_text = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
    oid = cert.signature_algorithm_oid
    return f"key {key_text}, signature {_SIGNATURE_NAMES.get(oid, oid.dotted_string)}"


def _family_of(leaf: x509.Certificate, protocol: ContractProtocol) -> str:
    key = leaf.public_key()
    if protocol is ContractProtocol.ISO2:
        return "p256"
    return "ed448" if isinstance(key, ed448.Ed448PublicKey) else "p521"


class ContractChainValidator:
    """Validates contract certificate chains against a fixed set of trust anchors (MO and/or V2G roots).

    Sans-IO and reusable: build it once from the store's roots, call :meth:`validate` per PaymentDetailsReq
    (-2) or AuthorizationReq (-20) with the time to judge at.
    """

    def __init__(
        self,
        trust_anchors: Iterable[x509.Certificate],
        *,
        revocation: RevocationChecker | None = None,
        reject_unknown_revocation: bool = False,
        check_domain_component: bool = True,
    ) -> None:
        self.trust_anchors: tuple[x509.Certificate, ...] = tuple(trust_anchors)
        self.revocation = revocation
        self.reject_unknown_revocation = reject_unknown_revocation
        self.check_domain_component = check_domain_component

    def validate(
        self,
        leaf: x509.Certificate | bytes | None,
        sub_cas: Sequence[x509.Certificate | bytes] = (),
        *,
        protocol: ContractProtocol,
        now: dt.datetime,
        expected_emaid: str | None = None,
    ) -> ChainVerdict:
        """Judge the chain ``leaf`` + ``sub_cas`` (DER bytes or parsed, any order) at time ``now``.

        ``expected_emaid`` is the eMAID the car sent (-2 PaymentDetailsReq); it must match the leaf's CN.
        """
        parsed_leaf: x509.Certificate | None = None
        emaid: str | None = None
        path: tuple[x509.Certificate, ...] = ()
        try:
            parsed_leaf = self._parse_leaf(leaf)
            emaid = _common_name(parsed_leaf)
            if not self.trust_anchors:
                raise ChainError(ChainFailure.NO_TRUST_ANCHOR, "no MO or V2G root is installed")
            intermediates = [self._parse_sub_ca(c) for c in sub_cas]
            path = self._build_path(parsed_leaf, intermediates)
            self._check_profiles(path, protocol)
            self._check_validity(path, _as_utc(now))
            self._check_emaid(emaid, expected_emaid)
            self._check_revocation(path, _as_utc(now))
        except ChainError as e:
            return ChainVerdict(
                ok=False,
                response_code=response_code_for(protocol, e.failure),
                reason=e.reason,
                leaf=parsed_leaf,
                emaid=emaid,
                protocol=protocol,
                failure=e.failure,
                path=path,
            )
        return ChainVerdict(
            ok=True,
            response_code=response_code_for(protocol, None),
            reason=f"valid chain of {len(path) - 2} sub-CA(s) to root {_name(path[-1])}",
            leaf=parsed_leaf,
            emaid=emaid,
            protocol=protocol,
            path=path,
        )

    # --- steps -------------------------------------------------------------------------------------------

    @staticmethod
    def _parse_leaf(leaf: x509.Certificate | bytes | None) -> x509.Certificate:
        if leaf is None or (isinstance(leaf, bytes | bytearray) and not leaf):
            raise ChainError(ChainFailure.NO_CERTIFICATE, "the car sent no contract certificate")
        if isinstance(leaf, x509.Certificate):
            return leaf
        try:
            return x509.load_der_x509_certificate(bytes(leaf))
        except ValueError as e:
            raise ChainError(ChainFailure.MALFORMED, f"contract certificate is not DER X.509 ({e})") from None

    @staticmethod
    def _parse_sub_ca(cert: x509.Certificate | bytes) -> x509.Certificate:
        if isinstance(cert, x509.Certificate):
            return cert
        try:
            return x509.load_der_x509_certificate(bytes(cert))
        except ValueError as e:
            raise ChainError(ChainFailure.MALFORMED, f"a sub-CA certificate is not DER X.509 ({e})") from None

    def _build_path(
        self, leaf: x509.Certificate, intermediates: list[x509.Certificate]
    ) -> tuple[x509.Certificate, ...]:
        """leaf, sub-CAs..., root: each link's issuer name matches and its signature verifies."""
        path = [leaf]
        unused = list(intermediates)
        signature_failures: list[str] = []
        while True:
            current = path[-1]
            for root in self.trust_anchors:
                if root.subject == current.issuer and _signed_by(current, root, signature_failures):
                    return (*path, root)
            candidates = [c for c in unused if c.subject == current.issuer and c not in path]
            issuer = next((c for c in candidates if _signed_by(current, c, signature_failures)), None)
            if issuer is None:
                if signature_failures:
                    raise ChainError(ChainFailure.BAD_SIGNATURE, signature_failures[0])
                raise ChainError(
                    ChainFailure.UNKNOWN_ROOT,
                    f"no trusted root or sub-CA for issuer {current.issuer.rfc4514_string()} of {_name(current)}",
                )
            unused.remove(issuer)
            path.append(issuer)
            if len(path) - 1 > MAX_SUB_CAS:
                raise ChainError(
                    ChainFailure.PATH_TOO_LONG, f"more than {MAX_SUB_CAS} sub-CAs between the leaf and a trusted root"
                )

    def _check_profiles(self, path: tuple[x509.Certificate, ...], protocol: ContractProtocol) -> None:
        leaf, sub_cas, root = path[0], path[1:-1], path[-1]
        family = _family_of(leaf, protocol)
        _check_algorithm(leaf, protocol, family, "contract certificate")
        for cert in sub_cas:
            _check_algorithm(cert, protocol, family, "sub-CA")
        _check_algorithm(root, protocol, family, "root")

        leaf_constraints = _extension(leaf, x509.BasicConstraints)
        if leaf_constraints is not None and leaf_constraints.ca:
            raise ChainError(ChainFailure.PROFILE, f"contract certificate {_name(leaf)} is a CA certificate")
        leaf_usage = _extension(leaf, x509.KeyUsage)
        if leaf_usage is None or not leaf_usage.digital_signature:
            raise ChainError(
                ChainFailure.PROFILE, f"contract certificate {_name(leaf)} lacks keyUsage digitalSignature"
            )
        common_name = _common_name(leaf)
        if common_name is None or not is_valid_emaid(common_name):
            raise ChainError(ChainFailure.PROFILE, f"contract certificate CN {common_name!r} is not an EMAID")
        if self.check_domain_component:
            for cert, role in ((leaf, "contract certificate"), *((c, "sub-CA") for c in sub_cas)):
                components = [dc.upper() for dc in _domain_components(cert)]
                if components != [MO_DOMAIN_COMPONENT]:
                    raise ChainError(
                        ChainFailure.PROFILE, f"{role} {_name(cert)} must carry DC=MO (has {components or 'none'})"
                    )

        # Each CA: a CA by basicConstraints, with room for the CAs below it (pathLen counts sub-CAs only).
        for position, cert in enumerate(path[1:], start=1):
            is_root = position == len(path) - 1
            constraints = _extension(cert, x509.BasicConstraints)
            if constraints is None or not constraints.ca:
                if is_root:
                    continue  # a trust anchor is trusted as configured
                raise ChainError(ChainFailure.PROFILE, f"sub-CA {_name(cert)} is not a CA (basicConstraints CA flag)")
            cas_below = position - 1
            if constraints.path_length is not None and cas_below > constraints.path_length:
                raise ChainError(
                    ChainFailure.PATH_TOO_LONG,
                    f"{_name(cert)} allows {constraints.path_length} sub-CA(s) below it, the path has {cas_below}",
                )
            if not is_root:
                usage = _extension(cert, x509.KeyUsage)
                if usage is None or not usage.key_cert_sign:
                    raise ChainError(ChainFailure.PROFILE, f"sub-CA {_name(cert)} lacks keyUsage keyCertSign")

    @staticmethod
    def _check_validity(path: tuple[x509.Certificate, ...], now: dt.datetime) -> None:
        for cert in path:
            if now < cert.not_valid_before_utc:
                raise ChainError(
                    ChainFailure.NOT_YET_VALID,
                    f"{_name(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}",
                )
            if now > cert.not_valid_after_utc:
                raise ChainError(
                    ChainFailure.EXPIRED, f"{_name(cert)} expired at {cert.not_valid_after_utc.isoformat()}"
                )

    @staticmethod
    def _check_emaid(emaid: str | None, expected: str | None) -> None:
        if expected is not None and (emaid is None or normalize_emaid(emaid) != normalize_emaid(expected)):
            raise ChainError(
                ChainFailure.EMAID_MISMATCH, f"the car sent eMAID {expected!r}, its contract certificate says {emaid!r}"
            )

    def _check_revocation(self, path: tuple[x509.Certificate, ...], now: dt.datetime) -> None:
        if self.revocation is None:
            return
        for cert, issuer in itertools.pairwise(path):
            status = self.revocation.status(cert, issuer, now)
            if status is RevocationStatus.REVOKED:
                raise ChainError(ChainFailure.REVOKED, f"{_name(cert)} (serial {cert.serial_number}) is revoked")
            if status is RevocationStatus.UNKNOWN and self.reject_unknown_revocation:
                raise ChainError(ChainFailure.REVOCATION_UNKNOWN, f"revocation status of {_name(cert)} is unknown")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate, failures: list[str]) -> bool:
    """Whether ``issuer`` signed ``cert``; why not is appended to ``failures``."""
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        failures.append(f"signature of {_name(cert)} does not verify with the key of {_name(issuer)}")
    except (ValueError, TypeError) as e:  # unsupported or mismatched algorithms
        failures.append(f"cannot verify {_name(cert)} with {_name(issuer)}: {e}")
    return False

