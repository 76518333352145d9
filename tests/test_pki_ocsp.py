"""OCSP: request data (checked against hashlib over the DER name and key bits read straight from the
certificates), response checking (good, revoked, unknown, stale, future, wrong key, delegated responders,
CertID mismatch, garbage), the cache, and the revocation hook inside ContractChainValidator
(-2 FAILED_CertificateRevoked, -20 WARNING_CertificateRevoked)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge.pki.chain import ChainFailure, ChainVerdict, ContractChainValidator, ContractProtocol, RevocationStatus
from edge.pki.ocsp import (
    CachedOcspRevocation,
    CertId,
    OcspCache,
    OcspError,
    OcspFailure,
    OcspRequestData,
    OcspResponseChecker,
    OcspStatus,
    decode_ocsp_result,
    ocsp_request_data,
    ocsp_request_der,
)
from edge.pki.testpki import FOLDERS, ISO2_FOLDER, OCSP_URL, KeyAlgorithm, PkiPaths, PrivateKey, create_test_pki
from exi.model.iso2_msgdatatypes import responseCodeType as Iso2Code
from exi.model.iso20_commontypes import responseCodeType as Iso20Code
from tests.pki_builders import NOW, Issued, contract_chain, generate_key, make_cert

GOOD, REVOKED, UNKNOWN = ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED, ocsp.OCSPCertStatus.UNKNOWN
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
SHA256 = hashes.SHA256()


@dataclass(frozen=True)
class MoChain:
    """The MO chain of one folder of the Josev-layout test PKI: leaf -> sub2 -> sub1 -> root."""

    algorithm: KeyAlgorithm
    leaf: Issued
    sub2: Issued
    sub1: Issued
    root: Issued

    @property
    def path(self) -> tuple[x509.Certificate, ...]:
        return (self.leaf.cert, self.sub2.cert, self.sub1.cert, self.root.cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MoChain]:
    out: Path = tmp_path_factory.mktemp("ocsp-pki")
    create_test_pki(out, now=NOW - dt.timedelta(days=1), password="")
    chains = {}
    for folder, algorithm in FOLDERS.items():
        paths = PkiPaths(out, folder)

        def load(name: str, paths: PkiPaths = paths) -> Issued:
            cert = x509.load_pem_x509_certificate(paths.cert(name).read_bytes())
            key = serialization.load_pem_private_key(paths.key(name).read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey)
            return Issued(cert, key)

        chains[folder] = MoChain(algorithm, load("contractLeaf"), load("moSubCA2"), load("moSubCA1"), load("moRootCA"))
    return chains


@pytest.fixture
def iso2(pki: dict[str, MoChain]) -> MoChain:
    return pki[ISO2_FOLDER]


def _sign_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256() if key.curve.key_size == 256 else hashes.SHA512()


def build_response(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    signer: Issued,
    *,
    status: ocsp.OCSPCertStatus = GOOD,
    this_update: dt.datetime = NOW - HOUR,
    next_update: dt.datetime | None = NOW - HOUR + DAY,
    cert_id_hash: hashes.HashAlgorithm = SHA256,
    responder: x509.Certificate | None = None,
    by_name: bool = False,
    certificates: list[x509.Certificate] | None = None,
) -> bytes:
    """A DER OCSPResponse about ``cert``, made with cryptography's builder (an independent encoder)."""
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=issuer,
        algorithm=cert_id_hash,
        cert_status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=NOW - dt.timedelta(days=2) if status is REVOKED else None,
        revocation_reason=x509.ReasonFlags.key_compromise if status is REVOKED else None,
    )
    encoding = ocsp.OCSPResponderEncoding.NAME if by_name else ocsp.OCSPResponderEncoding.HASH
    builder = builder.responder_id(encoding, responder or signer.cert)
    if certificates:
        builder = builder.certificates(certificates)
    return builder.sign(signer.key, _sign_hash(signer.key)).public_bytes(serialization.Encoding.DER)


def delegated_responder(issuer: Issued, algorithm: KeyAlgorithm, *, eku: bool = True, **kw: Any) -> Issued:
    """An OCSP responder certificate issued by ``issuer`` (id-kp-OCSPSigning unless ``eku`` is False)."""
    return make_cert(
        "OCSP Responder", issuer, algorithm=algorithm, ca=False, usage=("digitalSignature",), domain_component=None,
        eku=[ExtendedKeyUsageOID.OCSP_SIGNING] if eku else [ExtendedKeyUsageOID.CLIENT_AUTH], **kw,
    )


def check(der: bytes | str, chain: MoChain, *, now: dt.datetime = NOW) -> OcspStatus:
    return OcspResponseChecker().check(der, chain.leaf.cert, chain.sub2.cert, now=now)


def assert_refused(failure: OcspFailure, der: bytes | str, chain: MoChain, *, now: dt.datetime = NOW) -> OcspError:
    with pytest.raises(OcspError) as caught:
        check(der, chain, now=now)
    assert caught.value.failure is failure, caught.value.reason
    assert caught.value.reason
    return caught.value


# --- a minimal DER reader, so the expected hashes do not come from cryptography ------------------------------


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of the element) of the DER element at ``offset``."""
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element offset, contents start, end) of each element inside [start, end)."""
    found, offset = [], start
    while offset < end:
        tag, content, stop = _tlv(data, offset)
        found.append((tag, offset, content, stop))
        offset = stop
    return found


def tbs_fields(cert: x509.Certificate) -> dict[str, bytes]:
    """The raw serial INTEGER contents, the subject Name element and the subjectPublicKey bits of ``cert``."""
    der = cert.public_bytes(serialization.Encoding.DER)
    _, cert_start, _ = _tlv(der, 0)
    _, tbs_start, tbs_end = _tlv(der, cert_start)
    fields = _children(der, tbs_start, tbs_end)
    if fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    serial, subject, spki = fields[0], fields[4], fields[5]
    spki_parts = _children(der, spki[2], spki[3])
    bit_string = spki_parts[1]
    assert bit_string[0] == 0x03 and der[bit_string[2]] == 0  # BIT STRING, no unused bits
    return {
        "serial": der[serial[2]:serial[3]],
        "subject": der[subject[1]:subject[3]],
        "key_bits": der[bit_string[2] + 1:bit_string[3]],
    }


# --- request data ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_request_data_fields_match_an_independent_computation(pki: dict[str, MoChain], folder: str) -> None:
    chain = pki[folder]
    data = ocsp_request_data(chain.leaf.cert, chain.sub2.cert)
    issuer_fields, leaf_fields = tbs_fields(chain.sub2.cert), tbs_fields(chain.leaf.cert)
    assert data.hash_algorithm == "SHA256"
    assert data.issuer_name_hash == hashlib.sha256(issuer_fields["subject"]).hexdigest()
    assert data.issuer_key_hash == hashlib.sha256(issuer_fields["key_bits"]).hexdigest()
    assert int(data.serial_number, 16) == int.from_bytes(leaf_fields["serial"], "big", signed=True) == 12356
    assert re.fullmatch(r"[1-9a-f][0-9a-f]*", data.serial_number), "hex, lowercase, no leading zeros"
    assert data.responder_url == OCSP_URL
    assert data.to_ocpp() == {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": data.issuer_name_hash,
        "issuerKeyHash": data.issuer_key_hash,
        "serialNumber": data.serial_number,
        "responderURL": OCSP_URL,
    }
    if chain.algorithm is not KeyAlgorithm.ED448:  # the key bits of an EC key are its uncompressed point
        point = chain.sub2.cert.public_key().public_bytes(serialization.Encoding.X962,
                                                          serialization.PublicFormat.UncompressedPoint)
        assert issuer_fields["key_bits"] == point


def test_request_data_with_sha384_and_sha512(iso2: MoChain) -> None:
    issuer_fields = tbs_fields(iso2.sub2.cert)
    for name, digest in (("SHA384", hashlib.sha384), ("SHA512", hashlib.sha512)):
        data = ocsp_request_data(iso2.leaf.cert, iso2.sub2.cert, hash_algorithm=name.lower())
        assert data.hash_algorithm == name
        assert data.issuer_name_hash == digest(issuer_fields["subject"]).hexdigest()
        assert data.issuer_key_hash == digest(issuer_fields["key_bits"]).hexdigest()
    with pytest.raises(ValueError, match="SHA256"):
        ocsp_request_data(iso2.leaf.cert, iso2.sub2.cert, hash_algorithm="MD5")


def test_request_data_round_trips_through_ocpp_json(iso2: MoChain) -> None:
    data = ocsp_request_data(iso2.leaf.cert, iso2.sub2.cert)
    assert OcspRequestData.from_ocpp(data.to_ocpp()) == data
    assert data.cert_id == CertId.of(iso2.leaf.cert, iso2.sub2.cert)
    without_url = {k: v for k, v in data.to_ocpp().items() if k != "responderURL"}
    with pytest.raises(ValueError, match="responderURL"):
        OcspRequestData.from_ocpp(without_url)
    with pytest.raises(ValueError, match="serialNumber"):
        OcspRequestData.from_ocpp({k: v for k, v in data.to_ocpp().items() if k != "serialNumber"})


def test_for_chain_lists_leaf_and_sub_cas_each_with_its_issuer(iso2: MoChain) -> None:
    entries = OcspRequestData.for_chain(iso2.path)
    assert [int(e.serial_number, 16) for e in entries] == [12356, 12355, 12354]
    issuers = (iso2.sub2.cert, iso2.sub1.cert, iso2.root.cert)
    for entry, issuer in zip(entries, issuers, strict=True):
        assert entry.issuer_name_hash == hashlib.sha256(tbs_fields(issuer)["subject"]).hexdigest()
    with_root = OcspRequestData.for_chain(iso2.path, include_root=True)
    assert len(with_root) == 4
    root_fields = tbs_fields(iso2.root.cert)
    assert with_root[-1].issuer_key_hash == hashlib.sha256(root_fields["key_bits"]).hexdigest()
    assert int(with_root[-1].serial_number, 16) == 12353


def test_for_chain_refuses_too_short_and_too_long_chains(iso2: MoChain) -> None:
    with pytest.raises(ValueError, match="leaf and its issuer"):
        OcspRequestData.for_chain([iso2.leaf.cert])
    five = [iso2.leaf.cert, iso2.sub2.cert, iso2.sub1.cert, iso2.sub1.cert, iso2.root.cert]
    assert len(OcspRequestData.for_chain(five)) == 4
    with pytest.raises(ValueError, match="at most 4"):
        OcspRequestData.for_chain(five, include_root=True)


def test_certificate_without_ocsp_url_needs_a_configured_responder() -> None:
    chain = contract_chain()  # pki_builders certificates carry no authorityInfoAccess
    with pytest.raises(OcspError) as caught:
        ocsp_request_data(chain.leaf.cert, chain.sub2.cert)
    assert caught.value.failure is OcspFailure.NO_RESPONDER_URL
    data = ocsp_request_data(chain.leaf.cert, chain.sub2.cert, responder_url="http://ocsp.example/")
    assert data.responder_url == "http://ocsp.example/"
    with pytest.raises(OcspError, match="512"):
        ocsp_request_data(chain.leaf.cert, chain.sub2.cert, responder_url="http://x/" + "a" * 600)


def test_der_request_names_the_certificate_and_carries_the_nonce(iso2: MoChain) -> None:
    der = ocsp_request_der(iso2.leaf.cert, iso2.sub2.cert, nonce=b"\x01" * 16)
    request = ocsp.load_der_ocsp_request(der)
    data = ocsp_request_data(iso2.leaf.cert, iso2.sub2.cert)
    assert isinstance(request.hash_algorithm, hashes.SHA256)
    assert request.serial_number == 12356
    assert request.issuer_name_hash.hex() == data.issuer_name_hash
    assert request.issuer_key_hash.hex() == data.issuer_key_hash
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"\x01" * 16
    with pytest.raises(ValueError):
        ocsp_request_der(iso2.leaf.cert, iso2.sub2.cert, hash_algorithm="SHA1")


# --- checking responses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_good_response_signed_by_the_issuer(pki: dict[str, MoChain], folder: str) -> None:
    chain = pki[folder]
    der = build_response(chain.leaf.cert, chain.sub2.cert, chain.sub2)
    status = check(der, chain)
    assert status.status is RevocationStatus.GOOD
    assert status.cert_id == CertId.of(chain.leaf.cert, chain.sub2.cert)
    assert status.next_update == NOW - HOUR + dt.timedelta(days=1) == status.expires_at
    assert status.der == der
    assert status.responder == chain.sub2.cert.subject.rfc4514_string()
    # the base64 text GetCertificateStatusResponse.ocspResult carries gives the same answer
    assert check(base64.b64encode(der).decode(), chain).status is RevocationStatus.GOOD


def test_revoked_response_reports_time_and_reason(iso2: MoChain) -> None:
    status = check(build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, status=REVOKED), iso2)
    assert status.status is RevocationStatus.REVOKED
    assert status.revocation_time == NOW - dt.timedelta(days=2)
    assert status.revocation_reason is x509.ReasonFlags.key_compromise


def test_unknown_response(iso2: MoChain) -> None:
    status = check(build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, status=UNKNOWN), iso2)
    assert status.status is RevocationStatus.UNKNOWN


def test_expired_response_is_refused_beyond_the_clock_skew(iso2: MoChain) -> None:
    stale = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW - 2 * HOUR,
                           next_update=NOW - dt.timedelta(minutes=10))
    error = assert_refused(OcspFailure.EXPIRED, stale, iso2)
    assert "expired" in error.reason
    barely = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW - 2 * HOUR,
                            next_update=NOW - dt.timedelta(minutes=2))
    assert check(barely, iso2).status is RevocationStatus.GOOD


def test_response_from_the_future_is_refused_beyond_the_clock_skew(iso2: MoChain) -> None:
    future = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW + dt.timedelta(minutes=10))
    assert_refused(OcspFailure.NOT_YET_VALID, future, iso2)
    slightly = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW + dt.timedelta(minutes=2))
    assert check(slightly, iso2).status is RevocationStatus.GOOD


def test_response_without_next_update_is_current_for_max_age(iso2: MoChain) -> None:
    fresh = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW - HOUR, next_update=None)
    status = check(fresh, iso2)
    assert status.next_update is None
    assert status.expires_at == NOW - HOUR + dt.timedelta(hours=24)
    old = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW - dt.timedelta(days=2),
                         next_update=None)
    assert_refused(OcspFailure.EXPIRED, old, iso2)


def impostor_of(issued: Issued, algorithm: KeyAlgorithm) -> Issued:
    """A self-signed certificate with the same subject as ``issued`` but a key of its own."""
    key = generate_key(algorithm)
    subject = issued.cert.subject
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1)).sign(key, _sign_hash(key))
    )
    return Issued(cert, key)


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_response_signed_with_a_wrong_key_is_refused(pki: dict[str, MoChain], folder: str) -> None:
    chain = pki[folder]
    # names the issuer as responder (byName), but signed with another key
    impostor = impostor_of(chain.sub2, chain.algorithm)
    forged = build_response(chain.leaf.cert, chain.sub2.cert, impostor, by_name=True)
    assert_refused(OcspFailure.BAD_SIGNATURE, forged, chain)
    # the same, by key hash: the responder is not the issuer and brings no certificate
    forged = build_response(chain.leaf.cert, chain.sub2.cert, impostor)
    assert_refused(OcspFailure.UNAUTHORIZED_RESPONDER, forged, chain)


def test_response_with_a_flipped_signature_bit_is_refused(iso2: MoChain) -> None:
    der = bytearray(build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2))
    der[-1] ^= 0x01  # without certificates the signature BIT STRING ends the response
    assert_refused(OcspFailure.BAD_SIGNATURE, bytes(der), iso2)


def test_response_signed_by_another_ca_is_refused(iso2: MoChain) -> None:
    # sub-CA 1 is in the chain but did not issue the leaf: it may not answer for it
    other = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub1, certificates=[iso2.sub1.cert])
    assert_refused(OcspFailure.UNAUTHORIZED_RESPONDER, other, iso2)
    unknown = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub1)
    error = assert_refused(OcspFailure.UNAUTHORIZED_RESPONDER, unknown, iso2)
    assert "not in the response" in error.reason


@pytest.mark.parametrize("folder", list(FOLDERS))
@pytest.mark.parametrize("by_name", [False, True])
def test_delegated_responder_is_accepted(pki: dict[str, MoChain], folder: str, by_name: bool) -> None:
    chain = pki[folder]
    responder = delegated_responder(chain.sub2, chain.algorithm)
    der = build_response(chain.leaf.cert, chain.sub2.cert, responder, by_name=by_name, certificates=[responder.cert])
    status = check(der, chain)
    assert status.status is RevocationStatus.GOOD
    assert status.responder == responder.cert.subject.rfc4514_string()


def test_delegated_responder_without_ocsp_signing_is_refused(iso2: MoChain) -> None:
    responder = delegated_responder(iso2.sub2, iso2.algorithm, eku=False)
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, responder, certificates=[responder.cert])
    assert "OCSPSigning" in assert_refused(OcspFailure.UNAUTHORIZED_RESPONDER, der, iso2).reason


def test_delegated_responder_of_another_issuer_is_refused(iso2: MoChain) -> None:
    responder = delegated_responder(iso2.sub1, iso2.algorithm)  # issued by sub-CA 1, answers for sub-CA 2's leaf
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, responder, certificates=[responder.cert])
    assert "not issued by" in assert_refused(OcspFailure.UNAUTHORIZED_RESPONDER, der, iso2).reason
    # same name as the issuer's own subject but a stranger's signature on the responder certificate
    impostor = delegated_responder(iso2.sub2, iso2.algorithm, sign_with=generate_key(iso2.algorithm))
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, impostor, certificates=[impostor.cert])
    assert_refused(OcspFailure.UNAUTHORIZED_RESPONDER, der, iso2)


def test_expired_delegated_responder_is_refused(iso2: MoChain) -> None:
    responder = delegated_responder(iso2.sub2, iso2.algorithm, not_before=NOW - dt.timedelta(days=10),
                                    not_after=NOW - dt.timedelta(days=1))
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, responder, certificates=[responder.cert])
    assert "not valid now" in assert_refused(OcspFailure.UNAUTHORIZED_RESPONDER, der, iso2).reason


def test_response_about_another_certificate_is_refused(iso2: MoChain) -> None:
    about_sub_ca = build_response(iso2.sub2.cert, iso2.sub1.cert, iso2.sub1)
    error = assert_refused(OcspFailure.CERT_ID_MISMATCH, about_sub_ca, iso2)
    assert "3043" in error.reason  # the serial it does answer for (12355 in hex)


def test_response_with_a_sha1_cert_id_still_matches(iso2: MoChain) -> None:
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, cert_id_hash=hashes.SHA1())
    status = check(der, iso2)
    assert status.status is RevocationStatus.GOOD
    assert status.cert_id == CertId.of(iso2.leaf.cert, iso2.sub2.cert)  # cached under the SHA-256 CertID


@pytest.mark.parametrize("garbage", [b"", b"not an OCSP response", b"\x30\x03\x0a\x01"])
def test_malformed_der_is_refused(iso2: MoChain, garbage: bytes) -> None:
    assert_refused(OcspFailure.MALFORMED, garbage, iso2)


def test_truncated_response_is_refused(iso2: MoChain) -> None:
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2)
    assert_refused(OcspFailure.MALFORMED, der[:-10], iso2)


def test_non_base64_ocsp_result_is_refused(iso2: MoChain) -> None:
    assert_refused(OcspFailure.MALFORMED, "this is *not* base64!", iso2)
    with pytest.raises(OcspError):
        decode_ocsp_result("@@@")


@pytest.mark.parametrize("code", [ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.UNAUTHORIZED])
def test_unsuccessful_response_is_refused(iso2: MoChain, code: ocsp.OCSPResponseStatus) -> None:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(code).public_bytes(serialization.Encoding.DER)
    error = assert_refused(OcspFailure.UNSUCCESSFUL, der, iso2)
    assert code.name.lower() in error.reason


# --- the cache -----------------------------------------------------------------------------------------------


def test_cache_keeps_an_answer_until_next_update(iso2: MoChain) -> None:
    cache = OcspCache()
    status = check(build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW - HOUR,
                                  next_update=NOW + HOUR), iso2)
    cache.put(status)
    assert cache.lookup(iso2.leaf.cert, iso2.sub2.cert, NOW) is status
    assert cache.get(status.cert_id, NOW + HOUR) is status
    assert cache.lookup(iso2.leaf.cert, iso2.sub2.cert, NOW + HOUR + dt.timedelta(seconds=1)) is None
    assert len(cache) == 0, "an expired answer is dropped"


def test_cache_keeps_an_answer_without_next_update_for_the_max_age(iso2: MoChain) -> None:
    cache = OcspCache()
    checker = OcspResponseChecker(max_age=2 * HOUR)
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, this_update=NOW - HOUR, next_update=None)
    cache.put(checker.check(der, iso2.leaf.cert, iso2.sub2.cert, now=NOW))
    assert cache.lookup(iso2.leaf.cert, iso2.sub2.cert, NOW + 59 * dt.timedelta(minutes=1)) is not None
    assert cache.lookup(iso2.leaf.cert, iso2.sub2.cert, NOW + HOUR + dt.timedelta(seconds=1)) is None


def test_cache_purge_eviction_and_staple(iso2: MoChain) -> None:
    cache = OcspCache(max_entries=2)
    short = check(build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2, next_update=NOW + HOUR), iso2)
    sub_ca = OcspResponseChecker().check(
        build_response(iso2.sub2.cert, iso2.sub1.cert, iso2.sub1, status=REVOKED, next_update=NOW + 3 * HOUR),
        iso2.sub2.cert, iso2.sub1.cert, now=NOW)
    cache.put(short)
    cache.put(sub_ca)
    assert cache.staple(iso2.leaf.cert, iso2.sub2.cert, NOW) == short.der
    assert cache.staple(iso2.sub2.cert, iso2.sub1.cert, NOW) is None, "never staple a revoked answer"
    assert cache.purge(NOW + 2 * HOUR) == [short.cert_id]
    assert len(cache) == 1
    cache.put(short)
    third = OcspResponseChecker().check(
        build_response(iso2.sub1.cert, iso2.root.cert, iso2.root, next_update=NOW + 5 * HOUR),
        iso2.sub1.cert, iso2.root.cert, now=NOW)
    cache.put(third)  # full: the answer expiring soonest (the leaf's) goes
    assert len(cache) == 2
    assert cache.get(short.cert_id, NOW) is None
    assert cache.get(third.cert_id, NOW) is third
    with pytest.raises(ValueError):
        OcspCache(max_entries=0)


# --- the revocation hook in the contract chain validator ---------------------------------------------------


def _validate(chain: MoChain, revocation: CachedOcspRevocation, protocol: ContractProtocol, **kw: bool) -> ChainVerdict:
    validator = ContractChainValidator([chain.root.cert], revocation=revocation, **kw)
    return validator.validate(chain.leaf.cert, [chain.sub2.cert, chain.sub1.cert], protocol=protocol, now=NOW)


@pytest.mark.parametrize(
    ("folder", "protocol", "code"),
    [
        ("iso15118_2", ContractProtocol.ISO2, Iso2Code.FAILED_CertificateRevoked),
        ("iso15118_20", ContractProtocol.ISO20, Iso20Code.WARNING_CertificateRevoked),
        ("iso15118_20_ed448", ContractProtocol.ISO20, Iso20Code.WARNING_CertificateRevoked),
    ],
)
def test_revoked_leaf_fails_validation_with_the_protocols_code(
    pki: dict[str, MoChain], folder: str, protocol: ContractProtocol, code: object
) -> None:
    chain = pki[folder]
    revocation = CachedOcspRevocation(OcspCache(), now=NOW)
    assert _validate(chain, revocation, protocol).ok, "no answer yet: UNKNOWN passes by default"
    revocation.prime([(chain.leaf.cert, chain.sub2.cert,
                       build_response(chain.leaf.cert, chain.sub2.cert, chain.sub2, status=REVOKED))])
    verdict = _validate(chain, revocation, protocol)
    assert not verdict.ok
    assert verdict.failure is ChainFailure.REVOKED
    assert verdict.response_code == code


def test_revoked_sub_ca_fails_validation(iso2: MoChain) -> None:
    revocation = CachedOcspRevocation(OcspCache(), now=NOW)
    revocation.prime([(iso2.sub1.cert, iso2.root.cert,
                       build_response(iso2.sub1.cert, iso2.root.cert, iso2.root, status=REVOKED))])
    verdict = _validate(iso2, revocation, ContractProtocol.ISO2)
    assert verdict.response_code == Iso2Code.FAILED_CertificateRevoked
    assert "PKI-Ext_CRT_MO_SUB1_VALID" in verdict.reason


def test_misses_become_requests_and_answers_make_the_chain_good(iso2: MoChain) -> None:
    clock = [NOW]
    revocation = CachedOcspRevocation(OcspCache(), now=lambda: clock[0])
    strict = {"reject_unknown_revocation": True}
    first = _validate(iso2, revocation, ContractProtocol.ISO2, **strict)
    assert first.failure is ChainFailure.REVOCATION_UNKNOWN
    assert first.response_code == Iso2Code.FAILED_CertChainError
    requests = revocation.needed()
    assert [int(r.serial_number, 16) for r in requests] == [12356], "the validator stops at the first unknown"

    # answer as a CSMS would, until the validator asks for nothing more
    issuers = {12356: (iso2.leaf, iso2.sub2), 12355: (iso2.sub2, iso2.sub1), 12354: (iso2.sub1, iso2.root)}
    answered = []
    while requests:
        for request in requests:
            cert, issuer = issuers[int(request.serial_number, 16)]
            ocsp_result = base64.b64encode(build_response(cert.cert, issuer.cert, issuer)).decode()
            assert revocation.accept(request, ocsp_result).status is RevocationStatus.GOOD
            answered.append(int(request.serial_number, 16))
        verdict = _validate(iso2, revocation, ContractProtocol.ISO2, **strict)
        requests = revocation.needed()
    assert answered == [12356, 12355, 12354]
    assert verdict.ok, verdict.reason
    assert revocation.needed() == []

    # a day and a half later every answer has expired: the misses come back
    clock[0] = NOW + dt.timedelta(hours=36)
    assert revocation.status(iso2.leaf.cert, iso2.sub2.cert, clock[0]) is RevocationStatus.UNKNOWN
    assert [int(r.serial_number, 16) for r in revocation.needed()] == [12356]


def test_accept_refuses_unrequested_and_bad_answers(iso2: MoChain) -> None:
    revocation = CachedOcspRevocation(OcspCache(), now=NOW)
    request = ocsp_request_data(iso2.leaf.cert, iso2.sub2.cert)
    good = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2)
    with pytest.raises(OcspError) as caught:
        revocation.accept(request, good)
    assert caught.value.failure is OcspFailure.NOT_REQUESTED
    assert revocation.status(iso2.leaf.cert, iso2.sub2.cert, NOW) is RevocationStatus.UNKNOWN
    wrong = build_response(iso2.sub2.cert, iso2.sub1.cert, iso2.sub1)
    with pytest.raises(OcspError) as caught:
        revocation.accept(request, wrong)
    assert caught.value.failure is OcspFailure.CERT_ID_MISMATCH
    assert revocation.needed() == [request], "a refused answer leaves the request open"
    assert revocation.accept(request.cert_id, good).status is RevocationStatus.GOOD
    assert revocation.needed() == []


def test_misses_without_a_responder_url_are_reported() -> None:
    chain = contract_chain()  # no authorityInfoAccess anywhere
    revocation = CachedOcspRevocation(OcspCache(), now=NOW)
    assert revocation.status(chain.leaf.cert, chain.sub2.cert, NOW) is RevocationStatus.UNKNOWN
    assert revocation.needed() == []
    assert list(revocation.cannot_request) == [chain.leaf.cert.subject.rfc4514_string()]
    assert "authorityInfoAccess" in revocation.cannot_request[chain.leaf.cert.subject.rfc4514_string()]


def test_cert_id_with_an_unsupported_hash_is_refused(iso2: MoChain) -> None:
    der = build_response(iso2.leaf.cert, iso2.sub2.cert, iso2.sub2)
    sha256_oid = bytes.fromhex("0609608648016503040201")
    assert der.count(sha256_oid) == 1, "the CertID is the only place naming SHA-256"
    sha3_256 = der.replace(sha256_oid, bytes.fromhex("0609608648016503040208"))
    assert_refused(OcspFailure.UNSUPPORTED_ALGORITHM, sha3_256, iso2)
