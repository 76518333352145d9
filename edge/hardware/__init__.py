"""What only the charger's board knows: one typed interface the sessions call, and a simulation.

A real board implements :class:`ChargerHardware` with its CP, contactor, power-module, isolation
monitor and meter drivers. Calls are synchronous and cheap: a board implementation keeps its own
state current (its own tasks poll or receive), and ``update(now)`` lets simulations advance time.
Units are SI (V, A, W, Wh, s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DcLimits:
    max_voltage: float
    max_current: float
    max_power: float
    min_voltage: float = 50.0
    min_current: float = 0.0


class ChargerHardware(Protocol):
    def update(self, now: float) -> None: ...
    def dc_limits(self) -> DcLimits: ...
    def present(self) -> tuple[float, float]: ...  # output voltage, current
    def set_dc_target(self, voltage: float, current: float) -> None: ...
    def set_contactors(self, closed: bool) -> None: ...
    def start_isolation_check(self) -> None: ...
    def isolation(self) -> str: ...  # "Invalid" (not checked yet / running), "Valid", "Warning", "Fault"
    def energy_wh(self) -> float: ...


@dataclass
class SimulatedDcCharger:
    """A DC power module that behaves physically enough for sessions: the output voltage follows its
    target with a time constant (pre-charge ramps), the current follows its target only while the
    contactors are closed, the meter integrates power, the isolation check takes ``isolation_s``."""

    limits: DcLimits = DcLimits(max_voltage=500.0, max_current=200.0, max_power=100_000.0)
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
        self.closed = False
        self.iso_started: float | None = None
        self.wh = 0.0

    def update(self, now: float) -> None:
        dt = max(0.0, now - self.now)
        self.now = now
        if dt == 0:
            return
        target_i = min(self.target_i, self.limits.max_current) if self.closed else 0.0
        if self.voltage > 0:
            target_i = min(target_i, self.limits.max_power / self.voltage)
        self.current += (target_i - self.current) * (1 - math.exp(-dt / self.current_tau))
        target_v = min(self.target_v, self.limits.max_voltage)
        self.voltage += (target_v - self.voltage) * (1 - math.exp(-dt / self.voltage_tau))
        self.wh += self.voltage * self.current * dt / 3600

    def dc_limits(self) -> DcLimits:
        return self.limits

    def present(self) -> tuple[float, float]:
        return self.voltage, self.current

    def set_dc_target(self, voltage: float, current: float) -> None:
        self.target_v = max(0.0, voltage)
        self.target_i = max(0.0, current)

    def set_contactors(self, closed: bool) -> None:
        self.closed = closed
        if not closed:
            self.target_i = 0.0

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
