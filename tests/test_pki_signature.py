"""edge.pki.signature: V2G XML signatures over EXI (ISO 15118-2 P-256, ISO 15118-20 P-521 and Ed448).

Round trips go through the wire: the signed message is EXI-encoded, decoded again and verified from
what was decoded. Every failure case asserts the ResponseCode and the reason, and each starts from a
signature that verifies, so a test can only pass because of the one thing it changes.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448

import exi
from edge.pki import signature as sig
from edge.pki.signature import SignatureError
from exi.model import iso2_msgbody, iso2_msgdatatypes, iso2_msgdef, iso2_msgheader, xmldsig
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct

CHALLENGE = bytes(range(16))
SESSION = bytes.fromhex("0102030405060708")


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def p521() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP521R1())


@pytest.fixture(scope="module")
def ed() -> ed448.Ed448PrivateKey:
    return ed448.Ed448PrivateKey.generate()


def iso2_message(body_field: str, body_value, signature) -> iso2_msgdef.V2G_Message:
    body = iso2_msgbody.BodyType(**{body_field: body_value})
    return iso2_msgdef.V2G_Message(Header=iso2_msgheader.MessageHeaderType(SessionID=SESSION, Signature=signature),
                                   Body=body)


def over_the_wire(proto: str, message):
    return exi.decode(proto, exi.encode(proto, message))


def meter_info(reading: int = 123456) -> iso2_msgdatatypes.MeterInfoType:
    return iso2_msgdatatypes.MeterInfoType(MeterID="METER-0001", MeterReading=reading, TMeter=1_700_000_000)


def iso2_receipt(reading: int = 123456) -> iso2_msgbody.MeteringReceiptReqType:
    return iso2_msgbody.MeteringReceiptReqType(Id="id2", SessionID=SESSION, SAScheduleTupleID=1,
                                               MeterInfo=meter_info(reading))


def pnc_mode(challenge: bytes = CHALLENGE) -> cm.PnC_AReqAuthorizationModeType:
    chain = cm.ContractCertificateChainType(Certificate=b"\x30\x82\x01\x00" + bytes(60),
                                            SubCertificates=cm.SubCertificatesType(Certificate=[b"\x30" + bytes(40)]))
    return cm.PnC_AReqAuthorizationModeType(Id="aReq", GenChallenge=challenge, ContractCertificateChain=chain)


def iso20_auth_message(pnc, signature) -> cm.AuthorizationReqType:
    return cm.AuthorizationReqType(
        Header=ct.MessageHeaderType(SessionID=SESSION, TimeStamp=1_700_000_000, Signature=signature),
        SelectedAuthorizationService="PnC", PnC_AReqAuthorizationMode=pnc)


def auth_fragment(req=None) -> exi.Fragment:
    req = req or iso2_msgbody.AuthorizationReqType(Id="id1", GenChallenge=CHALLENGE)
    return exi.Fragment(sig.ISO2_BODY_NS, "AuthorizationReq", req)


def expect_error(code: str, words: str, fn, *args, **kwargs) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        fn(*args, **kwargs)
    assert info.value.response_code == code, info.value
    assert words in info.value.reason, info.value.reason
    return info.value


# --- round trips ----------------------------------------------------------------------------------

def test_iso2_authorization_req_round_trip_over_the_wire(p256):
    req = iso2_msgbody.AuthorizationReqType(Id="id1", GenChallenge=CHALLENGE)
    signature = sig.sign_authorization_req("iso2", req, p256)
    si = signature.SignedInfo
    assert si.SignatureMethod.Algorithm == "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    assert si.CanonicalizationMethod.Algorithm == "http://www.w3.org/TR/canonical-exi/"
    (ref,) = si.Reference
    assert ref.URI == "#id1" and ref.DigestMethod.Algorithm == "http://www.w3.org/2001/04/xmlenc#sha256"
    assert [t.Algorithm for t in ref.Transforms.Transform] == ["http://www.w3.org/TR/canonical-exi/"]
    # the digest is SHA-256 of the fragment encoding, whose first byte after the header is the
    # fragment grammar's event code for AuthorizationReq
    fragment_bytes = exi.encode("iso2", auth_fragment(req), fragment=True)
    assert ref.DigestValue == hashlib.sha256(fragment_bytes).digest()
    assert len(signature.SignatureValue.value) == 64  # raw r||s, not DER

    decoded = over_the_wire("iso2", iso2_message("AuthorizationReq", req, signature))
    sig.verify_authorization_req("iso2", decoded.Header.Signature, decoded.Body.AuthorizationReq, CHALLENGE,
                                 p256.public_key())


def test_signed_info_is_encoded_with_the_xmldsig_schema_grammar(p256):
    signature = sig.sign_authorization_req("iso2", iso2_msgbody.AuthorizationReqType(Id="id1", GenChallenge=CHALLENGE),
                                           p256)
    data = sig.signed_info_bytes(signature.SignedInfo)
    # the -2 message-set fragment grammar would encode the same element differently (8-bit event codes)
    in_message_set = exi.encode("iso2", exi.Fragment(sig.XMLDSIG_NS, "SignedInfo", signature.SignedInfo),
                                fragment=True)
    assert data != in_message_set
    assert exi.decode("xmldsig", data, fragment=True).value == signature.SignedInfo


def test_iso2_metering_receipt_round_trip(p256):
    receipt = iso2_receipt()
    signature = sig.sign_metering_receipt("iso2", receipt, p256)
    decoded = over_the_wire("iso2", iso2_message("MeteringReceiptReq", receipt, signature))
    sig.verify_metering_receipt("iso2", decoded.Header.Signature, decoded.Body.MeteringReceiptReq, p256.public_key(),
                                session_id=SESSION, meter_info=meter_info())


@pytest.mark.parametrize("key_name, method, digest, value_size", [
    ("p521", sig.ECDSA_SHA512_URI, sig.SHA512_URI, 132),
    ("ed", sig.ISO20_ED448_URI, sig.ISO20_SHAKE256_URI, 114),
])
def test_iso20_authorization_round_trip(request, key_name, method, digest, value_size):
    key = request.getfixturevalue(key_name)
    pnc = pnc_mode()
    signature = sig.sign_authorization_req("iso20", pnc, key)
    assert signature.SignedInfo.SignatureMethod.Algorithm == method
    (ref,) = signature.SignedInfo.Reference
    assert ref.DigestMethod.Algorithm == digest and len(ref.DigestValue) == 64
    assert len(signature.SignatureValue.value) == value_size
    decoded = over_the_wire("iso20-common", iso20_auth_message(pnc, signature))
    sig.verify_authorization_req("iso20", decoded.Header.Signature, decoded, CHALLENGE, key.public_key())


def test_iso20_metering_confirmation_round_trip(p521):
    data = cm.SignedMeteringDataType(
        Id="mc1", SessionID=SESSION,
        MeterInfo=ct.MeterInfoType(MeterID="METER-0001", ChargedEnergyReadingWh=1000, MeterTimestamp=1_700_000_000),
        Scheduled_SMDTControlMode=cm.Scheduled_SMDTControlModeType(SelectedScheduleTupleID=1))
    signature = sig.sign_metering_receipt("iso20", data, p521)
    message = cm.MeteringConfirmationReqType(
        Header=ct.MessageHeaderType(SessionID=SESSION, TimeStamp=1_700_000_000, Signature=signature),
        SignedMeteringData=data)
    decoded = over_the_wire("iso20-common", message)
    sig.verify_metering_receipt("iso20", decoded.Header.Signature, decoded, p521.public_key(), session_id=SESSION)
    decoded.SignedMeteringData.MeterInfo.ChargedEnergyReadingWh = 999
    expect_error("FAILED_MeteringSignatureNotValid", "digest mismatch", sig.verify_metering_receipt, "iso20",
                 decoded.Header.Signature, decoded, p521.public_key())


def iso2_installation_parts() -> list[exi.Fragment]:
    body = iso2_msgdatatypes
    ns = sig.ISO2_BODY_NS
    return [
        exi.Fragment(ns, "ContractSignatureCertChain",
                     body.CertificateChainType(Id="id1", Certificate=b"\x30\x82\x01\x00" + bytes(40))),
        exi.Fragment(ns, "ContractSignatureEncryptedPrivateKey",
                     body.ContractSignatureEncryptedPrivateKeyType(Id="id2", value=bytes(48))),
        exi.Fragment(ns, "DHpublickey", body.DiffieHellmanPublickeyType(Id="id3", value=b"\x04" + bytes(64))),
        # eMAID is declared twice with different types: its fragment uses EXI's relaxed grammar
        exi.Fragment(ns, "eMAID", body.EMAIDType(Id="id4", value="DEEDGC000000011")),
    ]


def test_several_references_sequence_or_mapping(p256):
    """CertificateInstallationRes (-2) signs several elements with one signature."""
    parts = iso2_installation_parts()
    signature = sig.sign("iso2", parts, p256)
    assert [r.URI for r in signature.SignedInfo.Reference] == ["#id1", "#id2", "#id3", "#id4"]
    sig.verify("iso2", signature, parts, p256.public_key())
    sig.verify("iso2", signature, {f.value.Id: f for f in reversed(parts)}, p256.public_key())
    with pytest.raises(ValueError, match="given under Id"):
        sig.verify("iso2", signature, {"id9": parts[0]}, p256.public_key())


def test_certificate_is_accepted_as_the_key(p256):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DEABCC123456789")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(p256.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(p256, hashes.SHA256()))
    signature = sig.sign("iso2", [auth_fragment()], p256)
    sig.verify("iso2", signature, [auth_fragment()], cert)


# --- failure cases: -2 ----------------------------------------------------------------------------

@pytest.fixture
def signed_parts(p256):
    parts = iso2_installation_parts()
    return parts, sig.sign("iso2", parts, p256)


def test_missing_reference(p256, signed_parts):
    parts, signature = signed_parts
    extra = exi.Fragment(sig.ISO2_BODY_NS, "AuthorizationReq",
                         iso2_msgbody.AuthorizationReqType(Id="id5", GenChallenge=CHALLENGE))
    expect_error("FAILED_SignatureError", "missing reference: no Reference covers #id5",
                 sig.verify, "iso2", signature, [*parts, extra], p256.public_key())


def test_reference_to_an_element_not_given(p256, signed_parts):
    parts, signature = signed_parts
    expect_error("FAILED_SignatureError", "Reference #id3 points at an element that is not among",
                 sig.verify, "iso2", signature, parts[:2], p256.public_key())


def test_digest_mismatch(p256, signed_parts):
    parts, signature = signed_parts
    parts[2].value.value = b"\x04" + bytes(63) + b"\x01"  # a key the charger did not send
    expect_error("FAILED_SignatureError", "digest mismatch: DHpublickey #id3", sig.verify, "iso2", signature, parts,
                 p256.public_key())


def test_bad_signature_value(p256, signed_parts):
    parts, signature = signed_parts
    value = bytearray(signature.SignatureValue.value)
    value[5] ^= 0x01
    signature.SignatureValue.value = bytes(value)
    expect_error("FAILED_SignatureError", "SignatureValue does not verify", sig.verify, "iso2", signature, parts,
                 p256.public_key())


def test_signature_value_of_the_wrong_length(p256, signed_parts):
    parts, signature = signed_parts
    signature.SignatureValue.value += b"\x00"
    expect_error("FAILED_SignatureError", "65 bytes", sig.verify, "iso2", signature, parts, p256.public_key())


def test_tampered_signed_info(p256):
    """Change an element and fix its DigestValue: the digests match, the SignedInfo signature does not."""
    req = iso2_msgbody.AuthorizationReqType(Id="id1", GenChallenge=CHALLENGE)
    signature = sig.sign_authorization_req("iso2", req, p256)
    forged = iso2_msgbody.AuthorizationReqType(Id="id1", GenChallenge=bytes(16))
    signature.SignedInfo.Reference[0].DigestValue = hashlib.sha256(
        exi.encode("iso2", auth_fragment(forged), fragment=True)).digest()
    expect_error("FAILED_SignatureError", "SignatureValue does not verify", sig.verify_authorization_req, "iso2",
                 signature, forged, bytes(16), p256.public_key())


def test_wrong_key(p256):
    signature = sig.sign("iso2", [auth_fragment()], p256)
    other = ec.generate_private_key(ec.SECP256R1())
    expect_error("FAILED_SignatureError", "SignatureValue does not verify", sig.verify, "iso2", signature,
                 [auth_fragment()], other.public_key())


@pytest.mark.parametrize("key_name, kind", [("p521", "secp521r1"), ("ed", "Ed448")])
def test_wrong_key_type_or_curve(request, p256, key_name, kind):
    signature = sig.sign("iso2", [auth_fragment()], p256)
    key = request.getfixturevalue(key_name)
    expect_error("FAILED_SignatureError", f"needs a secp256r1 key, the key given is {kind}", sig.verify, "iso2",
                 signature, [auth_fragment()], key.public_key())


@pytest.mark.parametrize("where, uri", [
    ("SignatureMethod", sig.ECDSA_SHA512_URI),
    ("CanonicalizationMethod", "http://www.w3.org/2001/10/xml-exc-c14n#"),
    ("DigestMethod", sig.SHA512_URI),
    ("Transform", "http://www.w3.org/2000/09/xmldsig#enveloped-signature"),
])
def test_wrong_algorithm_uri(p256, where, uri):
    signature = sig.sign("iso2", [auth_fragment()], p256)
    si = signature.SignedInfo
    target = {"SignatureMethod": si.SignatureMethod, "CanonicalizationMethod": si.CanonicalizationMethod,
              "DigestMethod": si.Reference[0].DigestMethod, "Transform": si.Reference[0].Transforms.Transform[0]}
    target[where].Algorithm = uri
    error = expect_error("FAILED_SignatureError", "wrong algorithm URI", sig.verify, "iso2", signature,
                         [auth_fragment()], p256.public_key())
    assert uri in error.reason


def test_no_signature_or_an_empty_one(p256):
    expect_error("FAILED_SignatureError", "no Signature", sig.verify, "iso2", None, [auth_fragment()],
                 p256.public_key())
    expect_error("FAILED_SignatureError", "lacks SignedInfo", sig.verify, "iso2", xmldsig.SignatureType(),
                 [auth_fragment()], p256.public_key())


def test_reference_shapes(p256):
    signature = sig.sign("iso2", [auth_fragment()], p256)
    twice = copy.deepcopy(signature)
    twice.SignedInfo.Reference.append(copy.deepcopy(twice.SignedInfo.Reference[0]))
    expect_error("FAILED_SignatureError", "two References point at #id1", sig.verify, "iso2", twice,
                 [auth_fragment()], p256.public_key())
    external = copy.deepcopy(signature)
    external.SignedInfo.Reference[0].URI = "http://example.com/doc"
    expect_error("FAILED_SignatureError", "does not point at an element Id", sig.verify, "iso2", external,
                 [auth_fragment()], p256.public_key())
    without_id = auth_fragment(iso2_msgbody.AuthorizationReqType(GenChallenge=CHALLENGE))
    expect_error("FAILED_SignatureError", "carries no Id", sig.verify, "iso2", signature, [without_id],
                 p256.public_key())


def test_transforms_may_be_absent(p256):
    """The schema makes Transforms optional; a Reference without it still names its digest."""
    signature = sig.sign("iso2", [auth_fragment()], p256)
    signature.SignedInfo.Reference[0].Transforms = None
    # the SignedInfo changed, so re-sign it the way a peer omitting Transforms would
    from edge.pki.signature import _raw_signature
    signature.SignatureValue.value = _raw_signature(sig.ECDSA_P256_SHA256, p256,
                                                    sig.signed_info_bytes(signature.SignedInfo))
    sig.verify("iso2", signature, [auth_fragment()], p256.public_key())


# --- AuthorizationReq and MeteringReceipt rules ---------------------------------------------------

def test_tampered_gen_challenge(p256):
    """The car signed a challenge that is not the one the charger issued: FAILED_ChallengeInvalid; a
    challenge changed after signing: the digest no longer matches."""
    stale = iso2_msgbody.AuthorizationReqType(Id="id1", GenChallenge=bytes(16))
    signature = sig.sign_authorization_req("iso2", stale, p256)
    expect_error("FAILED_ChallengeInvalid", "is not the one issued", sig.verify_authorization_req, "iso2",
                 signature, stale, CHALLENGE, p256.public_key())
    changed = iso2_msgbody.AuthorizationReqType(Id="id1", GenChallenge=CHALLENGE)
    expect_error("FAILED_SignatureError", "digest mismatch", sig.verify_authorization_req, "iso2", signature,
                 changed, CHALLENGE, p256.public_key())
    expect_error("FAILED_ChallengeInvalid", "GenChallenge none", sig.verify_authorization_req, "iso2", signature,
                 iso2_msgbody.AuthorizationReqType(Id="id1"), CHALLENGE, p256.public_key())


def test_tampered_gen_challenge_iso20(p521):
    pnc = pnc_mode(bytes(16))
    signature = sig.sign_authorization_req("iso20", pnc, p521)
    expect_error("WARNING_ChallengeInvalid", "is not the one issued", sig.verify_authorization_req, "iso20",
                 signature, iso20_auth_message(pnc, signature), CHALLENGE, p521.public_key())
    eim = iso20_auth_message(None, None)
    expect_error("FAILED_SignatureError", "no PnC_AReqAuthorizationMode", sig.verify_authorization_req, "iso20",
                 None, eim, CHALLENGE, p521.public_key())


@pytest.mark.parametrize("tamper", ["SessionID", "MeterReading"])
def test_tampered_metering_receipt(p256, tamper):
    receipt = iso2_receipt()
    signature = sig.sign_metering_receipt("iso2", receipt, p256)
    decoded = over_the_wire("iso2", iso2_message("MeteringReceiptReq", receipt, signature)).Body.MeteringReceiptReq
    if tamper == "SessionID":
        decoded.SessionID = bytes.fromhex("0102030405060709")
    else:
        decoded.MeterInfo.MeterReading += 1
    expect_error("FAILED_MeteringSignatureNotValid", "digest mismatch: MeteringReceiptReq #id2",
                 sig.verify_metering_receipt, "iso2", signature, decoded, p256.public_key())


def test_metering_receipt_must_match_the_session(p256):
    """Validly signed, but for another session or with a meter reading the charger never sent."""
    receipt = iso2_receipt()
    signature = sig.sign_metering_receipt("iso2", receipt, p256)
    expect_error("FAILED_MeteringSignatureNotValid", "not this session's", sig.verify_metering_receipt, "iso2",
                 signature, receipt, p256.public_key(), session_id=bytes(8))
    expect_error("FAILED_MeteringSignatureNotValid", "MeterInfo is not the one the charger sent",
                 sig.verify_metering_receipt, "iso2", signature, receipt, p256.public_key(),
                 meter_info=meter_info(123457))
    expect_error("FAILED_MeteringSignatureNotValid", "no Signature", sig.verify_metering_receipt, "iso2", None,
                 receipt, p256.public_key())


# --- suites and bad input -------------------------------------------------------------------------

def test_iso20_refuses_the_iso2_suite_unless_declared(p256):
    """Josev's -20 EVCC signs with the -2 suite (P-256, SHA-256): only accepted when the caller says so."""
    pnc = pnc_mode()
    signature = sig.sign_authorization_req("iso20", pnc, p256, suite=sig.ECDSA_P256_SHA256)
    expect_error("FAILED_SignatureError", "wrong algorithm URI: SignatureMethod", sig.verify_authorization_req,
                 "iso20", signature, pnc, CHALLENGE, p256.public_key())
    sig.verify_authorization_req("iso20", signature, pnc, CHALLENGE, p256.public_key(),
                                 suites=(*sig.SUITES["iso20"], sig.ECDSA_P256_SHA256))


def test_iso20_key_must_match_the_method(p521, ed):
    signature = sig.sign_authorization_req("iso20", pnc_mode(), ed)
    expect_error("FAILED_SignatureError", "needs a Ed448 key, the key given is secp521r1",
                 sig.verify_authorization_req, "iso20", signature, pnc_mode(), CHALLENGE, p521.public_key())


def test_rfc9231_ed448_alias_is_opt_in(ed):
    signature = sig.sign_authorization_req("iso20", pnc_mode(), ed, suite=sig.ED448_RFC9231_SHA512)
    assert signature.SignedInfo.SignatureMethod.Algorithm == "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed448"
    expect_error("FAILED_SignatureError", "wrong algorithm URI", sig.verify_authorization_req, "iso20", signature,
                 pnc_mode(), CHALLENGE, ed.public_key())
    sig.verify_authorization_req("iso20", signature, pnc_mode(), CHALLENGE, ed.public_key(),
                                 suites=[sig.ED448_RFC9231_SHA512])


def test_signing_refuses_unusable_input(p256, p521, ed):
    with pytest.raises(ValueError, match="secp521r1 key cannot sign ISO 15118-2"):
        sig.sign("iso2", [auth_fragment()], p521)
    with pytest.raises(ValueError, match="secp256r1 key cannot sign ISO 15118-20"):
        sig.sign("iso20", [exi.Fragment(sig.ISO20_COMMON_NS, "PnC_AReqAuthorizationMode", pnc_mode())], p256)
    with pytest.raises(ValueError, match="needs a Ed448 key"):
        sig.sign("iso20", [auth_fragment()], p521, suite=sig.ED448_SHAKE256)
    with pytest.raises(ValueError, match="has no Id"):
        sig.sign("iso2", [auth_fragment(iso2_msgbody.AuthorizationReqType(GenChallenge=CHALLENGE))], p256)
    with pytest.raises(ValueError, match="share the Id"):
        sig.sign("iso2", [auth_fragment(), auth_fragment()], p256)
    with pytest.raises(ValueError, match="cannot be EXI-encoded"):
        sig.sign("iso2", [exi.Fragment(sig.ISO2_BODY_NS, "NoSuchElement", iso2_msgbody.AuthorizationReqType(
            Id="x"))], p256)
    with pytest.raises(ValueError, match="nothing to sign"):
        sig.sign("iso2", [], p256)
    with pytest.raises(ValueError, match="ISO 15118-2 and -20 only"):
        sig.sign("din", [auth_fragment()], p256)
    with pytest.raises(TypeError, match="ISO 15118-2 AuthorizationReqType"):
        sig.sign_authorization_req("iso2", pnc_mode(), p256)
