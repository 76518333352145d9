"""An ISO 15118-2 DC car (EIM), sans-IO, like :mod:`edge.ev.din`: a battery model, and optionally one
schedule renegotiation in the middle of the charge loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import exi
from edge.v2g import sap
from edge.v2g.iso2.session import pv, value
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType


@dataclass
class Iso2DcCar:
    evcc_id: bytes = bytes.fromhex("02aabbccddee")
    capacity_wh: float = 60_000.0
    soc: float = 40.0
    target_soc: float = 42.0
    battery_voltage: float = 380.0
    max_voltage: float = 420.0
    max_current: float = 125.0
    renegotiate_at_soc: float | None = None  # ask for a new schedule once, at this SoC
    offer_din_too: bool = True
    session_id: bytes = b"\x00"
    log: list[str] = field(default_factory=list)
    energy_wh: float = 0.0
    stopped_cleanly: bool = False
    renegotiated: bool = False
    _last: str = ""
    _last_time: float | None = None
    _negotiated: bool = False
    _schedule_id: int = 1
    _phase: str = ""

    def start(self) -> bytes:
        offer = [AppProtocolType(sap.ISO2.namespace, 2, 0, 1, 1)]
        if self.offer_din_too:
            offer.append(AppProtocolType(sap.DIN.namespace, 2, 0, 2, 2))
        return exi.encode("apphand", supportedAppProtocolReq(offer))

    def _status(self) -> t.DC_EVStatusType:
        return t.DC_EVStatusType(True, "NO_ERROR", round(self.soc))

    def _send(self, name: str, req: object) -> bytes:
        self._last = name
        self.log.append(name)
        return exi.encode("iso2", V2G_Message(MessageHeaderType(self.session_id), BodyType(**{name: req})))

    def _cpd(self) -> bytes:
        param = t.DC_EVChargeParameterType(None, self._status(), pv(self.max_current, "A"), None,
                                           pv(self.max_voltage, "V"), pv(self.capacity_wh, "Wh"), None, 100, 80)
        return self._send("ChargeParameterDiscoveryReq", b.ChargeParameterDiscoveryReqType(None, "DC_extended",
                                                                                             None, param))

    def _power_delivery(self, progress: str) -> bytes:
        dp = t.DC_EVPowerDeliveryParameterType(self._status(), progress == "Stop", progress == "Stop")
        return self._send("PowerDeliveryReq", b.PowerDeliveryReqType(progress, self._schedule_id, None, dp))

    def _current_demand(self) -> bytes:
        req = b.CurrentDemandReqType(self._status(), pv(self.max_current, "A"), pv(self.max_voltage, "V"), None, None,
                                     False, False, None, None, pv(self.battery_voltage + 10, "V"))
        return self._send("CurrentDemandReq", req)

    def handle(self, payload: bytes, now: float) -> bytes | None:
        if not self._negotiated:
            res = exi.decode("apphand", payload)
            if not str(res.ResponseCode).startswith("OK") or res.SchemaID != 1:
                raise RuntimeError(f"ISO 15118-2 not agreed: {res.ResponseCode} schema {res.SchemaID}")
            self._negotiated = True
            return self._send("SessionSetupReq", b.SessionSetupReqType(self.evcc_id))
        msg = exi.decode("iso2", payload)
        name = self._last[:-3] + "Res"
        res = getattr(msg.Body, name)
        if res is None or not str(res.ResponseCode).startswith("OK"):
            raise RuntimeError(f"{name} failed: {res and res.ResponseCode}")
        if name == "SessionSetupRes":
            self.session_id = msg.Header.SessionID
            return self._send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())
        if name == "ServiceDiscoveryRes":
            chosen = t.SelectedServiceListType([t.SelectedServiceType(res.ChargeService.ServiceID)])
            return self._send("PaymentServiceSelectionReq",
                              b.PaymentServiceSelectionReqType("ExternalPayment", chosen))
        if name == "PaymentServiceSelectionRes" or (name == "AuthorizationRes" and res.EVSEProcessing == "Ongoing"):
            return self._send("AuthorizationReq", b.AuthorizationReqType())
        if name == "AuthorizationRes":
            return self._cpd()
        if name == "ChargeParameterDiscoveryRes":
            if res.EVSEProcessing == "Ongoing":
                return self._cpd()
            self._schedule_id = res.SAScheduleList.SAScheduleTuple[0].SAScheduleTupleID
            if self._phase == "renegotiating":
                self._phase = "charging"
                return self._power_delivery("Start")
            return self._send("CableCheckReq", b.CableCheckReqType(self._status()))
        if name == "CableCheckRes" and res.EVSEProcessing == "Ongoing":
            return self._send("CableCheckReq", b.CableCheckReqType(self._status()))
        if name in ("CableCheckRes", "PreChargeRes"):
            if name == "PreChargeRes" and abs(value(res.EVSEPresentVoltage) - self.battery_voltage) < 20:
                self._phase = "charging"
                return self._power_delivery("Start")
            return self._send("PreChargeReq", b.PreChargeReqType(self._status(), pv(self.battery_voltage, "V"),
                                                                 pv(1, "A")))
        if name == "PowerDeliveryRes":
            if self._phase == "charging":
                self._last_time = now
                return self._current_demand()
            if self._phase == "renegotiating":
                return self._cpd()
            return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))
        if name == "CurrentDemandRes":
            dt = now - (self._last_time if self._last_time is not None else now)
            self._last_time = now
            wh = value(res.EVSEPresentVoltage) * value(res.EVSEPresentCurrent) * dt / 3600
            self.energy_wh += wh
            self.soc = min(100.0, self.soc + 100 * wh / self.capacity_wh)
            if self.renegotiate_at_soc is not None and not self.renegotiated and self.soc >= self.renegotiate_at_soc:
                self.renegotiated = True
                self._phase = "renegotiating"
                return self._power_delivery("Renegotiate")
            if self.soc < self.target_soc:
                return self._current_demand()
            self._phase = "stopping"
            return self._power_delivery("Stop")
        if name == "WeldingDetectionRes":
            if value(res.EVSEPresentVoltage) > 60:
                return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))
            return self._send("SessionStopReq", b.SessionStopReqType("Terminate"))
        if name == "SessionStopRes":
            self.stopped_cleanly = True
            return None
        raise RuntimeError(f"unexpected {name}")
