"""An ISO 15118-2 car, sans-IO on :class:`edge.ev.base.SimulatedCar`: DC (``DC_extended``) or AC
(``AC_three_phase_core``), ExternalPayment (EIM) or Contract (PnC), contract certificate installation,
schedule renegotiation, and pause/resume.

PnC: PaymentDetailsReq with the eMAID and the contract chain, then AuthorizationReq carrying the
charger's GenChallenge, signed in the header with the contract key; a signed MeteringReceiptReq each
time the charger sets ReceiptRequired. The contract chain and key come from a PKI folder in Josev's
layout (:meth:`ContractCredentials.from_pki`).

Certificate installation (``install_certificate=True`` with :class:`OemCredentials`; ISO 15118-2
8.4.3.2.2 and V2G2-818..824): the car selects the charge service and the certificate service (ID 2),
asks ServiceDetail(2) first unless told not to, and sends a CertificateInstallationReq with its OEM
provisioning certificate and the V2G roots it trusts, signed with the OEM key. It accepts the answer only
when the CPS chain leads to one of those roots, the header signature over ContractSignatureCertChain,
ContractSignatureEncryptedPrivateKey, DHpublickey and eMAID verifies with the CPS leaf key, the contract
key decrypts with the OEM key and belongs to the new leaf, and the eMAID is the leaf's; it then pays with
the NEW contract (PaymentDetailsReq). Anything else ends the session with :class:`SessionFailed`.

Pause and resume (ISO 15118-2 8.4.2; what Josev's and RISE-V2G's EVCCs do): the car stops power
(PowerDelivery Stop, welding detection in DC), sends SessionStopReq(ChargingSession=Pause) and the
connection closes. :meth:`Iso2Car.resume` readies it for a new connection: SAP again, SessionSetupReq
with the OLD SessionID in the header, which the charger answers with OK_OldSessionJoined and the same
SessionID. The resumed session then runs the whole sequence again (ServiceDiscovery, the same payment
option, PaymentDetails and Authorization for PnC, ChargeParameterDiscovery with the same energy
transfer mode; DC: cable check and pre-charge again, as the contactors were open), no step skipped.

AC battery model: ChargingStatusRes reports no voltage or current; the car's on-board charger draws
min(EVMaxCurrent, the charger's EVSEMaxCurrent, the schedule's PMax) per phase at the nominal voltage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import exi
from edge.ev.base import Offer, SessionFailed, SimulatedCar, physical_or_none
from edge.pki.folder import common_name, read_certificate, read_key_of
from edge.pki.install import ContractKeyError, decrypt_contract_key
from edge.pki.signature import SignatureError, sign, verify
from edge.pki.testpki import PkiPaths
from edge.v2g import sap
from edge.v2g.iso2.session import MSG_BODY_NS, pv, value
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType
from exi.model.xmldsig import X509IssuerSerialType

MODES = {"dc": "DC_extended", "ac": "AC_three_phase_core"}
PAYMENTS = {"eim": "ExternalPayment", "pnc": "Contract"}
SIGNED_ID = "id1"  # the Id of the one signed element per message (short: some SECCs have little memory)
#: the elements the CPS signs in CertificateInstallationRes / CertificateUpdateRes (V2G2-771)
INSTALLATION_SIGNED = ("ContractSignatureCertChain", "ContractSignatureEncryptedPrivateKey", "DHpublickey", "eMAID")
_DER = serialization.Encoding.DER


@dataclass(frozen=True)
class ContractCredentials:
    """The car's contract: eMAID, contract leaf and MO sub-CAs (DER), and the leaf's private key."""

    emaid: str
    leaf: bytes
    sub_cas: tuple[bytes, ...]  # MO sub-CA 2, then sub-CA 1 (the order PaymentDetailsReq carries)
    key: Any  # cryptography's EllipticCurvePrivateKey

    @classmethod
    def from_pki(cls, pki_dir: Path | str) -> ContractCredentials:
        """Read ``iso15118_2/certs/contractLeafCert.pem``, ``moSubCA2Cert.pem``, ``moSubCA1Cert.pem`` and
        ``private_keys/contractLeaf.key`` (password in ``contractLeafPassword.txt``) of a Josev-layout
        PKI folder. Any problem is a one-line ValueError."""
        paths = PkiPaths(Path(pki_dir), "iso15118_2")
        leaf = read_certificate(paths.cert("contractLeaf"))
        subs = (read_certificate(paths.cert("moSubCA2")), read_certificate(paths.cert("moSubCA1")))
        key = read_key_of(paths, "contractLeaf", leaf)
        emaid = common_name(leaf)
        if not emaid:
            raise ValueError("the contract leaf has no CN (the eMAID)")
        return cls(emaid, leaf.public_bytes(_DER), tuple(s.public_bytes(_DER) for s in subs), key)

    def chain(self) -> t.CertificateChainType:
        return t.CertificateChainType(None, self.leaf, t.SubCertificatesType(list(self.sub_cas)))

    def sign_authorization(self, req: b.AuthorizationReqType) -> Any:
        """The header Signature over the AuthorizationReq (its Id and GenChallenge set)."""
        from edge.pki.signature import sign_authorization_req

        return sign_authorization_req("iso2", req, self.key)

    def sign_receipt(self, req: b.MeteringReceiptReqType) -> Any:
        """The header Signature over the MeteringReceiptReq."""
        from edge.pki.signature import sign_metering_receipt

        return sign_metering_receipt("iso2", req, self.key)


@dataclass(frozen=True)
class OemCredentials:
    """What a car needs to have a contract installed: its OEM provisioning certificate (DER) and key,
    and the V2G root certificates (DER) it trusts to check the certificate provisioning service."""

    leaf: bytes
    key: Any  # cryptography's EllipticCurvePrivateKey (secp256r1)
    v2g_roots: tuple[bytes, ...]

    @classmethod
    def from_pki(cls, pki_dir: Path | str) -> OemCredentials:
        """Read ``iso15118_2/certs/oemLeafCert.pem``, ``private_keys/oemLeaf.key`` (password in
        ``oemLeafPassword.txt``) and ``certs/v2gRootCACert.pem`` of a Josev-layout PKI folder. Any
        problem is a one-line ValueError."""
        paths = PkiPaths(Path(pki_dir), "iso15118_2")
        leaf = read_certificate(paths.cert("oemLeaf"))
        key = read_key_of(paths, "oemLeaf", leaf)
        root = read_certificate(paths.cert("v2gRootCA"))
        return cls(leaf.public_bytes(_DER), key, (root.public_bytes(_DER),))

    def root_ids(self) -> t.ListOfRootCertificateIDsType:
        """ListOfRootCertificateIDs: issuer name (RFC 4514) and serial of each trusted V2G root."""
        roots = [x509.load_der_x509_certificate(r) for r in self.v2g_roots]
        return t.ListOfRootCertificateIDsType([X509IssuerSerialType(r.issuer.rfc4514_string(), r.serial_number)
                                               for r in roots])

    def installation_request(self) -> tuple[b.CertificateInstallationReqType, Any]:
        """The CertificateInstallationReq and its header Signature, made with the OEM provisioning key."""
        req = b.CertificateInstallationReqType(SIGNED_ID, self.leaf, self.root_ids())
        return req, sign("iso2", [exi.Fragment(MSG_BODY_NS, "CertificateInstallationReq", req)], self.key)


def _check_cps_chain(chain: t.CertificateChainType | None, roots: tuple[bytes, ...], when: dt.datetime
                     ) -> x509.Certificate:
    """The CPS leaf of SAProvisioningCertificateChain, once it leads to a trusted V2G root with every
    certificate in date and every link signed by a CA (edge.pki.chain validates contract chains only,
    so this is the plain path check of edge.pki.paths, without CPS profile checks)."""
    from edge.pki.paths import chain_problem

    if chain is None or not chain.Certificate:
        raise SessionFailed("CertificateInstallationRes carries no SAProvisioningCertificateChain")
    try:
        leaf = x509.load_der_x509_certificate(chain.Certificate)
        subs = [x509.load_der_x509_certificate(c) for c in (chain.SubCertificates.Certificate
                                                              if chain.SubCertificates else [])]
        trusted = [x509.load_der_x509_certificate(r) for r in roots]
    except ValueError:
        raise SessionFailed("the CPS chain of CertificateInstallationRes holds a certificate that is not DER") \
            from None
    problem = chain_problem(leaf, subs, trusted, when, "CPS")
    if problem is not None:
        raise SessionFailed(problem.reason)
    return leaf


def accept_installation(res: b.CertificateInstallationResType, signature: Any, oem: OemCredentials,
                        when: dt.datetime) -> ContractCredentials:
    """The car's checks of a CertificateInstallationRes (see the module docstring); the new contract,
    or :class:`SessionFailed` saying which check failed."""
    cps_leaf = _check_cps_chain(res.SAProvisioningCertificateChain, oem.v2g_roots, when)
    missing = [name for name in INSTALLATION_SIGNED if getattr(res, name) is None]
    if missing:
        raise SessionFailed(f"CertificateInstallationRes lacks {', '.join(missing)}")
    signed = [exi.Fragment(MSG_BODY_NS, name, getattr(res, name)) for name in INSTALLATION_SIGNED]
    try:
        verify("iso2", signature, signed, cps_leaf)
    except SignatureError as e:
        raise SessionFailed(f"CertificateInstallationRes signature not valid: {e.reason}") from None
    except ValueError as e:  # e.g. an element without an Id
        raise SessionFailed(f"CertificateInstallationRes signature cannot be checked: {e}") from None
    try:
        key = decrypt_contract_key(res.ContractSignatureEncryptedPrivateKey.value or b"",
                                   res.DHpublickey.value or b"", oem.key)
    except ContractKeyError as e:
        raise SessionFailed(f"cannot decrypt the contract key: {e}") from None
    chain = res.ContractSignatureCertChain
    try:
        leaf = x509.load_der_x509_certificate(chain.Certificate or b"")
    except ValueError:
        raise SessionFailed("the new contract certificate is not DER") from None
    if leaf.public_key() != key.public_key():
        raise SessionFailed("the decrypted contract key does not belong to the new contract certificate")
    emaid = str(res.eMAID.value or "")
    if (common_name(leaf) or "").replace("-", "").upper() != emaid.replace("-", "").upper():
        raise SessionFailed(f"eMAID {emaid!r} is not the new contract certificate's CN {common_name(leaf)!r}")
    subs = tuple(chain.SubCertificates.Certificate) if chain.SubCertificates else ()
    return ContractCredentials(emaid, leaf.public_bytes(_DER), subs, key)


@dataclass
class Iso2Car(SimulatedCar):
    PROTOCOL: ClassVar[sap.Protocol] = sap.ISO2
    MESSAGE: ClassVar[type] = V2G_Message
    BODY: ClassVar[type] = BodyType
    HEADER: ClassVar[type] = MessageHeaderType
    MSG_BODY: ClassVar[ModuleType] = b
    MSG_TYPES: ClassVar[ModuleType] = t
    DEFAULT_OFFERS: ClassVar[tuple[Offer, ...]] = (Offer.of(sap.ISO2, 1, 1),)
    TIMEOUTS: ClassVar[dict[str, float]] = {  # V2G_EVCC_Msg_Timeout (../shared/spec/timers.md)
        "CurrentDemandReq": 0.25, "ServiceDetailReq": 5.0, "PaymentDetailsReq": 5.0, "PowerDeliveryReq": 5.0,
        "CertificateInstallationReq": 5.0, "CertificateUpdateReq": 5.0}

    mode: str = "dc"  # "dc" or "ac"
    payment: str = "eim"  # "eim" or "pnc"
    contract: ContractCredentials | None = None  # needed for "pnc" unless the car has one installed
    install_certificate: bool = False  # "pnc": have a contract installed first (needs ``oem``)
    oem: OemCredentials | None = None
    ask_certificate_service_detail: bool = True  # ServiceDetailReq(2) before selecting the service
    wall_clock: Callable[[], float] = time.time  # validity of the CPS chain
    offer_din_too: bool = True  # the offer lists DIN after -2, as most cars do
    renegotiate_at_soc: float | None = None  # ask for a new schedule once, at this SoC
    pause_at_soc: float | None = None  # pause the session once, at this SoC (see resume())
    # AC_EVChargeParameter
    departure_time: int | None = 7200  # seconds from now
    ac_max_voltage: float = 400.0
    ac_max_current: float = 16.0  # per phase
    ac_min_current: float = 6.0
    ac_phases: int = 3
    # what happened
    renegotiated: bool = False
    renegotiations: int = 0
    receipts: int = 0
    resumed: bool = False  # the charger joined the old session (OK_OldSessionJoined)
    payment_used: str | None = None
    installed: ContractCredentials | None = None  # the contract the charger installed, once it has
    _phase: str = "setup"  # setup, charging, renegotiating, stopping
    _resuming: bool = False
    _paused_once: bool = False
    _stop_kind: str = "Terminate"
    _schedule_id: int = 1
    _schedule_pmax: float | None = None
    _evse_nominal_voltage: float = 230.0
    _evse_ac_max_current: float | None = None  # A per phase
    _auth_req: Any = None
    _auth_signature: Any = None
    _selected_services: tuple[int, ...] = ()
    _certificate_service: int | None = None  # selected to have a contract installed in this session

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.payment not in PAYMENTS:
            raise ValueError(f"payment must be one of {', '.join(PAYMENTS)}, not {self.payment!r}")
        if self.install_certificate and (self.payment != "pnc" or self.oem is None):
            raise ValueError("certificate installation needs payment 'pnc' and the OEM provisioning credentials")
        if self.payment == "pnc" and self.contract is None and not self.install_certificate:
            raise ValueError("Plug & Charge needs the contract credentials (a PKI folder) or certificate installation")
        if not self.offers:
            offers = [Offer.of(sap.ISO2, 1, 1)]
            if self.offer_din_too:
                offers.append(Offer.of(sap.DIN, 2, 2))
            self.offers = tuple(offers)

    @property
    def energy_mode(self) -> str:
        return MODES[self.mode]

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(mode=self.mode, payment=self.payment_used, renegotiations=self.renegotiations,
                   metering_receipts=self.receipts, paused=self.paused, resumed=self.resumed,
                   installed_emaid=self.installed.emaid if self.installed else None)
        return out

    def resume(self) -> None:
        """Ready for the connection that resumes a paused session (call ``start()`` next)."""
        if not self.paused:
            raise RuntimeError("there is no paused session to resume")
        self.paused, self._resuming, self._phase, self._stop_kind = False, True, "setup", "Terminate"
        self._phase_started.clear()

    @property
    def installation_pending(self) -> bool:
        """The car still wants the charger to install a contract (once per car, not per connection)."""
        return self.install_certificate and self.installed is None

    # ------------------------------------------------------------------ helpers
    def _status(self) -> t.DC_EVStatusType:
        return t.DC_EVStatusType(EVReady=True, EVErrorCode="NO_ERROR", EVRESSSOC=round(self.soc))

    def _session_setup(self) -> bytes:
        return self._send("SessionSetupReq", b.SessionSetupReqType(self.evcc_id))

    def _charge_parameter_discovery(self) -> bytes:
        if self.mode == "ac":
            wanted = max(0.0, (self.target_soc - self.soc) / 100 * self.capacity_wh)
            param = t.AC_EVChargeParameterType(
                DepartureTime=self.departure_time, EAmount=pv(wanted, "Wh"), EVMaxVoltage=pv(self.ac_max_voltage, "V"),
                EVMaxCurrent=pv(self.ac_max_current, "A"), EVMinCurrent=pv(self.ac_min_current, "A"))
            req = b.ChargeParameterDiscoveryReqType(RequestedEnergyTransferMode=self.energy_mode,
                                                    AC_EVChargeParameter=param)
        else:
            param = t.DC_EVChargeParameterType(
                DC_EVStatus=self._status(), EVMaximumCurrentLimit=pv(self.max_current, "A"),
                EVMaximumVoltageLimit=pv(self.max_voltage, "V"), EVEnergyCapacity=pv(self.capacity_wh, "Wh"),
                FullSOC=100, BulkSOC=80)
            req = b.ChargeParameterDiscoveryReqType(RequestedEnergyTransferMode=self.energy_mode,
                                                    DC_EVChargeParameter=param)
        return self._send("ChargeParameterDiscoveryReq", req)

    def _ac_current(self) -> float:
        """What the on-board charger draws per phase: its own limit, the charger's, the schedule's."""
        current = self.ac_max_current
        if self._evse_ac_max_current is not None:
            current = min(current, self._evse_ac_max_current)
        if self._schedule_pmax is not None:
            current = min(current, self._schedule_pmax / (self._evse_nominal_voltage * self.ac_phases))
        return max(0.0, current)

    def _power_delivery(self, progress: str) -> bytes:
        dc = None
        if self.mode == "dc":
            dc = t.DC_EVPowerDeliveryParameterType(self._status(), progress == "Stop", progress == "Stop")
        profile = None
        if progress == "Start" and self.mode == "ac":  # the car's plan within the schedule (V2G2-293)
            power = self._evse_nominal_voltage * self._ac_current() * self.ac_phases
            profile = t.ChargingProfileType([t.ProfileEntryType(0, pv(power, "W"), self.ac_phases)])
        req = b.PowerDeliveryReqType(ChargeProgress=progress, SAScheduleTupleID=self._schedule_id,
                                     ChargingProfile=profile, DC_EVPowerDeliveryParameter=dc)
        return self._send("PowerDeliveryReq", req)

    def _loop_request(self) -> bytes:
        if self.mode == "ac":
            return self._send("ChargingStatusReq", b.ChargingStatusReqType())
        voltage = self.battery_voltage + 10
        req = b.CurrentDemandReqType(
            DC_EVStatus=self._status(), EVTargetCurrent=pv(self._dc_target_current(voltage), "A"),
            EVMaximumVoltageLimit=pv(self.max_voltage, "V"), BulkChargingComplete=False, ChargingComplete=False,
            EVTargetVoltage=pv(voltage, "V"))
        return self._send("CurrentDemandReq", req)

    def _stop(self, kind: str) -> bytes:
        self._phase, self._stop_kind = "stopping", kind
        return self._power_delivery("Stop")

    def _renegotiate(self) -> bytes:
        self._phase = "renegotiating"
        self.renegotiations += 1
        return self._power_delivery("Renegotiate")

    def _next_in_loop(self, notification: object) -> bytes:
        """After a charge-loop answer: what the charger asks for first, then the car's own plans."""
        if str(notification) == "StopCharging":
            self._note("the charger asked to stop (EVSENotification StopCharging)")
            return self._stop("Terminate")
        if str(notification) == "ReNegotiation":
            self._note("the charger asked for a renegotiation (EVSENotification ReNegotiation)")
            return self._renegotiate()
        if self.pause_at_soc is not None and not self._paused_once and self.soc >= self.pause_at_soc:
            self._paused_once = True
            return self._stop("Pause")
        if self.renegotiate_at_soc is not None and not self.renegotiated and self.soc >= self.renegotiate_at_soc:
            self.renegotiated = True
            return self._renegotiate()
        if self.soc >= self.target_soc:
            return self._stop("Terminate")
        return self._loop_request()

    def _metering_receipt(self, res: Any) -> bytes | None:
        """The signed receipt the charger asked for (ReceiptRequired), or None when there is none to give."""
        if not res.ReceiptRequired:
            return None
        if self.payment_used != "Contract":
            self._note("ReceiptRequired with ExternalPayment ignored (receipts are signed with the contract key)")
            return None
        if res.MeterInfo is None:
            raise SessionFailed(f"{self._last[:-3]}Res sets ReceiptRequired but carries no MeterInfo to sign")
        req = b.MeteringReceiptReqType(Id=SIGNED_ID, SessionID=self.session_id,
                                       SAScheduleTupleID=res.SAScheduleTupleID or self._schedule_id,
                                       MeterInfo=res.MeterInfo)
        self.receipts += 1
        return self._send("MeteringReceiptReq", req, self.contract.sign_receipt(req))

    # ------------------------------------------------------------------ responses
    def _on_SessionSetupRes(self, res: Any, msg: Any, now: float) -> bytes:
        if self._resuming:
            self._resuming = False
            if str(res.ResponseCode) == "OK_OldSessionJoined" and msg.Header.SessionID == self.session_id:
                self.resumed = True
            else:
                self._note(f"the charger did not join the paused session ({res.ResponseCode}); a new session")
        self.session_id = msg.Header.SessionID
        if self._quirk("stop_after_session_setup"):
            return self._send("SessionStopReq", b.SessionStopReqType("Terminate"))
        return self._send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())

    def _on_ServiceDiscoveryRes(self, res: Any, msg: Any, now: float) -> bytes:
        offered = [str(p) for p in (res.PaymentOptionList.PaymentOption if res.PaymentOptionList else [])]
        modes = res.ChargeService.SupportedEnergyTransferMode.EnergyTransferMode if res.ChargeService else []
        if self.energy_mode not in [str(m) for m in modes]:
            raise SessionFailed(f"the charger does not offer {self.energy_mode} (offers {', '.join(map(str, modes))})")
        # a resumed session keeps the payment option of the paused one
        wanted = self.payment_used if self.resumed and self.payment_used else PAYMENTS[self.payment]
        if wanted not in offered:
            if wanted == "Contract" and "ExternalPayment" in offered:
                self._note("the charger does not offer Contract (PnC); falling back to ExternalPayment")
                wanted = "ExternalPayment"
            else:
                raise SessionFailed(f"the charger does not offer {wanted} (offers {', '.join(offered)})")
        self.payment_used = wanted
        self._selected_services = (res.ChargeService.ServiceID,)
        self._certificate_service = None
        if wanted == "Contract" and self.installation_pending:
            self._certificate_service = self._find_certificate_service(res)
            if self._certificate_service is not None:
                self._selected_services += (self._certificate_service,)
                if self.ask_certificate_service_detail:
                    return self._send("ServiceDetailReq", b.ServiceDetailReqType(self._certificate_service))
        return self._select_services()

    def _find_certificate_service(self, res: Any) -> int | None:
        """The ID of the charger's contract certificate service; None (noted) when a car that already
        has a contract may go on with it, SessionFailed when it has none."""
        services = res.ServiceList.Service if res.ServiceList else []
        found = next((s.ServiceID for s in services if str(s.ServiceCategory) == "ContractCertificate"), None)
        if found is not None:
            return found
        if self.contract is None:
            raise SessionFailed("the charger offers no ContractCertificate service: no contract can be installed "
                                "and the car has none")
        self._note("the charger offers no ContractCertificate service; paying with the contract the car has")
        return None

    def _select_services(self) -> bytes:
        chosen = t.SelectedServiceListType([t.SelectedServiceType(i) for i in self._selected_services])
        return self._send("PaymentServiceSelectionReq", b.PaymentServiceSelectionReqType(self.payment_used, chosen))

    def _on_ServiceDetailRes(self, res: Any, msg: Any, now: float) -> bytes:
        # only asked for the certificate service: it must offer installation (parameter Service=Installation)
        wanted = self._certificate_service
        if res.ServiceID != wanted:
            raise SessionFailed(f"ServiceDetailRes describes service {res.ServiceID}, not the {wanted} asked for")
        offered = [p.stringValue for s in (res.ServiceParameterList.ParameterSet if res.ServiceParameterList else [])
                   for p in s.Parameter if p.Name == "Service"]
        if "Installation" not in offered:
            raise SessionFailed(f"the charger's certificate service offers no Installation (offers "
                                f"{', '.join(map(str, offered)) or 'nothing'})")
        return self._select_services()

    def _on_PaymentServiceSelectionRes(self, res: Any, msg: Any, now: float) -> bytes:
        if self.payment_used == "Contract" and self._certificate_service is not None:
            req, signature = self.oem.installation_request()
            return self._send("CertificateInstallationReq", req, signature)
        if self.payment_used == "Contract":
            return self._payment_details()
        self._auth_req, self._auth_signature = b.AuthorizationReqType(), None
        return self._send("AuthorizationReq", self._auth_req)

    def _on_CertificateInstallationRes(self, res: Any, msg: Any, now: float) -> bytes:
        when = dt.datetime.fromtimestamp(self.wall_clock(), dt.UTC)
        self.installed = self.contract = accept_installation(res, msg.Header.Signature, self.oem, when)
        self._note(f"contract {self.installed.emaid} installed (CPS signature verified, key decrypted)")
        return self._payment_details()

    def _payment_details(self) -> bytes:
        return self._send("PaymentDetailsReq", b.PaymentDetailsReqType(self.contract.emaid, self.contract.chain()))

    def _on_PaymentDetailsRes(self, res: Any, msg: Any, now: float) -> bytes:
        if not res.GenChallenge or len(res.GenChallenge) != 16:
            raise SessionFailed("PaymentDetailsRes carries no 16-byte GenChallenge")
        self._auth_req = b.AuthorizationReqType(Id=SIGNED_ID, GenChallenge=res.GenChallenge)
        self._auth_signature = self.contract.sign_authorization(self._auth_req)
        return self._send("AuthorizationReq", self._auth_req, self._auth_signature)

    def _on_AuthorizationRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEProcessing == "Ongoing":  # the same request again until the charger has decided
            self._within("ongoing", now, "AuthorizationRes still EVSEProcessing Ongoing")
            return self._send("AuthorizationReq", self._auth_req, self._auth_signature)
        self._end_phase("ongoing")
        return self._charge_parameter_discovery()

    def _on_ChargeParameterDiscoveryRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEProcessing == "Ongoing":
            self._within("ongoing", now, "ChargeParameterDiscoveryRes still EVSEProcessing Ongoing")
            return self._charge_parameter_discovery()
        self._end_phase("ongoing")
        schedules = res.SAScheduleList.SAScheduleTuple if res.SAScheduleList else []
        if not schedules:
            raise SessionFailed("ChargeParameterDiscoveryRes has no SAScheduleList")
        chosen = schedules[0]
        self._schedule_id = chosen.SAScheduleTupleID
        entries = chosen.PMaxSchedule.PMaxScheduleEntry if chosen.PMaxSchedule else []
        self._schedule_pmax = value(entries[0].PMax) if entries else None
        if self.mode == "ac":
            param = res.AC_EVSEChargeParameter
            if param is None:
                raise SessionFailed("ChargeParameterDiscoveryRes for AC has no AC_EVSEChargeParameter")
            self._evse_nominal_voltage = value(param.EVSENominalVoltage) or self._evse_nominal_voltage
            self._evse_ac_max_current = value(param.EVSEMaxCurrent)
        elif res.DC_EVSEChargeParameter is not None:
            evse = res.DC_EVSEChargeParameter
            self._learn_evse_limits(max_current=physical_or_none(evse.EVSEMaximumCurrentLimit),
                                    max_power=physical_or_none(evse.EVSEMaximumPowerLimit))
        if self._phase == "renegotiating" or self.mode == "ac":
            self._phase = "charging"
            return self._power_delivery("Start")
        return self._cable_check(now)

    def _start_charging(self, now: float) -> bytes:
        self._phase = "charging"
        return self._power_delivery("Start")

    def _on_PowerDeliveryRes(self, res: Any, msg: Any, now: float) -> bytes:
        if self._phase == "charging":
            self._start_metering(now)
            return self._loop_request()
        if self._phase == "renegotiating":
            return self._charge_parameter_discovery()
        if self.mode == "ac" or self._quirk("skip_welding_detection"):
            return self._send("SessionStopReq", b.SessionStopReqType(self._stop_kind))
        return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))

    def _on_ChargingStatusRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEMaxCurrent is not None:
            self._evse_ac_max_current = value(res.EVSEMaxCurrent)
        self._take_energy(self._evse_nominal_voltage * self._ac_current() * self.ac_phases, now)
        if res.AC_EVSEStatus is None:
            raise SessionFailed("ChargingStatusRes has no AC_EVSEStatus")
        receipt = self._metering_receipt(res)
        return receipt if receipt is not None else self._next_in_loop(res.AC_EVSEStatus.EVSENotification)

    def _on_CurrentDemandRes(self, res: Any, msg: Any, now: float) -> bytes:
        self._take_energy(value(res.EVSEPresentVoltage) * value(res.EVSEPresentCurrent), now)
        self._learn_evse_limits(max_current=physical_or_none(res.EVSEMaximumCurrentLimit),
                                max_power=physical_or_none(res.EVSEMaximumPowerLimit))
        receipt = self._metering_receipt(res)
        if receipt is not None:
            return receipt
        return self._next_in_loop(res.DC_EVSEStatus.EVSENotification if res.DC_EVSEStatus else None)

    def _on_MeteringReceiptRes(self, res: Any, msg: Any, now: float) -> bytes:
        status = res.AC_EVSEStatus if self.mode == "ac" else res.DC_EVSEStatus
        # energy flows on while the receipt is exchanged; the next loop answer accounts for it
        return self._next_in_loop(status.EVSENotification if status is not None else None)

    def _on_WeldingDetectionRes(self, res: Any, msg: Any, now: float) -> bytes:
        if not self._output_discharged(value(res.EVSEPresentVoltage), now):
            return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))
        return self._send("SessionStopReq", b.SessionStopReqType(self._stop_kind))

    def _on_SessionStopRes(self, res: Any, msg: Any, now: float) -> None:
        if self._stop_kind == "Pause":
            self.paused = True
        else:
            self._session_stopped()
        return None
