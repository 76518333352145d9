"""Signature interop: our edge.pki.signature against independent implementations.

* Josev (PyPI ``iso15118`` 0.31.2, its own EXIficient codec and ``create_signature`` /
  ``verify_signature``, run by ``josev_signature_peer.py`` in its venv) signs an ISO 15118-2
  AuthorizationReq and MeteringReceiptReq that we verify, and verifies the ones we sign.
* Josev has no -20 algorithms (P-521, Ed448), so -20 signatures are checked against EXIficient (the
  same jar, through the ``exificient`` bridge): its fragment encodings of the signed element and of
  SignedInfo must be the bytes we digest and sign, and the signature must verify over its bytes.
* Real signed messages from the shared vectors: Josev's -20 PnC AuthorizationReqs (signed with the
  -2 suite, certificate in the message) and a libcbv2g -2 AuthorizationReq fragment.

Why digests can differ between EXI encoders, shown in the last tests: EXIficient with EXI's default
options adds value strings to the string table, so the second ``http://www.w3.org/TR/canonical-exi/``
in SignedInfo (Transform after CanonicalizationMethod) becomes a compact string-table hit. Josev's jar
turns that off (valueMaxLength=0, valuePartitionCapacity=0) as cbexigen/OpenV2G never emit hits, and
so do we: those three agree byte for byte.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

import exi
from edge.pki import signature as sig
from edge.pki.signature import SignatureError
from exi.model import iso2_msgbody, iso2_msgdatatypes, iso2_msgdef, iso2_msgheader
from exi.model import iso20_commonmessages as cm
from tests.vectors import load_vectors

from .exificient_setup import DEFAULT_CACHE_DIR, ExificientSetupError, ensure_venv, venv_python

PEER_SCRIPT = Path(__file__).resolve().parent / "josev_signature_peer.py"
SESSION_ID = "0a1b2c3d4e5f6071"
CHALLENGE = bytes.fromhex("00112233445566778899aabbccddeeff")
METER_INFO = {"MeterID": "METER-0001", "MeterReading": 4711, "MeterStatus": 1, "TMeter": 1_700_000_000}


def _josev_venv_python() -> Path:
    """Josev's venv python; skips (fails in CI) without java/javac or with EDGE_SKIP_EXIFICIENT=1."""
    stop = pytest.fail if os.environ.get("CI") else pytest.skip
    if os.environ.get("EDGE_SKIP_EXIFICIENT") == "1":
        stop("EDGE_SKIP_EXIFICIENT=1: signature interop with Josev NOT tested")
    if not (shutil.which("java") and shutil.which("javac")):
        stop("signature interop with Josev NOT tested: it needs java and javac "
             "(apt-get install openjdk-17-jdk-headless)")
    cache = Path(os.environ.get("EDGE_EXIFICIENT_CACHE") or DEFAULT_CACHE_DIR)
    try:
        return venv_python(ensure_venv(cache))
    except ExificientSetupError as e:
        pytest.fail(f"could not set up the Josev/EXIficient venv: {e}")


def run_josev(python: Path, workdir: Path, request: dict, timeout: float = 120.0) -> dict:
    """One run of the peer script (one JVM); its own process group, killed whatever happens."""
    (workdir / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "JAVA_TOOL_OPTIONS": "-Xmx256m"}
    proc = subprocess.Popen([str(python), str(PEER_SCRIPT), "request.json", "result.json"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        log = b"(timed out)"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Josev's JVM child too
        except ProcessLookupError:
            pass
        proc.wait()
    result = workdir / "result.json"
    if proc.returncode != 0 or not result.exists():
        pytest.fail(f"Josev's signature peer failed (exit {proc.returncode}):\n{log.decode(errors='replace')[-3000:]}")
    return json.loads(result.read_text())


def self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A contract-like leaf for Josev's verify_signature, which takes a certificate, not a key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DEABCC1234567X")])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(4711).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def our_meter_info() -> iso2_msgdatatypes.MeterInfoType:
    return iso2_msgdatatypes.MeterInfoType(**METER_INFO)


def our_signed_messages(key: ec.EllipticCurvePrivateKey) -> dict[str, bytes]:
    """AuthorizationReq and MeteringReceiptReq as our EV simulator would send them, plus a tampered one."""
    header = iso2_msgheader.MessageHeaderType
    session = bytes.fromhex(SESSION_ID)
    auth = iso2_msgbody.AuthorizationReqType(Id="ID1", GenChallenge=CHALLENGE)
    receipt = iso2_msgbody.MeteringReceiptReqType(Id="ID2", SessionID=session, SAScheduleTupleID=1,
                                                  MeterInfo=our_meter_info())
    auth_sig = sig.sign_authorization_req("iso2", auth, key)
    receipt_sig = sig.sign_metering_receipt("iso2", receipt, key)
    forged = iso2_msgbody.AuthorizationReqType(Id="ID1", GenChallenge=bytes(16))
    return {
        "authorization": exi.encode("iso2", iso2_msgdef.V2G_Message(
            Header=header(SessionID=session, Signature=auth_sig), Body=iso2_msgbody.BodyType(AuthorizationReq=auth))),
        "metering": exi.encode("iso2", iso2_msgdef.V2G_Message(
            Header=header(SessionID=session, Signature=receipt_sig),
            Body=iso2_msgbody.BodyType(MeteringReceiptReq=receipt))),
        "tampered": exi.encode("iso2", iso2_msgdef.V2G_Message(
            Header=header(SessionID=session, Signature=auth_sig), Body=iso2_msgbody.BodyType(AuthorizationReq=forged))),
    }


@pytest.fixture(scope="module")
def josev(tmp_path_factory) -> dict:
    """Josev signs with a fresh P-256 key and verifies our three messages, all in one run."""
    python = _josev_venv_python()
    key = ec.generate_private_key(ec.SECP256R1())
    ours = our_signed_messages(key)
    request = {
        "key_pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode(),
        "session_id": SESSION_ID, "gen_challenge": CHALLENGE.hex(), "sa_schedule_tuple_id": 1,
        "meter_info": METER_INFO,
        "cert_der": self_signed(key).public_bytes(serialization.Encoding.DER).hex(),
        "verify": [{"kind": "authorization", "hex": ours["authorization"].hex()},
                   {"kind": "metering", "hex": ours["metering"].hex()},
                   {"kind": "authorization", "hex": ours["tampered"].hex()}],
    }
    return {"key": key, "ours": ours, "result": run_josev(python, tmp_path_factory.mktemp("josev-sig"), request)}


# --- (a) Josev signs, we verify -------------------------------------------------------------------

def test_josev_signed_authorization_req_verifies_with_ours(josev):
    message = exi.decode("iso2", bytes.fromhex(josev["result"]["signed"]["authorization"]))
    assert message.Body.AuthorizationReq.Id == "id1"
    sig.verify_authorization_req("iso2", message.Header.Signature, message.Body.AuthorizationReq, CHALLENGE,
                                 josev["key"].public_key())
    # and ours is not a rubber stamp: the same message fails with another challenge or another key
    with pytest.raises(SignatureError) as info:
        sig.verify_authorization_req("iso2", message.Header.Signature, message.Body.AuthorizationReq, bytes(16),
                                     josev["key"].public_key())
    assert info.value.response_code == "FAILED_ChallengeInvalid"
    with pytest.raises(SignatureError, match="does not verify"):
        sig.verify_authorization_req("iso2", message.Header.Signature, message.Body.AuthorizationReq, CHALLENGE,
                                     ec.generate_private_key(ec.SECP256R1()).public_key())


def test_josev_signed_metering_receipt_verifies_with_ours(josev):
    message = exi.decode("iso2", bytes.fromhex(josev["result"]["signed"]["metering"]))
    receipt = message.Body.MeteringReceiptReq
    sig.verify_metering_receipt("iso2", message.Header.Signature, receipt, josev["key"].public_key(),
                                session_id=bytes.fromhex(SESSION_ID), meter_info=our_meter_info())
    receipt.MeterInfo.MeterReading += 1
    with pytest.raises(SignatureError, match="digest mismatch") as info:
        sig.verify_metering_receipt("iso2", message.Header.Signature, receipt, josev["key"].public_key())
    assert info.value.response_code == "FAILED_MeteringSignatureNotValid"


def test_josev_message_bytes_are_what_we_would_encode(josev):
    """Both whole signed messages re-encode byte for byte with our codec (no string-table hits)."""
    for name in ("authorization", "metering"):
        data = bytes.fromhex(josev["result"]["signed"][name])
        assert exi.encode("iso2", exi.decode("iso2", data)) == data


# --- (b) we sign, Josev verifies ------------------------------------------------------------------

@pytest.mark.parametrize("index, name, element", [(0, "authorization", "AuthorizationReq"),
                                                  (1, "metering", "MeteringReceiptReq")])
def test_our_signature_verifies_with_josev(josev, index, name, element):
    verdict = josev["result"]["verified"][index]
    assert verdict["ok"] is True
    assert verdict["digest_match"] is True
    # the exact bytes behind it: Josev's fragment encodings are ours
    message = exi.decode("iso2", josev["ours"][name])
    ours = exi.encode("iso2", exi.Fragment(sig.ISO2_BODY_NS, element, getattr(message.Body, element)), fragment=True)
    assert bytes.fromhex(verdict["element_exi"]) == ours
    assert bytes.fromhex(verdict["signed_info_exi"]) == sig.signed_info_bytes(message.Header.Signature.SignedInfo)


def test_josev_rejects_our_tampered_message(josev):
    verdict = josev["result"]["verified"][2]
    assert verdict["ok"] is False and verdict["digest_match"] is False


# --- -20 (and -2) against EXIficient's encodings ------------------------------------------------

def pnc_mode() -> cm.PnC_AReqAuthorizationModeType:
    chain = cm.ContractCertificateChainType(Certificate=b"\x30\x82\x01\x00" + bytes(90),
                                            SubCertificates=cm.SubCertificatesType(Certificate=[b"\x30" + bytes(70)]))
    return cm.PnC_AReqAuthorizationModeType(Id="aReq", GenChallenge=CHALLENGE, ContractCertificateChain=chain)


@pytest.mark.parametrize("curve", ["P-256 (-2)", "P-521 (-20)", "Ed448 (-20)"])
def test_signed_bytes_match_exificient(exificient, curve):
    """EXIficient (Josev's options) encodes the signed element and SignedInfo to the bytes we digest and
    sign; the signature verifies over EXIficient's bytes and the digest is of EXIficient's bytes."""
    if curve.startswith("P-256"):
        key, proto, peer_proto = ec.generate_private_key(ec.SECP256R1()), "iso2", "iso2-fragment"
        element = exi.Fragment(sig.ISO2_BODY_NS, "AuthorizationReq",
                               iso2_msgbody.AuthorizationReqType(Id="ID1", GenChallenge=CHALLENGE))
    else:
        key = ec.generate_private_key(ec.SECP521R1()) if curve.startswith("P-521") else ed448.Ed448PrivateKey.generate()
        proto, peer_proto = "iso20-common", "iso20-fragment"
        element = exi.Fragment(sig.ISO20_COMMON_NS, "PnC_AReqAuthorizationMode", pnc_mode())
    signature = sig.sign(proto, [element], key)
    element_exi = exificient.encode(peer_proto, exi.to_xml(element, proto), mode="josev")
    signed_info = exi.Fragment(sig.XMLDSIG_NS, "SignedInfo", signature.SignedInfo)
    signed_info_exi = exificient.encode("xmldsig-fragment", exi.to_xml(signed_info, "xmldsig"), mode="josev")
    assert element_exi == exi.encode(proto, element, fragment=True)
    assert signed_info_exi == sig.signed_info_bytes(signature.SignedInfo)

    (reference,) = signature.SignedInfo.Reference
    digest = {sig.SHA256_URI: hashlib.sha256(element_exi).digest(),
              sig.SHA512_URI: hashlib.sha512(element_exi).digest(),
              sig.ISO20_SHAKE256_URI: hashlib.shake_256(element_exi).digest(64)}[reference.DigestMethod.Algorithm]
    assert reference.DigestValue == digest
    value = signature.SignatureValue.value
    if isinstance(key, ed448.Ed448PrivateKey):
        key.public_key().verify(value, signed_info_exi)
    else:
        half = len(value) // 2
        der = encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
        algorithm = hashes.SHA256() if curve.startswith("P-256") else hashes.SHA512()
        key.public_key().verify(der, signed_info_exi, ec.ECDSA(algorithm))


def test_default_exi_options_change_the_signed_info_bytes(exificient):
    """Why a digest or signature can differ between EXI encoders: with EXI's default options EXIficient
    puts the repeated canonical-exi URI in the string table. Same SignedInfo, other (shorter) bytes."""
    key = ec.generate_private_key(ec.SECP256R1())
    signature = sig.sign("iso2", [exi.Fragment(sig.ISO2_BODY_NS, "AuthorizationReq",
                                               iso2_msgbody.AuthorizationReqType(Id="ID1", GenChallenge=CHALLENGE))],
                         key)
    xml = exi.to_xml(exi.Fragment(sig.XMLDSIG_NS, "SignedInfo", signature.SignedInfo), "xmldsig")
    josev_mode = exificient.encode("xmldsig-fragment", xml, mode="josev")
    default_mode = exificient.encode("xmldsig-fragment", xml, mode="default")
    ours = sig.signed_info_bytes(signature.SignedInfo)
    assert josev_mode == ours
    assert default_mode != ours
    # the difference is the second 35-character URI: as a literal it costs 36 bytes (length prefix and
    # characters), as a string-table hit 1 byte of hit marker and a few bits of table index
    assert len(ours) - len(default_mode) == len(sig.CANONICAL_EXI)
    # both decode to the same SignedInfo (our decoder reads string-table hits)
    assert exi.decode("xmldsig", default_mode, fragment=True).value == signature.SignedInfo


# --- real signed messages from the shared vectors -------------------------------------------------

def vectors_where(protocol: str, message: str) -> list[dict]:
    return [v for v in load_vectors() if v["protocol"] == protocol and v["message"] == message]


JOSEV_ISO20_AUTH = [v for v in vectors_where("iso20-common", "AuthorizationReq")
                    if "Header.Signature.SignatureValue.value" in v["expect"]]


def test_the_vectors_hold_signed_messages():
    assert len(JOSEV_ISO20_AUTH) >= 2
    assert vectors_where("iso2-fragment", "AuthorizationReq")


@pytest.mark.parametrize("vector", JOSEV_ISO20_AUTH, ids=lambda v: v["id"])
def test_josev_iso20_authorization_req_vector_verifies(vector):
    """A PnC AuthorizationReq Josev's EVCC sent: verified with the contract key from its own chain,
    the GenChallenge the vector states, and Josev's -20 deviation (the -2 suite) declared."""
    message = exi.decode("iso20-common", bytes.fromhex(vector["hex"]))
    pnc = message.PnC_AReqAuthorizationMode
    leaf = x509.load_der_x509_certificate(pnc.ContractCertificateChain.Certificate)
    challenge = base64.b64decode(vector["expect"]["PnC_AReqAuthorizationMode.GenChallenge"])
    lenient = (*sig.SUITES["iso20"], sig.ECDSA_P256_SHA256)
    sig.verify_authorization_req("iso20", message.Header.Signature, message, challenge, leaf, suites=lenient)
    # by the standard's own rules it is refused, and said why
    with pytest.raises(SignatureError, match=r"wrong algorithm URI: SignatureMethod .*ecdsa-sha256") as info:
        sig.verify_authorization_req("iso20", message.Header.Signature, message, challenge, leaf)
    assert info.value.response_code == "FAILED_SignatureError"
    # and a one-bit change to what was signed breaks it
    pnc.GenChallenge = bytes([pnc.GenChallenge[0] ^ 1]) + pnc.GenChallenge[1:]
    with pytest.raises(SignatureError, match="digest mismatch"):
        sig.verify_authorization_req("iso20", message.Header.Signature, message, pnc.GenChallenge, leaf,
                                     suites=lenient)


def test_libcbv2g_fragment_vector_is_what_we_digest():
    """libcbv2g's encode_iso2_exiFragment of an AuthorizationReq: the bytes our verify digests for the
    decoded element are the vector's bytes, so our DigestValue is the one a libcbv2g signer computes."""
    (vector,) = vectors_where("iso2-fragment", "AuthorizationReq")
    data = bytes.fromhex(vector["hex"])
    fragment = exi.decode("iso2", data, fragment=True)
    assert fragment.value.GenChallenge == bytes.fromhex(vector["expect"]["GenChallenge"])
    assert sig._element_bytes("iso2", fragment) == data
