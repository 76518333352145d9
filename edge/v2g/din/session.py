"""DIN SPEC 70121 DC charger session (ExternalPayment), sans-IO.

``DinSession.handle(payload_type, payload, now)`` takes one EXI request and returns the response's
payload type, the EXI response and whether the session is over (the contract of every session,
:class:`edge.v2g.session.SessionCore`). Which request may follow which is the table ``NEXT`` below, the whole protocol
in one place (h11 style). A request out of order gets its own response type with
FAILED_SequenceError and ends the session; a wrong SessionID gets FAILED_UnknownSession; a request
that does not decode ends the session without a response (there is nothing to answer in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.v2g.dc import DcSession
from edge.v2g.physical import from_physical, to_physical
from edge.v2g.timers import DIN as DIN_TIMERS
from exi.model import din_msgbody as b
from exi.model import din_msgdatatypes as t
from exi.model.din_msgdef import BodyType, V2G_Message
from exi.model.din_msgheader import MessageHeaderType

# which requests may come next, after each request (the session starts at "start")
NEXT: dict[str, set[str]] = {
    "start": {"SessionSetupReq"},
    "SessionSetupReq": {"ServiceDiscoveryReq", "SessionStopReq"},
    "ServiceDiscoveryReq": {"ServicePaymentSelectionReq", "SessionStopReq"},
    "ServicePaymentSelectionReq": {"ContractAuthenticationReq", "SessionStopReq"},
    "ContractAuthenticationReq": {"ContractAuthenticationReq", "ChargeParameterDiscoveryReq", "SessionStopReq"},
    "ChargeParameterDiscoveryReq": {"ChargeParameterDiscoveryReq", "CableCheckReq", "SessionStopReq"},
    # pre-charge only once the isolation check has finished (a car that pre-charges earlier is refused)
    "CableCheckReq:Ongoing": {"CableCheckReq", "SessionStopReq"},
    "CableCheckReq": {"PreChargeReq", "SessionStopReq"},
    "PreChargeReq": {"PreChargeReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:on": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    "CurrentDemandReq": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    # ReadyToChargeState=false again is harmless; true again is refused (_READY_FROM)
    "PowerDeliveryReq:off": {"WeldingDetectionReq", "SessionStopReq", "PowerDeliveryReq"},
    "WeldingDetectionReq": {"WeldingDetectionReq", "SessionStopReq"},
}

#: where PowerDelivery may close the contactors (ReadyToChargeState=true): after pre-charge, or repeated.
#: never after it opened them (power again would skip a new cable check and pre-charge)
_READY_FROM = frozenset({"PreChargeReq", "PowerDeliveryReq:on"})


def pv(x: float, unit: str) -> t.PhysicalValueType:
    return to_physical(t.PhysicalValueType, x, unit)


value = from_physical


@dataclass
class DinSession(DcSession):
    PROTO = "din"
    B = b
    T = t
    MESSAGE = V2G_Message
    BODY = BodyType
    HEADER = MessageHeaderType
    NEXT = NEXT
    DEFAULT_TIMERS = DIN_TIMERS

    evse_id: bytes = b"\x00"  # DIN: hexBinary, often one byte
    evcc_id: bytes = b""  # the car's MAC, from SessionSetupReq

    def _complete_failed(self, res_name: str, res: Any) -> None:
        if hasattr(res, "EVSEID") and res.EVSEID is None:
            res.EVSEID = self.evse_id
        if res_name == "ServiceDiscoveryRes":
            res.PaymentOptions = t.PaymentOptionsType(["ExternalPayment"])
            res.ChargeService = self._charge_service()
        if res_name == "ChargeParameterDiscoveryRes":
            res.SAScheduleList, res.DC_EVSEChargeParameter = self._schedule(), self._evse_parameter()

    def _charge_service(self) -> t.ServiceChargeType:
        return t.ServiceChargeType(t.ServiceTagType(1, None, "EVCharging"), False, "DC_extended")

    def _schedule(self) -> t.SAScheduleListType:
        # DIN's PMax is a plain short in units of 10 W
        power = self._schedule_power(self.power.dc_limits().max_power)
        entry = t.PMaxScheduleEntryType(t.RelativeTimeIntervalType(0, 86400), None, min(32767, round(power / 10)))
        return t.SAScheduleListType([t.SAScheduleTupleType(1, t.PMaxScheduleType(1, [entry]))])

    # ------------------------------------------------------------------ requests
    def _SessionSetupReq(self, req: b.SessionSetupReqType):
        self.evcc_id = req.EVCCID or b""
        return b.SessionSetupResType("OK_NewSessionEstablished", self.evse_id, None), False, "SessionSetupReq"

    def _ServiceDiscoveryReq(self, req):
        res = b.ServiceDiscoveryResType("OK", t.PaymentOptionsType(["ExternalPayment"]), self._charge_service())
        return res, False, "ServiceDiscoveryReq"

    def _ServicePaymentSelectionReq(self, req: b.ServicePaymentSelectionReqType):
        if req.SelectedPaymentOption != "ExternalPayment":
            return self._fail("ServicePaymentSelectionReq", "FAILED_PaymentSelectionInvalid")
        return b.ServicePaymentSelectionResType("OK"), False, "ServicePaymentSelectionReq"

    def _ContractAuthenticationReq(self, req):
        if self.state != "ContractAuthenticationReq":
            self.controller.authorized(self.car(), "EIM")
        return b.ContractAuthenticationResType("OK", "Finished"), False, "ContractAuthenticationReq"

    def _ChargeParameterDiscoveryReq(self, req: b.ChargeParameterDiscoveryReqType):
        p = req.DC_EVChargeParameter
        if p is None or p.EVMaximumVoltageLimit is None or p.EVMaximumCurrentLimit is None:
            return self._fail("ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        self._note_ev_limits(p)
        assert self.ev_limits is not None
        if self.ev_limits.max_voltage < self.power.dc_limits().min_voltage:
            return self._fail("ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        self.told()  # the schedule shows the controller's present limits
        res = b.ChargeParameterDiscoveryResType("OK", "Finished", self._schedule(), None, None,
                                               self._evse_parameter())
        return res, False, "ChargeParameterDiscoveryReq"

    def _PowerDeliveryReq(self, req: b.PowerDeliveryReqType):
        on = bool(req.ReadyToChargeState)
        if on and self.state not in _READY_FROM:
            return self._fail("PowerDeliveryReq", "FAILED_SequenceError")
        if on and self.charger_stops:  # the charger asked for the stop: no power again in this session
            return self._fail("PowerDeliveryReq", "FAILED")
        if on:
            self.power.contactors(True)
            self.controller.energy_transfer_started(self._now, self.car())
        else:
            self.power.off()
        res = b.PowerDeliveryResType("OK", None, self._status(), None)
        return res, False, "PowerDeliveryReq:" + ("on" if on else "off")

    def _CurrentDemandReq(self, req: b.CurrentDemandReqType):
        lim = self.power.dc_limits()
        notification = self._loop_notification(renegotiation=False)  # DIN has no renegotiation
        if notification == "StopCharging" and self.stop_ignored():
            return self._fail("CurrentDemandReq", "FAILED")
        setpoint = self._current_demand(req) if notification == "None" else self.power.dc_stopping()
        v, i = self.hardware.present()
        res = b.CurrentDemandResType(
            "OK", self._status(notification=notification), pv(v, "V"), pv(i, "A"), setpoint.current_limited,
            setpoint.voltage_limited, setpoint.power_limited, pv(lim.max_voltage, "V"),
            pv(setpoint.max_current, "A"), pv(setpoint.max_power, "W"))
        return res, False, "CurrentDemandReq"
