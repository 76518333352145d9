"""XML signatures over EXI: the V2G profile of W3C XML Signature in ISO 15118-2 and ISO 15118-20.

How a V2G signature is made (ISO 15118-2 Annex J, ISO 15118-20 clause 8.3; checked against Josev's
``iso15118.shared.security`` and libcbv2g users):

* every signed element carries an ``Id`` attribute and gets one ``Reference URI="#Id"`` whose
  DigestValue is the hash of that element's **EXI fragment encoding** in its own message set's
  fragment grammar (``exi.encode(proto, exi.Fragment(ns, name, value), fragment=True)``);
  Transform and CanonicalizationMethod are ``http://www.w3.org/TR/canonical-exi/``;
* ``SignedInfo`` is EXI-encoded as a fragment of the **XML Signature schema on its own** (the
  ``xmldsig`` codec, 6-bit event codes), not of the message set that carries it (-2 Annex J.4; Josev,
  EVerest and the tux-evse encoders do the same for -20), and the signature is made over those bytes;
* SignatureValue is raw ``r||s`` for ECDSA (not DER), each the curve's coordinate size: 32+32 bytes for
  P-256, 66+66 for P-521; Ed448 signatures are the 114 bytes of RFC 8032 (pure Ed448, empty context);
* the Signature sits in the message Header; only elements with an ``Id`` can be referenced, and in
  both schema sets no element that carries an ``Id`` contains a Header, so a signature never covers itself.

Algorithms (``Suite``): -2 signs with ECDSA on secp256r1 over SHA-256 and digests with SHA-256;
-20 uses ECDSA on secp521r1 with SHA-512 (SHA-512 digests) or Ed448 with SHAKE256 digests (64 bytes),
named with the ISO URNs ``urn:iso:std:iso:15118:-20:Security:xmldsig#Ed448`` and ``...:xmlenc#SHAKE256``
(as EVerest's -20 code has them, citing [V2G20-765/766] and [V2G20-2473..2476]; the ISO text itself was
not at hand, so the Ed448 names are the one thing here not checked against a running peer).
Peers that deviate (Josev's -20 EVCC signs with the -2 suite; some code names Ed448 with the RFC 9231
URI) are accepted only when the caller lists their suite in ``suites=``: a declared quirk, never by default.

Sans-IO: bytes and model objects in, model objects or :class:`SignatureError` out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

import exi
from exi.model import iso2_msgbody, iso20_commonmessages, xmldsig
from exi.model.iso2_msgdatatypes import responseCodeType as Iso2ResponseCode
from exi.model.iso20_commontypes import responseCodeType as Iso20ResponseCode

__all__ = [
    "CANONICAL_EXI", "ECDSA_P256_SHA256", "ECDSA_P521_SHA512", "ED448_RFC9231_SHA512", "ED448_SHAKE256",
    "SUITES", "XMLDSIG_NS", "SignatureError", "Suite", "sign", "sign_authorization_req", "sign_metering_receipt",
    "signed_info_bytes", "verify", "verify_authorization_req", "verify_metering_receipt",
]

XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
ISO2_BODY_NS = "urn:iso:15118:2:2013:MsgBody"
ISO20_COMMON_NS = "urn:iso:std:iso:15118:-20:CommonMessages"

CANONICAL_EXI = "http://www.w3.org/TR/canonical-exi/"
ECDSA_SHA256_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ECDSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"
ISO20_ED448_URI = "urn:iso:std:iso:15118:-20:Security:xmldsig#Ed448"
ISO20_SHAKE256_URI = "urn:iso:std:iso:15118:-20:Security:xmlenc#SHAKE256"
RFC9231_ED448_URI = "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed448"

#: -20 SHAKE256 digests are 64 bytes long, as long as the SHA-512 ones of the other -20 suite
SHAKE256_DIGEST_SIZE = 64
ED448_SIGNATURE_SIZE = 114

PublicKey = ec.EllipticCurvePublicKey | ed448.Ed448PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey

_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    SHA256_URI: lambda data: hashlib.sha256(data).digest(),
    SHA512_URI: lambda data: hashlib.sha512(data).digest(),
    ISO20_SHAKE256_URI: lambda data: hashlib.shake_256(data).digest(SHAKE256_DIGEST_SIZE),
}


@dataclass(frozen=True, slots=True)
class Suite:
    """One signature profile: the SignatureMethod and DigestMethod URIs and the key they go with."""

    name: str
    signature_method: str
    digest_method: str
    key: str  # "secp256r1" / "secp521r1" (cryptography's curve names) or "Ed448"

    def signature_hash(self) -> hashes.HashAlgorithm:
        """The hash ECDSA applies to the SignedInfo bytes (Ed448 signs them whole and has none)."""
        return hashes.SHA256() if self.signature_method == ECDSA_SHA256_URI else hashes.SHA512()


ECDSA_P256_SHA256 = Suite("ECDSA secp256r1 SHA-256", ECDSA_SHA256_URI, SHA256_URI, "secp256r1")
ECDSA_P521_SHA512 = Suite("ECDSA secp521r1 SHA-512", ECDSA_SHA512_URI, SHA512_URI, "secp521r1")
ED448_SHAKE256 = Suite("Ed448 SHAKE256", ISO20_ED448_URI, ISO20_SHAKE256_URI, "Ed448")
#: Ed448 named with RFC 9231's URI and SHA-512 digests, as some -20 code does; opt-in only
ED448_RFC9231_SHA512 = Suite("Ed448 (RFC 9231 URI) SHA-512", RFC9231_ED448_URI, SHA512_URI, "Ed448")

#: the suites each standard allows, the default of ``verify``; ``sign`` picks by the key
SUITES: dict[str, tuple[Suite, ...]] = {
    "iso2": (ECDSA_P256_SHA256,),
    "iso20": (ECDSA_P521_SHA512, ED448_SHAKE256),
}


class SignatureError(Exception):
    """A signature (or what it signs) is not acceptable: ``reason`` says why in words,
    ``response_code`` is the ResponseCode of the message's protocol to answer with."""

    def __init__(self, reason: str, response_code: StrEnum) -> None:
        super().__init__(f"{response_code}: {reason}")
        self.reason = reason
        self.response_code = response_code


# --- protocol labels ------------------------------------------------------------------------------

def _family(proto: str) -> tuple[str, str]:
    """(standard, exi codec label): "iso2" -> ("iso2", "iso2"); "iso20"/"iso20-xx" -> ("iso20", ...)."""
    if proto == "iso2":
        return "iso2", "iso2"
    if proto == "iso20":
        return "iso20", "iso20-common"
    if proto.startswith("iso20-") and proto in exi.PROTOCOLS:
        return "iso20", proto
    raise ValueError(f"XML signatures exist in ISO 15118-2 and -20 only: protocol {proto!r} is not "
                     "one of iso2, iso20, iso20-common, iso20-ac, iso20-dc, iso20-acdp, iso20-wpt")


def _codes(family: str) -> type[StrEnum]:
    return Iso2ResponseCode if family == "iso2" else Iso20ResponseCode


# --- keys -----------------------------------------------------------------------------------------

def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return key.curve.name
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def _public_key(key: object) -> object:
    """Accept a certificate where a public key is wanted (the contract leaf is what callers hold)."""
    return key.public_key() if isinstance(key, x509.Certificate) else key


def _coordinate_size(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> int:
    """Bytes of r and of s in a raw ECDSA signature: 32 for P-256, 66 for P-521."""
    return (key.curve.key_size + 7) // 8


# --- encodings ------------------------------------------------------------------------------------

def _element_bytes(exi_proto: str, fragment: exi.Fragment) -> bytes:
    """What a Reference digests: the element as an EXI fragment of its own message set."""
    return exi.encode(exi_proto, fragment, fragment=True)


def signed_info_bytes(signed_info: xmldsig.SignedInfoType) -> bytes:
    """The exact bytes a V2G signature is made over: SignedInfo as an xmldsig-schema EXI fragment."""
    return exi.encode("xmldsig", exi.Fragment(XMLDSIG_NS, "SignedInfo", signed_info), fragment=True)


# --- sign -----------------------------------------------------------------------------------------

def _suite_for_key(family: str, private_key: object) -> Suite:
    kind = _key_kind(private_key)
    for suite in SUITES[family]:
        if suite.key == kind:
            return suite
    allowed = ", ".join(s.key for s in SUITES[family])
    raise ValueError(f"a {kind} key cannot sign ISO 15118-{family[3:]} messages (allowed: {allowed})")


def _raw_signature(suite: Suite, private_key: Any, data: bytes) -> bytes:
    if suite.key == "Ed448":
        return private_key.sign(data)
    r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(suite.signature_hash())))
    size = _coordinate_size(private_key)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def sign(proto: str, referenced: Sequence[exi.Fragment], private_key: PrivateKey, *,
         suite: Suite | None = None) -> xmldsig.SignatureType:
    """Sign the ``referenced`` elements (each value with an ``Id``) for a message of ``proto``
    ("iso2", or "iso20" / an iso20 message-set label): the Signature for the message Header.

    The suite follows from the key (-2: secp256r1; -20: secp521r1 or Ed448) unless ``suite`` is given
    (tests and declared peer quirks). Raises ValueError on unusable input."""
    family, exi_proto = _family(proto)
    if suite is None:
        suite = _suite_for_key(family, private_key)
    elif _key_kind(private_key) != suite.key:
        raise ValueError(f"suite {suite.name!r} needs a {suite.key} key, not {_key_kind(private_key)}")
    if not referenced:
        raise ValueError("nothing to sign: no referenced elements given")
    references: list[xmldsig.ReferenceType] = []
    seen: set[str] = set()
    for fragment in referenced:
        element_id = getattr(fragment.value, "Id", None)
        if not element_id:
            raise ValueError(f"{fragment.name} has no Id: a Reference can only point at an element with one")
        if element_id in seen:
            raise ValueError(f"two referenced elements share the Id {element_id!r}")
        seen.add(element_id)
        try:
            encoded = _element_bytes(exi_proto, fragment)
        except exi.ExiError as e:
            raise ValueError(f"{fragment.name} cannot be EXI-encoded for {exi_proto}: {e}") from e
        references.append(xmldsig.ReferenceType(
            URI=f"#{element_id}",
            Transforms=xmldsig.TransformsType(Transform=[xmldsig.TransformType(Algorithm=CANONICAL_EXI)]),
            DigestMethod=xmldsig.DigestMethodType(Algorithm=suite.digest_method),
            DigestValue=_DIGESTS[suite.digest_method](encoded),
        ))
    signed_info = xmldsig.SignedInfoType(
        CanonicalizationMethod=xmldsig.CanonicalizationMethodType(Algorithm=CANONICAL_EXI),
        SignatureMethod=xmldsig.SignatureMethodType(Algorithm=suite.signature_method),
        Reference=references,
    )
    value = _raw_signature(suite, private_key, signed_info_bytes(signed_info))
    return xmldsig.SignatureType(SignedInfo=signed_info, SignatureValue=xmldsig.SignatureValueType(value=value))


# --- verify ---------------------------------------------------------------------------------------

def _by_id(referenced: Sequence[exi.Fragment] | Mapping[str, exi.Fragment], fail: Callable[[str], NoReturn]
           ) -> dict[str, exi.Fragment]:
    if isinstance(referenced, Mapping):
        for element_id, fragment in referenced.items():
            if getattr(fragment.value, "Id", None) != element_id:
                raise ValueError(f"{fragment.name} is given under Id {element_id!r} but carries "
                                 f"Id {getattr(fragment.value, 'Id', None)!r}")
        return dict(referenced)
    out: dict[str, exi.Fragment] = {}
    for fragment in referenced:
        element_id = getattr(fragment.value, "Id", None)
        if not element_id:
            fail(f"{fragment.name} carries no Id, so no Reference can cover it")
        if element_id in out:
            fail(f"two signed elements carry the same Id {element_id!r}")
        out[element_id] = fragment
    return out


def _check_signature_value(suite: Suite, public_key: Any, value: bytes, data: bytes,
                           fail: Callable[[str], NoReturn]) -> None:
    if suite.key == "Ed448":
        if len(value) != ED448_SIGNATURE_SIZE:
            fail(f"SignatureValue is {len(value)} bytes; Ed448 signatures are {ED448_SIGNATURE_SIZE}")
        try:
            public_key.verify(value, data)
        except InvalidSignature:
            fail("SignatureValue does not verify with the given key (SignedInfo changed or wrong key)")
        return
    size = _coordinate_size(public_key)
    if len(value) != 2 * size:
        fail(f"SignatureValue is {len(value)} bytes; {suite.key} r||s is {2 * size}")
    der = encode_dss_signature(int.from_bytes(value[:size], "big"), int.from_bytes(value[size:], "big"))
    try:
        public_key.verify(der, data, ec.ECDSA(suite.signature_hash()))
    except InvalidSignature:
        fail("SignatureValue does not verify with the given key (SignedInfo changed or wrong key)")


def verify(proto: str, signature: xmldsig.SignatureType | None,
           referenced: Sequence[exi.Fragment] | Mapping[str, exi.Fragment],
           public_key: PublicKey | x509.Certificate, *, suites: Collection[Suite] | None = None) -> None:
    """Check that ``signature`` covers exactly the ``referenced`` elements, that each digest matches
    their EXI fragment encoding and that SignatureValue verifies with ``public_key`` (or a certificate's
    key). Returns None; raises :class:`SignatureError` with FAILED_SignatureError of the protocol.

    ``suites`` (default: what the standard allows, :data:`SUITES`) lists acceptable algorithms."""
    family, exi_proto = _family(proto)
    code = _codes(family).FAILED_SignatureError

    def fail(reason: str) -> NoReturn:
        raise SignatureError(reason, code)

    allowed = tuple(SUITES[family] if suites is None else suites)
    if signature is None:
        fail("the message carries no Signature in its Header")
    signed_info = signature.SignedInfo
    if signed_info is None or signature.SignatureValue is None or not signature.SignatureValue.value:
        fail("the Signature lacks SignedInfo or SignatureValue")
    canonicalization = getattr(signed_info.CanonicalizationMethod, "Algorithm", None)
    if canonicalization != CANONICAL_EXI:
        fail(f"wrong algorithm URI: CanonicalizationMethod {canonicalization!r} is not {CANONICAL_EXI}")
    method = getattr(signed_info.SignatureMethod, "Algorithm", None)
    suite = next((s for s in allowed if s.signature_method == method), None)
    if suite is None:
        fail(f"wrong algorithm URI: SignatureMethod {method!r} is not allowed here "
             f"(allowed: {', '.join(s.signature_method for s in allowed)})")
    public_key = _public_key(public_key)
    if _key_kind(public_key) != suite.key:
        fail(f"wrong key: {suite.signature_method} needs a {suite.key} key, the key given is "
             f"{_key_kind(public_key)}")

    elements = _by_id(referenced, fail)
    if not elements:
        raise ValueError("no signed elements given to check the signature against")
    if not signed_info.Reference:
        fail("SignedInfo has no Reference")
    covered: set[str] = set()
    for reference in signed_info.Reference:
        uri = reference.URI or ""
        if not uri.startswith("#") or len(uri) < 2:
            fail(f"Reference URI {reference.URI!r} does not point at an element Id ('#Id')")
        element_id = uri[1:]
        if element_id in covered:
            fail(f"two References point at #{element_id}")
        covered.add(element_id)
        fragment = elements.get(element_id)
        if fragment is None:
            fail(f"Reference #{element_id} points at an element that is not among the signed elements "
                 f"given ({', '.join('#' + i for i in elements)})")
        transforms = reference.Transforms.Transform if reference.Transforms is not None else []
        if reference.Transforms is not None and [t.Algorithm for t in transforms] != [CANONICAL_EXI]:
            fail(f"wrong algorithm URI: Reference #{element_id} Transforms "
                 f"{[t.Algorithm for t in transforms]} is not one {CANONICAL_EXI}")
        digest_method = getattr(reference.DigestMethod, "Algorithm", None)
        if digest_method != suite.digest_method:
            fail(f"wrong algorithm URI: Reference #{element_id} DigestMethod {digest_method!r} is not "
                 f"{suite.digest_method} (as {suite.signature_method} requires)")
        try:
            encoded = _element_bytes(exi_proto, fragment)
        except exi.ExiError as e:
            fail(f"{fragment.name} cannot be EXI-encoded for {exi_proto}: {e}")
        if not hmac.compare_digest(_DIGESTS[digest_method](encoded), reference.DigestValue or b""):
            fail(f"digest mismatch: {fragment.name} #{element_id} is not what was signed")
    missing = [i for i in elements if i not in covered]
    if missing:
        fail(f"missing reference: no Reference covers {', '.join('#' + i for i in missing)}")
    try:
        data = signed_info_bytes(signed_info)
    except exi.ExiError as e:
        fail(f"SignedInfo cannot be EXI-encoded: {e}")
    _check_signature_value(suite, public_key, signature.SignatureValue.value, data, fail)


# --- the messages a session signs and checks ------------------------------------------------------

def _authorization_fragment(family: str, authorization_req: Any) -> exi.Fragment:
    """-2: the AuthorizationReq body element; -20: its PnC_AReqAuthorizationMode ([V2G20-1063])."""
    if family == "iso2":
        if not isinstance(authorization_req, iso2_msgbody.AuthorizationReqType):
            raise TypeError(f"expected an ISO 15118-2 AuthorizationReqType, got {type(authorization_req).__name__}")
        return exi.Fragment(ISO2_BODY_NS, "AuthorizationReq", authorization_req)
    pnc = authorization_req
    if isinstance(authorization_req, iso20_commonmessages.AuthorizationReqType):
        pnc = authorization_req.PnC_AReqAuthorizationMode
        if pnc is None:
            raise SignatureError("the AuthorizationReq carries no PnC_AReqAuthorizationMode to verify",
                                 Iso20ResponseCode.FAILED_SignatureError)
    if not isinstance(pnc, iso20_commonmessages.PnC_AReqAuthorizationModeType):
        raise TypeError("expected an ISO 15118-20 AuthorizationReqType or PnC_AReqAuthorizationModeType, "
                        f"got {type(authorization_req).__name__}")
    return exi.Fragment(ISO20_COMMON_NS, "PnC_AReqAuthorizationMode", pnc)


def _metering_fragment(family: str, metering: Any) -> exi.Fragment:
    """-2: the MeteringReceiptReq body element; -20: SignedMeteringData of MeteringConfirmationReq."""
    if family == "iso2":
        if not isinstance(metering, iso2_msgbody.MeteringReceiptReqType):
            raise TypeError(f"expected an ISO 15118-2 MeteringReceiptReqType, got {type(metering).__name__}")
        return exi.Fragment(ISO2_BODY_NS, "MeteringReceiptReq", metering)
    data = metering
    if isinstance(metering, iso20_commonmessages.MeteringConfirmationReqType):
        data = metering.SignedMeteringData
    if not isinstance(data, iso20_commonmessages.SignedMeteringDataType):
        raise TypeError("expected an ISO 15118-20 MeteringConfirmationReqType or SignedMeteringDataType, "
                        f"got {type(metering).__name__}")
    return exi.Fragment(ISO20_COMMON_NS, "SignedMeteringData", data)


def _exi_label(family: str) -> str:
    return "iso2" if family == "iso2" else "iso20-common"


def sign_authorization_req(proto: str, authorization_req: Any, private_key: PrivateKey, *,
                           suite: Suite | None = None) -> xmldsig.SignatureType:
    """The header Signature an EV puts on its PnC AuthorizationReq (contract key): -2 over the
    AuthorizationReq (Id and GenChallenge set), -20 over PnC_AReqAuthorizationMode."""
    family, _ = _family(proto)
    return sign(_exi_label(family), [_authorization_fragment(family, authorization_req)], private_key, suite=suite)


def sign_metering_receipt(proto: str, metering_receipt: Any, private_key: PrivateKey, *,
                          suite: Suite | None = None) -> xmldsig.SignatureType:
    """The header Signature an EV puts on MeteringReceiptReq (-2) / MeteringConfirmationReq (-20)."""
    family, _ = _family(proto)
    return sign(_exi_label(family), [_metering_fragment(family, metering_receipt)], private_key, suite=suite)


def verify_authorization_req(proto: str, header_signature: xmldsig.SignatureType | None, authorization_req: Any,
                             gen_challenge_expected: bytes, contract_public_key: PublicKey | x509.Certificate, *,
                             suites: Collection[Suite] | None = None) -> None:
    """Check a PnC AuthorizationReq: its GenChallenge is the one the charger issued (PaymentDetailsRes
    in -2, AuthorizationSetupRes in -20), else FAILED_ChallengeInvalid (-2) / WARNING_ChallengeInvalid
    (-20); then the header signature over it with the contract key, else FAILED_SignatureError."""
    family, _ = _family(proto)
    fragment = _authorization_fragment(family, authorization_req)
    challenge = fragment.value.GenChallenge
    if challenge is None or challenge != gen_challenge_expected:
        code = (Iso2ResponseCode.FAILED_ChallengeInvalid if family == "iso2"
                else Iso20ResponseCode.WARNING_ChallengeInvalid)
        shown = challenge.hex() if challenge is not None else "none"
        raise SignatureError(f"GenChallenge {shown} is not the one issued ({gen_challenge_expected.hex()})", code)
    verify(_exi_label(family), header_signature, [fragment], contract_public_key, suites=suites)


def verify_metering_receipt(proto: str, header_signature: xmldsig.SignatureType | None, metering_receipt: Any,
                            contract_public_key: PublicKey | x509.Certificate, *, session_id: bytes | None = None,
                            meter_info: Any = None, suites: Collection[Suite] | None = None) -> None:
    """Check a MeteringReceiptReq (-2) / MeteringConfirmationReq (-20): the header signature with the
    contract key, then (when given) that it names this ``session_id`` and repeats the ``meter_info``
    the charger sent. Any failure: FAILED_MeteringSignatureNotValid."""
    family, _ = _family(proto)
    code = _codes(family).FAILED_MeteringSignatureNotValid
    fragment = _metering_fragment(family, metering_receipt)
    try:
        verify(_exi_label(family), header_signature, [fragment], contract_public_key, suites=suites)
    except SignatureError as e:
        raise SignatureError(e.reason, code) from None
    signed = fragment.value
    if session_id is not None and signed.SessionID != session_id:
        shown = signed.SessionID.hex() if signed.SessionID is not None else "none"
        raise SignatureError(f"the receipt names SessionID {shown}, not this session's {session_id.hex()}", code)
    if meter_info is not None and signed.MeterInfo != meter_info:
        raise SignatureError("the receipt's MeterInfo is not the one the charger sent", code)
