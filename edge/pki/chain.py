"""Certificate chain validation for ISO 15118-2 and -20: contract, SECC, OEM provisioning and CPS chains (sans-IO:
certificates, trust anchors and a time in, a verdict naming the rule that refused and the exact ResponseCode out).

Two layers, each check named after the requirement it implements (:class:`Rule`):

1. **RFC 5280 path validation.** For ECDSA chains (-2 P-256, -20 P-521) the authority is pyca/cryptography's path
   validator (``cryptography.x509.verification``, RFC 5280 path building and validation), run with a permissive
   extension policy so that it judges the path and leaves the ISO profile to layer 2. It cannot take Ed448 chains
   (its policy allows RSA and ECDSA keys only: "Forbidden public key algorithm"), so for -20 Ed448 chains the same
   RFC 5280 rules are applied by the code here, and only there. Our own walk also finds the path first for every
   chain (names, signatures, validity, CA flags, pathLen, keyCertSign, critical extensions), so that a refusal
   names the rule and gets its own ResponseCode (expired is not a broken chain) instead of the verifier's text.
2. **ISO 15118 profile rules** on top (:class:`ChainProfile` per chain kind): at most two sub-CAs and at least one
   (a leaf is issued by a Sub-CA, never straight by a root), one algorithm through the chain (-2 secp256r1 with
   ecdsa-with-SHA256; -20 secp521r1 with ecdsa-with-SHA512, or Ed448), the size the message schema allows for a
   certificate the peer sent (-2 800 bytes, -20 1600), the leaf not a CA and with keyUsage digitalSignature, a
   contract leaf's CN an eMAID, and the domain component where the profile gives one.

Roots are trust anchors: their signature over the next certificate, their validity and their algorithm count;
their extensions do not (Hubject-style roots carry an extendedKeyUsage). Then the eMAID the car sent, then
revocation through a pluggable :class:`RevocationChecker` (OCSP).

ResponseCodes come from one table per protocol (:func:`response_code_for`). -2 (PaymentDetailsRes,
CertificateInstallationRes): expired or not yet valid -> FAILED_CertificateExpired (the -2 schema has no "not yet
valid" code, [V2G2-824]); revoked -> FAILED_CertificateRevoked; no trust anchor installed at all ->
FAILED_NoCertificateAvailable; every other chain, profile or eMAID failure -> FAILED_CertChainError (as EVerest
does, also for an eMAID mismatch). -20 (AuthorizationRes): WARNING_CertificateExpired,
WARNING_CertificateNotYetValid, WARNING_CertificateRevoked, WARNING_NoCertificateAvailable, and
WARNING_CertificateValidationError for the rest. FAILED_ContractCanceled is a backend decision and never comes from
here.
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
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from edge.pki.algorithms import KeyAlgorithm
from exi.model.iso2_msgdatatypes import responseCodeType as Iso2ResponseCode
from exi.model.iso20_commontypes import responseCodeType as Iso20ResponseCode

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)

#: ISO 15118-2 and -20 certificate profiles: at most two sub-CAs between a leaf and its root
MAX_SUB_CAS = 2
MO_DOMAIN_COMPONENT = "MO"
#: the largest DER certificate each protocol's schema can carry (certificateType maxLength): a bigger one could
#: never have been received in a message, so it cannot be part of a valid chain of that protocol
MAX_CERTIFICATE_BYTES = {"iso2": 800, "iso20": 1600}

# EMAID (ISO 15118-2 Annex H / DIN SPEC 91286): country (2 letters), provider (3), instance (9), optional
# check character; hyphens are optional separators and case does not matter.
_EMAID = re.compile(r"[A-Za-z]{2}[A-Za-z0-9]{3}[A-Za-z0-9]{9}[A-Za-z0-9]?")

#: extensions whose meaning path validation knows (RFC 5280 §4.2: a critical extension not in here is refused).
#: Name constraints and policy constraints are not here: the ISO 15118 profiles do not use them and the Ed448 walk
#: does not process them, so a critical one is refused for every algorithm alike.
RECOGNISED_EXTENSIONS = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.CERTIFICATE_POLICIES,  # any policy is acceptable (initial-policy-set anyPolicy)
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
})


class ContractProtocol(StrEnum):
    ISO2 = "iso2"
    ISO20 = "iso20"


class ChainKind(StrEnum):
    """Which chain: its leaf's role decides the profile and which roots anchor it."""

    CONTRACT = "contract"  # MO or V2G root -> MO Sub-CA 1 -> MO Sub-CA 2 -> contract certificate
    SECC = "secc"  # V2G root -> CPO Sub-CA 1 -> CPO Sub-CA 2 -> SECC certificate
    OEM = "oem"  # OEM root -> OEM Sub-CA 1 -> OEM Sub-CA 2 -> OEM provisioning certificate
    CPS = "cps"  # V2G root -> CPS Sub-CA 1 -> CPS Sub-CA 2 -> CPS leaf (signs CertificateInstallationRes)


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


class Rule(StrEnum):
    """Every check, named after the requirement it implements (the README lists which are the standard's words and
    which are our reading of them)."""

    TRUST_STORE = "trust store: at least one trust anchor installed"
    PARSEABLE = "RFC 5280 §4.1: DER X.509 certificate"
    PATH_TO_ANCHOR = "RFC 5280 §6.1: a path by issuer names to a trust anchor"
    SIGNATURE = "RFC 5280 §6.1.3 (a)(1): each signature verifies with its issuer's key"
    VALIDITY = "RFC 5280 §6.1.3 (a)(2): every certificate of the path valid at the time of validation"
    CA_FLAG = "RFC 5280 §6.1.4 (k): every issuing certificate has basicConstraints cA TRUE"
    PATH_LENGTH = "RFC 5280 §6.1.4 (l)(m): pathLenConstraint of each CA"
    KEY_CERT_SIGN = "RFC 5280 §6.1.4 (n): keyUsage keyCertSign on every issuing certificate"
    CRITICAL_EXTENSION = "RFC 5280 §4.2: an unrecognised critical extension is refused"
    RFC5280_VERIFIER = "RFC 5280 path validation (cryptography.x509.verification)"
    MAX_SUB_CAS = "ISO 15118-2/-20 certificate profiles: at most two sub-CAs"
    ISSUED_BY_SUB_CA = "ISO 15118-2/-20 certificate profiles: a leaf is issued by a Sub-CA, not by a root"
    ALGORITHM = "ISO 15118-2 secp256r1+SHA-256; ISO 15118-20 secp521r1+SHA-512 or Ed448, one for the whole chain"
    CERTIFICATE_SIZE = "ISO 15118-2/-20 schema: certificateType maxLength (800 / 1600 bytes)"
    LEAF_NOT_CA = "ISO 15118-2/-20 certificate profiles: a leaf is not a CA"
    LEAF_DIGITAL_SIGNATURE = "ISO 15118-2/-20 certificate profiles: a leaf has keyUsage digitalSignature"
    CONTRACT_EMAID = "ISO 15118-2 Annex H: a contract certificate's CN is an eMAID"
    DOMAIN_COMPONENT = "ISO 15118-2/-20 certificate profiles: the domain component of the role"
    EMAID_MATCH = "ISO 15118-2 PaymentDetailsReq: the eMAID the car sends is its contract certificate's"
    REVOCATION = "OCSP (RFC 6960): no certificate of the path revoked"


@dataclass(frozen=True)
class ChainProfile:
    """What the ISO 15118 certificate profiles ask of one kind of chain beyond RFC 5280.

    Domain components: ``leaf_dc`` is the value the profile gives the leaf, ``leaf_dc_mandatory`` whether the
    profile marks it mandatory (absent is then refused); an optional one that is present must have the value.
    ``sub_ca_dc``: the values a sub-CA of this chain may carry (absent is accepted); a sub-CA of another role
    (a CPO Sub-CA issuing a contract certificate, an OEM Sub-CA issuing a SECC certificate) is refused.
    """

    kind: ChainKind
    leaf_role: str
    leaf_dc: str
    leaf_dc_mandatory: bool
    sub_ca_dc: frozenset[str]
    leaf_cn_is_emaid: bool = False
    received_in_messages: bool = True  # its size is bounded by the message schema


PROFILES: dict[ChainKind, ChainProfile] = {
    ChainKind.CONTRACT: ChainProfile(ChainKind.CONTRACT, "contract certificate", "MO", False, frozenset({"MO"}),
                                     leaf_cn_is_emaid=True),
    # the SECC certificate arrives in the TLS handshake, not in an EXI message: no schema size bound
    ChainKind.SECC: ChainProfile(ChainKind.SECC, "SECC certificate", "CPO", True, frozenset({"V2G", "CPO"}),
                                 received_in_messages=False),
    ChainKind.OEM: ChainProfile(ChainKind.OEM, "OEM provisioning certificate", "OEM", False, frozenset({"OEM"})),
    ChainKind.CPS: ChainProfile(ChainKind.CPS, "CPS certificate", "CPS", False, frozenset({"CPS", "V2G"})),
}


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
    rule: Rule | None = None  # the rule that refused
    kind: ChainKind = ChainKind.CONTRACT


class ChainError(Exception):
    """Internal: one refused check, carried to the single place that builds the verdict."""

    def __init__(self, failure: ChainFailure, reason: str, rule: Rule) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason
        self.rule = rule


def protocol_for_key(public_key: object) -> ContractProtocol:
    """-2 for secp256r1 keys, -20 for secp521r1 and Ed448 keys; ValueError for anything else."""
    return ContractProtocol.ISO2 if KeyAlgorithm.of(public_key) is KeyAlgorithm.P256_SHA256 else ContractProtocol.ISO20


def protocol_for_leaf(leaf: x509.Certificate) -> ContractProtocol:
    """The protocol a leaf belongs to, from its key algorithm."""
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
        raise ChainError(ChainFailure.MALFORMED, f"{_name(cert)}: bad extensions ({e})", Rule.PARSEABLE) from None


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
            Rule.ALGORITHM,
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


class CertificateChainValidator:
    """Validates one kind of chain (:class:`ChainKind`) against a fixed set of trust anchors.

    Sans-IO and reusable: build it once from the store's roots (contract: MO and V2G roots; SECC and CPS: V2G
    roots; OEM: OEM roots), call :meth:`validate` per chain with the time to judge at.
    """

    def __init__(
        self,
        trust_anchors: Iterable[x509.Certificate],
        *,
        kind: ChainKind = ChainKind.CONTRACT,
        revocation: RevocationChecker | None = None,
        reject_unknown_revocation: bool = False,
        check_domain_component: bool = True,
    ) -> None:
        self.trust_anchors: tuple[x509.Certificate, ...] = tuple(trust_anchors)
        self.kind = kind
        self.profile = PROFILES[kind]
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
        moment = _as_utc(now)
        try:
            parsed_leaf = self._parse_leaf(leaf)
            if self.profile.leaf_cn_is_emaid:
                emaid = _common_name(parsed_leaf)
            if not self.trust_anchors:
                raise ChainError(ChainFailure.NO_TRUST_ANCHOR, f"no trust anchor for {self.kind.value} chains is "
                                 "installed", Rule.TRUST_STORE)
            intermediates = [self._parse_sub_ca(c) for c in sub_cas]
            self._check_sizes(parsed_leaf, intermediates, protocol)
            path = self._build_path(parsed_leaf, intermediates, moment)
            self._check_profiles(path, protocol)
            self._check_validity(path, moment)
            self._check_rfc5280(path, moment)
            self._check_emaid(emaid, expected_emaid)
            self._check_revocation(path, moment)
        except ChainError as e:
            return ChainVerdict(
                ok=False, response_code=response_code_for(protocol, e.failure), reason=e.reason, leaf=parsed_leaf,
                emaid=emaid, protocol=protocol, failure=e.failure, path=path, rule=e.rule, kind=self.kind,
            )
        return ChainVerdict(
            ok=True,
            response_code=response_code_for(protocol, None),
            reason=f"valid chain of {len(path) - 2} sub-CA(s) to root {_name(path[-1])} ({self.kind.value})",
            leaf=parsed_leaf, emaid=emaid, protocol=protocol, path=path, kind=self.kind,
        )

    # --- steps -------------------------------------------------------------------------------------------

    def _parse_leaf(self, leaf: x509.Certificate | bytes | None) -> x509.Certificate:
        if leaf is None or (isinstance(leaf, bytes | bytearray) and not leaf):
            raise ChainError(ChainFailure.NO_CERTIFICATE, f"no {self.profile.leaf_role}", Rule.PARSEABLE)
        if isinstance(leaf, x509.Certificate):
            return leaf
        try:
            return x509.load_der_x509_certificate(bytes(leaf))
        except ValueError as e:
            raise ChainError(ChainFailure.MALFORMED, f"{self.profile.leaf_role} is not DER X.509 ({e})",
                             Rule.PARSEABLE) from None

    @staticmethod
    def _parse_sub_ca(cert: x509.Certificate | bytes) -> x509.Certificate:
        if isinstance(cert, x509.Certificate):
            return cert
        try:
            return x509.load_der_x509_certificate(bytes(cert))
        except ValueError as e:
            raise ChainError(ChainFailure.MALFORMED, f"a sub-CA certificate is not DER X.509 ({e})",
                             Rule.PARSEABLE) from None

    def _check_sizes(self, leaf: x509.Certificate, intermediates: list[x509.Certificate],
                     protocol: ContractProtocol) -> None:
        """What the peer sent fits the schema's certificateType (else it was never a message of this protocol)."""
        if not self.profile.received_in_messages:
            return
        limit = MAX_CERTIFICATE_BYTES[protocol.value]
        for cert in (leaf, *intermediates):
            size = len(cert.public_bytes(Encoding.DER))
            if size > limit:
                raise ChainError(ChainFailure.PROFILE, f"{_name(cert)} is {size} bytes of DER, the ISO 15118-"
                                 f"{protocol.value[3:]} schema allows {limit}", Rule.CERTIFICATE_SIZE)

    def _build_path(self, leaf: x509.Certificate, intermediates: list[x509.Certificate],
                    now: dt.datetime) -> tuple[x509.Certificate, ...]:
        """leaf, sub-CAs..., root: each link's issuer name matches and its signature verifies. Of several roots
        that signed the last link, one valid at ``now`` is preferred (a renewed root beside an expired one)."""
        path = [leaf]
        unused = list(intermediates)
        signature_failures: list[str] = []
        while True:
            current = path[-1]
            anchors = [r for r in self.trust_anchors
                       if r.subject == current.issuer and _signed_by(current, r, signature_failures)]
            if anchors:
                valid = [r for r in anchors if r.not_valid_before_utc <= now <= r.not_valid_after_utc]
                return (*path, (valid or anchors)[0])
            candidates = [c for c in unused if c.subject == current.issuer and c not in path]
            issuer = next((c for c in candidates if _signed_by(current, c, signature_failures)), None)
            if issuer is None:
                if signature_failures:
                    raise ChainError(ChainFailure.BAD_SIGNATURE, signature_failures[0], Rule.SIGNATURE)
                raise ChainError(
                    ChainFailure.UNKNOWN_ROOT,
                    f"no trusted root or sub-CA for issuer {current.issuer.rfc4514_string()} of {_name(current)} "
                    f"({len(self.trust_anchors)} trust anchor(s) installed)",
                    Rule.PATH_TO_ANCHOR,
                )
            unused.remove(issuer)
            path.append(issuer)
            if len(path) - 1 > MAX_SUB_CAS:
                raise ChainError(ChainFailure.PATH_TOO_LONG,
                                 f"more than {MAX_SUB_CAS} sub-CAs between the leaf and a trusted root",
                                 Rule.MAX_SUB_CAS)

    def _check_profiles(self, path: tuple[x509.Certificate, ...], protocol: ContractProtocol) -> None:
        leaf, sub_cas, root = path[0], path[1:-1], path[-1]
        role = self.profile.leaf_role
        family = _family_of(leaf, protocol)
        _check_algorithm(leaf, protocol, family, role)
        for cert in sub_cas:
            _check_algorithm(cert, protocol, family, "sub-CA")
        _check_algorithm(root, protocol, family, "root")

        for cert in path[:-1]:  # the anchor's extensions are not ours to judge
            for extension in cert.extensions:
                if extension.critical and extension.oid not in RECOGNISED_EXTENSIONS:
                    raise ChainError(ChainFailure.PROFILE, f"{_name(cert)} carries critical extension "
                                     f"{extension.oid.dotted_string}, which path validation does not know",
                                     Rule.CRITICAL_EXTENSION)
        if not sub_cas:
            raise ChainError(ChainFailure.PROFILE, f"{role} {_name(leaf)} is issued by root {_name(root)} "
                             "itself; the profiles issue leaves from a Sub-CA", Rule.ISSUED_BY_SUB_CA)

        leaf_constraints = _extension(leaf, x509.BasicConstraints)
        if leaf_constraints is not None and leaf_constraints.ca:
            raise ChainError(ChainFailure.PROFILE, f"{role} {_name(leaf)} is a CA certificate", Rule.LEAF_NOT_CA)
        leaf_usage = _extension(leaf, x509.KeyUsage)
        if leaf_usage is None or not leaf_usage.digital_signature:
            raise ChainError(ChainFailure.PROFILE, f"{role} {_name(leaf)} lacks keyUsage digitalSignature",
                             Rule.LEAF_DIGITAL_SIGNATURE)
        if self.profile.leaf_cn_is_emaid:
            common_name = _common_name(leaf)
            if common_name is None or not is_valid_emaid(common_name):
                raise ChainError(ChainFailure.PROFILE, f"{role} CN {common_name!r} is not an EMAID",
                                 Rule.CONTRACT_EMAID)
        if self.check_domain_component:
            self._check_domain_components(leaf, sub_cas)

        # Each CA: a CA by basicConstraints, with room for the CAs below it (pathLen counts sub-CAs only).
        for position, cert in enumerate(path[1:], start=1):
            is_root = position == len(path) - 1
            constraints = _extension(cert, x509.BasicConstraints)
            if constraints is None or not constraints.ca:
                if is_root:
                    continue  # a trust anchor is trusted as configured
                raise ChainError(ChainFailure.PROFILE, f"sub-CA {_name(cert)} is not a CA (basicConstraints CA flag)",
                                 Rule.CA_FLAG)
            cas_below = position - 1
            if constraints.path_length is not None and cas_below > constraints.path_length:
                raise ChainError(
                    ChainFailure.PATH_TOO_LONG,
                    f"{_name(cert)} allows {constraints.path_length} sub-CA(s) below it, the path has {cas_below}",
                    Rule.PATH_LENGTH,
                )
            if not is_root:
                usage = _extension(cert, x509.KeyUsage)
                if usage is not None and not usage.key_cert_sign:
                    raise ChainError(ChainFailure.PROFILE, f"sub-CA {_name(cert)} lacks keyUsage keyCertSign",
                                     Rule.KEY_CERT_SIGN)
                if usage is None:  # RFC 5280 lets it out; every ISO 15118 CA profile has keyUsage (critical)
                    raise ChainError(ChainFailure.PROFILE, f"sub-CA {_name(cert)} has no keyUsage (keyCertSign)",
                                     Rule.KEY_CERT_SIGN)

    def _check_domain_components(self, leaf: x509.Certificate, sub_cas: Sequence[x509.Certificate]) -> None:
        profile = self.profile
        components = [dc.upper() for dc in _domain_components(leaf)]
        if components and components != [profile.leaf_dc]:
            raise ChainError(ChainFailure.PROFILE, f"{profile.leaf_role} {_name(leaf)} carries DC="
                             f"{','.join(components)}; its profile gives DC={profile.leaf_dc}", Rule.DOMAIN_COMPONENT)
        if not components and profile.leaf_dc_mandatory:
            raise ChainError(ChainFailure.PROFILE, f"{profile.leaf_role} {_name(leaf)} must carry "
                             f"DC={profile.leaf_dc}", Rule.DOMAIN_COMPONENT)
        for cert in sub_cas:
            components = [dc.upper() for dc in _domain_components(cert)]
            if any(dc not in profile.sub_ca_dc for dc in components):
                raise ChainError(ChainFailure.PROFILE, f"sub-CA {_name(cert)} carries DC={','.join(components)}: "
                                 f"a sub-CA of another role cannot issue a {profile.leaf_role} (DC="
                                 f"{' or '.join(sorted(profile.sub_ca_dc))})", Rule.DOMAIN_COMPONENT)

    @staticmethod
    def _check_validity(path: tuple[x509.Certificate, ...], now: dt.datetime) -> None:
        for position, cert in enumerate(path):
            what = "trusted root " if position == len(path) - 1 else ""
            if now < cert.not_valid_before_utc:
                raise ChainError(
                    ChainFailure.NOT_YET_VALID,
                    f"{what}{_name(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}", Rule.VALIDITY,
                )
            if now > cert.not_valid_after_utc:
                raise ChainError(ChainFailure.EXPIRED,
                                 f"{what}{_name(cert)} expired at {cert.not_valid_after_utc.isoformat()}",
                                 Rule.VALIDITY)

    @staticmethod
    def _check_rfc5280(path: tuple[x509.Certificate, ...], now: dt.datetime) -> None:
        """The ECDSA path once more through cryptography's RFC 5280 validator (Ed448: see the module docstring)."""
        if isinstance(path[0].public_key(), ed448.Ed448PublicKey):
            return
        try:
            rfc5280_verifier([path[-1]], now).verify(path[0], list(path[1:-1]))
        except verification.VerificationError as e:
            raise ChainError(ChainFailure.PROFILE, f"RFC 5280 path validation refuses the chain: {e}",
                             Rule.RFC5280_VERIFIER) from None

    @staticmethod
    def _check_emaid(emaid: str | None, expected: str | None) -> None:
        if expected is not None and (emaid is None or normalize_emaid(emaid) != normalize_emaid(expected)):
            raise ChainError(ChainFailure.EMAID_MISMATCH,
                             f"the car sent eMAID {expected!r}, its contract certificate says {emaid!r}",
                             Rule.EMAID_MATCH)

    def _check_revocation(self, path: tuple[x509.Certificate, ...], now: dt.datetime) -> None:
        if self.revocation is None:
            return
        for cert, issuer in itertools.pairwise(path):
            status = self.revocation.status(cert, issuer, now)
            if status is RevocationStatus.REVOKED:
                raise ChainError(ChainFailure.REVOKED, f"{_name(cert)} (serial {cert.serial_number}) is revoked",
                                 Rule.REVOCATION)
            if status is RevocationStatus.UNKNOWN and self.reject_unknown_revocation:
                raise ChainError(ChainFailure.REVOCATION_UNKNOWN, f"revocation status of {_name(cert)} is unknown",
                                 Rule.REVOCATION)


def _key_cert_sign_if_present(_policy: object, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:  # RFC 5280 §6.1.4 (n)
        raise ValueError(f"{_name(cert)} issues certificates without keyUsage keyCertSign")


def rfc5280_verifier(anchors: Sequence[x509.Certificate], now: dt.datetime) -> verification.ClientVerifier:
    """cryptography's RFC 5280 path validator with the ISO depth (two sub-CAs) and no WebPKI extension demands
    (no SAN, EKU or AKI required: the ISO 15118 profiles are judged by our own rules), keyUsage keyCertSign
    checked on CAs (its permissive policy would not). ECDSA chains only: its algorithm policy refuses Ed448."""
    ca_policy = (
        verification.ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
        .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _key_cert_sign_if_present)
    )
    return (
        verification.PolicyBuilder()
        .store(verification.Store(list(anchors)))
        .time(now)
        .max_chain_depth(MAX_SUB_CAS)
        .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
        .build_client_verifier()
    )


class ContractChainValidator(CertificateChainValidator):
    """Validates contract certificate chains against MO and/or V2G roots (a :class:`CertificateChainValidator` of
    kind CONTRACT; called per PaymentDetailsReq (-2) or AuthorizationReq (-20))."""

    def __init__(
        self,
        trust_anchors: Iterable[x509.Certificate],
        *,
        revocation: RevocationChecker | None = None,
        reject_unknown_revocation: bool = False,
        check_domain_component: bool = True,
    ) -> None:
        super().__init__(trust_anchors, kind=ChainKind.CONTRACT, revocation=revocation,
                         reject_unknown_revocation=reject_unknown_revocation,
                         check_domain_component=check_domain_component)


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
