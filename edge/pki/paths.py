"""Certificate paths outside the contract profile (OEM provisioning, CPS, SECC chains): is a link
signed by its issuer, and does a chain lead to a trusted root with every certificate in date.
Contract chains have their own, stricter validator in :mod:`edge.pki.chain`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature


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


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Why a chain is refused: ``kind`` is "expired", "not yet valid" or "invalid"."""

    kind: str
    reason: str


def chain_problem(leaf: x509.Certificate, sub_cas: Sequence[x509.Certificate], roots: Sequence[x509.Certificate],
                  now: dt.datetime, what: str) -> ChainProblem | None:
    """None when ``leaf`` and at most two of ``sub_cas`` (any order) lead to one of ``roots``, every link
    signed by a CA and every certificate on the path valid at ``now``; else why not (``what`` names the
    chain in the reason, e.g. "OEM provisioning")."""
    path, unused = [leaf], list(sub_cas)
    while not any(r.subject == path[-1].issuer and issued_by(path[-1], r) for r in roots):
        issuer = next((c for c in unused if c.subject == path[-1].issuer and issued_by(path[-1], c)), None)
        if issuer is None or len(path) > 2:
            stuck = f"stuck at {subject_text(path[-1])}, issued by {path[-1].issuer.rfc4514_string()}"
            return ChainProblem("invalid", f"the {what} chain does not lead to a trusted root ({stuck})")
        unused.remove(issuer)
        path.append(issuer)
    root = next(r for r in roots if r.subject == path[-1].issuer and issued_by(path[-1], r))
    for cert in (*path, root):
        if now < cert.not_valid_before_utc:
            return ChainProblem("not yet valid", f"{what} certificate {subject_text(cert)} is not valid before "
                                                 f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M}")
        if now > cert.not_valid_after_utc:
            return ChainProblem("expired", f"{what} certificate {subject_text(cert)} expired at "
                                           f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}")
    return None
