"""An ISO 15118-2 car, sans-IO on :class:`edge.ev.base.SimulatedCar`: DC (``DC_extended``) or AC
(``AC_three_phase_core``), ExternalPayment (EIM) or Contract (PnC), schedule renegotiation, and
pause/resume.

PnC: PaymentDetailsReq with the eMAID and the contract chain, then AuthorizationReq carrying the
charger's GenChallenge, signed in the header with the contract key; a signed MeteringReceiptReq each
time the charger sets ReceiptRequired. The contract chain and key come from a PKI folder in Josev's
layout (:meth:`ContractCredentials.from_pki`).

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

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from edge.ev.base import Offer, SessionFailed, SimulatedCar
from edge.v2g import sap
from edge.v2g.iso2.session import pv, value
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType

MODES = {"dc": "DC_extended", "ac": "AC_three_phase_core"}
PAYMENTS = {"eim": "ExternalPayment", "pnc": "Contract"}
SIGNED_ID = "id1"  # the Id of the one signed element per message (short: some SECCs have little memory)


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
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        base = Path(pki_dir) / "iso15118_2"

        def read(path: Path) -> bytes:
            try:
                return path.read_bytes()
            except OSError as e:
                raise ValueError(f"cannot read {path}: {e.strerror or e}") from None

        def cert(name: str) -> x509.Certificate:
            path = base / "certs" / name
            data = read(path)
            try:
                return x509.load_pem_x509_certificate(data)
            except ValueError:
                raise ValueError(f"{path} is not a PEM certificate") from None

        leaf = cert("contractLeafCert.pem")
        subs = (cert("moSubCA2Cert.pem"), cert("moSubCA1Cert.pem"))
        password_file = base / "private_keys" / "contractLeafPassword.txt"
        password = read(password_file).decode("utf-8", "replace").strip() if password_file.exists() else ""
        key_path = base / "private_keys" / "contractLeaf.key"
        try:
            key = serialization.load_pem_private_key(read(key_path), password.encode() or None)
        except (TypeError, ValueError):
            raise ValueError(f"cannot load the contract key {key_path} (wrong or missing password?)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != leaf.public_key():
            raise ValueError(f"{key_path} is not the EC key of {base / 'certs' / 'contractLeafCert.pem'}")
        names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise ValueError("the contract leaf has no CN (the eMAID)")
        der = serialization.Encoding.DER
        return cls(str(names[0].value), leaf.public_bytes(der), tuple(s.public_bytes(der) for s in subs), key)

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
    contract: ContractCredentials | None = None  # needed for "pnc"
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
    _phase: str = "setup"  # setup, charging, renegotiating, stopping
    _resuming: bool = False
    _paused_once: bool = False
    _stop_kind: str = "Terminate"
    _schedule_id: int = 1
    _schedule_pmax: float | None = None
    _evse_nominal_voltage: float = 230.0
    _evse_max_current: float | None = None
    _auth_req: Any = None
    _auth_signature: Any = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.payment not in PAYMENTS:
            raise ValueError(f"payment must be one of {', '.join(PAYMENTS)}, not {self.payment!r}")
        if self.payment == "pnc" and self.contract is None:
            raise ValueError("Plug & Charge needs the contract credentials (a PKI folder)")
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
                   metering_receipts=self.receipts, paused=self.paused, resumed=self.resumed)
        return out

    def resume(self) -> None:
        """Ready for the connection that resumes a paused session (call ``start()`` next)."""
        if not self.paused:
            raise RuntimeError("there is no paused session to resume")
        self.paused, self._resuming, self._phase, self._stop_kind = False, True, "setup", "Terminate"
        self._phase_started.clear()

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
        if self._evse_max_current is not None:
            current = min(current, self._evse_max_current)
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
        req = b.CurrentDemandReqType(
            DC_EVStatus=self._status(), EVTargetCurrent=pv(self.max_current, "A"),
            EVMaximumVoltageLimit=pv(self.max_voltage, "V"), BulkChargingComplete=False, ChargingComplete=False,
            EVTargetVoltage=pv(self.battery_voltage + 10, "V"))
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
        chosen = t.SelectedServiceListType([t.SelectedServiceType(res.ChargeService.ServiceID)])
        return self._send("PaymentServiceSelectionReq", b.PaymentServiceSelectionReqType(wanted, chosen))

    def _on_PaymentServiceSelectionRes(self, res: Any, msg: Any, now: float) -> bytes:
        if self.payment_used == "Contract":
            return self._send("PaymentDetailsReq", b.PaymentDetailsReqType(self.contract.emaid, self.contract.chain()))
        self._auth_req, self._auth_signature = b.AuthorizationReqType(), None
        return self._send("AuthorizationReq", self._auth_req)

    def _on_PaymentDetailsRes(self, res: Any, msg: Any, now: float) -> bytes:
        if not res.GenChallenge or len(res.GenChallenge) != 16:
            raise SessionFailed("PaymentDetailsRes carries no 16-byte GenChallenge")
        self._auth_req = b.AuthorizationReqType(Id=SIGNED_ID, GenChallenge=res.GenChallenge)
        self._auth_signature = self.contract.sign_authorization(self._auth_req)
        return self._send("AuthorizationReq", self._auth_req, self._auth_signature)

    def _on_AuthorizationRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEProcessing == "Ongoing":  # the same request again until the charger has decided
            self._within("ongoing", now)
            return self._send("AuthorizationReq", self._auth_req, self._auth_signature)
        self._end_phase("ongoing")
        return self._charge_parameter_discovery()

    def _on_ChargeParameterDiscoveryRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEProcessing == "Ongoing":
            self._within("ongoing", now)
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
            self._evse_max_current = value(param.EVSEMaxCurrent)
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
            self._evse_max_current = value(res.EVSEMaxCurrent)
        self._take_energy(self._evse_nominal_voltage * self._ac_current() * self.ac_phases, now)
        if res.AC_EVSEStatus is None:
            raise SessionFailed("ChargingStatusRes has no AC_EVSEStatus")
        receipt = self._metering_receipt(res)
        return receipt if receipt is not None else self._next_in_loop(res.AC_EVSEStatus.EVSENotification)

    def _on_CurrentDemandRes(self, res: Any, msg: Any, now: float) -> bytes:
        self._take_energy(value(res.EVSEPresentVoltage) * value(res.EVSEPresentCurrent), now)
        receipt = self._metering_receipt(res)
        if receipt is not None:
            return receipt
        return self._next_in_loop(res.DC_EVSEStatus.EVSENotification if res.DC_EVSEStatus else None)

    def _on_MeteringReceiptRes(self, res: Any, msg: Any, now: float) -> bytes:
        status = res.AC_EVSEStatus if self.mode == "ac" else res.DC_EVSEStatus
        # energy flows on while the receipt is exchanged; the next loop answer accounts for it
        return self._next_in_loop(status.EVSENotification if status is not None else None)

    def _on_WeldingDetectionRes(self, res: Any, msg: Any, now: float) -> bytes:
        if value(res.EVSEPresentVoltage) > 60:
            return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))
        return self._send("SessionStopReq", b.SessionStopReqType(self._stop_kind))

    def _on_SessionStopRes(self, res: Any, msg: Any, now: float) -> None:
        if self._stop_kind == "Pause":
            self.paused = True
        else:
            self.stopped_cleanly = True
        return None
