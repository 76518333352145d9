"""Crafted chains, one rule broken at a time, for every kind of ISO 15118 chain (contract, SECC, OEM provisioning,
CPS) and every algorithm (-2 P-256, -20 P-521 and Ed448): each must be refused by exactly that rule with the
protocol's ResponseCode, and the good chain and the tolerated variants must be accepted. Then the trust-store
states, and the ECDSA RFC 5280 cases cross-checked against cryptography's verifier on its own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.x509 import verification

from edge.pki.chain import (
    MAX_CERTIFICATE_BYTES,
    CertificateChainValidator,
    ChainFailure,
    ChainKind,
    ContractProtocol,
    Rule,
    response_code_for,
    rfc5280_verifier,
)
from edge.pki.testpki import TEST_EMAID, KeyAlgorithm
from exi.model.iso2_msgdatatypes import responseCodeType as Iso2Code
from exi.model.iso20_commontypes import responseCodeType as Iso20Code
from tests.pki_builders import NOW, Issued, break_signature, generate_key, make_cert

P256, P521, ED448 = KeyAlgorithm.P256_SHA256, KeyAlgorithm.P521_SHA512, KeyAlgorithm.ED448
FAMILIES = [(P256, ContractProtocol.ISO2), (P521, ContractProtocol.ISO20), (ED448, ContractProtocol.ISO20)]
FAMILY_IDS = ["iso2-p256", "iso20-p521", "iso20-ed448"]

ROOT_DC = {ChainKind.CONTRACT: "MO", ChainKind.SECC: "V2G", ChainKind.OEM: "OEM", ChainKind.CPS: "V2G"}
SUB_CA_DC = {ChainKind.CONTRACT: "MO", ChainKind.SECC: "V2G", ChainKind.OEM: "OEM", ChainKind.CPS: "CPS"}
LEAF = {  # CN, DC, keyUsage of each kind's leaf as the test PKI has them
    ChainKind.CONTRACT: (TEST_EMAID, "MO", ("digitalSignature", "nonRepudiation", "keyAgreement")),
    ChainKind.SECC: ("DE*ABC*S12345678901234567890123456789", "CPO", ("digitalSignature", "keyAgreement")),
    ChainKind.OEM: ("WMIV1234567890ABCDEX", "OEM", ("digitalSignature", "keyAgreement")),
    ChainKind.CPS: ("CPS Leaf", "CPS", ("digitalSignature",)),
}
OTHER_ROLE_DC = {ChainKind.CONTRACT: "CPO", ChainKind.SECC: "MO", ChainKind.OEM: "MO", ChainKind.CPS: "OEM"}
UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")
DAY = dt.timedelta(days=1)


@dataclass
class Crafted:
    """One chain as a peer would present it, the anchors installed, and what the validator must say."""

    leaf: x509.Certificate
    sub_cas: list[x509.Certificate]
    anchors: list[x509.Certificate]
    refused_by: Rule | None  # None: accepted
    failure: ChainFailure | None = None
    rfc5280: bool = False  # a violation any RFC 5280 validator must refuse


class ChainFactory:
    """Good chains of one kind and algorithm, with a knob per certificate (keywords of make_cert)."""

    def __init__(self, kind: ChainKind, algorithm: KeyAlgorithm) -> None:
        self.kind, self.algorithm = kind, algorithm

    def root(self, **kw: object) -> Issued:
        options: dict[str, object] = {"algorithm": self.algorithm, "domain_component": ROOT_DC[self.kind]}
        return make_cert(f"{self.kind.value} Root", None, **(options | kw))  # type: ignore[arg-type]

    def sub_ca(self, name: str, issuer: Issued, path_length: int | None = None, **kw: object) -> Issued:
        """A CA; ``path_length`` is its default pathLenConstraint (a ``path_length`` keyword overrides it)."""
        options: dict[str, object] = {"algorithm": self.algorithm, "path_length": path_length,
                                      "domain_component": SUB_CA_DC[self.kind]}
        return make_cert(f"{self.kind.value} {name}", issuer, **(options | kw))  # type: ignore[arg-type]

    def leaf(self, issuer: Issued, **kw: object) -> Issued:
        common_name, dc, usage = LEAF[self.kind]
        options: dict[str, object] = {"algorithm": self.algorithm, "ca": False, "usage": usage, "domain_component": dc}
        options |= kw
        return make_cert(str(options.pop("common_name", common_name)), issuer, **options)  # type: ignore[arg-type]

    def chain(self, *, root: dict | None = None, sub1: dict | None = None, sub2: dict | None = None,
              leaf: dict | None = None) -> tuple[Issued, Issued, Issued, Issued]:
        r = self.root(**(root or {}))
        s1 = self.sub_ca("Sub-CA 1", r, **({"path_length": 1} | (sub1 or {})))  # type: ignore[arg-type]
        s2 = self.sub_ca("Sub-CA 2", s1, **({"path_length": 0} | (sub2 or {})))  # type: ignore[arg-type]
        return r, s1, s2, self.leaf(s2, **(leaf or {}))


def crafted_chains(kind: ChainKind, algorithm: KeyAlgorithm,
                   protocol: ContractProtocol) -> Iterator[tuple[str, Crafted]]:
    """Every case: (name, chain). Each refused case breaks one rule and keeps everything else good."""
    f = ChainFactory(kind, algorithm)

    def case(refused_by: Rule | None, failure: ChainFailure | None = None, *, rfc5280: bool = False,
             **parts: dict) -> Crafted:
        r, s1, s2, leaf = f.chain(**parts)
        return Crafted(leaf.cert, [s2.cert, s1.cert], [r.cert], refused_by, failure, rfc5280)

    yield "good chain", case(None)
    # --- RFC 5280 -----------------------------------------------------------------------------------------
    r, s1, s2, leaf = f.chain()
    yield "leaf signature broken", Crafted(break_signature(leaf.cert), [s2.cert, s1.cert], [r.cert], Rule.SIGNATURE,
                                           ChainFailure.BAD_SIGNATURE, True)
    yield "sub-CA signed by a stranger's key", case(Rule.SIGNATURE, ChainFailure.BAD_SIGNATURE, rfc5280=True,
                                                    sub2={"sign_with": generate_key(algorithm)})
    stranger = make_cert("Stranger Root", None, algorithm=algorithm)
    yield "root not installed", Crafted(leaf.cert, [s2.cert, s1.cert], [stranger.cert], Rule.PATH_TO_ANCHOR,
                                        ChainFailure.UNKNOWN_ROOT, True)
    yield "sub-CA 1 missing", Crafted(leaf.cert, [s2.cert], [r.cert], Rule.PATH_TO_ANCHOR, ChainFailure.UNKNOWN_ROOT,
                                      True)
    yield "leaf expired", case(Rule.VALIDITY, ChainFailure.EXPIRED, rfc5280=True,
                               leaf={"not_before": NOW - 30 * DAY, "not_after": NOW - DAY})
    yield "sub-CA 2 expired", case(Rule.VALIDITY, ChainFailure.EXPIRED, rfc5280=True,
                                   sub2={"not_before": NOW - 30 * DAY, "not_after": NOW - DAY})
    yield "root expired", case(Rule.VALIDITY, ChainFailure.EXPIRED, rfc5280=True,
                               root={"not_before": NOW - 30 * DAY, "not_after": NOW - DAY})
    yield "leaf not yet valid", case(Rule.VALIDITY, ChainFailure.NOT_YET_VALID, rfc5280=True,
                                     leaf={"not_before": NOW + DAY})
    yield "sub-CA 2 not a CA", case(Rule.CA_FLAG, ChainFailure.PROFILE, rfc5280=True, sub2={"ca": False})
    yield "sub-CA 1 without basicConstraints", case(Rule.CA_FLAG, ChainFailure.PROFILE, rfc5280=True,
                                                    sub1={"ca": None})
    yield "sub-CA 1 pathLen 0 above sub-CA 2", case(Rule.PATH_LENGTH, ChainFailure.PATH_TOO_LONG, rfc5280=True,
                                                    sub1={"path_length": 0})
    yield "root pathLen 0 above two sub-CAs", case(Rule.PATH_LENGTH, ChainFailure.PATH_TOO_LONG, rfc5280=True,
                                                   root={"path_length": 0})
    yield "sub-CA 2 keyUsage without keyCertSign", case(Rule.KEY_CERT_SIGN, ChainFailure.PROFILE, rfc5280=True,
                                                        sub2={"usage": ("cRLSign", "digitalSignature")})
    critical = [(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)]
    yield "unknown critical extension in the leaf", case(Rule.CRITICAL_EXTENSION, ChainFailure.PROFILE,
                                                         rfc5280=True, leaf={"extensions": critical})
    yield "unknown critical extension in sub-CA 1", case(Rule.CRITICAL_EXTENSION, ChainFailure.PROFILE,
                                                         rfc5280=True, sub1={"extensions": critical})
    # --- ISO 15118 profiles ---------------------------------------------------------------------------------
    r3 = f.root(path_length=None)
    a = f.sub_ca("A", r3, None)
    b = f.sub_ca("B", a, None)
    c = f.sub_ca("C", b, None)
    yield "three sub-CAs", Crafted(f.leaf(c).cert, [c.cert, b.cert, a.cert], [r3.cert], Rule.MAX_SUB_CAS,
                                   ChainFailure.PATH_TOO_LONG)
    yield "leaf issued by the root itself", Crafted(f.leaf(r).cert, [], [r.cert], Rule.ISSUED_BY_SUB_CA,
                                                    ChainFailure.PROFILE)
    yield "leaf on secp384r1", case(Rule.ALGORITHM, ChainFailure.ALGORITHM, leaf={"algorithm": "secp384r1"})
    other = P521 if algorithm is P256 else P256
    yield "sub-CA 2 of another algorithm", case(Rule.ALGORITHM, ChainFailure.ALGORITHM,
                                                sub2={"algorithm": other})
    limit = MAX_CERTIFICATE_BYTES[protocol.value]
    padding = [(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x04\x82" + limit.to_bytes(2, "big") + bytes(limit)),
                False)]
    if kind is ChainKind.SECC:  # arrives in TLS, not in a schema-bounded message
        yield "oversize leaf (TLS carries it)", case(None, leaf={"extensions": padding})
    else:
        yield "oversize leaf", case(Rule.CERTIFICATE_SIZE, ChainFailure.PROFILE, leaf={"extensions": padding})
        yield "oversize sub-CA", case(Rule.CERTIFICATE_SIZE, ChainFailure.PROFILE, sub1={"extensions": padding})
    yield "leaf is a CA", case(Rule.LEAF_NOT_CA, ChainFailure.PROFILE,
                               leaf={"ca": True, "usage": ("digitalSignature", "keyCertSign")})
    yield "leaf without digitalSignature", case(Rule.LEAF_DIGITAL_SIGNATURE, ChainFailure.PROFILE,
                                                leaf={"usage": ("keyAgreement",)})
    yield "leaf without keyUsage", case(Rule.LEAF_DIGITAL_SIGNATURE, ChainFailure.PROFILE, leaf={"usage": None})
    if kind is ChainKind.CONTRACT:
        yield "contract CN not an eMAID", case(Rule.CONTRACT_EMAID, ChainFailure.PROFILE,
                                               leaf={"common_name": "Contract Certificate"})
    yield "leaf DC of another role", case(Rule.DOMAIN_COMPONENT, ChainFailure.PROFILE,
                                          leaf={"domain_component": OTHER_ROLE_DC[kind]})
    yield "sub-CA 2 of another role", case(Rule.DOMAIN_COMPONENT, ChainFailure.PROFILE,
                                           sub2={"domain_component": OTHER_ROLE_DC[kind]})
    if kind is ChainKind.SECC:
        yield "SECC leaf without DC=CPO", case(Rule.DOMAIN_COMPONENT, ChainFailure.PROFILE,
                                               leaf={"domain_component": None})
    else:
        yield "leaf without DC (optional)", case(None, leaf={"domain_component": None})
    # --- tolerated ----------------------------------------------------------------------------------------
    yield "sub-CAs without DC", case(None, sub1={"domain_component": None}, sub2={"domain_component": None})
    yield "unknown non-critical extension", case(None, leaf={"extensions": [(critical[0][0], False)]})
    yield "root without keyUsage and with an EKU", case(None, root={"usage": None, "eku": [
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]})
    r1 = f.root()
    only = f.sub_ca("Sub-CA", r1, 0)
    yield "one sub-CA", Crafted(f.leaf(only).cert, [only.cert], [r1.cert], None)
    yield "sub-CAs in any order with extras", Crafted(leaf.cert, [s1.cert, stranger.cert, r.cert, s2.cert], [r.cert],
                                                      None)


def all_cases() -> Iterator[object]:
    for kind in ChainKind:
        for (algorithm, protocol), family in zip(FAMILIES, FAMILY_IDS, strict=True):
            yield pytest.param(kind, algorithm, protocol, id=f"{kind.value}-{family}")


@pytest.mark.parametrize(("kind", "algorithm", "protocol"), list(all_cases()))
def test_each_rule_broken_alone_is_refused_by_that_rule(kind: ChainKind, algorithm: KeyAlgorithm,
                                                        protocol: ContractProtocol) -> None:
    problems = []
    for name, crafted in crafted_chains(kind, algorithm, protocol):
        verdict = CertificateChainValidator(crafted.anchors, kind=kind).validate(
            crafted.leaf, crafted.sub_cas, protocol=protocol, now=NOW)
        if crafted.refused_by is None:
            if not verdict.ok:
                problems.append(f"{name}: refused ({verdict.rule}: {verdict.reason})")
            continue
        expected_code = response_code_for(protocol, crafted.failure)
        if verdict.ok or verdict.rule is not crafted.refused_by or verdict.failure is not crafted.failure \
                or verdict.response_code != expected_code:
            problems.append(f"{name}: expected {crafted.refused_by.name}/{crafted.failure}, got "
                            f"{verdict.rule and verdict.rule.name}/{verdict.failure} ({verdict.reason})")
        elif verdict.ok is False and expected_code in (Iso2Code.OK, Iso20Code.OK):
            problems.append(f"{name}: refused with OK")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("algorithm", "protocol"), FAMILIES[:2], ids=FAMILY_IDS[:2])
def test_rfc5280_cases_are_refused_by_cryptographys_verifier_alone(algorithm: KeyAlgorithm,
                                                                   protocol: ContractProtocol) -> None:
    """Our walk names the rule; the RFC 5280 verifier we build on must agree that each such chain is bad (and
    that the good one is good), so the two layers cannot drift apart."""
    checked = 0
    for name, crafted in crafted_chains(ChainKind.CONTRACT, algorithm, protocol):
        if not (crafted.rfc5280 or name == "good chain"):
            continue
        try:
            rfc5280_verifier(crafted.anchors, NOW).verify(crafted.leaf, crafted.sub_cas)
            accepted = True
        except verification.VerificationError:
            accepted = False
        assert accepted is (crafted.refused_by is None), name
        checked += 1
    assert checked >= 15


# --- trust-store states --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("algorithm", "protocol", "code"), [
    (P256, ContractProtocol.ISO2, Iso2Code.FAILED_NoCertificateAvailable),
    (P521, ContractProtocol.ISO20, Iso20Code.WARNING_NoCertificateAvailable),
    (ED448, ContractProtocol.ISO20, Iso20Code.WARNING_NoCertificateAvailable),
])
def test_no_roots_is_a_verdict(algorithm: KeyAlgorithm, protocol: ContractProtocol, code: object) -> None:
    _, s1, s2, leaf = ChainFactory(ChainKind.CONTRACT, algorithm).chain()
    verdict = CertificateChainValidator([]).validate(leaf.cert, [s2.cert, s1.cert], protocol=protocol, now=NOW)
    assert not verdict.ok and verdict.failure is ChainFailure.NO_TRUST_ANCHOR and verdict.response_code == code
    assert verdict.rule is Rule.TRUST_STORE and verdict.emaid == TEST_EMAID


@pytest.mark.parametrize(("algorithm", "protocol", "code"), [
    (P256, ContractProtocol.ISO2, Iso2Code.FAILED_CertificateExpired),
    (ED448, ContractProtocol.ISO20, Iso20Code.WARNING_CertificateExpired),
])
def test_only_expired_roots(algorithm: KeyAlgorithm, protocol: ContractProtocol, code: object) -> None:
    f = ChainFactory(ChainKind.CONTRACT, algorithm)
    expired_root = make_cert("Old Root", None, algorithm=algorithm, domain_component="MO",
                             not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    sub1 = f.sub_ca("Sub-CA 1", expired_root, 1)
    sub2 = f.sub_ca("Sub-CA 2", sub1, 0)
    leaf = f.leaf(sub2)
    verdict = CertificateChainValidator([expired_root.cert]).validate(
        leaf.cert, [sub2.cert, sub1.cert], protocol=protocol, now=NOW)
    assert verdict.failure is ChainFailure.EXPIRED and verdict.response_code == code
    assert "trusted root" in verdict.reason
    # the same root renewed (same name and key, new validity) beside the expired copy: the valid one is taken
    renewed = make_cert("Old Root", None, algorithm=algorithm, key=expired_root.key, domain_component="MO")
    verdict = CertificateChainValidator([expired_root.cert, renewed.cert]).validate(
        leaf.cert, [sub2.cert, sub1.cert], protocol=protocol, now=NOW)
    assert verdict.ok, verdict.reason
    assert verdict.path[-1] == renewed.cert


@pytest.mark.parametrize("roots", ["OEM root only", "roots of the other protocol"])
def test_roots_of_another_type(roots: str) -> None:
    _, s1, s2, leaf = ChainFactory(ChainKind.CONTRACT, P256).chain()
    anchors = ([ChainFactory(ChainKind.OEM, P256).root().cert] if roots == "OEM root only"
               else [ChainFactory(ChainKind.CONTRACT, P521).root().cert])
    verdict = CertificateChainValidator(anchors).validate(leaf.cert, [s2.cert, s1.cert],
                                                          protocol=ContractProtocol.ISO2, now=NOW)
    assert not verdict.ok and verdict.response_code == Iso2Code.FAILED_CertChainError
    assert verdict.failure in (ChainFailure.UNKNOWN_ROOT, ChainFailure.BAD_SIGNATURE)
    assert "1 trust anchor(s) installed" in verdict.reason or "signature" in verdict.reason
