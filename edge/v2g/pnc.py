"""What a V2G session asks about Plug & Charge, and who answers.

The session owns the protocol (which message when, the GenChallenge it issued, the ResponseCode on
the wire); a :class:`PlugAndCharge` implementation owns the decisions: is this contract chain valid
here and now, does this signature verify with the contract key, does the backend (the CSMS, later
over OCPP) authorize the contract, and what to answer a certificate installation or update. The
local implementation (certificate checks in :mod:`edge.pki`) plugs in here, so does the OCPP bridge.

Every answer is a ResponseCode name of the session's protocol ("OK" or a FAILED_* name), so each
failure reaches the car as the code the standard gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import exi


@dataclass(frozen=True, slots=True)
class ContractChain:
    """The contract certificate chain the car presented (PaymentDetailsReq, -2), DER encoded."""

    leaf: bytes
    sub_cas: tuple[bytes, ...]
    emaid: str  # the eMAID the car sent alongside


@dataclass(frozen=True, slots=True)
class CertificateResponse:
    """A certificate installation/update answer: the response body and the header signature that
    the certificate provisioning service made over it (None with a failure code)."""

    response_code: str
    body: Any = None  # the protocol's CertificateInstallationResType / CertificateUpdateResType
    signature: Any = None  # the protocol's xmldsig SignatureType for the response header


class PlugAndCharge(Protocol):
    def check_contract(self, proto: str, chain: ContractChain, now: float) -> str:
        """Validate the chain at unix time ``now``: "OK" or the ResponseCode to refuse it with."""
        ...

    def check_signature(self, proto: str, signature: Any, signed: list[exi.Fragment], chain: ContractChain) -> str:
        """Does ``signature`` (the request header's) cover ``signed`` and verify with the contract
        leaf's key: "OK" or FAILED_SignatureError (-2)."""
        ...

    def authorize(self, proto: str, chain: ContractChain) -> str:
        """The backend's decision on this contract: "OK", "Ongoing" (ask again) or a FAILED_* code."""
        ...

    def installs_certificates(self, proto: str) -> bool:
        """Whether certificate installation is offered to ``proto`` cars (-20 AuthorizationSetupRes says so)."""
        ...

    def install_certificate(self, proto: str, request: Any, signature: Any,
                            raw: bytes | None = None) -> CertificateResponse:
        """A CertificateInstallationReq with its header signature (by the OEM provisioning key); ``raw``: the
        request's EXI as the car sent it (a backend gets it unchanged). "Ongoing": ask again (-20 tells the car,
        -2 makes its connection wait)."""
        ...

    def update_certificate(self, proto: str, request: Any, signature: Any,
                           raw: bytes | None = None) -> CertificateResponse:
        """A CertificateUpdateReq with its header signature (by the current contract key)."""
        ...
