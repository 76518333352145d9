"""ContractChainValidator: the negative matrix (each failure with its exact -2 / -20 ResponseCode) and the
chains it must accept (-2 P-256, -20 P-521 and Ed448, Hubject-style roots with an extendedKeyUsage)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from edge.pki.chain import (
    ChainFailure,
    ContractChainValidator,
    ContractProtocol,
    RevocationStatus,
    Rule,
    is_valid_emaid,
    normalize_emaid,
    parse_certificates,
    protocol_for_leaf,
    response_code_for,
)
from edge.pki.testpki import FOLDERS, TEST_EMAID, KeyAlgorithm, PkiPaths, create_test_pki
from exi.model.iso2_msgdatatypes import responseCodeType as Iso2Code
from exi.model.iso20_commontypes import responseCodeType as Iso20Code
from tests.pki_builders import (
    HUBJECT_STYLE_ROOT_EKU,
    NOW,
    Chain,
    break_signature,
    contract_chain,
    generate_key,
    make_cert,
    make_leaf,
)

ISO2, ISO20 = ContractProtocol.ISO2, ContractProtocol.ISO20
P256, P521, ED448 = KeyAlgorithm.P256_SHA256, KeyAlgorithm.P521_SHA512, KeyAlgorithm.ED448


def validate(chain: Chain, *, protocol: ContractProtocol = ISO2, leaf: x509.Certificate | None = None,
             sub_cas: list[x509.Certificate] | None = None, now: dt.datetime = NOW, **kw):
    validator = ContractChainValidator([chain.root.cert], **kw.pop("validator", {}))
    return validator.validate(leaf or chain.leaf.cert, chain.sub_cas if sub_cas is None else sub_cas,
                              protocol=protocol, now=now, **kw)


def assert_rejected(verdict, failure: ChainFailure, code) -> None:
    assert not verdict.ok, verdict.reason
    assert verdict.failure is failure, (verdict.failure, verdict.reason)
    assert verdict.response_code == code, verdict.reason
    assert verdict.reason


# --- accepted chains ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("algorithm", "protocol"), [(P256, ISO2), (P521, ISO20), (ED448, ISO20)])
def test_good_chain_is_accepted_with_emaid_and_path(algorithm: KeyAlgorithm, protocol: ContractProtocol) -> None:
    chain = contract_chain(algorithm)
    verdict = validate(chain, protocol=protocol, expected_emaid=TEST_EMAID)
    assert verdict.ok, verdict.reason
    assert verdict.response_code == "OK" and verdict.failure is None
    assert verdict.emaid == TEST_EMAID and verdict.leaf == chain.leaf.cert
    assert verdict.path == (chain.leaf.cert, chain.sub2.cert, chain.sub1.cert, chain.root.cert)
    assert protocol_for_leaf(chain.leaf.cert) is protocol


def test_sub_cas_in_any_order_as_der_and_with_extra_certificates() -> None:
    chain = contract_chain()
    other = make_cert("Unrelated CA", None)
    validator = ContractChainValidator([chain.root.cert])
    verdict = validator.validate(chain.leaf.der, [chain.sub1.der, other.der, chain.root.der, chain.sub2.der],
                                 protocol=ISO2, now=NOW)
    assert verdict.ok, verdict.reason
    assert verdict.path[-1] == chain.root.cert


def test_hubject_style_root_with_extended_key_usage_is_accepted() -> None:
    chain = contract_chain(root_eku=HUBJECT_STYLE_ROOT_EKU)
    assert chain.root.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert validate(chain).ok


def test_chain_to_a_v2g_root_is_accepted_and_roots_are_tried_until_one_verifies() -> None:
    v2g_root = make_cert("V2G Root", None, domain_component="V2G")
    sub1 = make_cert("MO Sub1", v2g_root, path_length=1)
    sub2 = make_cert("MO Sub2", sub1, path_length=0)
    leaf = make_leaf(sub2)
    impostor = make_cert("V2G Root", None, domain_component="V2G")  # same name, other key
    validator = ContractChainValidator([impostor.cert, v2g_root.cert])
    verdict = validator.validate(leaf.cert, [sub2.cert, sub1.cert], protocol=ISO2, now=NOW)
    assert verdict.ok, verdict.reason
    assert verdict.path[-1] == v2g_root.cert


def test_emaid_comparison_ignores_hyphens_and_case() -> None:
    assert validate(contract_chain(), expected_emaid="uk-swi-123456791-a").ok
    assert normalize_emaid("DE-8AC-C12E45678-3") == "DE8ACC12E456783"
    assert is_valid_emaid("DE8ACC12E45678") and is_valid_emaid("DE-8AC-C12E45678-3")
    assert not is_valid_emaid("MORootCA") and not is_valid_emaid("DE8ACC12E4567834")


def test_a_naive_time_is_taken_as_utc() -> None:
    chain = contract_chain()
    expiry = chain.leaf.cert.not_valid_after_utc
    assert validate(chain, now=(expiry - dt.timedelta(seconds=1)).replace(tzinfo=None)).ok
    assert validate(chain, now=(expiry + dt.timedelta(seconds=1)).replace(tzinfo=None)).failure is ChainFailure.EXPIRED


# --- the negative matrix -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("protocol", "algorithm", "code"), [
    (ISO2, P256, Iso2Code.FAILED_CertificateExpired),
    (ISO20, P521, Iso20Code.WARNING_CertificateExpired),
])
def test_expired_leaf(protocol, algorithm, code) -> None:
    chain = contract_chain(algorithm)
    after = chain.leaf.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    assert_rejected(validate(chain, protocol=protocol, now=after), ChainFailure.EXPIRED, code)


def test_expired_sub_ca_is_reported_although_the_leaf_is_valid() -> None:
    root = make_cert("MO Root", None)
    sub1 = make_cert("MO Sub1", root, path_length=1, not_after=NOW - dt.timedelta(days=1))
    sub2 = make_cert("MO Sub2", sub1, path_length=0)
    chain = Chain(root, sub1, sub2, make_leaf(sub2))
    verdict = validate(chain)
    assert_rejected(verdict, ChainFailure.EXPIRED, Iso2Code.FAILED_CertificateExpired)
    assert "MO Sub1" in verdict.reason


@pytest.mark.parametrize(("protocol", "algorithm", "code"), [
    # -2 has no "not yet valid" code: FAILED_CertificateExpired ([V2G2-824])
    (ISO2, P256, Iso2Code.FAILED_CertificateExpired),
    (ISO20, ED448, Iso20Code.WARNING_CertificateNotYetValid),
])
def test_not_yet_valid_leaf(protocol, algorithm, code) -> None:
    chain = contract_chain(algorithm)
    before = chain.leaf.cert.not_valid_before_utc - dt.timedelta(seconds=1)
    assert_rejected(validate(chain, protocol=protocol, now=before), ChainFailure.NOT_YET_VALID, code)


def test_wrong_issuer_untrusted_root() -> None:
    chain = contract_chain()
    verdict = ContractChainValidator([make_cert("Other Root", None).cert]).validate(
        chain.leaf.cert, chain.sub_cas, protocol=ISO2, now=NOW)
    assert_rejected(verdict, ChainFailure.UNKNOWN_ROOT, Iso2Code.FAILED_CertChainError)
    assert "MO Root" in verdict.reason


def test_wrong_issuer_root_with_the_same_name_but_another_key() -> None:
    chain = contract_chain()
    namesake = contract_chain().root  # also "MO Root", other key
    verdict = ContractChainValidator([namesake.cert]).validate(chain.leaf.cert, chain.sub_cas, protocol=ISO2, now=NOW)
    assert_rejected(verdict, ChainFailure.BAD_SIGNATURE, Iso2Code.FAILED_CertChainError)


def test_wrong_issuer_key_with_the_right_issuer_name() -> None:
    chain = contract_chain()
    forged = make_leaf(chain.sub2, sign_with=generate_key(P256))
    assert_rejected(validate(chain, leaf=forged.cert), ChainFailure.BAD_SIGNATURE, Iso2Code.FAILED_CertChainError)


def test_missing_sub_ca() -> None:
    chain = contract_chain()
    verdict = validate(chain, sub_cas=[chain.sub2.cert])
    assert_rejected(verdict, ChainFailure.UNKNOWN_ROOT, Iso2Code.FAILED_CertChainError)


@pytest.mark.parametrize(("algorithm", "protocol", "code"), [
    (P256, ISO2, Iso2Code.FAILED_CertChainError),
    (ED448, ISO20, Iso20Code.WARNING_CertificateValidationError),
])
def test_broken_signature(algorithm, protocol, code) -> None:
    chain = contract_chain(algorithm)
    broken = break_signature(chain.leaf.cert)
    assert broken.tbs_certificate_bytes == chain.leaf.cert.tbs_certificate_bytes
    assert_rejected(validate(chain, protocol=protocol, leaf=broken), ChainFailure.BAD_SIGNATURE, code)
    broken_sub = break_signature(chain.sub1.cert)
    assert_rejected(validate(chain, protocol=protocol, sub_cas=[chain.sub2.cert, broken_sub]),
                    ChainFailure.BAD_SIGNATURE, code)


def test_wrong_curve_for_iso2() -> None:
    chain = contract_chain()
    p384_leaf = make_leaf(chain.sub2, algorithm="secp384r1")
    assert_rejected(validate(chain, leaf=p384_leaf.cert), ChainFailure.ALGORITHM, Iso2Code.FAILED_CertChainError)
    with pytest.raises(ValueError, match="secp384r1"):
        protocol_for_leaf(p384_leaf.cert)


def test_iso20_chain_validated_as_iso2_and_the_reverse() -> None:
    assert_rejected(validate(contract_chain(P521), protocol=ISO2), ChainFailure.ALGORITHM,
                    Iso2Code.FAILED_CertChainError)
    assert_rejected(validate(contract_chain(P256), protocol=ISO20), ChainFailure.ALGORITHM,
                    Iso20Code.WARNING_CertificateValidationError)


def test_iso20_chain_must_not_mix_algorithms() -> None:
    root = make_cert("MO Root", None, algorithm=P521)
    sub1 = make_cert("MO Sub1", root, algorithm=P521, path_length=1)
    sub2 = make_cert("MO Sub2", sub1, algorithm=P521, path_length=0)
    ed448_leaf = make_leaf(sub2, algorithm=ED448)  # signed with P-521/SHA-512, but its own key is Ed448
    verdict = validate(Chain(root, sub1, sub2, ed448_leaf), protocol=ISO20)
    assert_rejected(verdict, ChainFailure.ALGORITHM, Iso20Code.WARNING_CertificateValidationError)


def test_path_too_long_three_sub_cas() -> None:
    root = make_cert("MO Root", None)
    sub1 = make_cert("MO Sub1", root)
    sub2 = make_cert("MO Sub2", sub1)
    sub3 = make_cert("MO Sub3", sub2)
    leaf = make_leaf(sub3)
    verdict = ContractChainValidator([root.cert]).validate(
        leaf.cert, [sub3.cert, sub2.cert, sub1.cert], protocol=ISO2, now=NOW)
    assert_rejected(verdict, ChainFailure.PATH_TOO_LONG, Iso2Code.FAILED_CertChainError)


def test_path_length_constraint_violated() -> None:
    root = make_cert("MO Root", None)
    sub1 = make_cert("MO Sub1", root, path_length=0)  # may not have a sub-CA below it ...
    sub2 = make_cert("MO Sub2", sub1, path_length=0)  # ... but has one
    verdict = validate(Chain(root, sub1, sub2, make_leaf(sub2)))
    assert_rejected(verdict, ChainFailure.PATH_TOO_LONG, Iso2Code.FAILED_CertChainError)
    assert "MO Sub1" in verdict.reason


def test_root_path_length_counts_too() -> None:
    root = make_cert("MO Root", None, path_length=0)
    sub1 = make_cert("MO Sub1", root, path_length=1)
    sub2 = make_cert("MO Sub2", sub1, path_length=0)
    assert_rejected(validate(Chain(root, sub1, sub2, make_leaf(sub2))), ChainFailure.PATH_TOO_LONG,
                    Iso2Code.FAILED_CertChainError)


@pytest.mark.parametrize("flag", ["not a CA", "no basicConstraints"])
def test_sub_ca_without_ca_flag(flag: str) -> None:
    root = make_cert("MO Root", None)
    sub1 = make_cert("MO Sub1", root, ca=False if flag == "not a CA" else None)
    sub2 = make_cert("MO Sub2", sub1, path_length=0)
    verdict = validate(Chain(root, sub1, sub2, make_leaf(sub2)))
    assert_rejected(verdict, ChainFailure.PROFILE, Iso2Code.FAILED_CertChainError)
    assert "not a CA" in verdict.reason


def test_sub_ca_without_key_cert_sign() -> None:
    root = make_cert("MO Root", None)
    sub1 = make_cert("MO Sub1", root, path_length=1)
    sub2 = make_cert("MO Sub2", sub1, path_length=0, usage=("digitalSignature",))
    assert_rejected(validate(Chain(root, sub1, sub2, make_leaf(sub2))), ChainFailure.PROFILE,
                    Iso2Code.FAILED_CertChainError)


def test_leaf_is_a_ca() -> None:
    chain = contract_chain()
    ca_leaf = make_leaf(chain.sub2, ca=True, usage=("digitalSignature", "keyCertSign"))
    verdict = validate(chain, leaf=ca_leaf.cert)
    assert_rejected(verdict, ChainFailure.PROFILE, Iso2Code.FAILED_CertChainError)
    assert "is a CA" in verdict.reason


@pytest.mark.parametrize("usage", [("keyAgreement",), None])
def test_leaf_without_digital_signature(usage) -> None:
    chain = contract_chain()
    leaf = make_leaf(chain.sub2, usage=usage)
    assert_rejected(validate(chain, leaf=leaf.cert), ChainFailure.PROFILE, Iso2Code.FAILED_CertChainError)


def test_leaf_cn_must_be_an_emaid() -> None:
    chain = contract_chain()
    leaf = make_leaf(chain.sub2, emaid="Contract Certificate")
    assert_rejected(validate(chain, leaf=leaf.cert), ChainFailure.PROFILE, Iso2Code.FAILED_CertChainError)


def test_contract_domain_component_is_optional_but_if_present_is_mo() -> None:
    chain = contract_chain()
    assert validate(chain, leaf=make_leaf(chain.sub2, domain_component=None).cert).ok  # Table F.4: DC optional
    leaf = make_leaf(chain.sub2, domain_component="CPO")
    verdict = validate(chain, leaf=leaf.cert)
    assert_rejected(verdict, ChainFailure.PROFILE, Iso2Code.FAILED_CertChainError)
    assert "DC=MO" in verdict.reason and verdict.rule is Rule.DOMAIN_COMPONENT
    assert validate(chain, leaf=leaf.cert, validator={"check_domain_component": False}).ok


def test_sub_ca_domain_component_must_be_mo() -> None:
    root = make_cert("V2G Root", None, domain_component="V2G")  # the root's DC is its own business
    sub1 = make_cert("MO Sub1", root, path_length=1, domain_component="V2G")
    sub2 = make_cert("MO Sub2", sub1, path_length=0)
    assert_rejected(validate(Chain(root, sub1, sub2, make_leaf(sub2))), ChainFailure.PROFILE,
                    Iso2Code.FAILED_CertChainError)


@pytest.mark.parametrize(("protocol", "algorithm", "code"), [
    (ISO2, P256, Iso2Code.FAILED_CertChainError),
    (ISO20, P521, Iso20Code.WARNING_CertificateValidationError),
])
def test_emaid_mismatch(protocol, algorithm, code) -> None:
    verdict = validate(contract_chain(algorithm), protocol=protocol, expected_emaid="DE8ACC12E456783")
    assert_rejected(verdict, ChainFailure.EMAID_MISMATCH, code)
    assert verdict.emaid == TEST_EMAID


class RecordingRevocation:
    """A status source that revokes the given serial numbers and records what it was asked."""

    def __init__(self, revoked: set[int] = frozenset(), unknown: set[int] = frozenset()) -> None:
        self.revoked, self.unknown = revoked, unknown
        self.asked: list[tuple[str, str]] = []

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> RevocationStatus:
        self.asked.append((cert.subject.rfc4514_string(), issuer.subject.rfc4514_string()))
        if cert.serial_number in self.revoked:
            return RevocationStatus.REVOKED
        return RevocationStatus.UNKNOWN if cert.serial_number in self.unknown else RevocationStatus.GOOD


def test_revocation_hook_is_asked_for_every_link() -> None:
    chain = contract_chain()
    source = RecordingRevocation()
    assert validate(chain, validator={"revocation": source}).ok
    assert [(s.split(",")[-1], i.split(",")[-1]) for s, i in source.asked] == [
        (f"CN={TEST_EMAID}", "CN=MO Sub2"), ("CN=MO Sub2", "CN=MO Sub1"), ("CN=MO Sub1", "CN=MO Root"),
    ]


@pytest.mark.parametrize(("protocol", "algorithm", "code"), [
    (ISO2, P256, Iso2Code.FAILED_CertificateRevoked),
    (ISO20, ED448, Iso20Code.WARNING_CertificateRevoked),
])
@pytest.mark.parametrize("which", ["leaf", "sub1"])
def test_revoked(protocol, algorithm, code, which: str) -> None:
    chain = contract_chain(algorithm)
    source = RecordingRevocation(revoked={getattr(chain, which).cert.serial_number})
    verdict = validate(chain, protocol=protocol, validator={"revocation": source})
    assert_rejected(verdict, ChainFailure.REVOKED, code)


def test_unknown_revocation_status_is_soft_fail_unless_configured() -> None:
    chain = contract_chain()
    source = RecordingRevocation(unknown={chain.leaf.cert.serial_number})
    assert validate(chain, validator={"revocation": source}).ok
    strict = validate(chain, validator={"revocation": source, "reject_unknown_revocation": True})
    assert_rejected(strict, ChainFailure.REVOCATION_UNKNOWN, Iso2Code.FAILED_CertChainError)


def test_revocation_is_not_asked_for_a_broken_chain() -> None:
    chain = contract_chain()
    source = RecordingRevocation()
    verdict = validate(chain, leaf=break_signature(chain.leaf.cert), validator={"revocation": source})
    assert not verdict.ok and source.asked == []


@pytest.mark.parametrize(("protocol", "code"), [
    (ISO2, Iso2Code.FAILED_NoCertificateAvailable), (ISO20, Iso20Code.WARNING_NoCertificateAvailable),
])
def test_no_trust_anchor_installed(protocol, code) -> None:
    chain = contract_chain()
    verdict = ContractChainValidator([]).validate(chain.leaf.cert, chain.sub_cas, protocol=protocol, now=NOW)
    assert_rejected(verdict, ChainFailure.NO_TRUST_ANCHOR, code)
    assert verdict.emaid == TEST_EMAID  # still reported, e.g. for forwarding to the CSMS


def test_missing_or_garbage_leaf() -> None:
    validator = ContractChainValidator([contract_chain().root.cert])
    assert_rejected(validator.validate(b"", [], protocol=ISO2, now=NOW), ChainFailure.NO_CERTIFICATE,
                    Iso2Code.FAILED_CertChainError)
    assert_rejected(validator.validate(None, [], protocol=ISO20, now=NOW), ChainFailure.NO_CERTIFICATE,
                    Iso20Code.WARNING_CertificateValidationError)
    verdict = validator.validate(b"\x30\x03\x02\x01\x00", [], protocol=ISO2, now=NOW)
    assert_rejected(verdict, ChainFailure.MALFORMED, Iso2Code.FAILED_CertChainError)
    assert verdict.leaf is None
    verdict = validator.validate(contract_chain().leaf.der, [b"junk"], protocol=ISO2, now=NOW)
    assert_rejected(verdict, ChainFailure.MALFORMED, Iso2Code.FAILED_CertChainError)


def test_every_failure_maps_to_a_code_of_the_schema() -> None:
    for failure in [None, *ChainFailure]:
        assert response_code_for(ISO2, failure) in set(Iso2Code)
        assert response_code_for(ISO20, failure) in set(Iso20Code)
    assert response_code_for(ISO2, None) == "OK" and response_code_for(ISO20, None) == "OK"


def test_protocol_for_leaf_by_key_algorithm() -> None:
    assert protocol_for_leaf(contract_chain(P256).leaf.cert) is ISO2
    assert protocol_for_leaf(contract_chain(P521).leaf.cert) is ISO20
    assert protocol_for_leaf(contract_chain(ED448).leaf.cert) is ISO20


# --- the test PKI we write is a valid PKI -------------------------------------------------------------------

def test_created_test_pki_chains_validate(tmp_path: Path) -> None:
    create_test_pki(tmp_path, now=NOW)
    for folder, algorithm in FOLDERS.items():
        paths = PkiPaths(tmp_path, folder)
        roots = [*parse_certificates(paths.cert("moRootCA").read_bytes()),
                 *parse_certificates(paths.cert("v2gRootCA").read_bytes())]
        leaf = parse_certificates(paths.cert("contractLeaf", "der").read_bytes())[0]
        sub_cas = parse_certificates((paths.certs / "intermediateMOCACerts.pem").read_bytes())
        protocol = protocol_for_leaf(leaf)
        assert protocol is (ISO2 if algorithm is P256 else ISO20)
        verdict = ContractChainValidator(roots).validate(leaf, sub_cas, protocol=protocol,
                                                         now=NOW + dt.timedelta(days=1), expected_emaid=TEST_EMAID)
        assert verdict.ok, (folder, verdict.reason)
        # the contract leaf lives 730 days (Josev's value)
        late = ContractChainValidator(roots).validate(leaf, sub_cas, protocol=protocol,
                                                      now=NOW + dt.timedelta(days=731))
        assert late.failure is ChainFailure.EXPIRED
