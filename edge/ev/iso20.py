"""An ISO 15118-20 DC car, sans-IO on :class:`edge.ev.base.SimulatedCar`: the Scheduled control mode,
EIM or Plug & Charge, metering confirmations, schedule renegotiation, pause and resume.

Sequence: SessionSetup, AuthorizationSetup, Authorization (EIM, or PnC: PnC_AReqAuthorizationMode with
the charger's GenChallenge and the contract chain, signed in the header with the contract key),
ServiceDiscovery, ServiceDetail (the DC service, a parameter set with ControlMode Scheduled),
ServiceSelection, DC_ChargeParameterDiscovery, ScheduleExchange, DC_CableCheck, DC_PreCharge (Ongoing
until the charger's output is within 20 V of the battery, then one Finished), PowerDelivery Start with
a power profile inside the schedule, DC_ChargeLoop, PowerDelivery Stop, DC_WeldingDetection, SessionStop.

Each request is its own root element; :meth:`Iso20DcCar.request_payload_type` tells
:func:`edge.ev.drive` the V2GTP payload type it goes with (0x8002 common messages, 0x8004 DC). A
WARNING_* AuthorizationRes (contract refused) ends the session with SessionStopReq, no power drawn;
a FAILED* answer raises :class:`~edge.ev.base.SessionFailed` (the charger closes the connection then).
The -20 contract credentials come from a folder of a Josev-layout PKI (``iso15118_20``: P-521, or
``iso15118_20_ed448``), see :meth:`Iso20ContractCredentials.from_pki`.

Certificate installation (``install_certificate=True`` with :class:`Iso20OemCredentials`): when
AuthorizationSetupRes offers CertificateInstallationService, the car sends CertificateInstallationReq
(its OEM provisioning chain, signed in the header with the OEM key, and the V2G roots it trusts) before
AuthorizationReq. It takes the contract only when :func:`edge.pki.install20.accept_installation` passes
(CPS chain and signature, contract chain, the key decrypted with the OEM key and matching the new leaf),
then authorizes with PnC using it. A rejected answer ([V2G20-2504]) raises SessionFailed; a WARNING_*
answer is noted and the car goes on without a new contract (EIM when it has none).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import exi
from edge.ev.base import Offer, SessionFailed, SimulatedCar, is_ok
from edge.pki.install20 import COMMON_NS, InstallationRejected, accept_installation
from edge.pki.signature import sign, sign_authorization_req, sign_metering_receipt
from edge.v2g import sap
from edge.v2g.iso20.messages import (
    CONTROL_MODE_SCHEDULED,
    NO_SESSION,
    PAYLOAD_TYPES,
    REQUESTS,
    SERVICE_DC,
    from_rational,
    header,
    rational,
)
from edge.v2g.v2gtp import PayloadType
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct
from exi.model import iso20_dc as dc
from exi.model.xmldsig import X509IssuerSerialType

AUTHORIZATIONS = {"eim": "EIM", "pnc": "PnC"}
SIGNED_ID = "id1"  # the Id of the one signed element per message
PRECHARGE_TOLERANCE_V = 20.0
WELDING_SAFE_V = 60.0  # below this the output counts as discharged (no welded contactor holds it up)


@dataclass(frozen=True)
class Iso20ContractCredentials:
    """The car's -20 contract: leaf and MO sub-CAs (DER), the leaf's private key (P-521 or Ed448), the EMAID."""

    emaid: str
    leaf: bytes
    sub_cas: tuple[bytes, ...]  # MO sub-CA 2, then sub-CA 1
    key: Any  # cryptography's EllipticCurvePrivateKey (secp521r1) or Ed448PrivateKey

    @classmethod
    def from_pki(cls, pki_dir: Path | str, folder: str = "iso15118_20") -> Iso20ContractCredentials:
        """Read ``FOLDER/certs/contractLeafCert.pem``, ``moSubCA2Cert.pem``, ``moSubCA1Cert.pem`` and
        ``FOLDER/private_keys/contractLeaf.key`` (password in ``contractLeafPassword.txt``) of a Josev-layout
        PKI (``edge pki create``). Any problem is a one-line ValueError."""
        from cryptography.hazmat.primitives import serialization

        from edge.pki.folder import common_name, read_certificate, read_key_of
        from edge.pki.testpki import PkiPaths

        paths = PkiPaths(Path(pki_dir), folder)
        leaf = read_certificate(paths.cert("contractLeaf"))
        subs = (read_certificate(paths.cert("moSubCA2")), read_certificate(paths.cert("moSubCA1")))
        key = read_key_of(paths, "contractLeaf", leaf)
        emaid = common_name(leaf)
        if not emaid:
            raise ValueError("the contract leaf has no CN (the EMAID)")
        der = serialization.Encoding.DER
        return cls(emaid, leaf.public_bytes(der), tuple(s.public_bytes(der) for s in subs), key)

    def chain(self) -> cm.ContractCertificateChainType:
        return cm.ContractCertificateChainType(Certificate=self.leaf,
                                               SubCertificates=cm.SubCertificatesType(list(self.sub_cas)))

    def sign_authorization(self, mode: cm.PnC_AReqAuthorizationModeType) -> Any:
        """The header Signature over PnC_AReqAuthorizationMode (its Id and GenChallenge set)."""
        return sign_authorization_req("iso20", mode, self.key)

    def sign_metering(self, data: cm.SignedMeteringDataType) -> Any:
        """The header Signature over SignedMeteringData (MeteringConfirmationReq)."""
        return sign_metering_receipt("iso20", data, self.key)


@dataclass(frozen=True)
class Iso20OemCredentials:
    """What a -20 car needs to have a contract installed: its OEM provisioning leaf and sub-CAs (DER) with
    the leaf's key (P-521 or Ed448), and the V2G roots (DER) it trusts to check the CPS."""

    leaf: bytes
    sub_cas: tuple[bytes, ...]  # OEM sub-CA 2, then sub-CA 1
    key: Any  # cryptography's EllipticCurvePrivateKey (secp521r1) or Ed448PrivateKey
    v2g_roots: tuple[bytes, ...]

    @classmethod
    def from_pki(cls, pki_dir: Path | str, folder: str = "iso15118_20") -> Iso20OemCredentials:
        """Read ``FOLDER/certs/oemLeafCert.pem``, ``oemSubCA2Cert.pem``, ``oemSubCA1Cert.pem``,
        ``v2gRootCACert.pem`` and ``FOLDER/private_keys/oemLeaf.key`` (password in ``oemLeafPassword.txt``)
        of a Josev-layout PKI. Any problem is a one-line ValueError."""
        from edge.pki.folder import read_certificate, read_key_of
        from edge.pki.testpki import PkiPaths

        paths = PkiPaths(Path(pki_dir), folder)
        leaf = read_certificate(paths.cert("oemLeaf"))
        subs = (read_certificate(paths.cert("oemSubCA2")), read_certificate(paths.cert("oemSubCA1")))
        root = read_certificate(paths.cert("v2gRootCA"))
        key = read_key_of(paths, "oemLeaf", leaf)
        der = serialization.Encoding.DER
        return cls(leaf.public_bytes(der), tuple(s.public_bytes(der) for s in subs), key, (root.public_bytes(der),))

    def chain(self) -> cm.SignedCertificateChainType:
        return cm.SignedCertificateChainType(Id=SIGNED_ID, Certificate=self.leaf,
                                             SubCertificates=cm.SubCertificatesType(list(self.sub_cas)))

    def root_ids(self) -> ct.ListOfRootCertificateIDsType:
        """ListOfRootCertificateIDs: issuer name (RFC 4514) and serial of each trusted V2G root."""
        roots = [x509.load_der_x509_certificate(r) for r in self.v2g_roots]
        return ct.ListOfRootCertificateIDsType([X509IssuerSerialType(r.issuer.rfc4514_string(), r.serial_number)
                                                for r in roots])

    def installation_request(self) -> tuple[cm.CertificateInstallationReqType, Any]:
        """The CertificateInstallationReq (one contract chain wanted) and its header Signature over
        OEMProvisioningCertificateChain, made with the OEM provisioning key."""
        chain = self.chain()
        req = cm.CertificateInstallationReqType(OEMProvisioningCertificateChain=chain,
                                                ListOfRootCertificateIDs=self.root_ids(),
                                                MaximumContractCertificateChains=1)
        return req, sign("iso20", [exi.Fragment(COMMON_NS, "OEMProvisioningCertificateChain", chain)], self.key)

    def accept(self, res: cm.CertificateInstallationResType, when: dt.datetime) -> Iso20ContractCredentials:
        """The new contract of a positive CertificateInstallationRes (InstallationRejected otherwise)."""
        assert res.Header is not None
        installed = accept_installation(res, res.Header.Signature, oem_leaf=x509.load_der_x509_certificate(self.leaf),
                                        oem_key=self.key, v2g_roots=[x509.load_der_x509_certificate(r)
                                                                     for r in self.v2g_roots], now=when)
        return Iso20ContractCredentials(installed.emaid, installed.leaf, installed.sub_cas, installed.key)


@dataclass
class Iso20DcCar(SimulatedCar):
    PROTOCOL: ClassVar[sap.Protocol] = sap.ISO20_DC
    DEFAULT_OFFERS: ClassVar[tuple[Offer, ...]] = (Offer.of(sap.ISO20_DC, 1, 1),)
    TIMEOUTS: ClassVar[dict[str, float]] = {  # V2G_EVCC_Msg_Timeout (../shared/spec/timers.md, -20)
        "DC_ChargeLoopReq": 0.5, "ServiceDetailReq": 5.0, "CertificateInstallationReq": 5.0}
    LOOP_REQUESTS: ClassVar[frozenset[str]] = frozenset({"DC_ChargeLoopReq"})
    PHASE_LIMITS: ClassVar[dict[str, float]] = {"ongoing": 60.0, "cable check": 40.0, "pre-charge": 10.0}

    evccid: str = "EDGESIM00000000001"  # -20 EVCCID is a string (Josev sends a VIN-like one)
    session_id: bytes = NO_SESSION
    authorization: str = "eim"  # "eim" or "pnc"
    contract: Iso20ContractCredentials | None = None  # needed for "pnc" unless the car has one installed
    install_certificate: bool = False  # have a contract installed when the charger offers it (needs ``oem``)
    oem: Iso20OemCredentials | None = None
    offer_iso2_too: bool = False  # the offer lists -2 after -20
    max_power: float = 150_000.0  # W
    min_voltage: float = 200.0
    renegotiate_at_soc: float | None = None  # ask for a new schedule once, at this SoC
    pause_at_soc: float | None = None  # pause the session once, at this SoC (see resume())
    departure_s: int = 7200
    wall_clock: Callable[[], float] = time.time  # header TimeStamps
    # what happened
    authorization_used: str | None = None
    refused: str | None = None  # the WARNING_* code an AuthorizationRes refused the car with
    installed: Iso20ContractCredentials | None = None  # the contract the charger installed, once it has
    installation_refused: str | None = None  # the WARNING_* code a CertificateInstallationRes answered with
    resumed: bool = False
    receipts: int = 0
    renegotiations: int = 0
    _schema: str = "iso20-common"  # the message set of the last request
    _phase: str = "setup"  # setup, charging, renegotiating, stopping
    _resuming: bool = False
    _paused_once: bool = False
    _renegotiated: bool = False
    _stop_kind: str = "Terminate"
    _schedule_id: int = 1
    _schedule_power: float | None = None
    _parameter_set: int = 1
    _auth_req: Any = None
    _auth_signature: Any = None
    _precharge_finished: bool = False
    _setup_res: Any = None  # the AuthorizationSetupRes (its GenChallenge) while a contract is installed
    _install_req: Any = None
    _install_signature: Any = None

    def __post_init__(self) -> None:
        if self.authorization not in AUTHORIZATIONS:
            raise ValueError(f"authorization must be one of {', '.join(AUTHORIZATIONS)}, not {self.authorization!r}")
        if self.install_certificate and self.oem is None:
            raise ValueError("certificate installation needs the OEM provisioning credentials (a PKI folder)")
        if self.authorization == "pnc" and self.contract is None and not self.install_certificate:
            raise ValueError("Plug & Charge needs the contract credentials (a PKI folder) or certificate installation")
        if len(self.session_id) != 8:
            raise ValueError("an ISO 15118-20 SessionID is 8 bytes")
        if not self.offers:
            offers = [Offer.of(sap.ISO20_DC, 1, 1)]
            if self.offer_iso2_too:
                offers.append(Offer.of(sap.ISO2, 2, 2))
            self.offers = tuple(offers)

    # ------------------------------------------------------------------ the sans-IO interface
    def handle(self, payload: bytes, now: float) -> bytes | None:
        if not self._negotiated:
            return self._on_app_protocol(self._decode("apphand", payload))
        res = self._decode(self._schema, payload)
        name = self._last[:-3] + "Res"
        if type(res).__name__ != name + "Type":
            raise SessionFailed(f"expected {name}, got {type(res).__name__.removesuffix('Type')}")
        code = str(res.ResponseCode)
        if not (is_ok(code) or (code.startswith("WARNING") and name in ("AuthorizationRes",
                                                                         "CertificateInstallationRes"))):
            raise SessionFailed(f"{name} failed: {code}")
        if name != "SessionSetupRes" and (res.Header is None or res.Header.SessionID != self.session_id):
            raise SessionFailed(f"{name} names another session than {self.session_id.hex()}")
        return getattr(self, "_on_" + name)(res, now)

    def request_payload_type(self) -> int:
        """The V2GTP payload type of the last request (for :func:`edge.ev.drive`)."""
        return PayloadType.EXI if self._last == "supportedAppProtocolReq" else PAYLOAD_TYPES[self._schema]

    def resume(self) -> None:
        """Ready for the connection that resumes a paused session (call ``start()`` next)."""
        if not self.paused:
            raise RuntimeError("there is no paused session to resume")
        self.paused, self._resuming, self._phase, self._stop_kind = False, True, "setup", "Terminate"
        self._precharge_finished = False
        self._phase_started.clear()

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(authorization=self.authorization_used, refused=self.refused, renegotiations=self.renegotiations,
                   metering_confirmations=self.receipts, paused=self.paused, resumed=self.resumed,
                   installed_emaid=self.installed.emaid if self.installed else None)
        return out

    @property
    def installation_pending(self) -> bool:
        """The car still wants a contract installed (once per car, not per connection)."""
        return self.install_certificate and self.installed is None

    # ------------------------------------------------------------------ requests
    def _send(self, name: str, req: Any, signature: Any = None) -> bytes:
        self._last, self._schema = name, REQUESTS[name]
        self.log.append(name)
        req.Header = header(self.session_id, self.wall_clock(), signature)
        return exi.encode(self._schema, req)

    def _session_setup(self) -> bytes:
        # a new session: all zeros; a resumed one: the paused session's ID
        return self._send("SessionSetupReq", cm.SessionSetupReqType(EVCCID=self.evccid))

    def _stop_session(self) -> bytes:
        return self._send("SessionStopReq", cm.SessionStopReqType(ChargingSession=self._stop_kind))

    def _schedule_exchange(self) -> bytes:
        wanted = max(0.0, (self.target_soc - self.soc) / 100 * self.capacity_wh)
        mode = cm.Scheduled_SEReqControlModeType(
            DepartureTime=self.departure_s, EVTargetEnergyRequest=rational(wanted),
            EVMaximumEnergyRequest=rational((100 - self.soc) / 100 * self.capacity_wh),
            EVMinimumEnergyRequest=rational(0))
        return self._send("ScheduleExchangeReq", cm.ScheduleExchangeReqType(MaximumSupportingPoints=24,
                                                                            Scheduled_SEReqControlMode=mode))

    def _cable_check(self, now: float) -> bytes:
        self._within("cable check", now)
        return self._send("DC_CableCheckReq", dc.DC_CableCheckReqType())

    def _pre_charge(self, now: float) -> bytes:
        self._within("pre-charge", now)
        return self._send("DC_PreChargeReq", dc.DC_PreChargeReqType(
            EVProcessing="Finished" if self._precharge_finished else "Ongoing",
            EVPresentVoltage=rational(self.battery_voltage), EVTargetVoltage=rational(self.battery_voltage)))

    def _power_delivery(self, progress: str) -> bytes:
        profile = None
        if progress == "Start":  # the car's plan inside the schedule
            power = min(self.max_power, self._schedule_power or self.max_power)
            profile = cm.EVPowerProfileType(
                TimeAnchor=int(self.wall_clock()),
                Scheduled_EVPPTControlMode=cm.Scheduled_EVPPTControlModeType(SelectedScheduleTupleID=self._schedule_id),
                EVPowerProfileEntries=cm.EVPowerProfileEntryListType(
                    [cm.PowerScheduleEntryType(Duration=self.departure_s, Power=rational(power))]))
        return self._send("PowerDeliveryReq", cm.PowerDeliveryReqType(EVProcessing="Finished", ChargeProgress=progress,
                                                                      EVPowerProfile=profile))

    def _loop_request(self) -> bytes:
        mode = dc.Scheduled_DC_CLReqControlModeType(
            EVTargetCurrent=rational(self.max_current), EVTargetVoltage=rational(self.battery_voltage + 10),
            EVMaximumChargePower=rational(self.max_power), EVMaximumChargeCurrent=rational(self.max_current),
            EVMaximumVoltage=rational(self.max_voltage))
        display = ct.DisplayParametersType(PresentSOC=round(self.soc), TargetSOC=round(self.target_soc),
                                           ChargingComplete=False)
        return self._send("DC_ChargeLoopReq", dc.DC_ChargeLoopReqType(
            DisplayParameters=display, MeterInfoRequested=False, EVPresentVoltage=rational(self.battery_voltage),
            Scheduled_DC_CLReqControlMode=mode))

    def _stop(self, kind: str) -> bytes:
        self._phase, self._stop_kind = "stopping", kind
        return self._power_delivery("Stop")

    def _next_in_loop(self, notification: object) -> bytes:
        """After a charge-loop answer: what the charger asks for first, then the car's own plans."""
        if str(notification) == "Terminate":
            self._note("the charger asked to stop (EVSENotification Terminate)")
            return self._stop("Terminate")
        if self.pause_at_soc is not None and not self._paused_once and self.soc >= self.pause_at_soc:
            self._paused_once = True
            return self._stop("Pause")
        if self.renegotiate_at_soc is not None and not self._renegotiated and self.soc >= self.renegotiate_at_soc:
            self._renegotiated, self._phase = True, "renegotiating"
            self.renegotiations += 1
            return self._power_delivery("ScheduleRenegotiation")
        if self.soc >= self.target_soc:
            return self._stop("Terminate")
        return self._loop_request()

    def _metering_confirmation(self, res: dc.DC_ChargeLoopResType) -> bytes | None:
        """The signed meter reading the charger asked for, or None when the car has no contract to sign with."""
        if self.authorization_used != "PnC" or self.contract is None:
            self._note("MeteringConfirmation asked with EIM ignored (it is signed with the contract key)")
            return None
        if res.MeterInfo is None:
            raise SessionFailed("DC_ChargeLoopRes asks for a MeteringConfirmation but carries no MeterInfo")
        data = cm.SignedMeteringDataType(
            Id=SIGNED_ID, SessionID=self.session_id, MeterInfo=res.MeterInfo,
            Scheduled_SMDTControlMode=cm.Scheduled_SMDTControlModeType(SelectedScheduleTupleID=self._schedule_id))
        self.receipts += 1
        return self._send("MeteringConfirmationReq", cm.MeteringConfirmationReqType(SignedMeteringData=data),
                          self.contract.sign_metering(data))

    # ------------------------------------------------------------------ responses
    def _on_SessionSetupRes(self, res: cm.SessionSetupResType, now: float) -> bytes:
        assert res.Header is not None
        if self._resuming:
            self._resuming = False
            if str(res.ResponseCode) == "OK_OldSessionJoined" and res.Header.SessionID == self.session_id:
                self.resumed = True
            else:
                self._note(f"the charger did not join the paused session ({res.ResponseCode}); a new session")
        self.session_id = res.Header.SessionID
        if self._quirk("stop_after_session_setup"):
            return self._stop_session()
        return self._send("AuthorizationSetupReq", cm.AuthorizationSetupReqType())

    def _on_AuthorizationSetupRes(self, res: cm.AuthorizationSetupResType, now: float) -> bytes:
        if self.installation_pending and self.oem is not None:
            if res.CertificateInstallationService:
                self._setup_res = res
                self._install_req, self._install_signature = self.oem.installation_request()
                return self._send("CertificateInstallationReq", self._install_req, self._install_signature)
            self._note("the charger offers no certificate installation")
        return self._authorize(res)

    def _on_CertificateInstallationRes(self, res: cm.CertificateInstallationResType, now: float) -> bytes:
        if str(res.EVSEProcessing) != "Finished":  # the same request again until the charger has the answer
            self._within("ongoing", now)
            return self._send("CertificateInstallationReq", self._install_req, self._install_signature)
        self._end_phase("ongoing")
        code = str(res.ResponseCode)
        if code.startswith("WARNING"):
            self.installation_refused = code
            self._note(f"certificate installation refused: {code}")
        else:
            assert self.oem is not None
            try:
                self.installed = self.contract = self.oem.accept(res, dt.datetime.fromtimestamp(self.wall_clock(),
                                                                                                dt.UTC))
            except InstallationRejected as e:
                raise SessionFailed(f"CertificateInstallationRes rejected: {e}") from None
            self._note(f"contract {self.installed.emaid} installed (CPS signature verified, key decrypted)")
        return self._authorize(self._setup_res)

    def _authorize(self, res: cm.AuthorizationSetupResType) -> bytes:
        offered = [str(s) for s in res.AuthorizationServices]
        wanted = self.authorization_used if self.resumed and self.authorization_used \
            else AUTHORIZATIONS[self.authorization]
        if wanted == "PnC" and ("PnC" not in offered or res.PnC_ASResAuthorizationMode is None):
            self._note("the charger does not offer PnC; falling back to EIM")
            wanted = "EIM"
        elif wanted == "PnC" and self.contract is None:  # no contract was installed
            self._note("no contract to authorize with; falling back to EIM")
            wanted = "EIM"
        if wanted not in offered:
            raise SessionFailed(f"the charger does not offer {wanted} (offers {', '.join(offered)})")
        self.authorization_used = wanted
        signature = None
        if wanted == "PnC":
            assert self.contract is not None and res.PnC_ASResAuthorizationMode is not None
            challenge = res.PnC_ASResAuthorizationMode.GenChallenge
            if not challenge or len(challenge) != 16:
                raise SessionFailed("AuthorizationSetupRes carries no 16-byte GenChallenge")
            mode = cm.PnC_AReqAuthorizationModeType(Id=SIGNED_ID, GenChallenge=challenge,
                                                    ContractCertificateChain=self.contract.chain())
            signature = self.contract.sign_authorization(mode)
            req = cm.AuthorizationReqType(SelectedAuthorizationService="PnC", PnC_AReqAuthorizationMode=mode)
        else:
            req = cm.AuthorizationReqType(SelectedAuthorizationService="EIM",
                                          EIM_AReqAuthorizationMode=cm.EIM_AReqAuthorizationModeType())
        self._auth_req, self._auth_signature = req, signature
        return self._send("AuthorizationReq", req, signature)

    def _on_AuthorizationRes(self, res: cm.AuthorizationResType, now: float) -> bytes:
        if str(res.EVSEProcessing) != "Finished":  # the same request again until the charger has decided
            self._within("ongoing", now)
            return self._send("AuthorizationReq", self._auth_req, self._auth_signature)
        self._end_phase("ongoing")
        if str(res.ResponseCode).startswith("WARNING"):  # refused: no charge, end the session cleanly
            self.refused = str(res.ResponseCode)
            self._note(f"{self.authorization_used} authorization refused: {self.refused}")
            return self._stop_session()
        return self._send("ServiceDiscoveryReq", cm.ServiceDiscoveryReqType())

    def _on_ServiceDiscoveryRes(self, res: cm.ServiceDiscoveryResType, now: float) -> bytes:
        services = res.EnergyTransferServiceList.Service if res.EnergyTransferServiceList else []
        if SERVICE_DC not in [s.ServiceID for s in services]:
            raise SessionFailed(f"the charger offers no DC service (ServiceIDs {[s.ServiceID for s in services]})")
        return self._send("ServiceDetailReq", cm.ServiceDetailReqType(ServiceID=SERVICE_DC))

    def _on_ServiceDetailRes(self, res: cm.ServiceDetailResType, now: float) -> bytes:
        sets = res.ServiceParameterList.ParameterSet if res.ServiceParameterList else []
        scheduled = [s for s in sets if any(p.Name == "ControlMode" and p.intValue == CONTROL_MODE_SCHEDULED
                                            for p in s.Parameter)]
        if not scheduled:
            raise SessionFailed("the DC service has no parameter set with the Scheduled control mode")
        self._parameter_set = scheduled[0].ParameterSetID
        chosen = cm.SelectedServiceType(ServiceID=SERVICE_DC, ParameterSetID=self._parameter_set)
        return self._send("ServiceSelectionReq", cm.ServiceSelectionReqType(SelectedEnergyTransferService=chosen))

    def _on_ServiceSelectionRes(self, res: cm.ServiceSelectionResType, now: float) -> bytes:
        mode = dc.DC_CPDReqEnergyTransferModeType(
            EVMaximumChargePower=rational(self.max_power), EVMinimumChargePower=rational(0),
            EVMaximumChargeCurrent=rational(self.max_current), EVMinimumChargeCurrent=rational(0),
            EVMaximumVoltage=rational(self.max_voltage), EVMinimumVoltage=rational(self.min_voltage),
            TargetSOC=round(self.target_soc))
        return self._send("DC_ChargeParameterDiscoveryReq",
                          dc.DC_ChargeParameterDiscoveryReqType(DC_CPDReqEnergyTransferMode=mode))

    def _on_DC_ChargeParameterDiscoveryRes(self, res: dc.DC_ChargeParameterDiscoveryResType, now: float) -> bytes:
        evse = res.DC_CPDResEnergyTransferMode
        if evse is None:
            raise SessionFailed("DC_ChargeParameterDiscoveryRes has no DC_CPDResEnergyTransferMode")
        if from_rational(evse.EVSEMaximumVoltage) < self.battery_voltage:
            raise SessionFailed(f"the charger's {from_rational(evse.EVSEMaximumVoltage):g} V cannot charge a "
                                f"{self.battery_voltage:g} V battery")
        return self._schedule_exchange()

    def _on_ScheduleExchangeRes(self, res: cm.ScheduleExchangeResType, now: float) -> bytes:
        if str(res.EVSEProcessing) != "Finished":
            self._within("ongoing", now)
            return self._schedule_exchange()
        self._end_phase("ongoing")
        tuples = res.Scheduled_SEResControlMode.ScheduleTuple if res.Scheduled_SEResControlMode else []
        if not tuples:
            raise SessionFailed("ScheduleExchangeRes offers no schedule for the Scheduled control mode")
        chosen = tuples[0]
        self._schedule_id = chosen.ScheduleTupleID
        entries = chosen.ChargingSchedule.PowerSchedule.PowerScheduleEntries.PowerScheduleEntry
        self._schedule_power = from_rational(entries[0].Power) if entries else None
        if self._phase == "renegotiating":  # the contactors are closed: straight back to charging
            self._phase = "charging"
            return self._power_delivery("Start")
        return self._cable_check(now)

    def _on_DC_CableCheckRes(self, res: dc.DC_CableCheckResType, now: float) -> bytes:
        if str(res.EVSEProcessing) != "Finished" and not self._quirk("ignore_cable_check_ongoing"):
            return self._cable_check(now)
        self._end_phase("cable check")
        return self._pre_charge(now)

    def _on_DC_PreChargeRes(self, res: dc.DC_PreChargeResType, now: float) -> bytes:
        if self._precharge_finished:
            self._end_phase("pre-charge")
            self._phase = "charging"
            return self._power_delivery("Start")
        if abs(from_rational(res.EVSEPresentVoltage) - self.battery_voltage) < PRECHARGE_TOLERANCE_V:
            self._precharge_finished = True  # one more PreChargeReq says Finished, then PowerDelivery
        return self._pre_charge(now)

    def _on_PowerDeliveryRes(self, res: cm.PowerDeliveryResType, now: float) -> bytes:
        if self._phase == "charging":
            self._start_metering(now)
            return self._loop_request()
        if self._phase == "renegotiating":
            return self._schedule_exchange()
        if self._quirk("skip_welding_detection"):
            return self._stop_session()
        return self._send("DC_WeldingDetectionReq", dc.DC_WeldingDetectionReqType(EVProcessing="Ongoing"))

    def _on_DC_ChargeLoopRes(self, res: dc.DC_ChargeLoopResType, now: float) -> bytes:
        self._take_energy(from_rational(res.EVSEPresentVoltage) * from_rational(res.EVSEPresentCurrent), now)
        notification = res.EVSEStatus.EVSENotification if res.EVSEStatus is not None else None
        if str(notification) == "MeteringConfirmation":
            confirmation = self._metering_confirmation(res)
            if confirmation is not None:
                return confirmation
            notification = None
        return self._next_in_loop(notification)

    def _on_MeteringConfirmationRes(self, res: cm.MeteringConfirmationResType, now: float) -> bytes:
        return self._next_in_loop(None)  # energy flowed on; the next loop answer accounts for it

    def _on_DC_WeldingDetectionRes(self, res: dc.DC_WeldingDetectionResType, now: float) -> bytes:
        if from_rational(res.EVSEPresentVoltage) > WELDING_SAFE_V:
            return self._send("DC_WeldingDetectionReq", dc.DC_WeldingDetectionReqType(EVProcessing="Ongoing"))
        return self._stop_session()

    def _on_SessionStopRes(self, res: cm.SessionStopResType, now: float) -> None:
        if self._stop_kind == "Pause":
            self.paused = True
        else:
            self.stopped_cleanly = self.refused is None
        return None
