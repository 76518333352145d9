"""Plug & Charge decided on the charger itself: the :class:`edge.v2g.pnc.PlugAndCharge` the sessions
ask, built from the certificate checks in this package. Contract chains are validated against the
installed MO/V2G roots, signatures verified with the contract key, and certificate installation and
update answered by a local issuer when one is configured (testbenches; a backend answers in the
field). Who may charge is a local allow-list until the OCPP bridge asks the CSMS.

Protocols: "iso2", and "iso20" (or an ISO 15118-20 message-set label such as "iso20-dc"). Every answer is
a ResponseCode of that protocol: -20 refuses chains with WARNING_Certificate* (see :mod:`edge.pki.chain`), a
contract the allow-list does not know with WARNING_GeneralPnCAuthorizationError (-2: FAILED_ContractCanceled),
and signatures with FAILED_SignatureError. -20 signed elements (PnC_AReqAuthorizationMode, SignedMeteringData)
are CommonMessages elements whatever the session's energy service, so they are checked with that grammar.
Certificate installation: -2 by ``issuer`` (:mod:`edge.pki.install`), -20 by ``issuer20``
(:mod:`edge.pki.install20`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

import exi
from edge.pki.chain import ContractChainValidator, ContractProtocol, RevocationChecker
from edge.pki.folder import read_certificate
from edge.pki.install import LocalContractIssuer
from edge.pki.install20 import LocalContractIssuer20
from edge.pki.paths import chain_problem
from edge.pki.roots import protocol_folders
from edge.pki.signature import SignatureError, verify
from edge.pki.store import josev_contract_trust_anchors
from edge.pki.testpki import ISO2_FOLDER, PkiPaths
from edge.v2g.pnc import CertificateResponse, ContractChain

MSG_BODY_NS = "urn:iso:15118:2:2013:MsgBody"
#: the code a contract outside the allow-list gets, by standard
CONTRACT_REFUSED = {ContractProtocol.ISO2: "FAILED_ContractCanceled",
                    ContractProtocol.ISO20: "WARNING_GeneralPnCAuthorizationError"}


def contract_protocol(proto: str) -> ContractProtocol:
    """"iso2" -> -2; "iso20" and the -20 message-set labels ("iso20-dc", ...) -> -20; ValueError otherwise."""
    if proto == "iso2":
        return ContractProtocol.ISO2
    if proto == "iso20" or proto.startswith("iso20-"):
        return ContractProtocol.ISO20
    raise ValueError(f"Plug & Charge exists in ISO 15118-2 and -20 only, not in {proto!r}")


@dataclass
class LocalPlugAndCharge:
    validator: ContractChainValidator
    issuer: LocalContractIssuer | None = None  # answers CertificateInstallation/Update when set
    issuer20: LocalContractIssuer20 | None = None  # answers -20 CertificateInstallationReq when set
    allowed_emaids: set[str] | None = None  # None: every contract with a valid chain may charge
    ongoing_rounds: int = 0  # answer "Ongoing" this often before deciding (exercise a slow backend)
    decisions: list[tuple[str, str]] = field(default_factory=list)  # (what, code), for logs and tests
    # -2 installation requests carry only the OEM provisioning leaf: its sub-CAs must be known here
    oem_sub_cas: list[x509.Certificate] = field(default_factory=list)
    oem_roots: list[x509.Certificate] = field(default_factory=list)
    _rounds: int = 0

    @classmethod
    def from_pki_folder(cls, folder: Path, *, local_install: bool = True, revocation: RevocationChecker | None = None,
                        reject_unknown_revocation: bool = False, **kw: Any) -> LocalPlugAndCharge:
        """Trust the MO and V2G roots of every protocol folder of a Josev-layout PKI (``edge pki create``);
        ``revocation`` (e.g. :class:`edge.pki.ocsp.CachedOcspRevocation`) is asked for every certificate."""
        try:
            roots = josev_contract_trust_anchors(folder)
        except OSError as e:
            raise ValueError(f"cannot load the MO/V2G roots from {folder}: {e}") from None
        issuer = LocalContractIssuer.from_pki_folder(folder) if local_install else None
        validator = ContractChainValidator(roots, revocation=revocation,
                                           reject_unknown_revocation=reject_unknown_revocation)
        if local_install and LocalContractIssuer20.found_in(folder):  # -20: from the folder's -20 PKI
            kw.setdefault("issuer20", LocalContractIssuer20.from_pki_folder(folder))
        if local_install:  # the OEM chains a -2 installation request's leaf must lead to (of every -2 folder)
            folders = [PkiPaths(folder, name) for name in protocol_folders(folder, ISO2_FOLDER)]
            kw.setdefault("oem_sub_cas", [read_certificate(p.cert(n)) for p in folders
                                          for n in ("oemSubCA2", "oemSubCA1")])
            kw.setdefault("oem_roots", [read_certificate(p.cert("oemRootCA")) for p in folders])
        return cls(validator, issuer, **kw)

    def _note(self, what: str, code: str) -> str:
        self.decisions.append((what, code))
        return code

    def check_contract(self, proto: str, chain: ContractChain, now: float) -> str:
        # -2 sends the eMAID beside the chain and it must match the leaf; -20 has only the leaf's
        protocol = contract_protocol(proto)
        expected = chain.emaid if protocol is ContractProtocol.ISO2 else chain.emaid or None
        verdict = self.validator.validate(chain.leaf, chain.sub_cas, protocol=protocol,
                                          now=dt.datetime.fromtimestamp(now, dt.UTC), expected_emaid=expected)
        return self._note(f"contract {chain.emaid}: {verdict.reason}", str(verdict.response_code))

    def check_signature(self, proto: str, signature: Any, signed: list[exi.Fragment], chain: ContractChain) -> str:
        what = "signature over " + ", ".join(f.name for f in signed)
        label = "iso2" if contract_protocol(proto) is ContractProtocol.ISO2 else "iso20"  # iso20: CommonMessages
        try:
            verify(label, signature, signed, x509.load_der_x509_certificate(chain.leaf))
        except SignatureError as e:
            return self._note(f"{what}: {e.reason}", str(e.response_code))
        except ValueError as e:
            return self._note(f"{what}: {e}", "FAILED_SignatureError")
        return self._note(what, "OK")

    def authorize(self, proto: str, chain: ContractChain) -> str:
        if self._rounds < self.ongoing_rounds:
            self._rounds += 1
            return "Ongoing"
        self._rounds = 0
        allowed = self.allowed_emaids is None or chain.emaid.replace("-", "").upper() in self.allowed_emaids
        return self._note(f"authorize {chain.emaid}", "OK" if allowed else CONTRACT_REFUSED[contract_protocol(proto)])

    def install_certificate(self, proto: str, request: Any, signature: Any,
                            raw: bytes | None = None) -> CertificateResponse:
        if contract_protocol(proto) is ContractProtocol.ISO20:  # -20: checks and issuing in edge.pki.install20
            if self.issuer20 is None:
                return CertificateResponse(self._note("installation (-20): no issuer",
                                                      "WARNING_NoCertificateAvailable"))
            answer, why = self.issuer20.install(request, signature)
            self._note(f"installation (-20): {why}", answer.response_code)
            return answer
        if self.issuer is None:
            return CertificateResponse(self._note("installation: no issuer", "FAILED_NoCertificateAvailable"))
        try:  # the car signs its request with its OEM provisioning key: check it before issuing
            oem = x509.load_der_x509_certificate(request.OEMProvisioningCert or b"")
            verify(proto, signature, [exi.Fragment(MSG_BODY_NS, "CertificateInstallationReq", request)], oem)
        except SignatureError as e:
            return CertificateResponse(self._note(f"installation: {e.reason}", str(e.response_code)))
        except ValueError as e:
            return CertificateResponse(self._note(f"installation: OEM certificate: {e}", "FAILED_CertChainError"))
        # only a car whose OEM provisioning certificate leads to a trusted OEM root gets a contract
        problem = chain_problem(oem, self.oem_sub_cas, self.oem_roots, dt.datetime.now(dt.UTC), "OEM provisioning")
        if problem is not None:
            code = "FAILED_CertificateExpired" if problem.kind != "invalid" else "FAILED_CertChainError"
            return CertificateResponse(self._note(f"installation: {problem.reason}", code))
        answer = self.issuer.install(request)
        self._note(_issued("installation", answer, oem), answer.response_code)
        return answer

    def installs_certificates(self, proto: str) -> bool:
        """Whether a CertificateInstallationReq of ``proto`` would be answered by an issuer here."""
        return (self.issuer20 if contract_protocol(proto) is ContractProtocol.ISO20 else self.issuer) is not None

    def update_certificate(self, proto: str, request: Any, signature: Any,
                           raw: bytes | None = None) -> CertificateResponse:
        if contract_protocol(proto) is ContractProtocol.ISO20:  # -20 has no CertificateUpdate message
            return CertificateResponse(self._note("update: no such message in ISO 15118-20", "FAILED"))
        if self.issuer is None:
            return CertificateResponse(self._note("update: no issuer", "FAILED_NoCertificateAvailable"))
        chain = request.ContractSignatureCertChain
        subs = tuple(chain.SubCertificates.Certificate) if chain and chain.SubCertificates else ()
        current = ContractChain(chain.Certificate if chain else b"", subs, request.eMAID or "")
        code = self.check_contract(proto, current, dt.datetime.now(dt.UTC).timestamp())
        if code == "OK":
            code = self.check_signature(proto, signature, [exi.Fragment(MSG_BODY_NS, "CertificateUpdateReq", request)],
                                        current)
        if code != "OK":
            return CertificateResponse(code)
        answer = self.issuer.update(request)
        self._note(_issued("update", answer, None), answer.response_code)
        return answer


def _issued(what: str, answer: CertificateResponse, recipient: x509.Certificate | None) -> str:
    """The decision note of an answered installation/update: which contract went to which certificate."""
    emaid = getattr(getattr(answer.body, "eMAID", None), "value", None)
    if emaid is None:
        return what
    return f"{what}: contract {emaid}" + (f" for {recipient.subject.rfc4514_string()}" if recipient else "")
