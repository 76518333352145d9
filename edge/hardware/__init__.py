"""What only the charger's board knows: one typed interface the sessions call, and a simulation.

A real board implements :class:`ChargerHardware` with its CP, contactor, power-module, isolation
monitor and meter drivers. Calls are synchronous and cheap: a board implementation keeps its own
state current (its own tasks poll or receive), and ``update(now)`` lets simulations advance time.
Units are SI (V, A, W, Wh, s). A board without DC returns None from ``dc_limits()``, one without AC
None from ``ac_limits()``; the sessions offer only the energy transfer modes the board has.

Power direction: import (the car charges) is positive, export (the car discharges into the grid) is
negative, for currents and power alike. A board can export when its limits say so
(``max_discharge_current`` > 0); the sessions then may offer bidirectional power transfer (BPT).

Safety stays with the board: ``set_contactors(True)`` is a request the board honours only in CP
state C or D (the car ready to take power); the sessions never bypass that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

#: CP states (IEC 61851-1): A no car, B connected, C/D charging (D with ventilation), E/F error
CP_STATES = ("A", "B", "C", "D", "E", "F")
#: CP duty cycle that tells the car "digital communication required" (IEC 61851-1, ISO 15118-3)
HLC_DUTY_PERCENT = 5.0


@dataclass(frozen=True, slots=True)
class DcLimits:
    max_voltage: float
    max_current: float
    max_power: float
    min_voltage: float = 50.0
    min_current: float = 0.0
    max_discharge_current: float = 0.0  # A, magnitude; 0: the power module cannot export
    max_discharge_power: float = 0.0  # W, magnitude

    @property
    def bidirectional(self) -> bool:
        return self.max_discharge_current > 0 and self.max_discharge_power > 0


@dataclass(frozen=True, slots=True)
class AcLimits:
    nominal_voltage: float = 230.0  # per phase
    max_current: float = 32.0  # per phase
    phases: int = 3
    min_current: float = 6.0  # the lowest current IEC 61851 lets a car be asked for
    max_discharge_current: float = 0.0  # per phase, magnitude; 0: no export through this connection

    @property
    def max_power(self) -> float:
        return self.nominal_voltage * self.max_current * self.phases

    @property
    def max_discharge_power(self) -> float:
        return self.nominal_voltage * self.max_discharge_current * self.phases

    @property
    def bidirectional(self) -> bool:
        return self.max_discharge_current > 0


class ChargerHardware(Protocol):
    def update(self, now: float) -> None: ...
    # control pilot
    def cp_state(self) -> str: ...  # one of CP_STATES
    def set_pwm(self, duty_percent: float) -> None: ...  # 100: steady +12 V; 5: ISO 15118 required
    # what the power path can do
    def dc_limits(self) -> DcLimits | None: ...
    def ac_limits(self) -> AcLimits | None: ...
    # power path
    def set_contactors(self, closed: bool) -> None: ...
    def set_dc_target(self, voltage: float, current: float) -> None: ...  # current < 0: export
    def set_ac_current_limit(self, current: float) -> None: ...  # per phase, what the car may draw (< 0: export)
    def present(self) -> tuple[float, float]: ...  # output voltage, current (AC: per phase; < 0: export)
    # isolation monitor (DC)
    def start_isolation_check(self) -> None: ...
    def isolation(self) -> str: ...  # "Invalid" (not checked yet / running), "Valid", "Warning", "Fault"
    # meter
    def energy_wh(self) -> float: ...  # imported (delivered to the car) since start
    def energy_exported_wh(self) -> float: ...  # exported (taken from the car) since start


@dataclass
class SimulatedCharger:
    """A charger that behaves physically enough for sessions. DC: the output voltage follows its
    target with a time constant (pre-charge ramps), the current follows its target only while the
    contactors are closed (negative: export, when the limits allow it), the isolation check takes
    ``isolation_s``. AC: once the contactors close, the car draws up to the current limit (negative: it
    feeds in that much; its on-board charger ramps with ``current_tau``). The meter integrates import and
    export separately; the CP follows the contactors (C while closed, B otherwise) unless a test sets it."""

    limits: DcLimits | None = DcLimits(max_voltage=500.0, max_current=200.0, max_power=100_000.0)
    ac: AcLimits | None = AcLimits()
    voltage_tau: float = 0.3
    current_tau: float = 0.2
    isolation_s: float = 1.0
    battery_voltage: float = 380.0  # what the car's side holds once the contactors close

    def __post_init__(self) -> None:
        self.now = 0.0
        self.voltage = 0.0
        self.current = 0.0
        self.target_v = 0.0
        self.target_i = 0.0
        self.ac_limit = 0.0
        self.ac_mode = False  # the last power command was an AC one
        self.closed = False
        self.iso_started: float | None = None
        self.wh = 0.0
        self.wh_exported = 0.0
        self.pwm = 100.0
        self.cp_override: str | None = None  # a test's forced CP state (unplug, error)

    def update(self, now: float) -> None:
        dt = max(0.0, now - self.now)
        self.now = now
        if dt == 0:
            return
        decay_i = 1 - math.exp(-dt / self.current_tau)
        if self.ac_mode and self.ac is not None:
            ac = self.ac
            target_i = max(-ac.max_discharge_current, min(self.ac_limit, ac.max_current)) if self.closed else 0.0
            self.voltage = ac.nominal_voltage if self.closed else 0.0
            self.current += (target_i - self.current) * decay_i
            self._meter(self.voltage * self.current * ac.phases, dt)
            return
        lim = self.limits
        if lim is None:
            return
        target_i = max(-lim.max_discharge_current, min(self.target_i, lim.max_current)) if self.closed else 0.0
        if self.voltage > 0:
            target_i = max(-lim.max_discharge_power / self.voltage, min(target_i, lim.max_power / self.voltage))
        self.current += (target_i - self.current) * decay_i
        target_v = min(self.target_v, lim.max_voltage)
        self.voltage += (target_v - self.voltage) * (1 - math.exp(-dt / self.voltage_tau))
        self._meter(self.voltage * self.current, dt)

    def _meter(self, power: float, dt: float) -> None:
        if power >= 0:
            self.wh += power * dt / 3600
        else:
            self.wh_exported -= power * dt / 3600

    def cp_state(self) -> str:
        if self.cp_override is not None:
            return self.cp_override
        return "C" if self.closed else "B"

    def set_pwm(self, duty_percent: float) -> None:
        if not 0 <= duty_percent <= 100:
            raise ValueError(f"PWM duty cycle must be 0-100 %, got {duty_percent}")
        self.pwm = duty_percent

    def dc_limits(self) -> DcLimits | None:
        return self.limits

    def ac_limits(self) -> AcLimits | None:
        return self.ac

    def present(self) -> tuple[float, float]:
        return self.voltage, self.current

    def set_dc_target(self, voltage: float, current: float) -> None:
        if voltage > 0 or current != 0:
            self.ac_mode = False
        self.target_v = max(0.0, voltage)
        self.target_i = current

    def set_ac_current_limit(self, current: float) -> None:
        if current != 0:
            self.ac_mode = True  # an AC charge starts; a DC command switches back
        self.ac_limit = current

    def set_contactors(self, closed: bool) -> None:
        if closed and self.cp_override in ("A", "E", "F"):
            return  # no car (or a CP fault): the board refuses to energise the cable
        self.closed = closed
        if not closed:  # an open contactor breaks the circuit: no current flows, whatever the module does
            self.target_i = 0.0
            self.current = 0.0

    def start_isolation_check(self) -> None:
        if self.iso_started is None:
            self.iso_started = self.now
            self.target_v = 500.0  # the check drives the output to its test voltage

    def isolation(self) -> str:
        if self.iso_started is not None and self.now - self.iso_started >= self.isolation_s:
            return "Valid"
        return "Invalid"

    def energy_wh(self) -> float:
        return self.wh

    def energy_exported_wh(self) -> float:
        return self.wh_exported


#: a bidirectional board's limits (V2G testbenches, ``edge simulate``): export up to the import limits' half
BIDIRECTIONAL_DC = DcLimits(max_voltage=500.0, max_current=200.0, max_power=100_000.0, max_discharge_current=100.0,
                            max_discharge_power=50_000.0)
BIDIRECTIONAL_AC = AcLimits(max_discharge_current=16.0)


def bidirectional_charger(**kw: float) -> SimulatedCharger:
    """A simulated board that can export on DC and AC."""
    return SimulatedCharger(limits=BIDIRECTIONAL_DC, ac=BIDIRECTIONAL_AC, **kw)


#: the name the DC sessions and tests were written against; the simulation does AC and DC
SimulatedDcCharger = SimulatedCharger
