"""Plug & Charge answered over OCPP: use case C07 "Authorization using Contract Certificates" (OCPP 2.0.1 and
2.1), as the :class:`edge.v2g.pnc.PlugAndCharge` the V2G sessions ask. Sans-IO: no sockets, no wall clock.

:class:`OcppPlugAndCharge` wraps the local checks (:class:`edge.pki.plug_and_charge.LocalPlugAndCharge`: chain
validation against the installed MO/V2G roots, the contract signature, certificate installation) and the device
model's ISO15118Ctrlr switches, and asks the CSMS with an Authorize request whether the contract may charge.

What the station does (it owns the connection, this class owns the decisions):

- ``online()`` (given at construction) says whether the CSMS connection is up and booted;
- ``wake()`` (optional) is called when a request is queued, so the station need not poll;
- :meth:`OcppPlugAndCharge.take_requests` hands out the queued :class:`AuthorizeRequest` (``key``, wire-form
  ``payload``, valid for 2.0.1 and 2.1); the station sends each as an Authorize CALL and reports back
  :meth:`~OcppPlugAndCharge.answered` (the AuthorizeResponse payload) or :meth:`~OcppPlugAndCharge.failed`
  (CALLERROR, timeout, connection lost). Both return False for a key that is no longer waiting (it timed out:
  the answer comes too late for the car and is dropped).

The session side: :meth:`~OcppPlugAndCharge.check_contract` at PaymentDetailsReq (-2) / the first AuthorizationReq
(-20); :meth:`~OcppPlugAndCharge.authorize` for each AuthorizationReq. The first ``authorize`` of a checked chain
queues an Authorize and answers "Ongoing"; the session repeats it (EVSEProcessing=Ongoing, -2 and -20) until the
decision comes, which is handed out once; the next session of the same contract asks the CSMS again.

Central contract validation (``CentralContractValidationAllowed``; 2.1 documents ``certificate`` for it): when
the local check refuses a chain only because none of the installed roots is its root
(:class:`~edge.pki.chain.ChainFailure` NO_TRUST_ANCHOR: no MO/V2G root installed at all; UNKNOWN_ROOT: none of the
name the chain leads to; BAD_SIGNATURE when only the link to an installed root of that name fails, i.e. another
root of the same name), the switch is true and the CSMS is online, the chain is accepted for now and its Authorize
carries the chain itself (``certificate``: PEM, leaf first, without a root) instead of hash data. What can still be
judged here is checked first (every link the car sent verifies, every certificate in date, the leaf's CN an eMAID
equal to the one the car sent). Such a chain is never authorized offline: nothing here vouches for it.

The other Authorize: ``idToken`` {eMAID, "eMAID"} and ``iso15118CertificateHashData``, the OCSP request data of
the leaf and the sub-CAs (each with its issuer; not the trusted root, which OCSP cannot revoke; at most 4). A
certificate that names no OCSP responder (authorityInfoAccess) is left out: OCPP requires a responderURL and the
CSMS could not ask anyone about it; with none left the field is omitted (minItems 1).

Decisions:

- The answer: ``certificateStatus`` other than Accepted decides first (C07.FR.16: a revoked chain comes as
  CertificateRevoked *and* idTokenInfo.status Invalid; the certificate status says why), then
  ``idTokenInfo.status`` (:data:`CERTIFICATE_STATUS_CODES`, :data:`ID_TOKEN_STATUS_CODES`). -2 has one code per
  certificate problem; -20 has WARNING_* codes (the car may go on with EIM) and folds chain and signature
  problems into WARNING_CertificateValidationError as the local validator does. A contract the backend
  refuses outright (Blocked, Expired, Invalid, Unknown) is -2 FAILED_ContractCanceled, as the local allow-list
  refuses; a contract that is fine but may not charge here/now (NoCredit, NotAtThisTime, ...) is -2 FAILED, so
  the car is not told its contract is cancelled. -20: WARNING_GeneralPnCAuthorizationError, and Unknown is
  WARNING_eMSPUnknown (the backend does not know the contract's provider or the contract).
- No answer (``failed``, ``answer_timeout`` seconds after queueing, not online at the first ``authorize``, the
  pending requests at their bound, a malformed answer): ``ContractValidationOffline`` true and the chain valid
  locally -> "OK" (an offline decision, noted as such); otherwise the refusal :data:`CSMS_UNREACHABLE_CODES`, and
  for a chain left to central validation its local verdict (e.g. -2 FAILED_NoCertificateAvailable).
  ``answer_timeout`` (40 s) stays under the sessions' ongoing timeout (60 s) so the car gets the decision.
- ``PnCEnabled`` false: :data:`PNC_DISABLED_CODES`. The sessions offer Contract/PnC whenever a PlugAndCharge is
  configured, so the refusal comes at the first contract message; it is the code the sessions give a payment or
  authorization option that was not offered (-2 FAILED_PaymentSelectionInvalid, -20
  WARNING_AuthorizationSelectionInvalid, after which a -20 car may use EIM).
- Certificate installation/update: the local one answers (a later slice relays Get15118EVCertificate), when
  ``PnCEnabled`` and ``ContractCertificateInstallationEnabled`` are both true; otherwise
  :data:`INSTALLATION_DISABLED_CODES` (the codes the local one gives when it has no issuer).
- Bounded state: at most ``max_pending`` requests waiting for the CSMS, ``max_finished`` decisions waiting for
  their session, ``max_checked`` checked chains, ``max_decisions`` decision records; the oldest go first. A flood
  of sessions costs bounded memory, and a chain past the pending bound is decided as unanswered at once.
- Time: ``clock()`` (monotonic seconds, given at construction) measures ``answer_timeout``; ``check_contract``
  judges certificates at the ``now`` the session passes.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import exi
from edge.ocpp.device_model import DeviceModel
from edge.pki.chain import (
    ChainFailure,
    ChainVerdict,
    ContractProtocol,
    is_valid_emaid,
    normalize_emaid,
    response_code_for,
)
from edge.pki.ocsp import MAX_CHAIN_ENTRIES, OcspError, ocsp_request_data
from edge.pki.paths import issued_by
from edge.pki.plug_and_charge import LocalPlugAndCharge, contract_protocol
from edge.v2g.pnc import CertificateResponse, ContractChain

log = logging.getLogger("edge.ocpp.pnc")

ISO2, ISO20 = ContractProtocol.ISO2, ContractProtocol.ISO20
Codes = dict[ContractProtocol, str]

#: AuthorizeResponse.certificateStatus other than Accepted -> ResponseCode (decides before idTokenInfo.status)
CERTIFICATE_STATUS_CODES: dict[str, Codes] = {
    "CertificateRevoked": {ISO2: "FAILED_CertificateRevoked", ISO20: "WARNING_CertificateRevoked"},
    "CertChainError": {ISO2: "FAILED_CertChainError", ISO20: "WARNING_CertificateValidationError"},
    "CertificateExpired": {ISO2: "FAILED_CertificateExpired", ISO20: "WARNING_CertificateExpired"},
    "SignatureError": {ISO2: "FAILED_SignatureError", ISO20: "WARNING_CertificateValidationError"},
    "NoCertificateAvailable": {ISO2: "FAILED_NoCertificateAvailable", ISO20: "WARNING_NoCertificateAvailable"},
    "ContractCancelled": {ISO2: "FAILED_ContractCanceled", ISO20: "WARNING_GeneralPnCAuthorizationError"},
}
_CONTRACT_REFUSED: Codes = {ISO2: "FAILED_ContractCanceled", ISO20: "WARNING_GeneralPnCAuthorizationError"}
_NOT_HERE_OR_NOW: Codes = {ISO2: "FAILED", ISO20: "WARNING_GeneralPnCAuthorizationError"}
#: idTokenInfo.status other than Accepted -> ResponseCode (any status not listed: as NoCredit)
ID_TOKEN_STATUS_CODES: dict[str, Codes] = {
    "Blocked": _CONTRACT_REFUSED,
    "Expired": _CONTRACT_REFUSED,
    "Invalid": _CONTRACT_REFUSED,
    "Unknown": {ISO2: "FAILED_ContractCanceled", ISO20: "WARNING_eMSPUnknown"},
    "NoCredit": _NOT_HERE_OR_NOW,
    "NotAllowedTypeEVSE": _NOT_HERE_OR_NOW,
    "NotAtThisLocation": _NOT_HERE_OR_NOW,
    "NotAtThisTime": _NOT_HERE_OR_NOW,
    "ConcurrentTx": _NOT_HERE_OR_NOW,
}
#: the CSMS could not be asked (or did not answer) and the contract may not be authorized offline
CSMS_UNREACHABLE_CODES: Codes = {ISO2: "FAILED", ISO20: "WARNING_GeneralPnCAuthorizationError"}
#: ISO15118Ctrlr.PnCEnabled is false
PNC_DISABLED_CODES: Codes = {ISO2: "FAILED_PaymentSelectionInvalid", ISO20: "WARNING_AuthorizationSelectionInvalid"}
#: ISO15118Ctrlr.ContractCertificateInstallationEnabled (or PnCEnabled) is false
INSTALLATION_DISABLED_CODES: Codes = {ISO2: "FAILED_NoCertificateAvailable", ISO20: "WARNING_NoCertificateAvailable"}

#: local refusals that only say "no installed root leads to this chain": the CSMS may validate it (and
#: BAD_SIGNATURE when only the link to an installed root of the right name fails, see _only_the_root_is_missing)
CENTRAL_VALIDATION_FAILURES = frozenset({ChainFailure.NO_TRUST_ANCHOR, ChainFailure.UNKNOWN_ROOT})
#: AuthorizeRequest.certificate is at most 5500 characters in 2.0.1 (10000 in 2.1): one payload fits both
MAX_CERTIFICATE_PEM = 5500
#: ISO 15118 allows two sub-CAs between the contract leaf and its root
_MAX_SUB_CAS = 2


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """One Authorize CALL to send: ``key`` for :meth:`OcppPlugAndCharge.answered` / ``failed``, ``payload`` the
    wire-form AuthorizeRequest."""

    key: str
    payload: dict[str, Any]
    emaid: str


@dataclass(frozen=True, slots=True)
class PncDecision:
    """One decision for logs and tests: about what, the ResponseCode given, and why."""

    what: str
    code: str
    why: str


@dataclass(frozen=True, slots=True)
class _CheckedContract:
    """What check_contract learnt about a chain that authorize needs."""

    emaid: str
    payload: dict[str, Any]  # the AuthorizeRequest to send for it
    central: bool  # validated by the CSMS only: never authorized offline
    local_code: str  # the local verdict ("OK" unless central)


@dataclass(slots=True)
class _Pending:
    leaf: bytes
    request: AuthorizeRequest
    queued_at: float
    taken: bool = False


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a request ended: the AuthorizeResponse payload, or None with why there is none."""

    answer: dict[str, Any] | None
    why: str


#: Get15118EVCertificate's iso15118SchemaVersion: the namespace of the car's message set
SCHEMA_VERSIONS: Codes = {ISO2: "urn:iso:15118:2:2013:MsgDef", ISO20: "urn:iso:std:iso:15118:-20:CommonMessages"}
#: how long the CSMS may take: -2 cannot say Ongoing and the car waits 5 s for its CertificateInstallationRes
#: (V2G_EV_Msg_Timeout); -20 says Ongoing and may take as long as an authorization
CERTIFICATE_TIMEOUT = {ISO2: 4.0, ISO20: 40.0}
#: an exchange nobody asked about again for this long after its deadline is forgotten (the car left)
STALE_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """One Get15118EVCertificate CALL to send: ``key`` for ``certificate_answered``/``certificate_failed``."""

    key: str
    payload: dict[str, Any]
    proto: str


@dataclass
class _Exchange:
    request: CertificateRequest
    deadline: float
    taken: bool = False
    outcome: dict[str, Any] | str | None = None  # the answer payload, or why there is none


def decode_certificate_response(proto: str, exi_response: str) -> CertificateResponse:
    """The CSMS's exiResponse (base64 EXI of the whole V2G message the CPS made) as the session's
    CertificateResponse: the response body and the header signature over it."""
    data = base64.b64decode(exi_response, validate=True)
    if contract_protocol(proto) is ISO2:
        message = exi.decode("iso2", data)
        body = message.Body
        res = getattr(body, "CertificateInstallationRes", None) or getattr(body, "CertificateUpdateRes", None)
        if res is None:
            raise ValueError("not a CertificateInstallationRes or CertificateUpdateRes")
        return CertificateResponse(str(res.ResponseCode), res, message.Header.Signature)
    res = exi.decode("iso20-common", data)
    if type(res).__name__ != "CertificateInstallationResType":
        raise ValueError(f"not a -20 CertificateInstallationRes but {type(res).__name__}")
    signature = res.Header.Signature if res.Header is not None else None
    return CertificateResponse(str(res.ResponseCode), res, signature)


class OcppPlugAndCharge:
    """The PlugAndCharge the V2G sessions ask, deciding with the CSMS over OCPP (see the module docstring)."""

    def __init__(self, local: LocalPlugAndCharge, device_model: DeviceModel, *, online: Callable[[], bool],
                 clock: Callable[[], float], wake: Callable[[], None] | None = None, answer_timeout: float = 40.0,
                 max_pending: int = 16, max_finished: int = 16, max_checked: int = 64,
                 max_decisions: int = 256) -> None:
        if min(max_pending, max_finished, max_checked, max_decisions) < 1 or answer_timeout <= 0:
            raise ValueError("bounds must be at least 1 and answer_timeout positive")
        self.local = local
        self.device_model = device_model
        self.online = online
        self.clock = clock
        self.wake = wake
        self.answer_timeout = answer_timeout
        self.max_pending, self.max_finished, self.max_checked = max_pending, max_finished, max_checked
        self.decisions: deque[PncDecision] = deque(maxlen=max_decisions)
        self._checked: OrderedDict[bytes, _CheckedContract] = OrderedDict()  # by leaf DER
        self._pending: dict[str, _Pending] = {}  # by request key, in queueing order
        self._finished: OrderedDict[bytes, _Outcome] = OrderedDict()  # by leaf DER
        self._serial = 0
        self._exchanges: OrderedDict[bytes, _Exchange] = OrderedDict()  # Get15118EVCertificate, by the car's request

    # --- the station's side -------------------------------------------------------------------------------------

    def take_requests(self) -> list[AuthorizeRequest]:
        """The Authorize requests to send now (each handed out once)."""
        self._expire()
        fresh = [p for p in self._pending.values() if not p.taken]
        for pending in fresh:
            pending.taken = True
        return [p.request for p in fresh]

    def answered(self, key: str, response: dict[str, Any]) -> bool:
        """The CSMS's AuthorizeResponse payload for request ``key``; False if that request is no longer waiting."""
        self._expire()
        pending = self._pending.pop(key, None)
        if pending is None:
            log.info("AuthorizeResponse for %s dropped: no request waiting (timed out or unknown)", key)
            return False
        self._finish(pending.leaf, _Outcome(response, f"CSMS answered {key}"))
        return True

    def failed(self, key: str, reason: str) -> bool:
        """Request ``key`` got no answer (CALLERROR, timeout, offline); False if it was no longer waiting."""
        self._expire()
        pending = self._pending.pop(key, None)
        if pending is None:
            return False
        self._finish(pending.leaf, _Outcome(None, f"Authorize failed: {reason}"))
        return True

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def held(self) -> dict[str, int]:
        """How many entries each bounded store holds (diagnostics; the flood tests check the bounds)."""
        return {"checked": len(self._checked), "pending": len(self._pending), "finished": len(self._finished),
                "decisions": len(self.decisions)}

    # --- the sessions' side (PlugAndCharge) ---------------------------------------------------------------------

    def check_contract(self, proto: str, chain: ContractChain, now: float) -> str:
        protocol = contract_protocol(proto)
        what = f"contract {chain.emaid}"
        if not self.device_model.pnc_enabled:
            return self._note(what, PNC_DISABLED_CODES[protocol], "PnCEnabled is false")
        # a new session asks the CSMS afresh: an answer nobody picked up is stale now
        self._finished.pop(chain.leaf, None)
        self._checked.pop(chain.leaf, None)
        # -2 sends the eMAID beside the chain and it must match the leaf; -20 has only the leaf's (as locally)
        expected = chain.emaid if protocol is ISO2 else chain.emaid or None
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        verdict = self.local.validator.validate(chain.leaf, chain.sub_cas, protocol=protocol, now=moment,
                                                expected_emaid=expected)
        what = f"contract {verdict.emaid or chain.emaid}"
        if verdict.ok:
            assert verdict.emaid is not None  # a valid leaf has an eMAID CN
            hash_data, why = _hash_data(verdict.path)
            payload = _authorize_payload(verdict.emaid, hash_data=hash_data)
            self._remember(chain.leaf, _CheckedContract(verdict.emaid, payload, False, "OK"))
            return self._note(what, "OK", verdict.reason + why)
        local_code = str(verdict.response_code)
        if not _only_the_root_is_missing(verdict, chain):
            return self._note(what, local_code, verdict.reason)
        if not self.device_model.central_contract_validation_allowed:
            return self._note(what, local_code, f"{verdict.reason} (CentralContractValidationAllowed is false)")
        if not self.online():
            return self._note(what, local_code, f"{verdict.reason} (CSMS offline: no central validation)")
        try:
            emaid, pem = _central_chain(chain, verdict, moment, expected)
        except _LocalRefusal as refusal:  # what can be judged here already fails
            return self._note(what, str(response_code_for(protocol, refusal.failure)), refusal.reason)
        if len(pem) > MAX_CERTIFICATE_PEM:
            return self._note(what, local_code, f"{verdict.reason}; the chain is too long for Authorize "
                                                f"({len(pem)} > {MAX_CERTIFICATE_PEM} characters of PEM)")
        self._remember(chain.leaf, _CheckedContract(emaid, _authorize_payload(emaid, certificate=pem), True,
                                                    local_code))
        return self._note(f"contract {emaid}", "OK", f"{verdict.reason}: left to the CSMS (central validation)")

    def check_signature(self, proto: str, signature: Any, signed: list[exi.Fragment], chain: ContractChain) -> str:
        return self.local.check_signature(proto, signature, signed, chain)

    def authorize(self, proto: str, chain: ContractChain) -> str:
        protocol = contract_protocol(proto)
        self._expire()
        if not self.device_model.pnc_enabled:
            return self._note(f"authorize {chain.emaid}", PNC_DISABLED_CODES[protocol], "PnCEnabled is false")
        contract = self._checked.get(chain.leaf)
        what = f"authorize {contract.emaid if contract else chain.emaid}"
        outcome = self._finished.pop(chain.leaf, None)
        if outcome is not None:
            if contract is None:  # forgotten under a flood since it was checked
                return self._note(what, CSMS_UNREACHABLE_CODES[protocol], "contract no longer known here")
            return self._decide(protocol, contract, outcome)
        pending = next((p for p in self._pending.values() if p.leaf == chain.leaf), None)
        if pending is not None:
            if pending.taken or self.online():
                return "Ongoing"
            # went offline before the station took the request: do not keep the car waiting for the timeout
            del self._pending[pending.request.key]
            outcome = _Outcome(None, "CSMS offline before Authorize was sent")
        elif contract is None:
            return self._note(what, CSMS_UNREACHABLE_CODES[protocol], "authorize before check_contract "
                                                                      "(or the check was forgotten)")
        elif not self.online():
            outcome = _Outcome(None, "CSMS offline")
        elif len(self._pending) >= self.max_pending:
            outcome = _Outcome(None, f"{self.max_pending} Authorize requests already waiting")
        else:
            self._queue(chain.leaf, contract)
            return "Ongoing"
        if contract is None:  # forgotten under a flood while its request waited
            return self._note(what, CSMS_UNREACHABLE_CODES[protocol], f"{outcome.why}; contract no longer known here")
        return self._decide(protocol, contract, outcome)

    def installs_certificates(self, proto: str) -> bool:
        return self._installation_enabled() and self.local.installs_certificates(proto)

    def install_certificate(self, proto: str, request: Any, signature: Any, raw: bytes | None = None
                            ) -> CertificateResponse:
        if not self._installation_enabled():
            code = INSTALLATION_DISABLED_CODES[contract_protocol(proto)]
            return CertificateResponse(self._note("installation", code, "contract certificate installation "
                                                                        "disabled (device model)"))
        if raw is not None and (self.online() or raw in self._exchanges):
            return self._relay_certificate(proto, "Install", raw)
        return self.local.install_certificate(proto, request, signature)

    def update_certificate(self, proto: str, request: Any, signature: Any, raw: bytes | None = None
                           ) -> CertificateResponse:
        if not self._installation_enabled():
            code = INSTALLATION_DISABLED_CODES[ISO2] if contract_protocol(proto) is ISO2 else "FAILED"
            return CertificateResponse(self._note("update", code, "contract certificate installation disabled "
                                                                  "(device model)"))
        if raw is not None and contract_protocol(proto) is ISO2 and (self.online() or raw in self._exchanges):
            return self._relay_certificate(proto, "Update", raw)
        return self.local.update_certificate(proto, request, signature)

    # --- Get15118EVCertificate (M01/M02): the car's request to the CSMS as it came, its answer back ------------

    def take_certificate_requests(self) -> list[CertificateRequest]:
        """The Get15118EVCertificate requests to send now (each handed out once)."""
        self._expire_exchanges()
        fresh = [x for x in self._exchanges.values() if not x.taken and x.outcome is None]
        for exchange in fresh:
            exchange.taken = True
        return [x.request for x in fresh]

    def certificate_answered(self, key: str, response: dict[str, Any]) -> bool:
        return self._exchange_outcome(key, response)

    def certificate_failed(self, key: str, reason: str) -> bool:
        return self._exchange_outcome(key, reason)

    def _exchange_outcome(self, key: str, outcome: dict[str, Any] | str) -> bool:
        for exchange in self._exchanges.values():
            if exchange.request.key == key and exchange.outcome is None:
                exchange.outcome = outcome
                return True
        return False

    def _relay_certificate(self, proto: str, action: str, raw: bytes) -> CertificateResponse:
        """The car's request goes to the CSMS as it came (exiRequest); "Ongoing" until the answer is here
        (-20 says so to the car; -2, which cannot, makes the car's connection wait), then the CSMS's
        exiResponse decoded: the session re-encodes it with its own header, the CPS's signature kept."""
        protocol = contract_protocol(proto)
        what = f"certificate {action.lower()}"
        self._expire_exchanges()
        exchange = self._exchanges.get(raw)
        if exchange is None:
            if len(self._exchanges) >= self.max_pending:
                return CertificateResponse(self._note(what, INSTALLATION_DISABLED_CODES[protocol],
                                                      "too many certificate requests waiting for the CSMS"))
            self._serial += 1
            payload = {"iso15118SchemaVersion": SCHEMA_VERSIONS[protocol], "action": action,
                       "exiRequest": base64.b64encode(raw).decode()}
            timeout = CERTIFICATE_TIMEOUT[protocol]
            exchange = _Exchange(CertificateRequest(f"certificate-{self._serial}", payload, proto),
                                 self.clock() + timeout)
            self._exchanges[raw] = exchange
            if self.wake is not None:
                self.wake()
            return CertificateResponse("Ongoing")
        if exchange.outcome is None:
            if self.clock() < exchange.deadline:
                return CertificateResponse("Ongoing")
            exchange.outcome = "no answer in time"
        del self._exchanges[raw]
        outcome = exchange.outcome
        refused = INSTALLATION_DISABLED_CODES[protocol]
        if isinstance(outcome, str):
            return CertificateResponse(self._note(what, refused, f"Get15118EVCertificate: {outcome}"))
        if outcome.get("status") != "Accepted":
            return CertificateResponse(self._note(what, refused, f"the CSMS answered {outcome.get('status')}"))
        try:
            return self._note_answer(what, decode_certificate_response(proto, outcome["exiResponse"]))
        except (ValueError, exi.DecodeError) as e:
            return CertificateResponse(self._note(what, refused, f"the CSMS's exiResponse is unusable: {e}"))

    def _note_answer(self, what: str, answer: CertificateResponse) -> CertificateResponse:
        self._note(what, answer.response_code, "the CSMS's exiResponse")
        return answer

    def _expire_exchanges(self) -> None:
        now = self.clock()
        for raw, exchange in list(self._exchanges.items()):
            if exchange.outcome is None and now >= exchange.deadline + STALE_AFTER:  # nobody asked again
                del self._exchanges[raw]

    # --- internals ------------------------------------------------------------------------------------------------

    def _installation_enabled(self) -> bool:
        return self.device_model.pnc_enabled and self.device_model.contract_certificate_installation_enabled

    def _note(self, what: str, code: str, why: str) -> str:
        self.decisions.append(PncDecision(what, code, why))
        log.info("%s: %s (%s)", what, code, why)
        return code

    def _remember(self, leaf: bytes, contract: _CheckedContract) -> None:
        self._checked[leaf] = contract
        while len(self._checked) > self.max_checked:
            self._checked.popitem(last=False)

    def _queue(self, leaf: bytes, contract: _CheckedContract) -> None:
        self._serial += 1
        key = f"authorize-{self._serial}"  # unique per request: a late answer to an expired one matches nothing
        request = AuthorizeRequest(key, contract.payload, contract.emaid)
        self._pending[key] = _Pending(leaf, request, self.clock())
        what = "central validation" if contract.central else \
            f"{len(contract.payload.get('iso15118CertificateHashData', ()))} hash data entries"
        self._note(f"authorize {contract.emaid}", "Ongoing", f"Authorize {key} queued ({what})")
        if self.wake is not None:
            self.wake()

    def _finish(self, leaf: bytes, outcome: _Outcome) -> None:
        self._finished[leaf] = outcome
        self._finished.move_to_end(leaf)
        while len(self._finished) > self.max_finished:
            self._finished.popitem(last=False)  # its session is long gone (or will ask again)

    def _expire(self) -> None:
        now = self.clock()
        for key, pending in list(self._pending.items()):
            if now - pending.queued_at >= self.answer_timeout:
                del self._pending[key]
                self._finish(pending.leaf, _Outcome(None, f"no AuthorizeResponse to {key} within "
                                                          f"{self.answer_timeout:g} s"))

    def _decide(self, protocol: ContractProtocol, contract: _CheckedContract, outcome: _Outcome) -> str:
        what = f"authorize {contract.emaid}"
        mapped = None if outcome.answer is None else answer_code(protocol, outcome.answer)
        if mapped is not None:
            code, why = mapped
            return self._note(what, code, why)
        why = outcome.why if outcome.answer is None else f"{outcome.why}: AuthorizeResponse without idTokenInfo.status"
        if contract.central:
            return self._note(what, contract.local_code, f"{why}; the chain can only be validated centrally")
        if self.device_model.contract_validation_offline:
            return self._note(what, "OK", f"{why}; offline decision: ContractValidationOffline and a locally "
                                          "valid chain")
        return self._note(what, CSMS_UNREACHABLE_CODES[protocol], f"{why}; ContractValidationOffline is false")


def answer_code(protocol: ContractProtocol, response: Any) -> tuple[str, str] | None:
    """The ResponseCode and why for an AuthorizeResponse payload; None when it has no idTokenInfo.status."""
    info = response.get("idTokenInfo") if isinstance(response, dict) else None
    status = info.get("status") if isinstance(info, dict) else None
    if not isinstance(status, str):
        return None
    certificate_status = response.get("certificateStatus")
    if certificate_status not in (None, "Accepted"):
        codes = CERTIFICATE_STATUS_CODES.get(str(certificate_status), _CONTRACT_REFUSED)
        return codes[protocol], f"CSMS: certificateStatus {certificate_status} (idTokenInfo.status {status})"
    if status == "Accepted":
        return "OK", "CSMS: Accepted"
    return ID_TOKEN_STATUS_CODES.get(status, _NOT_HERE_OR_NOW)[protocol], f"CSMS: idTokenInfo.status {status}"


def _authorize_payload(emaid: str, *, hash_data: list[dict[str, str]] | None = None,
                       certificate: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"idToken": {"idToken": emaid, "type": "eMAID"}}
    if certificate is not None:
        payload["certificate"] = certificate
    elif hash_data:
        payload["iso15118CertificateHashData"] = hash_data
    return payload


def _hash_data(path: Sequence[x509.Certificate]) -> tuple[list[dict[str, str]], str]:
    """OCSP request data of leaf and sub-CAs of a validated ``path`` (root last), and a note on what was left out."""
    entries: list[dict[str, str]] = []
    left_out: list[str] = []
    for cert, issuer in itertools.pairwise(path):
        try:
            entries.append(ocsp_request_data(cert, issuer).to_ocpp())
        except (OcspError, ValueError) as e:
            left_out.append(str(e))
    entries = entries[:MAX_CHAIN_ENTRIES]
    return entries, "".join(f"; hash data left out: {reason}" for reason in left_out)


def _car_path(leaf: x509.Certificate, sub_cas: Sequence[bytes]) -> tuple[list[x509.Certificate],
                                                                         list[x509.Certificate]]:
    """The leaf, then each issuer among the certificates the car sent, every link's signature verified (at most
    two sub-CAs; a copy of the root, self-issued, stays out: the CSMS has its roots); and the sub-CAs the car sent
    that are not on that path. ValueError when one is not DER."""
    candidates = [x509.load_der_x509_certificate(bytes(der)) for der in sub_cas]
    path = [leaf]
    while len(path) <= _MAX_SUB_CAS:
        issuer = next((c for c in candidates if c.subject == path[-1].issuer and c.subject != c.issuer
                       and c not in path and issued_by(path[-1], c)), None)
        if issuer is None:
            break
        path.append(issuer)
    return path, [c for c in candidates if c not in path and c.subject != c.issuer]


def _only_the_root_is_missing(verdict: ChainVerdict, chain: ContractChain) -> bool:
    """Whether the local check refused the chain only because none of the installed roots is its root: no root
    installed at all, no root of the name the chain leads to, or (BAD_SIGNATURE) roots of that name but with
    another key (a renewed root, another PKI's root of the same name) while every link the car sent verifies."""
    if verdict.failure in CENTRAL_VALIDATION_FAILURES:
        return True
    if verdict.failure is not ChainFailure.BAD_SIGNATURE or verdict.leaf is None:
        return False
    try:
        _, off_path = _car_path(verdict.leaf, chain.sub_cas)
    except ValueError:
        return False
    return not off_path  # a sub-CA off the path: a link inside the car's chain is what failed


class _LocalRefusal(Exception):
    def __init__(self, failure: ChainFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure, self.reason = failure, reason


def _central_chain(chain: ContractChain, verdict: ChainVerdict, now: dt.datetime,
                   expected_emaid: str | None) -> tuple[str, str]:
    """For a chain no installed root leads to: (eMAID, PEM chain leaf first) for the CSMS; :class:`_LocalRefusal`
    when what can be judged here already fails: the car's links, validity times, the leaf's eMAID."""
    if verdict.leaf is None:
        raise _LocalRefusal(ChainFailure.NO_CERTIFICATE, "no contract certificate")
    try:
        path, _ = _car_path(verdict.leaf, chain.sub_cas)
    except ValueError as e:
        raise _LocalRefusal(ChainFailure.MALFORMED, f"a sub-CA certificate is not DER X.509 ({e})") from None
    for cert in path:
        name = cert.subject.rfc4514_string()
        if now < cert.not_valid_before_utc:
            raise _LocalRefusal(ChainFailure.NOT_YET_VALID,
                                f"{name} is not valid before {cert.not_valid_before_utc.isoformat()}")
        if now > cert.not_valid_after_utc:
            raise _LocalRefusal(ChainFailure.EXPIRED, f"{name} expired at {cert.not_valid_after_utc.isoformat()}")
    emaid = verdict.emaid
    if emaid is None or not is_valid_emaid(emaid):
        raise _LocalRefusal(ChainFailure.PROFILE, f"contract certificate CN {emaid!r} is not an eMAID")
    if expected_emaid is not None and normalize_emaid(emaid) != normalize_emaid(expected_emaid):
        raise _LocalRefusal(ChainFailure.EMAID_MISMATCH,
                            f"the car sent eMAID {expected_emaid!r}, its certificate says {emaid!r}")
    return emaid, "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in path)
