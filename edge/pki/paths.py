"""Certificate paths outside the contract profile (OEM provisioning, CPS, SECC chains): is a link signed by its
issuer (:func:`issued_by`), and is a chain valid (:func:`chain_problem`, on the one validator of
:mod:`edge.pki.chain` with the chain's own profile)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from edge.pki.chain import (
    CertificateChainValidator,
    ChainFailure,
    ChainKind,
    ChainVerdict,
    protocol_for_leaf,
)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate, *, require_ca: bool = True) -> bool:
    """``issuer`` signed ``cert`` (and, with ``require_ca``, is marked a CA)."""
    try:
        if require_ca and not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
        cert.verify_directly_issued_by(issuer)
    except (x509.ExtensionNotFound, InvalidSignature, ValueError, TypeError):
        return False
    return True


def subject_text(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


_KINDS = {"OEM provisioning": "oem", "CPS": "cps", "SECC": "secc", "contract": "contract"}


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Why a chain is refused: ``kind`` is "expired", "not yet valid" or "invalid"; ``verdict`` the full verdict
    (its rule, failure and the protocol's ResponseCode)."""

    kind: str
    reason: str
    verdict: ChainVerdict | None = None


def chain_problem(leaf: x509.Certificate, sub_cas: Sequence[x509.Certificate], roots: Sequence[x509.Certificate],
                  now: dt.datetime, what: str) -> ChainProblem | None:
    """None when ``leaf`` and its ``sub_cas`` (any order) form a valid chain of that kind to one of ``roots`` by
    :class:`edge.pki.chain.CertificateChainValidator` (RFC 5280 and the ISO 15118 profile of ``what``: "OEM
    provisioning", "CPS", "SECC"); else why not. The protocol comes from the leaf's key algorithm."""
    try:
        protocol = protocol_for_leaf(leaf)
    except ValueError as e:
        return ChainProblem("invalid", f"the {what} certificate {subject_text(leaf)}: {e}")
    verdict = CertificateChainValidator(roots, kind=ChainKind(_KINDS[what])).validate(
        leaf, sub_cas, protocol=protocol, now=now)
    if verdict.ok:
        return None
    kind = {ChainFailure.EXPIRED: "expired", ChainFailure.NOT_YET_VALID: "not yet valid"}.get(
        verdict.failure, "invalid")  # type: ignore[arg-type]
    if verdict.failure in (ChainFailure.UNKNOWN_ROOT, ChainFailure.BAD_SIGNATURE, ChainFailure.NO_TRUST_ANCHOR):
        return ChainProblem(kind, f"the {what} chain does not lead to a trusted root ({verdict.reason})", verdict)
    if kind != "invalid" and not verdict.reason.startswith("trusted root"):
        return ChainProblem(kind, f"{what} certificate {verdict.reason}", verdict)
    return ChainProblem(kind, f"the {what} chain: {verdict.reason}", verdict)
