"""The DC handlers DIN SPEC 70121 and ISO 15118-2 share: cable check, pre-charge, current demand, welding
detection. Every power decision is :mod:`edge.v2g.power`'s; the charger-initiated stop (and, in -2,
renegotiation) rides on the DC_EVSEStatus of the loop responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.controller import CarNeeds
from edge.v2g.physical import from_physical
from edge.v2g.power import CarDcLimits, DcSetpoint
from edge.v2g.session import V2gSession


@dataclass
class DcSession(V2gSession):
    ev_limits: CarDcLimits | None = None  # what the car said it takes (ChargeParameterDiscovery, CurrentDemand)
    ev_target: tuple[float, float] = (0.0, 0.0)  # the car's last target voltage and current
    charger_stops: bool = False  # the controller asked for a stop and the car was told (StopCharging)

    def _CableCheckReq(self, req: Any) -> tuple[Any, bool, str]:
        assert self.timers is not None
        verdict = self.power.cable_check(self._overdue("cable check", self.timers.cable_check))
        if verdict == "Failed":
            return self._fail("CableCheckReq", "FAILED")
        done = verdict == "Finished"
        res = self.B.CableCheckResType(
            "OK", self._status("EVSE_Ready" if done else "EVSE_IsolationMonitoringActive"),
            "Finished" if done else "Ongoing")
        return res, False, "CableCheckReq" if done else "CableCheckReq:Ongoing"

    def _PreChargeReq(self, req: Any) -> tuple[Any, bool, str]:
        assert self.timers is not None
        if self._overdue("pre-charge", self.timers.pre_charge):
            return self._fail("PreChargeReq", "FAILED")
        v = self.power.pre_charge(from_physical(req.EVTargetVoltage), self.ev_limits)
        return self.B.PreChargeResType("OK", self._status(), self.pv(v, "V")), False, "PreChargeReq"

    def _WeldingDetectionReq(self, req: Any) -> tuple[Any, bool, str]:
        v, _ = self.hardware.present()
        return self.B.WeldingDetectionResType("OK", self._status(), self.pv(v, "V")), False, "WeldingDetectionReq"

    def _SessionStopReq(self, req: Any) -> tuple[Any, bool, str]:
        return self.B.SessionStopResType("OK"), True, "stopped"

    # ------------------------------------------------------------------ shared by DIN and -2
    def _note_ev_limits(self, p: Any) -> None:
        """DC_EVChargeParameter of ChargeParameterDiscoveryReq: the car's maxima, and its needs for the
        controller."""
        power = getattr(p, "EVMaximumPowerLimit", None)
        self.ev_limits = CarDcLimits(max_voltage=from_physical(p.EVMaximumVoltageLimit),
                                     max_current=from_physical(p.EVMaximumCurrentLimit),
                                     max_power=from_physical(power) if power is not None else None)
        energy = getattr(p, "EVEnergyRequest", None)
        # a car that states no power limit takes at most its maximum voltage times its maximum current
        bound = self.ev_limits.max_power or self.ev_limits.max_voltage * (self.ev_limits.max_current or 0.0)
        self.controller.car_needs(CarNeeds(self.PROTO, "DC", "scheduled", bound,
                                           departure_time=getattr(p, "DepartureTime", None),
                                           target_energy_wh=from_physical(energy) if energy is not None else None,
                                           soc=getattr(p.DC_EVStatus, "EVRESSSOC", None)), self.car())

    def _current_demand(self, req: Any) -> DcSetpoint:
        """The car's target within every limit; the car's maxima in the request update what it said before."""
        tv, ti = from_physical(req.EVTargetVoltage), from_physical(req.EVTargetCurrent)
        self.ev_target = (tv, ti)
        car = self.ev_limits or CarDcLimits(max_voltage=0.0)
        updates = {name: from_physical(getattr(req, field))
                   for name, field in (("max_voltage", "EVMaximumVoltageLimit"),
                                       ("max_current", "EVMaximumCurrentLimit"), ("max_power", "EVMaximumPowerLimit"))
                   if getattr(req, field, None) is not None}
        if updates:
            car = CarDcLimits(**{**{"max_voltage": car.max_voltage, "max_current": car.max_current,
                                    "max_power": car.max_power}, **updates})
            self.ev_limits = car
        return self.power.dc_demand(tv, ti, self.ev_limits, self.command())

    def _loop_notification(self, renegotiation: bool) -> str:
        """What the next loop response tells the car on the controller's behalf: StopCharging once a stop
        was requested, ReNegotiation (-2 only) when the controller now allows more than the car's schedule
        (a lower limit is enforced at once through the loop response's maximum power and current, without
        a renegotiation many cars do not support)."""
        reason = self.charger_stop()
        if reason is not None:
            if not self.charger_stops:
                self.notes.append(f"charger asked the car to stop: {reason}")
            self.charger_stops = True
            return "StopCharging"
        if renegotiation and self.controller_changed():
            self.told()
            if self._schedule_outdated():
                return "ReNegotiation"
        return "None"

    def _schedule_outdated(self) -> bool:
        """After the controller changed its mind: does the car need a new schedule? (-2 says how)"""
        return False

    def _schedule_power(self, charger_max: float) -> float:
        """The PMax a schedule offers now: the charger's maximum within the controller's command."""
        return max(0.0, min(charger_max, self.command().max_w))
