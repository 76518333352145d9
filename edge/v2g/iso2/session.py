"""ISO 15118-2 DC charger session with external identification (EIM), sans-IO.

Same shape as the DIN session: ``handle(payload, now) -> (response, ended)``, the order of requests
in the table ``NEXT``. Renegotiation (PowerDelivery Renegotiate -> ChargeParameterDiscovery) is in the
table; PnC (PaymentDetails, Authorization with GenChallenge), AC and pause/resume come next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from edge.v2g.dc import DcSession
from edge.v2g.physical import from_physical, to_physical
from edge.v2g.timers import ISO2 as ISO2_TIMERS
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType

NEXT: dict[str, set[str]] = {
    "start": {"SessionSetupReq"},
    "SessionSetupReq": {"ServiceDiscoveryReq", "SessionStopReq"},
    "ServiceDiscoveryReq": {"PaymentServiceSelectionReq", "SessionStopReq"},
    "PaymentServiceSelectionReq": {"AuthorizationReq", "SessionStopReq"},
    "AuthorizationReq": {"AuthorizationReq", "ChargeParameterDiscoveryReq", "SessionStopReq"},
    "ChargeParameterDiscoveryReq": {"ChargeParameterDiscoveryReq", "CableCheckReq", "SessionStopReq"},
    "CableCheckReq": {"CableCheckReq", "PreChargeReq", "SessionStopReq"},
    "PreChargeReq": {"PreChargeReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:Start": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    "CurrentDemandReq": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:Renegotiate": {"ChargeParameterDiscoveryReq", "SessionStopReq"},
    # after a renegotiation the car goes straight back to PowerDelivery Start (no cable check again)
    "ChargeParameterDiscoveryReq:renegotiated": {"ChargeParameterDiscoveryReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:Stop": {"WeldingDetectionReq", "SessionStopReq"},
    "WeldingDetectionReq": {"WeldingDetectionReq", "SessionStopReq"},
}


def pv(x: float, unit: str) -> t.PhysicalValueType:
    return to_physical(t.PhysicalValueType, x, unit)


value = from_physical


@dataclass
class Iso2DcSession(DcSession):
    PROTO = "iso2"
    B = b
    T = t
    MESSAGE = V2G_Message
    BODY = BodyType
    HEADER = MessageHeaderType
    NEXT = NEXT
    DEFAULT_TIMERS = ISO2_TIMERS

    evse_id: str = "DE*EDG*E0001*1"
    schedule_id: int = 1
    renegotiations: int = 0

    def _complete_failed(self, res_name: str, res: Any) -> None:
        if hasattr(res, "EVSEID") and res.EVSEID is None:
            res.EVSEID = self.evse_id
        if hasattr(res, "SAScheduleTupleID") and res.SAScheduleTupleID is None:
            res.SAScheduleTupleID = self.schedule_id
        if res_name == "ServiceDiscoveryRes":
            res.PaymentOptionList = t.PaymentOptionListType(["ExternalPayment"])
            res.ChargeService = self._charge_service()
        if res_name == "ChargeParameterDiscoveryRes":
            res.DC_EVSEChargeParameter = self._evse_parameter()

    def _schedule(self) -> t.SAScheduleListType:
        """One PMax schedule from the charger's power limit (the CSMS's profiles join with OCPP)."""
        entry = t.PMaxScheduleEntryType(t.RelativeTimeIntervalType(0, 86400), None,
                                        pv(self.hardware.dc_limits().max_power, "W"))
        return t.SAScheduleListType([t.SAScheduleTupleType(self.schedule_id, t.PMaxScheduleType([entry]))])

    def _charge_service(self) -> t.ChargeServiceType:
        modes = t.SupportedEnergyTransferModeType(["DC_extended"])
        return t.ChargeServiceType(1, None, "EVCharging", None, False, modes)

    # ------------------------------------------------------------------ requests

    def _SessionSetupReq(self, req):
        return b.SessionSetupResType("OK_NewSessionEstablished", self.evse_id, int(time.time())), False, \
            "SessionSetupReq"

    def _ServiceDiscoveryReq(self, req):
        res = b.ServiceDiscoveryResType("OK", t.PaymentOptionListType(["ExternalPayment"]), self._charge_service())
        return res, False, "ServiceDiscoveryReq"

    def _PaymentServiceSelectionReq(self, req: b.PaymentServiceSelectionReqType):
        services = [s.ServiceID for s in req.SelectedServiceList.SelectedService] if req.SelectedServiceList else []
        if req.SelectedPaymentOption != "ExternalPayment":
            return b.PaymentServiceSelectionResType("FAILED_PaymentSelectionInvalid"), True, self.state
        if 1 not in services:
            return b.PaymentServiceSelectionResType("FAILED_NoChargeServiceSelected"), True, self.state
        return b.PaymentServiceSelectionResType("OK"), False, "PaymentServiceSelectionReq"

    def _AuthorizationReq(self, req):
        return b.AuthorizationResType("OK", "Finished"), False, "AuthorizationReq"

    def _ChargeParameterDiscoveryReq(self, req: b.ChargeParameterDiscoveryReqType):
        p = req.DC_EVChargeParameter
        lim = self.hardware.dc_limits()
        if req.RequestedEnergyTransferMode != "DC_extended" or p is None or \
                value(p.EVMaximumVoltageLimit) < lim.min_voltage:
            return self._failed("ChargeParameterDiscoveryRes", "FAILED_WrongChargeParameter"), True, self.state
        res = b.ChargeParameterDiscoveryResType("OK", "Finished", self._schedule(), None, None, self._evse_parameter())
        renegotiated = self.state in ("PowerDeliveryReq:Renegotiate", "ChargeParameterDiscoveryReq:renegotiated")
        return res, False, "ChargeParameterDiscoveryReq" + (":renegotiated" if renegotiated else "")

    def _PowerDeliveryReq(self, req: b.PowerDeliveryReqType):
        progress = str(req.ChargeProgress)
        starts_from = ("PreChargeReq", "ChargeParameterDiscoveryReq:renegotiated")
        if (progress == "Start" and self.state not in starts_from) or \
                (progress == "Renegotiate" and self.state != "CurrentDemandReq"):
            return self._failed("PowerDeliveryRes", "FAILED_SequenceError"), True, self.state
        if progress == "Start" and req.SAScheduleTupleID != self.schedule_id:
            return self._failed("PowerDeliveryRes", "FAILED_TariffSelectionInvalid"), True, self.state
        if progress == "Start":
            self.hardware.set_contactors(True)
        elif progress == "Stop":  # power off: the output discharges for the welding check
            self.hardware.set_dc_target(0, 0)
            self.hardware.set_contactors(False)
        else:  # Renegotiate: hold the voltage, no current until the new schedule is agreed
            self.hardware.set_dc_target(self.hardware.present()[0], 0)
            self.renegotiations += 1
        res = b.PowerDeliveryResType("OK", None, self._status(), None)
        return res, False, f"PowerDeliveryReq:{progress}"

    def _CurrentDemandReq(self, req: b.CurrentDemandReqType):
        lim = self.hardware.dc_limits()
        tv, ti = value(req.EVTargetVoltage), value(req.EVTargetCurrent)
        self.hardware.set_dc_target(min(tv, lim.max_voltage), min(ti, lim.max_current))
        v, i = self.hardware.present()
        meter = t.MeterInfoType("edge-sim", round(self.hardware.energy_wh()), None, None, int(time.time()))
        res = b.CurrentDemandResType(
            "OK", self._status(), pv(v, "V"), pv(i, "A"), ti > lim.max_current, tv > lim.max_voltage,
            v * ti > lim.max_power, pv(lim.max_voltage, "V"), pv(lim.max_current, "A"), pv(lim.max_power, "W"),
            self.evse_id, self.schedule_id, meter, False)
        return res, False, "CurrentDemandReq"
