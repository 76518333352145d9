"""The one power and safety module every protocol's session calls (DIN SPEC 70121, ISO 15118-2, -20).

What the sessions used to decide each on their own, and had started to decide differently, lives here:
the cable check, the pre-charge limits, the current or power a car gets within the charger's, the
car's and the controller's limits, holding during a renegotiation, and power-off; and the one place
where power signs are converted between the internal :class:`~edge.controller.PowerCommand` and the
values on the wire.

**Sign convention (stated once).** Inside edge, power and current are *import positive*: positive when
energy flows into the car, negative when the car discharges into the grid. On the wire ISO 15118-20 has
two kinds of values: targets and present values (EVSETargetActivePower, EVTargetCurrent,
EVSEPresentCurrent, EVPresentActivePower) are signed the same way; discharge *limits*
(EVMaximumDischargePower, EVSEMaximumDischargeCurrent, ...) are sent as positive magnitudes. Cars differ
(../shared/spec/interop-facts.md; EVerest has a ``negative_bidirectional_limits`` switch for it), so
:class:`SignConvention` converts both ways: we accept either sign for a limit (the magnitude counts; an
unexpected sign is recorded), and send what the car's declared quirk says.

**Never discharge unless bidirectional power transfer was negotiated and authorised**: a
:class:`PowerStage` is charge-only until :meth:`PowerStage.allow_export` is called (by -20 after a BPT
service was selected on an authorised session); any export a command or a car asks for before that is
clamped to 0 and noted.

Sans-IO: it drives the :class:`~edge.hardware.ChargerHardware` the session was given (the charging
point's leased view, so the power lease and watchdog still apply) and keeps no clock of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edge.controller import PowerCommand
from edge.hardware import AcLimits, ChargerHardware, DcLimits

log = logging.getLogger("edge.power")

#: IEC 61851-23: the pre-charge current stays at or below 2 A
PRE_CHARGE_MAX_CURRENT = 2.0
#: isolation monitor states that allow charging (a warning still does, IEC 61851-23)
ISOLATION_OK = frozenset({"Valid", "Warning"})


class PowerRefused(Exception):
    """The board refuses what the session asked for (isolation fault, no DC path): answered FAILED."""


@dataclass(frozen=True, slots=True)
class SignConvention:
    """How one car writes discharge values; the default is the one described in the module docstring.

    ``negative_discharge_limits``: the car sends and expects discharge limits as negative numbers.
    ``inverted_targets``: the car reads target/present power and current with export positive."""

    negative_discharge_limits: bool = False
    inverted_targets: bool = False

    def limit_to_wire(self, magnitude: float) -> float:
        """A discharge limit (a magnitude, >= 0) as this car expects it."""
        return -abs(magnitude) if self.negative_discharge_limits else abs(magnitude)

    def limit_from_wire(self, value: float, notes: list[str] | None = None, name: str = "discharge limit") -> float:
        """A discharge limit from the car, as a magnitude (either sign accepted; an unexpected one noted)."""
        if notes is not None and value != 0 and (value < 0) != self.negative_discharge_limits:
            notes.append(f"{name} {value:g} with the unexpected sign: read as its magnitude")
        return abs(value)

    def target_to_wire(self, import_positive: float) -> float:
        return -import_positive if self.inverted_targets else import_positive

    def target_from_wire(self, value: float) -> float:
        return -value if self.inverted_targets else value


@dataclass(frozen=True, slots=True)
class SignQuirks:
    """Declared cars that write discharge values the other way: (EVCCID prefix, their convention) pairs,
    the first match wins; every use is noted on the session (and logged)."""

    cars: tuple[tuple[str, SignConvention], ...] = ()

    def for_car(self, evccid: str) -> SignConvention | None:
        return next((signs for prefix, signs in self.cars if prefix and evccid.startswith(prefix)), None)


@dataclass(frozen=True, slots=True)
class CarDcLimits:
    """What a DC car said it takes (ChargeParameterDiscovery, updated in the loop), magnitudes."""

    max_voltage: float
    max_current: float | None = None
    max_power: float | None = None
    min_voltage: float = 0.0
    max_discharge_current: float = 0.0
    max_discharge_power: float = 0.0


@dataclass(frozen=True, slots=True)
class CarAcLimits:
    """What an AC car said it takes, in W over all phases (magnitudes)."""

    max_power: float
    min_power: float = 0.0
    max_discharge_power: float = 0.0


@dataclass(frozen=True, slots=True)
class DcSetpoint:
    """What the power module was told, and the charger's limits the response tells the car (the charger's
    own, narrowed by the controller's command; the car's own limits narrowed the setpoint but are not
    echoed back)."""

    voltage: float
    current: float  # import positive
    max_current: float  # A
    max_power: float  # W
    max_discharge_current: float  # magnitudes; 0 when no export is allowed
    max_discharge_power: float
    current_limited: bool
    voltage_limited: bool
    power_limited: bool


@dataclass(frozen=True, slots=True)
class AcSetpoint:
    power: float  # W over all phases, import positive
    current_per_phase: float
    max_power: float
    max_discharge_power: float


@dataclass
class PowerStage:
    """One session's power path: every power decision of every protocol goes through here."""

    hardware: ChargerHardware
    signs: SignConvention = field(default_factory=SignConvention)
    export_allowed: bool = False  # BPT negotiated and authorised (allow_export)
    notes: list[str] = field(default_factory=list)
    _export_refusals: int = 0

    def allow_export(self) -> None:
        """Bidirectional power transfer was negotiated and the session is authorised."""
        self.export_allowed = True

    # ------------------------------------------------------------------ limits
    def dc_limits(self) -> DcLimits:
        lim = self.hardware.dc_limits()
        if lim is None:
            raise PowerRefused("this charging point has no DC power path")
        return lim

    def ac_limits(self) -> AcLimits:
        lim = self.hardware.ac_limits()
        if lim is None:
            raise PowerRefused("this charging point has no AC power path")
        return lim

    def dc_discharge_limits(self) -> tuple[float, float]:
        """(current, power) the charger may take from a DC car now: 0 unless export is allowed."""
        lim = self.dc_limits()
        if not self.export_allowed:
            return 0.0, 0.0
        return lim.max_discharge_current, lim.max_discharge_power

    def _window(self, command: PowerCommand | None, max_import: float, max_export: float) -> tuple[float, float]:
        """The (import, export) power window: the charger's, narrowed by the controller's command."""
        if command is not None:
            max_import = min(max_import, max(0.0, command.max_w))
            max_export = min(max_export, max(0.0, -command.min_w))
        if not self.export_allowed:
            max_export = 0.0
        return max_import, max_export

    def _clamp_export(self, value: float, what: str) -> float:
        """A negative (export) value on a session that may not export: 0, noted (once per kind)."""
        if value < 0 and not self.export_allowed:
            self._export_refusals += 1
            if self._export_refusals == 1:
                text = f"{what} asked for export ({value:g}) without bidirectional power transfer: clamped to 0"
                self.notes.append(text)
                log.warning("%s", text)
            return 0.0
        return value

    # ------------------------------------------------------------------ DC: isolation, pre-charge
    def cable_check(self, overdue: bool) -> str:
        """One CableCheckReq: "Finished" (isolation Valid/Warning), "Ongoing", or "Failed" (a fault, or
        not finished within the protocol's limit)."""
        self.dc_limits()
        self.hardware.start_isolation_check()
        isolation = self.hardware.isolation()
        if isolation == "Fault" or (isolation not in ISOLATION_OK and overdue):
            self.hardware.set_dc_target(0, 0)
            return "Failed"
        if isolation in ISOLATION_OK:
            self.hardware.set_dc_target(0, 0)  # the check's test voltage off before pre-charge
            return "Finished"
        return "Ongoing"

    def pre_charge(self, target_voltage: float, car: CarDcLimits | None) -> float:
        """Drive the output towards the car's battery voltage: never above the charger's or the car's
        maximum voltage, at most :data:`PRE_CHARGE_MAX_CURRENT`. Returns the present voltage."""
        lim = self.dc_limits()
        if self.hardware.isolation() not in ISOLATION_OK:  # the table ensures the check came first; the board decides
            raise PowerRefused(f"isolation is {self.hardware.isolation()}: no pre-charge")
        voltage = min(max(0.0, target_voltage), self.max_voltage(car))
        self.hardware.set_dc_target(voltage, min(PRE_CHARGE_MAX_CURRENT, lim.max_current))
        return self.hardware.present()[0]

    def max_voltage(self, car: CarDcLimits | None) -> float:
        """The highest output voltage allowed: the charger's, never above what the car said it takes (a car
        that says 0 V or less gets no voltage, not the charger's maximum)."""
        lim = self.dc_limits()
        return lim.max_voltage if car is None else max(0.0, min(lim.max_voltage, car.max_voltage))

    # ------------------------------------------------------------------ DC: energy transfer
    def _dc_window(self, car: CarDcLimits | None, command: PowerCommand | None) -> tuple[DcSetpoint, DcSetpoint]:
        """(what the charger offers, what this car may get): current and power both ways."""
        lim = self.dc_limits()
        max_import, max_export = self._window(command, lim.max_power, lim.max_discharge_power)
        discharge_current, _ = self.dc_discharge_limits()
        offer = DcSetpoint(0.0, 0.0, lim.max_current, max_import, discharge_current, max_export, False, False, False)
        if car is None:
            return offer, offer
        allowed = DcSetpoint(0.0, 0.0, lim.max_current if car.max_current is None else min(lim.max_current,
                                                                                           car.max_current),
                             min(max_import, car.max_power if car.max_power is not None else max_import),
                             min(discharge_current, car.max_discharge_current),
                             min(max_export, car.max_discharge_power), False, False, False)
        return offer, allowed

    def dc_demand(self, target_voltage: float, target_current: float, car: CarDcLimits | None,
                  command: PowerCommand | None) -> DcSetpoint:
        """The car asks for a voltage and a current (DIN/-2 CurrentDemand, -20 scheduled DC ChargeLoop):
        it gets them within the charger's, the car's and the controller's limits. A negative current
        (export) only when export is allowed."""
        offer, allowed = self._dc_window(car, command)
        charger_max_voltage = self.dc_limits().max_voltage
        voltage_cap = self.max_voltage(car)
        voltage = min(max(0.0, target_voltage), voltage_cap)
        current = self._clamp_export(target_current, "the car's target current")
        reference_v = max(voltage, self.hardware.present()[0], 1.0)
        if current >= 0:
            current = min(current, allowed.max_current, allowed.max_power / reference_v)
        else:
            current = max(current, -allowed.max_discharge_current, -allowed.max_discharge_power / reference_v)
        self.hardware.set_dc_target(voltage, current)
        return DcSetpoint(voltage, current, offer.max_current, offer.max_power, offer.max_discharge_current,
                          offer.max_discharge_power,
                          current_limited=not -allowed.max_discharge_current <= target_current <= allowed.max_current,
                          voltage_limited=target_voltage > charger_max_voltage,  # the charger's limit reached
                          power_limited=not -allowed.max_discharge_power * 1.001 <= target_voltage * target_current
                          <= allowed.max_power * 1.001)

    def dc_dynamic(self, car: CarDcLimits | None, command: PowerCommand) -> DcSetpoint:
        """-20 DC dynamic control: the charger's power module sets the current from the controller's
        target (import positive) within every limit; the voltage is the car's battery's."""
        offer, allowed = self._dc_window(car, command)
        wanted = command.target_w if command.target_w is not None else allowed.max_power
        wanted = self._clamp_export(wanted, "the power command")
        power = max(-allowed.max_discharge_power, min(wanted, allowed.max_power))
        voltage = self.hardware.present()[0]
        reference_v = max(voltage, 1.0)
        current = max(-allowed.max_discharge_current, min(power / reference_v, allowed.max_current))
        self.hardware.set_dc_target(self.max_voltage(car), current)
        return DcSetpoint(voltage, current, offer.max_current, offer.max_power, offer.max_discharge_current,
                          offer.max_discharge_power, current_limited=current * reference_v != power,
                          voltage_limited=False, power_limited=wanted != power)

    def dc_stopping(self) -> DcSetpoint:
        """The charger asked for a stop: no current while the car winds down; the voltage holds."""
        self.hold(ac=False)
        lim = self.dc_limits()
        return DcSetpoint(self.hardware.present()[0], 0.0, lim.max_current, 0.0, 0.0, 0.0, False, False, False)

    # ------------------------------------------------------------------ AC
    def ac_window(self, car: CarAcLimits | None, command: PowerCommand | None) -> tuple[float, float]:
        """(max import, max export) in W over all phases for an AC car now."""
        lim = self.ac_limits()
        max_import, max_export = self._window(command, lim.max_power, lim.max_discharge_power)
        if car is not None:
            max_import = min(max_import, car.max_power)
            max_export = min(max_export, car.max_discharge_power)
        return max_import, max_export

    def ac_power(self, car: CarAcLimits | None, command: PowerCommand | None,
                 ev_wants: float | None = None) -> AcSetpoint:
        """The AC power this car may draw now (import positive): the controller's target when it set one,
        else what the car wants (or the window's maximum), within both windows; the CP current limit follows."""
        lim = self.ac_limits()
        max_import, max_export = self.ac_window(car, command)
        wanted = command.target_w if command is not None and command.target_w is not None else (
            ev_wants if ev_wants is not None else max_import)
        wanted = self._clamp_export(wanted, "the power command")
        power = max(-max_export, min(wanted, max_import))
        per_phase = power / (lim.nominal_voltage * lim.phases)
        self.hardware.set_ac_current_limit(per_phase)
        return AcSetpoint(power, per_phase, max_import, max_export)

    def ac_start(self, max_current_per_phase: float) -> None:
        """-2 AC: the car may draw up to this current per phase (and the charger's maximum)."""
        lim = self.ac_limits()
        self.hardware.set_ac_current_limit(min(lim.max_current, max_current_per_phase))

    # ------------------------------------------------------------------ holding and off
    def contactors(self, closed: bool) -> None:
        self.hardware.set_contactors(closed)

    def hold(self, ac: bool) -> None:
        """A renegotiation: no current until the new schedule is agreed (DC keeps its voltage)."""
        if ac:
            self.hardware.set_ac_current_limit(0)
        else:
            self.hardware.set_dc_target(self.hardware.present()[0], 0)

    def off(self) -> None:
        """No power flows any more (session over, failed, stopped, or the car gone)."""
        self.hardware.set_contactors(False)
        self.hardware.set_dc_target(0, 0)
        self.hardware.set_ac_current_limit(0)
