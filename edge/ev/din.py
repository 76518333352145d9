"""A DIN SPEC 70121 DC car (ExternalPayment), sans-IO on :class:`edge.ev.base.SimulatedCar`: the
battery takes the energy the charger's reported voltage and current deliver between CurrentDemand
requests."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

from edge.ev.base import Offer, SimulatedCar, physical_or_none
from edge.v2g import sap
from edge.v2g.din.session import pv, value
from exi.model import din_msgbody as b
from exi.model import din_msgdatatypes as t
from exi.model.din_msgdef import BodyType, V2G_Message
from exi.model.din_msgheader import MessageHeaderType


@dataclass
class DinCar(SimulatedCar):
    PROTOCOL: ClassVar[sap.Protocol] = sap.DIN
    MESSAGE: ClassVar[type] = V2G_Message
    BODY: ClassVar[type] = BodyType
    HEADER: ClassVar[type] = MessageHeaderType
    MSG_BODY: ClassVar[ModuleType] = b
    MSG_TYPES: ClassVar[ModuleType] = t
    DEFAULT_OFFERS: ClassVar[tuple[Offer, ...]] = (Offer.of(sap.DIN, 1, 1),)
    TIMEOUTS: ClassVar[dict[str, float]] = {"CurrentDemandReq": 0.25}  # DIN: 2 s for all others

    _phase: str = "setup"  # setup, charging, stopping

    def _status(self) -> t.DC_EVStatusType:
        return t.DC_EVStatusType(EVReady=True, EVErrorCode="NO_ERROR", EVRESSSOC=round(self.soc))

    def _session_setup(self) -> bytes:
        return self._send("SessionSetupReq", b.SessionSetupReqType(self.evcc_id))

    def _on_SessionSetupRes(self, res: Any, msg: Any, now: float) -> bytes:
        self.session_id = msg.Header.SessionID
        if self._quirk("stop_after_session_setup"):
            return self._send("SessionStopReq", b.SessionStopType())
        return self._send("ServiceDiscoveryReq", b.ServiceDiscoveryReqType())

    def _on_ServiceDiscoveryRes(self, res: Any, msg: Any, now: float) -> bytes:
        chosen = t.SelectedServiceListType([t.SelectedServiceType(res.ChargeService.ServiceTag.ServiceID)])
        return self._send("ServicePaymentSelectionReq", b.ServicePaymentSelectionReqType("ExternalPayment", chosen))

    def _on_ServicePaymentSelectionRes(self, res: Any, msg: Any, now: float) -> bytes:
        return self._send("ContractAuthenticationReq", b.ContractAuthenticationReqType())

    def _on_ContractAuthenticationRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEProcessing == "Ongoing":
            self._within("ongoing", now, "ContractAuthenticationRes still EVSEProcessing Ongoing")
            return self._send("ContractAuthenticationReq", b.ContractAuthenticationReqType())
        self._end_phase("ongoing")
        return self._charge_parameter_discovery()

    def _charge_parameter_discovery(self) -> bytes:
        param = t.DC_EVChargeParameterType(
            DC_EVStatus=self._status(), EVMaximumCurrentLimit=pv(self.max_current, "A"),
            EVMaximumVoltageLimit=pv(self.max_voltage, "V"), EVEnergyCapacity=pv(self.capacity_wh, "Wh"),
            FullSOC=100, BulkSOC=80)
        return self._send("ChargeParameterDiscoveryReq", b.ChargeParameterDiscoveryReqType("DC_extended", None, param))

    def _on_ChargeParameterDiscoveryRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEProcessing == "Ongoing":
            self._within("ongoing", now, "ChargeParameterDiscoveryRes still EVSEProcessing Ongoing")
            return self._charge_parameter_discovery()
        self._end_phase("ongoing")
        evse = res.DC_EVSEChargeParameter
        if evse is not None:
            self._learn_evse_limits(max_current=physical_or_none(evse.EVSEMaximumCurrentLimit),
                                    max_power=physical_or_none(evse.EVSEMaximumPowerLimit))
        return self._cable_check(now)

    def _start_charging(self, now: float) -> bytes:
        self._phase = "charging"
        return self._send("PowerDeliveryReq", b.PowerDeliveryReqType(
            True, None, t.DC_EVPowerDeliveryParameterType(self._status(), False, False)))

    def _on_PowerDeliveryRes(self, res: Any, msg: Any, now: float) -> bytes:
        if self._phase == "charging":
            self._start_metering(now)
            return self._current_demand()
        if self._quirk("skip_welding_detection"):
            return self._send("SessionStopReq", b.SessionStopType())
        return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))

    def _on_CurrentDemandRes(self, res: Any, msg: Any, now: float) -> bytes:
        self._take_energy(value(res.EVSEPresentVoltage) * value(res.EVSEPresentCurrent), now)
        self._learn_evse_limits(max_current=physical_or_none(res.EVSEMaximumCurrentLimit),
                                max_power=physical_or_none(res.EVSEMaximumPowerLimit))
        stop_asked = res.DC_EVSEStatus is not None and str(res.DC_EVSEStatus.EVSENotification) == "StopCharging"
        if stop_asked:
            self._note("the charger asked to stop (EVSENotification StopCharging)")
        elif self.soc < self.target_soc:
            return self._current_demand()
        self._phase = "stopping"
        return self._send("PowerDeliveryReq", b.PowerDeliveryReqType(
            False, None, t.DC_EVPowerDeliveryParameterType(self._status(), True, True)))

    def _on_WeldingDetectionRes(self, res: Any, msg: Any, now: float) -> bytes:
        if not self._output_discharged(value(res.EVSEPresentVoltage), now):
            return self._send("WeldingDetectionReq", b.WeldingDetectionReqType(self._status()))
        return self._send("SessionStopReq", b.SessionStopType())

    def _on_SessionStopRes(self, res: Any, msg: Any, now: float) -> None:
        self._session_stopped()
        return None

    def _current_demand(self) -> bytes:
        voltage = self.battery_voltage + 10
        req = b.CurrentDemandReqType(
            DC_EVStatus=self._status(), EVTargetCurrent=pv(self._dc_target_current(voltage), "A"),
            EVMaximumVoltageLimit=pv(self.max_voltage, "V"), BulkChargingComplete=False, ChargingComplete=False,
            EVTargetVoltage=pv(voltage, "V"))
        return self._send("CurrentDemandReq", req)
