"""A DIN SPEC 70121 DC car, sans-IO: ``start()`` gives the first request, ``handle(response, now)``
the next one (None when the session is over). A battery model: SoC rises with the energy the
charger's reported voltage and current deliver between CurrentDemand requests."""

from __future__ import annotations

from dataclasses import dataclass, field

import exi
from edge.v2g import sap
from edge.v2g.din.session import pv, value
from exi.model import din_msgbody as b
from exi.model import din_msgdatatypes as t
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq
from exi.model.din_msgdef import BodyType, V2G_Message
from exi.model.din_msgheader import MessageHeaderType


@dataclass
class DinCar:
    evcc_id: bytes = bytes.fromhex("02aabbccddee")
    capacity_wh: float = 60_000.0
    soc: float = 40.0
    target_soc: float = 42.0
    battery_voltage: float = 380.0
    max_voltage: float = 420.0
    max_current: float = 125.0
    session_id: bytes = b"\x00"  # what real cars send in SessionSetupReq
    log: list[str] = field(default_factory=list)
    energy_wh: float = 0.0
    stopped_cleanly: bool = False
    _last: str = ""
    _last_time: float | None = None
    _negotiated: bool = False

    def start(self) -> bytes:
        offer = [AppProtocolType(sap.DIN.namespace, 2, 0, 1, 1)]
        self._last = "supportedAppProtocolReq"
        return exi.encode("apphand", supportedAppProtocolReq(offer))

    def _status(self) -> t.DC_EVStatusType:
        return t.DC_EVStatusType(True, None, None, "NO_ERROR", round(self.soc))

    def _send(self, name: str, req: object) -> bytes:
        self._last = name
        self.log.append(name)
        return exi.encode("din", V2G_Message(MessageHeaderType(self.session_id), BodyType(**{name: req})))

    def handle(self, payload: bytes, now: float) -> bytes | None:
        if not self._negotiated:
            res = exi.decode("apphand", payload)
            if not str(res.ResponseCode).startswith("OK"):
                raise RuntimeError(f"no protocol agreed: {res.ResponseCode}")
            self._negotiated = True
            return self._send("SessionSetupReq", b.SessionSetupReqType(self.evcc_id))
        msg = exi.decode("din", payload)
        name = self._last[:-3] + "Res"
        res = getattr(msg.Body, name)
        if res is None or not str(res.ResponseCode).startswith("OK"):
            raise RuntimeError(f"{name} failed: {res and res.ResponseCode}")
        if name == "SessionSetupRes":
            self.session_id = msg.Header.SessionID
            return self._send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())
        if name == "ServiceDiscoveryRes":
            chosen = t.SelectedServiceListType([t.SelectedServiceType(res.ChargeService.ServiceTag.ServiceID)])
            return self._send("ServicePaymentSelectionReq", b.ServicePaymentSelectionReqType("ExternalPayment", chosen))
        if name == "ServicePaymentSelectionRes" or (name == "ContractAuthenticationRes"
                                                    and res.EVSEProcessing == "Ongoing"):
            return self._send("ContractAuthenticationReq", b.ContractAuthenticationReqType())
        if name == "ContractAuthenticationRes" or (name == "ChargeParameterDiscoveryRes"
                                                   and res.EVSEProcessing == "Ongoing"):
            param = t.DC_EVChargeParameterType(self._status(), pv(self.max_current, "A"), None,
                                               pv(self.max_voltage, "V"), pv(self.capacity_wh, "Wh"), None, 100, 80)
            cpd = b.ChargeParameterDiscoveryReqType("DC_extended", None, param)
            return self._send("ChargeParameterDiscoveryReq", cpd)
        if name == "ChargeParameterDiscoveryRes" or (name == "CableCheckRes" and res.EVSEProcessing == "Ongoing"):
            return self._send("CableCheckReq", b.CableCheckReqType(self._status()))
        if name in ("CableCheckRes", "PreChargeRes"):
            if name == "PreChargeRes" and abs(value(res.EVSEPresentVoltage) - self.battery_voltage) < 20:
                dp = t.DC_EVPowerDeliveryParameterType(self._status(), False, False)
                return self._send("PowerDeliveryReq", b.PowerDeliveryReqType(True, None, dp))
            return self._send("PreChargeReq", b.PreChargeReqType(self._status(), pv(self.battery_voltage, "V"),
                                                                 pv(1, "A")))
        if name == "PowerDeliveryRes" and self._charging is False:
            self._charging = True
            self._last_time = now
            return self._current_demand()
        if name == "CurrentDemandRes":
            dt = now - (self._last_time if self._last_time is not None else now)
            self._last_time = now
            wh = value(res.EVSEPresentVoltage) * value(res.EVSEPresentCurrent) * dt / 3600
            self.energy_wh += wh
            self.soc = min(100.0, self.soc + 100 * wh / self.capacity_wh)
            if self.soc < self.target_soc:
                return self._current_demand()
            dp = t.DC_EVPowerDeliveryParameterType(self._status(), True, True)
            self._charging = None
            return self._send("PowerDeliveryReq", b.PowerDeliveryReqType(False, None, dp))
        if name in ("PowerDeliveryRes", "WeldingDetectionRes"):
            if name == "PowerDeliveryRes" or value(res.EVSEPresentVoltage) > 60:
                return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))
            return self._send("SessionStopReq", b.SessionStopType())
        if name == "SessionStopRes":
            self.stopped_cleanly = True
            return None
        raise RuntimeError(f"unexpected {name}")

    _charging: bool | None = False

    def _current_demand(self) -> bytes:
        req = b.CurrentDemandReqType(self._status(), pv(self.max_current, "A"), pv(self.max_voltage, "V"), None, None,
                                     False, False, None, None, pv(self.battery_voltage + 10, "V"))
        return self._send("CurrentDemandReq", req)
