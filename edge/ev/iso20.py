"""The ISO 15118-20 car, sans-IO on :class:`edge.ev.base.SimulatedCar`: one car for every energy service
(``service``: dc, ac, dc_bpt, ac_bpt) in the Scheduled or Dynamic control mode (``control``), EIM or Plug &
Charge, metering confirmations, schedule renegotiation, pause and resume, the charger's notifications.

Sequence: SAP (an AC car offers urn:iso:std:iso:15118:-20:AC, a DC car ...:-20:DC), SessionSetup,
AuthorizationSetup, Authorization (EIM, or PnC: PnC_AReqAuthorizationMode with the charger's GenChallenge and
the contract chain, signed in the header with the contract key), ServiceDiscovery (the BPT service of the car's
kind when the car is BPT-capable and it is offered, else the plain one), ServiceDetail (a parameter set whose
ControlMode is the one wanted; BPTChannel unified preferred), ServiceSelection, AC_/DC_ChargeParameterDiscovery
(the BPT_ element with discharge limits for BPT), ScheduleExchange (Scheduled_ or Dynamic_SEReqControlMode),
DC only: DC_CableCheck and DC_PreCharge (Ongoing until the charger's output is within 20 V of the battery,
then one Finished); PowerDelivery Start (scheduled: a power profile inside the schedule; dynamic:
Dynamic_EVPPTControlMode; BPT: BPT_ChannelSelection), the charge loop (AC_ChargeLoop or DC_ChargeLoop with
the control-mode element of the service and mode), PowerDelivery Stop, DC only: DC_WeldingDetection,
SessionStop.

Power in the loop: DC scheduled: the car asks EVTargetCurrent for the schedule's power now (negative:
discharge, BPT only), within its own and the charger's last maximum current and power. DC dynamic: the
charger's power module sets the current; the battery follows EVSEPresentCurrent. AC: the on-board charger
follows EVSETargetActivePower (scheduled without one: the schedule's power) within its own and the
charger's limits, and reports it as EVPresentActivePower. Below ``min_soc`` the car gives no energy: it
asks for 0 / draws 0 and notes the refusal, and sends its discharge limits as 0.

Signs on the wire: target and present values (EVTargetCurrent, EVSEPresentCurrent, EVSETargetActivePower,
EVPresentActivePower, schedule entries) are signed, import positive, export negative; discharge limits
(EV/EVSE Maximum/MinimumDischargePower, ...DischargeCurrent) are positive magnitudes, or negative numbers
with the ``negative_discharge_limits`` quirk (EVerest's ``negative_bidirectional_limits``). A limit of the
sign the car does not expect is read as "no discharge" and noted.

Notifications in a loop response: Terminate and Pause end the energy transfer (PowerDelivery Stop,
welding detection for DC, SessionStop Terminate or Pause); ScheduleRenegotiation: PowerDelivery
ScheduleRenegotiation, ScheduleExchange, PowerDelivery Start; MeteringConfirmation: a signed
MeteringConfirmationReq (PnC).

Each request is its own root element; :meth:`Iso20Car.request_payload_type` tells :func:`edge.ev.drive` the
V2GTP payload type it goes with (0x8002 common messages, 0x8003 AC, 0x8004 DC). A WARNING_* AuthorizationRes
(contract refused) ends the session with SessionStopReq, no power drawn; a FAILED* answer raises
:class:`~edge.ev.base.SessionFailed` (the charger closes the connection then). The -20 contract credentials
come from a folder of a Josev-layout PKI (``iso15118_20``: P-521, or ``iso15118_20_ed448``), see
:meth:`Iso20ContractCredentials.from_pki`.

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
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    BPT_CHANNEL_UNIFIED,
    BPT_SERVICES,
    CONTROL_MODE_DYNAMIC,
    CONTROL_MODE_SCHEDULED,
    ENERGY_SERVICES,
    NO_SESSION,
    PAYLOAD_TYPES,
    REQUESTS,
    SERVICE_AC,
    SERVICE_AC_BPT,
    SERVICE_DC,
    SERVICE_DC_BPT,
    from_rational,
    header,
    rational,
)
from edge.v2g.v2gtp import PayloadType
from exi.model import iso20_ac as ac
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct
from exi.model import iso20_dc as dc
from exi.model.xmldsig import X509IssuerSerialType

AUTHORIZATIONS = {"eim": "EIM", "pnc": "PnC"}
SIGNED_ID = "id1"  # the Id of the one signed element per message
PRECHARGE_TOLERANCE_V = 20.0
#: the car's energy service (``service``) -> its ServiceID (Table 204)
SERVICES = {"dc": SERVICE_DC, "ac": SERVICE_AC, "dc_bpt": SERVICE_DC_BPT, "ac_bpt": SERVICE_AC_BPT}
PLAIN_OF_BPT = {SERVICE_DC_BPT: SERVICE_DC, SERVICE_AC_BPT: SERVICE_AC}
#: the car's control mode (``control``) -> the ControlMode service parameter
CONTROL_MODES = {"scheduled": CONTROL_MODE_SCHEDULED, "dynamic": CONTROL_MODE_DYNAMIC}
#: W a car takes unless told otherwise: a DC car's battery, an AC car's 11 kW three-phase on-board charger
DEFAULT_MAX_POWER = {"dc": 150_000.0, "ac": 11_000.0}


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
class Iso20Car(SimulatedCar):
    """A -20 car for one energy service (``service``: dc, ac, dc_bpt, ac_bpt) in one control mode
    (``control``: scheduled, dynamic); see the module docstring for what each does on the wire."""

    PROTOCOL: ClassVar[sap.Protocol] = sap.ISO20_DC  # an AC car speaks sap.ISO20_AC: see ``protocol``
    DEFAULT_OFFERS: ClassVar[tuple[Offer, ...]] = (Offer.of(sap.ISO20_DC, 1, 1),)
    TIMEOUTS: ClassVar[dict[str, float]] = {  # V2G_EVCC_Msg_Timeout (../shared/spec/timers.md, -20)
        "DC_ChargeLoopReq": 0.5, "AC_ChargeLoopReq": 0.5, "ServiceDetailReq": 5.0, "CertificateInstallationReq": 5.0}
    LOOP_REQUESTS: ClassVar[frozenset[str]] = frozenset({"DC_ChargeLoopReq", "AC_ChargeLoopReq"})
    PHASE_LIMITS: ClassVar[dict[str, float]] = {**SimulatedCar.PHASE_LIMITS, "pre-charge": 10.0}

    service: str = "dc"  # the energy service it wants (SERVICES); a BPT car takes the plain one if that is all
    control: str = "scheduled"  # the control mode it wants (CONTROL_MODES)
    evccid: str = "EDGESIM00000000001"  # -20 EVCCID is a string (Josev sends a VIN-like one)
    session_id: bytes = NO_SESSION
    authorization: str = "eim"  # "eim" or "pnc"
    contract: Iso20ContractCredentials | None = None  # needed for "pnc" unless the car has one installed
    install_certificate: bool = False  # have a contract installed when the charger offers it (needs ``oem``)
    oem: Iso20OemCredentials | None = None
    offer_iso2_too: bool = False  # the offer lists -2 after -20
    max_power: float | None = None  # W the car takes; None: DEFAULT_MAX_POWER of its kind
    max_discharge_power: float = 10_000.0  # W the car gives (BPT)
    max_discharge_current: float = 30.0  # A the car gives (DC BPT)
    min_soc: float = 20.0  # % below which the car gives no energy
    min_voltage: float = 200.0
    transfer_s: float | None = None  # end the energy transfer after this many seconds (None: at target SoC)
    renegotiate_at_soc: float | None = None  # ask for a new schedule once, at this SoC
    pause_at_soc: float | None = None  # pause the session once, at this SoC (see resume())
    departure_s: int = 7200
    wall_clock: Callable[[], float] = time.time  # header TimeStamps
    # what happened
    service_used: str | None = None  # "DC", "DC_BPT", "AC", "AC_BPT" as selected
    parameters: dict[str, int] = field(default_factory=dict)  # the parameter set selected
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
    _service_id: int | None = None
    _schedule_id: int = 1
    _schedule: list[tuple[float, float]] = field(default_factory=list)  # (start s, power W signed) entries
    _schedule_at: float = 0.0  # when the schedule's first entry began (the car's clock)
    _parameter_set: int = 1
    _ac_power: float = 0.0  # W the on-board charger draws now (import +, export -)
    _stay_past_target: bool = False  # the charger wants energy from the car, or (dynamic BPT) holds it at 0
    _transfer_started: float | None = None
    _now: float = 0.0  # the time of the last response read
    _auth_req: Any = None
    _auth_signature: Any = None
    _precharge_finished: bool = False
    _setup_res: Any = None  # the AuthorizationSetupRes (its GenChallenge) while a contract is installed
    _install_req: Any = None
    _install_signature: Any = None

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise ValueError(f"service must be one of {', '.join(SERVICES)}, not {self.service!r}")
        if self.control not in CONTROL_MODES:
            raise ValueError(f"control must be one of {', '.join(CONTROL_MODES)}, not {self.control!r}")
        if self.authorization not in AUTHORIZATIONS:
            raise ValueError(f"authorization must be one of {', '.join(AUTHORIZATIONS)}, not {self.authorization!r}")
        if self.install_certificate and self.oem is None:
            raise ValueError("certificate installation needs the OEM provisioning credentials (a PKI folder)")
        if self.authorization == "pnc" and self.contract is None and not self.install_certificate:
            raise ValueError("Plug & Charge needs the contract credentials (a PKI folder) or certificate installation")
        if len(self.session_id) != 8:
            raise ValueError("an ISO 15118-20 SessionID is 8 bytes")
        if not 0 <= self.min_soc <= 100:
            raise ValueError(f"min_soc must be a state of charge in % (0-100), not {self.min_soc:g}")
        if self.max_power is None:
            self.max_power = DEFAULT_MAX_POWER[self.kind]
        if not self.offers:
            offers = [Offer.of(self.protocol, 1, 1)]
            if self.offer_iso2_too:
                offers.append(Offer.of(sap.ISO2, 2, 2))
            self.offers = tuple(offers)

    # ------------------------------------------------------------------ what the car is
    @property
    def kind(self) -> str:
        """"ac" or "dc": the power path, which fixes the SAP namespace and the message set."""
        return self.service.split("_")[0]

    @property
    def protocol(self) -> sap.Protocol:
        return sap.ISO20_AC if self.kind == "ac" else sap.ISO20_DC

    @property
    def bpt(self) -> bool:
        """Was a bidirectional service selected (not just wanted)?"""
        return self._service_id in BPT_SERVICES

    @property
    def scheduled(self) -> bool:
        return self.control == "scheduled"

    @property
    def charge_power_limit(self) -> float:
        return self.max_power if self.max_power is not None else DEFAULT_MAX_POWER[self.kind]

    # ------------------------------------------------------------------ the sans-IO interface
    def handle(self, payload: bytes, now: float) -> bytes | None:
        self._now = now
        if not self._negotiated:
            self.last_response = self._decode("apphand", payload)
            return self._on_app_protocol(self.last_response)
        res = self.last_response = self._decode(self._schema, payload)
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
        self._precharge_finished, self._ac_power, self._stay_past_target = False, 0.0, False
        self._phase_started.clear()

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(service=self.service_used, control=self.control, parameters=dict(self.parameters),
                   min_soc=self.min_soc, authorization=self.authorization_used, refused=self.refused,
                   renegotiations=self.renegotiations, metering_confirmations=self.receipts, paused=self.paused,
                   resumed=self.resumed, installed_emaid=self.installed.emaid if self.installed else None)
        return out

    @property
    def installation_pending(self) -> bool:
        """The car still wants a contract installed (once per car, not per connection)."""
        return self.install_certificate and self.installed is None

    # ------------------------------------------------------------------ signs and limits
    def _limit_to_wire(self, magnitude: float) -> ct.RationalNumberType:
        """A discharge limit (a magnitude) as this car writes it: positive, negative with the quirk."""
        negative = self.quirks.negative_discharge_limits
        if negative:
            self._note_once("quirk negative_discharge_limits")
        return rational(-abs(magnitude) if negative else abs(magnitude))

    def _limit_from_wire(self, value: ct.RationalNumberType | None, name: str) -> float | None:
        """A discharge limit from the charger as a magnitude, read as this car reads it; one of the sign
        it does not expect means no discharge (what such a car does: the charger must know its cars)."""
        if value is None:
            return None
        number = from_rational(value)
        negative = self.quirks.negative_discharge_limits
        magnitude = -number if negative else number
        if magnitude < 0:
            expected = "negative" if negative else "positive"
            self._note_once(f"{name} {number:g} has the wrong sign for this car ({expected} discharge limits "
                            "expected): read as no discharge")
            return 0.0
        return magnitude

    def _learn_from(self, mode: Any) -> None:
        """The charger's limits in a ChargeParameterDiscoveryRes or loop response's control-mode element."""
        if mode is None:
            return
        self._learn_evse_limits(
            max_current=_number(getattr(mode, "EVSEMaximumChargeCurrent", None)),
            max_power=_number(getattr(mode, "EVSEMaximumChargePower", None)),
            max_discharge_current=self._limit_from_wire(getattr(mode, "EVSEMaximumDischargeCurrent", None),
                                                        "EVSEMaximumDischargeCurrent"),
            max_discharge_power=self._limit_from_wire(getattr(mode, "EVSEMaximumDischargePower", None),
                                                      "EVSEMaximumDischargePower"))

    def _may_discharge(self) -> bool:
        """BPT selected and the battery above its minimum SoC (refusals are noted where asked)."""
        return self.bpt and self.soc > self.min_soc

    def _instructed_to_give(self, flow: float) -> bool:
        """Does the charger's instruction (a signed power or current) keep a car past its target SoC in the
        session? Export does; so does 0 in dynamic BPT mode, where the charger decides when the car gives
        (a car that left at 0 would never be asked)."""
        return flow < 0 or (self.bpt and not self.scheduled and flow == 0)

    def _refuse_discharge(self, asked: str) -> None:
        self._note_once(f"discharge asked ({asked}) at SoC {self.soc:.1f} %, not above the minimum "
                        f"{self.min_soc:g} %: refused (0)")

    def _bounded_power(self, power: float, asked: str) -> float:
        """``power`` (W, import +) within the car's and the charger's limits; export only with BPT and
        above the minimum SoC."""
        if power >= 0:
            top = self.charge_power_limit
            if self._evse.max_power is not None:
                top = min(top, self._evse.max_power)
            return min(power, top)
        if not self.bpt:
            return 0.0
        if not self._may_discharge():
            self._refuse_discharge(asked)
            return 0.0
        bottom = self.max_discharge_power
        if self._evse.max_discharge_power is not None:
            bottom = min(bottom, self._evse.max_discharge_power)
        return max(power, -bottom)

    def _schedule_power(self, now: float) -> float | None:
        """The schedule's power (W, signed) at ``now``; None without a schedule (dynamic mode)."""
        if not self._schedule:
            return None
        elapsed = now - self._schedule_at
        power = self._schedule[0][1]
        for start, entry_power in self._schedule:
            if start <= elapsed:
                power = entry_power
        return power

    def _energy_requests(self) -> dict[str, ct.RationalNumberType]:
        """EVTarget/Maximum/MinimumEnergyRequest (Wh to the target, to full, to the minimum SoC); a BPT car
        gives them signed (negative: energy it can give) and adds the V2X range it cycles in."""
        wh = self.capacity_wh / 100

        def to(level: float) -> float:
            energy = (level - self.soc) * wh
            return energy if self.bpt else max(0.0, energy)

        out = {"EVTargetEnergyRequest": rational(to(self.target_soc)),
               "EVMaximumEnergyRequest": rational(to(100.0)), "EVMinimumEnergyRequest": rational(to(self.min_soc))}
        if self.bpt and not self.scheduled:
            out |= {"EVMaximumV2XEnergyRequest": rational(to(100.0)),
                    "EVMinimumV2XEnergyRequest": rational(to(self.min_soc))}
        return out

    def _discharge_limits(self, with_current: bool) -> dict[str, ct.RationalNumberType]:
        """The car's own discharge limits, 0 at or below its minimum SoC."""
        power = self.max_discharge_power if self._may_discharge() else 0.0
        out = {"EVMaximumDischargePower": self._limit_to_wire(power), "EVMinimumDischargePower": self._limit_to_wire(0)}
        if with_current:
            out["EVMaximumDischargeCurrent"] = self._limit_to_wire(self.max_discharge_current if power else 0.0)
        return out

    # ------------------------------------------------------------------ requests
    def _send(self, name: str, req: Any, signature: Any = None) -> bytes:
        self._last, self._schema = name, REQUESTS[name]
        self.log.append(name)
        self.last_request = req
        req.Header = header(self.session_id, self.wall_clock(), signature)
        return exi.encode(self._schema, req)

    def _session_setup(self) -> bytes:
        # a new session: all zeros; a resumed one: the paused session's ID
        return self._send("SessionSetupReq", cm.SessionSetupReqType(EVCCID=self.evccid))

    def _stop_session(self) -> bytes:
        return self._send("SessionStopReq", cm.SessionStopReqType(ChargingSession=self._stop_kind))

    def _schedule_exchange(self) -> bytes:
        energy = self._energy_requests()
        common = {"DepartureTime": self.departure_s, "EVTargetEnergyRequest": energy["EVTargetEnergyRequest"],
                  "EVMaximumEnergyRequest": energy["EVMaximumEnergyRequest"],
                  "EVMinimumEnergyRequest": energy["EVMinimumEnergyRequest"]}
        if self.scheduled:
            req = cm.ScheduleExchangeReqType(MaximumSupportingPoints=24,
                                             Scheduled_SEReqControlMode=cm.Scheduled_SEReqControlModeType(**common))
        else:
            v2x = {k: v for k, v in energy.items() if "V2X" in k}
            req = cm.ScheduleExchangeReqType(MaximumSupportingPoints=24, Dynamic_SEReqControlMode=(
                cm.Dynamic_SEReqControlModeType(MinimumSOC=round(self.min_soc), TargetSOC=round(self.target_soc),
                                                **common, **v2x)))
        return self._send("ScheduleExchangeReq", req)

    def _charge_parameter_discovery(self) -> bytes:
        charge = {"EVMaximumChargePower": rational(self.charge_power_limit), "EVMinimumChargePower": rational(0)}
        if self.kind == "ac":
            fields = {**charge, **(self._discharge_limits(with_current=False) if self.bpt else {})}
            element = ac.BPT_AC_CPDReqEnergyTransferModeType if self.bpt else ac.AC_CPDReqEnergyTransferModeType
            mode = element(**fields)
            return self._send("AC_ChargeParameterDiscoveryReq", ac.AC_ChargeParameterDiscoveryReqType(
                **{("BPT_" if self.bpt else "") + "AC_CPDReqEnergyTransferMode": mode}))
        fields = {**charge, "EVMaximumChargeCurrent": rational(self.max_current), "EVMinimumChargeCurrent": rational(0),
                  "EVMaximumVoltage": rational(self.max_voltage), "EVMinimumVoltage": rational(self.min_voltage),
                  "TargetSOC": round(self.target_soc)}
        if self.bpt:
            fields |= {**self._discharge_limits(with_current=True), "EVMinimumDischargeCurrent": self._limit_to_wire(0)}
        element = dc.BPT_DC_CPDReqEnergyTransferModeType if self.bpt else dc.DC_CPDReqEnergyTransferModeType
        mode = element(**fields)
        return self._send("DC_ChargeParameterDiscoveryReq", dc.DC_ChargeParameterDiscoveryReqType(
            **{("BPT_" if self.bpt else "") + "DC_CPDReqEnergyTransferMode": mode}))

    def _cable_check(self, now: float, seen: str = "no DC_CableCheckRes yet") -> bytes:
        self._within("cable check", now, seen)
        return self._send("DC_CableCheckReq", dc.DC_CableCheckReqType())

    def _pre_charge(self, now: float, seen: str = "no DC_PreChargeRes yet") -> bytes:
        self._within("pre-charge", now, seen)
        return self._send("DC_PreChargeReq", dc.DC_PreChargeReqType(
            EVProcessing="Finished" if self._precharge_finished else "Ongoing",
            EVPresentVoltage=rational(self.battery_voltage), EVTargetVoltage=rational(self.battery_voltage)))

    def _power_delivery(self, progress: str, now: float) -> bytes:
        profile, channel = None, None
        if progress == "Start":  # the car's plan: inside the schedule, or what it could take (dynamic)
            if self.scheduled:
                entries = [(start, self._bounded_power(power, "the schedule")) for start, power in self._schedule] \
                    or [(0.0, self.charge_power_limit)]
                durations = [round(b[0] - a[0]) for a, b in itertools.pairwise(entries)]
                durations.append(self.departure_s)
                plan = [cm.PowerScheduleEntryType(Duration=d, Power=rational(p))
                        for d, (_, p) in zip(durations, entries, strict=True)]
                mode = {"Scheduled_EVPPTControlMode": cm.Scheduled_EVPPTControlModeType(
                    SelectedScheduleTupleID=self._schedule_id)}
                first = self._schedule_power(now) or 0.0
            else:
                plan = [cm.PowerScheduleEntryType(Duration=self.departure_s, Power=rational(self.charge_power_limit))]
                mode = {"Dynamic_EVPPTControlMode": cm.Dynamic_EVPPTControlModeType()}
                first = 0.0
            profile = cm.EVPowerProfileType(TimeAnchor=int(self.wall_clock()), **mode,
                                            EVPowerProfileEntries=cm.EVPowerProfileEntryListType(plan))
            if self.bpt:
                channel = "Discharge" if self._bounded_power(first, "the schedule") < 0 else "Charge"
        return self._send("PowerDeliveryReq", cm.PowerDeliveryReqType(
            EVProcessing="Finished", ChargeProgress=progress, EVPowerProfile=profile, BPT_ChannelSelection=channel))

    def _loop_request(self, now: float) -> bytes:
        display = ct.DisplayParametersType(PresentSOC=round(self.soc), MinimumSOC=round(self.min_soc),
                                           TargetSOC=round(self.target_soc), ChargingComplete=False)
        fields: dict[str, Any] = {"EVMaximumChargePower": rational(self.charge_power_limit),
                                  "EVMinimumChargePower": rational(0)}
        if not self.scheduled:
            fields["DepartureTime"] = self.departure_s
        fields |= {k: v for k, v in self._energy_requests().items() if not self.scheduled or "V2X" not in k}
        if self.bpt:
            fields |= self._discharge_limits(with_current=self.kind == "dc")
        mode_name = _control_mode(self.bpt, self.scheduled, self.kind, "Req")
        if self.kind == "ac":
            fields |= {"EVPresentActivePower": rational(self._ac_power), "EVPresentReactivePower": rational(0)}
            if self.bpt:
                fields.pop("EVMaximumDischargeCurrent", None)
            return self._send("AC_ChargeLoopReq", ac.AC_ChargeLoopReqType(
                DisplayParameters=display, MeterInfoRequested=False,
                **{mode_name: getattr(ac, mode_name + "Type")(**fields)}))
        fields |= {"EVMaximumChargeCurrent": rational(self.max_current), "EVMaximumVoltage": rational(self.max_voltage),
                   "EVMinimumVoltage": rational(self.min_voltage)}
        if self.scheduled:
            voltage = self.battery_voltage + 10
            fields |= {"EVTargetCurrent": rational(self._dc_scheduled_current(voltage, now)),
                       "EVTargetVoltage": rational(voltage)}
        return self._send("DC_ChargeLoopReq", dc.DC_ChargeLoopReqType(
            DisplayParameters=display, MeterInfoRequested=False, EVPresentVoltage=rational(self.battery_voltage),
            **{mode_name: getattr(dc, mode_name + "Type")(**fields)}))

    def _dc_scheduled_current(self, voltage: float, now: float) -> float:
        """EVTargetCurrent (A, signed) in scheduled mode: the schedule's power now, within the car's and
        the charger's limits; negative (discharge) only with BPT, above the minimum SoC."""
        schedule = self._schedule_power(now)
        power = self._bounded_power(self.charge_power_limit if schedule is None else schedule, "the schedule")
        self._stay_past_target = schedule is not None and schedule < 0
        if power >= 0:
            return self._dc_target_current(voltage, wanted=power / voltage)
        current = min(-power / voltage, self.max_discharge_current)
        if self._evse.max_discharge_current is not None:
            current = min(current, self._evse.max_discharge_current)
        return -current

    def _stop(self, kind: str, now: float) -> bytes:
        self._phase, self._stop_kind = "stopping", kind
        return self._power_delivery("Stop", now)

    def _renegotiate(self, now: float) -> bytes:
        self._phase = "renegotiating"
        self.renegotiations += 1
        return self._power_delivery("ScheduleRenegotiation", now)

    def _next_in_loop(self, notification: object, now: float) -> bytes:
        """After a charge-loop answer: what the charger asks for first, then the car's own plans."""
        asked = str(notification) if notification is not None else None
        if asked in ("Terminate", "Pause"):
            self._note(f"the charger asked to stop (EVSENotification {asked})")
            return self._stop(asked, now)
        if asked == "ScheduleRenegotiation":
            self._note("the charger asked for a new schedule (EVSENotification ScheduleRenegotiation)")
            return self._renegotiate(now)
        if self.pause_at_soc is not None and not self._paused_once and self.soc >= self.pause_at_soc:
            self._paused_once = True
            return self._stop("Pause", now)
        if self.renegotiate_at_soc is not None and not self._renegotiated and self.soc >= self.renegotiate_at_soc:
            self._renegotiated = True
            return self._renegotiate(now)
        if self.transfer_s is not None and self._transfer_started is not None \
                and now - self._transfer_started >= self.transfer_s:
            self._note(f"energy transfer time over ({self.transfer_s:g} s)")
            return self._stop("Terminate", now)
        if self.soc >= self.target_soc and not self._stay_past_target:  # full enough, and nobody wants it to give
            return self._stop("Terminate", now)
        return self._loop_request(now)

    def _metering_confirmation(self, res: Any) -> bytes | None:
        """The signed meter reading the charger asked for, or None when the car has no contract to sign with."""
        if self.authorization_used != "PnC" or self.contract is None:
            self._note("MeteringConfirmation asked with EIM ignored (it is signed with the contract key)")
            return None
        if res.MeterInfo is None:
            raise SessionFailed(f"{type(res).__name__.removesuffix('Type')} asks for a MeteringConfirmation but "
                                "carries no MeterInfo")
        selected = cm.Scheduled_SMDTControlModeType(SelectedScheduleTupleID=self._schedule_id)
        mode = {"Scheduled_SMDTControlMode": selected} if self.scheduled \
            else {"Dynamic_SMDTControlMode": cm.Dynamic_SMDTControlModeType()}
        data = cm.SignedMeteringDataType(Id=SIGNED_ID, SessionID=self.session_id, MeterInfo=res.MeterInfo, **mode)
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
            self._within("ongoing", now, "CertificateInstallationRes still EVSEProcessing Ongoing")
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
            self._within("ongoing", now, "AuthorizationRes still EVSEProcessing Ongoing")
            return self._send("AuthorizationReq", self._auth_req, self._auth_signature)
        self._end_phase("ongoing")
        if str(res.ResponseCode).startswith("WARNING"):  # refused: no charge, end the session cleanly
            self.refused = str(res.ResponseCode)
            self._note(f"{self.authorization_used} authorization refused: {self.refused}")
            return self._stop_session()
        return self._send("ServiceDiscoveryReq", cm.ServiceDiscoveryReqType())

    def _on_ServiceDiscoveryRes(self, res: cm.ServiceDiscoveryResType, now: float) -> bytes:
        offered = [s.ServiceID for s in (res.EnergyTransferServiceList.Service if res.EnergyTransferServiceList
                                         else [])]
        wanted = SERVICES[self.service]
        plain = wanted if wanted not in BPT_SERVICES else PLAIN_OF_BPT[wanted]
        chosen = next((s for s in dict.fromkeys((wanted, plain)) if s in offered), None)
        if chosen is None:
            names = ", ".join(ENERGY_SERVICES.get(s, str(s)) for s in offered) or "none"
            raise SessionFailed(f"the charger offers no {ENERGY_SERVICES[plain]} service (offers {names})")
        if chosen != wanted:
            self._note(f"the charger offers no {ENERGY_SERVICES[wanted]}; charging only ({ENERGY_SERVICES[chosen]})")
        self._service_id = chosen
        return self._send("ServiceDetailReq", cm.ServiceDetailReqType(ServiceID=chosen))

    def _on_ServiceDetailRes(self, res: cm.ServiceDetailResType, now: float) -> bytes:
        assert self._service_id is not None
        name = ENERGY_SERVICES[self._service_id]
        if res.ServiceID != self._service_id:
            raise SessionFailed(f"ServiceDetailRes describes service {res.ServiceID}, not {name}")
        sets = {s.ParameterSetID: {p.Name: p.intValue for p in s.Parameter}
                for s in (res.ServiceParameterList.ParameterSet if res.ServiceParameterList else [])}
        mode = CONTROL_MODES[self.control]
        fitting = [i for i, params in sets.items() if params.get("ControlMode") == mode]
        if not fitting:
            modes = sorted({str(p.get("ControlMode")) for p in sets.values()})
            raise SessionFailed(f"the {name} service has no parameter set with the {self.control} control mode "
                                f"(ControlMode {mode}; offered: {', '.join(modes) or 'none'})")
        # a unified BPT channel is what this car's one battery model does; take it when there is a choice
        fitting.sort(key=lambda i: sets[i].get("BPTChannel", BPT_CHANNEL_UNIFIED) != BPT_CHANNEL_UNIFIED)
        self._parameter_set = fitting[0]
        self.parameters, self.service_used = sets[self._parameter_set], name
        chosen = cm.SelectedServiceType(ServiceID=self._service_id, ParameterSetID=self._parameter_set)
        return self._send("ServiceSelectionReq", cm.ServiceSelectionReqType(SelectedEnergyTransferService=chosen))

    def _on_ServiceSelectionRes(self, res: cm.ServiceSelectionResType, now: float) -> bytes:
        return self._charge_parameter_discovery()

    def _on_DC_ChargeParameterDiscoveryRes(self, res: dc.DC_ChargeParameterDiscoveryResType, now: float) -> bytes:
        evse = res.BPT_DC_CPDResEnergyTransferMode if self.bpt else res.DC_CPDResEnergyTransferMode
        if evse is None:
            raise SessionFailed(f"DC_ChargeParameterDiscoveryRes has no {'BPT_' if self.bpt else ''}"
                                "DC_CPDResEnergyTransferMode")
        if from_rational(evse.EVSEMaximumVoltage) < self.battery_voltage:
            raise SessionFailed(f"the charger's {from_rational(evse.EVSEMaximumVoltage):g} V cannot charge a "
                                f"{self.battery_voltage:g} V battery")
        self._learn_from(evse)
        return self._schedule_exchange()

    def _on_AC_ChargeParameterDiscoveryRes(self, res: ac.AC_ChargeParameterDiscoveryResType, now: float) -> bytes:
        evse = res.BPT_AC_CPDResEnergyTransferMode if self.bpt else res.AC_CPDResEnergyTransferMode
        if evse is None:
            raise SessionFailed(f"AC_ChargeParameterDiscoveryRes has no {'BPT_' if self.bpt else ''}"
                                "AC_CPDResEnergyTransferMode")
        self._learn_from(evse)
        return self._schedule_exchange()

    def _on_ScheduleExchangeRes(self, res: cm.ScheduleExchangeResType, now: float) -> bytes:
        if str(res.EVSEProcessing) != "Finished":
            self._within("ongoing", now, "ScheduleExchangeRes still EVSEProcessing Ongoing")
            return self._schedule_exchange()
        self._end_phase("ongoing")
        if self.scheduled:
            self._take_schedule(res, now)
        elif res.Dynamic_SEResControlMode is None:
            raise SessionFailed("ScheduleExchangeRes has no Dynamic_SEResControlMode for the dynamic control mode")
        else:
            said = res.Dynamic_SEResControlMode
            given = {k: getattr(said, k) for k in ("DepartureTime", "MinimumSOC", "TargetSOC")
                     if getattr(said, k) is not None}
            if given:
                self._note_once("the charger's mobility needs: " + ", ".join(f"{k} {v}" for k, v in given.items()))
        if self._phase == "renegotiating" or self.kind == "ac":  # contactors closed, or no DC steps: on to power
            self._phase = "charging"
            return self._power_delivery("Start", now)
        return self._cable_check(now)

    def _take_schedule(self, res: cm.ScheduleExchangeResType, now: float) -> None:
        tuples = res.Scheduled_SEResControlMode.ScheduleTuple if res.Scheduled_SEResControlMode else []
        if not tuples:
            raise SessionFailed("ScheduleExchangeRes offers no schedule for the Scheduled control mode")
        chosen = tuples[0]
        self._schedule_id = chosen.ScheduleTupleID
        schedule = chosen.ChargingSchedule.PowerSchedule if chosen.ChargingSchedule else None
        entries = schedule.PowerScheduleEntries.PowerScheduleEntry if schedule and schedule.PowerScheduleEntries \
            else []
        if not entries:
            raise SessionFailed("the schedule offered has no PowerScheduleEntry")
        if chosen.DischargingSchedule is not None:
            self._note_once("a DischargingSchedule was offered: the car follows the ChargingSchedule's signed entries")
        self._schedule, start = [], 0.0
        for entry in entries:
            self._schedule.append((start, from_rational(entry.Power)))
            start += entry.Duration or 0
        self._schedule_at = now

    def _on_DC_CableCheckRes(self, res: dc.DC_CableCheckResType, now: float) -> bytes:
        if str(res.EVSEProcessing) != "Finished" and not self._quirk("ignore_cable_check_ongoing"):
            return self._cable_check(now, f"DC_CableCheckRes EVSEProcessing {res.EVSEProcessing}")
        self._end_phase("cable check")
        return self._pre_charge(now)

    def _on_DC_PreChargeRes(self, res: dc.DC_PreChargeResType, now: float) -> bytes:
        if self._precharge_finished:
            self._end_phase("pre-charge")
            self._phase = "charging"
            return self._power_delivery("Start", now)
        present = from_rational(res.EVSEPresentVoltage)
        if abs(present - self.battery_voltage) < PRECHARGE_TOLERANCE_V:
            self._precharge_finished = True  # one more PreChargeReq says Finished, then PowerDelivery
        return self._pre_charge(now, f"EVSEPresentVoltage {present:g} V, target {self.battery_voltage:g} V")

    def _on_PowerDeliveryRes(self, res: cm.PowerDeliveryResType, now: float) -> bytes:
        if self._phase == "charging":
            self._start_metering(now)
            if self._transfer_started is None:
                self._transfer_started = now
            return self._loop_request(now)
        if self._phase == "renegotiating":
            return self._schedule_exchange()
        if self.kind == "ac" or self._quirk("skip_welding_detection"):
            return self._stop_session()
        return self._send("DC_WeldingDetectionReq", dc.DC_WeldingDetectionReqType(EVProcessing="Ongoing"))

    def _on_DC_ChargeLoopRes(self, res: dc.DC_ChargeLoopResType, now: float) -> bytes:
        current = from_rational(res.EVSEPresentCurrent)  # signed: negative while the car discharges
        self._take_energy(from_rational(res.EVSEPresentVoltage) * current, now)
        self._learn_from(_present_mode(res, "DC"))
        if not self.scheduled:  # the charger's power module sets the current; the battery follows it
            self._stay_past_target = self._instructed_to_give(current)
            if current < 0 and self.soc <= self.min_soc:
                self._refuse_discharge(f"{current:g} A drawn")
        return self._after_loop_response(res, now)

    def _on_AC_ChargeLoopRes(self, res: ac.AC_ChargeLoopResType, now: float) -> bytes:
        self._take_energy(self._ac_power, now)  # what the on-board charger drew since the last answer
        mode = _present_mode(res, "AC")
        target = _number(getattr(mode, "EVSETargetActivePower", None))
        if target is None and self.scheduled:  # no target: the schedule's power
            target = self._schedule_power(now)
        if target is None:
            self._note_once("AC_ChargeLoopRes without EVSETargetActivePower: the on-board charger holds its power")
            target = self._ac_power
        self._stay_past_target = self._instructed_to_give(target)
        self._ac_power = self._bounded_power(target, f"EVSETargetActivePower {target:g} W")
        return self._after_loop_response(res, now)

    def _after_loop_response(self, res: Any, now: float) -> bytes:
        notification = res.EVSEStatus.EVSENotification if res.EVSEStatus is not None else None
        if str(notification) == "MeteringConfirmation":
            confirmation = self._metering_confirmation(res)
            if confirmation is not None:
                return confirmation
            notification = None
        return self._next_in_loop(notification, now)

    def _on_MeteringConfirmationRes(self, res: cm.MeteringConfirmationResType, now: float) -> bytes:
        return self._next_in_loop(None, now)  # energy flowed on; the next loop answer accounts for it

    def _on_DC_WeldingDetectionRes(self, res: dc.DC_WeldingDetectionResType, now: float) -> bytes:
        if not self._output_discharged(from_rational(res.EVSEPresentVoltage), now):
            return self._send("DC_WeldingDetectionReq", dc.DC_WeldingDetectionReqType(EVProcessing="Ongoing"))
        return self._stop_session()

    def _on_SessionStopRes(self, res: cm.SessionStopResType, now: float) -> None:
        if self._stop_kind == "Pause":
            self.paused = True
        elif self.refused is None:
            self._session_stopped()
        return None


#: the name from when the -20 car was DC only (service="dc", control="scheduled" are the defaults)
Iso20DcCar = Iso20Car


def _number(value: ct.RationalNumberType | None) -> float | None:
    """A RationalNumber as a number, None when absent (an absent limit is no limit, not 0)."""
    return None if value is None else from_rational(value)


def _control_mode(bpt: bool, scheduled: bool, kind: str, side: str) -> str:
    """The name of a loop message's control-mode element, e.g. BPT_Dynamic_AC_CLResControlMode."""
    return f"{'BPT_' if bpt else ''}{'Scheduled' if scheduled else 'Dynamic'}_{kind.upper()}_CL{side}ControlMode"


def _present_mode(res: Any, kind: str) -> Any:
    """The control-mode element a loop response carries (whichever of the four it is), or None."""
    for bpt in (False, True):
        for scheduled in (True, False):
            mode = getattr(res, _control_mode(bpt, scheduled, kind, "Res"), None)
            if mode is not None:
                return mode
    return None
