"""What a car may get now, per charging point: the seam between the V2G sessions and whoever decides
(local configuration and a setpoint script today, the CSMS through the OCPP bridge next). Sans-IO, no
OCPP types.

Sessions ask :meth:`ChargingController.command` for the present :class:`PowerCommand` and tell
:meth:`ChargingController.car_needs` what the car needs and chose. Whoever decides calls
:meth:`ChargingController.set_command` or :meth:`request_stop`; every
change bumps :attr:`ChargingController.revision`, which a session compares with the revision it last
told the car, and then tells the car in its protocol's way (-20 dynamic: the next ChargeLoopRes
carries the new target; every protocol: a lower limit in the next loop response at once; -20 scheduled
and -2: a renegotiation when more power is allowed or the direction changes; a stop notification).

Power is import positive, export negative, in W (see :mod:`edge.v2g.power`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("edge.controller")


@dataclass(frozen=True, slots=True)
class PowerCommand:
    """A version-independent power command: bounds and an optional setpoint, in W, import positive.

    ``max_w``: the most import allowed (0: no charging). ``min_w``: the lowest value allowed, negative
    for the most export allowed (0: no discharging). ``target_w``: the setpoint the car should follow
    (-20 dynamic control); None lets the car choose within the bounds. ``valid_until``: the command's
    end on the session clock (None: until replaced); afterwards the controller falls back to its limit."""

    max_w: float
    min_w: float = 0.0
    target_w: float | None = None
    valid_until: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_w", "min_w"):  # infinite bounds: the charger's own limits apply
            if math.isnan(getattr(self, name)):
                raise ValueError(f"{name} must be a number of watts")
        if self.max_w < 0 or self.min_w > 0 or self.min_w > self.max_w:
            raise ValueError(f"a power command needs min_w <= 0 <= max_w, got {self.min_w:g}..{self.max_w:g} W")
        if self.target_w is not None and not (math.isfinite(self.target_w)
                                              and self.min_w <= self.target_w <= self.max_w):
            raise ValueError(f"target {self.target_w} W outside {self.min_w:g}..{self.max_w:g} W")


@dataclass(frozen=True, slots=True)
class CarNeeds:
    """What the car said it needs and chose (for the controller, and later the CSMS)."""

    protocol: str
    service: str  # "AC", "DC", "AC_BPT", "DC_BPT"
    control_mode: str  # "scheduled" or "dynamic" (DIN/-2: "scheduled")
    max_charge_power: float | None = None
    max_discharge_power: float = 0.0
    departure_time: float | None = None  # seconds from now
    target_energy_wh: float | None = None
    min_energy_wh: float | None = None
    max_energy_wh: float | None = None
    soc: float | None = None


@dataclass(frozen=True, slots=True)
class CarSession:
    """Which car session an event is about: the V2G SessionID (hex), the protocol and the EVCCID."""

    session_id: str
    protocol: str
    evcc_id: str = ""


@dataclass(frozen=True, slots=True)
class Authorized:
    """The session is authorised: ``method`` "EIM" (external means, or free charging) or "PnC" (the
    contract ``emaid``, after the contract checks and the backend's word)."""

    car: CarSession
    method: str
    emaid: str | None = None


@dataclass(frozen=True, slots=True)
class EnergyTransferStarted:
    car: CarSession


@dataclass(frozen=True, slots=True)
class NeedsReported:
    needs: CarNeeds
    car: CarSession | None = None


@dataclass(frozen=True, slots=True)
class ScheduleChosen:
    """The car's own charging plan (-2 ChargingProfile, -20 scheduled EVPowerProfile): (s from now, W) steps."""

    car: CarSession
    periods: tuple[tuple[float, float], ...]


#: why the power owner's session ended (the OCPP bridge maps these to stoppedReason/triggerReason)
#: "paused": the car paused its session (-2/-20 SessionStop Pause) and may resume it on a new connection
END_REASONS = ("stopped_by_ev", "stopped_by_charger", "failed", "communication_lost", "power_taken", "paused",
               "ev_disconnected", "cp_error")


@dataclass(frozen=True, slots=True)
class SessionEnded:
    reason: str  # one of END_REASONS
    car: CarSession | None = None
    detail: str = ""


ChargingEvent = Authorized | EnergyTransferStarted | NeedsReported | ScheduleChosen | SessionEnded


@dataclass(frozen=True, slots=True)
class ChargingWishes:
    """What the charger's side would like a car in dynamic control mode to aim for (-20 tells it in the
    Dynamic ScheduleExchangeRes and every dynamic ChargeLoopRes); None: no wish."""

    departure_time: int | None = None  # seconds from now
    minimum_soc: int | None = None  # %: keep at least this much when discharging
    target_soc: int | None = None  # %

    def __post_init__(self) -> None:
        for name in ("minimum_soc", "target_soc"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"{name} must be a percentage (0-100), got {value}")
        if self.departure_time is not None and not 0 <= self.departure_time < 2**32:
            raise ValueError(f"departure_time must be seconds from now, got {self.departure_time}")


@dataclass(frozen=True, slots=True)
class SetpointStep:
    """From ``at`` seconds after the charge started on, this command applies (a step of a script)."""

    at: float
    command: PowerCommand


def load_setpoints(path: Path | str) -> list[SetpointStep]:
    """A setpoint script: a JSON list of ``{"at": s, "target_w": W, "max_w": W, "min_w": W}`` objects
    (``at`` seconds after energy transfer started; ``max_w``/``min_w`` default to the target's magnitude
    either side). Errors name the step."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of steps")
    return [_step(item, f"{path}: step {i + 1}") for i, item in enumerate(data)]


def _step(item: Any, where: str) -> SetpointStep:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(item) - {"at", "target_w", "max_w", "min_w"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        at = float(item["at"])
        target = None if item.get("target_w") is None else float(item["target_w"])
        max_w = float(item.get("max_w", max(0.0, target or 0.0)))
        min_w = float(item.get("min_w", min(0.0, target or 0.0)))
        if at < 0 or not math.isfinite(at):
            raise ValueError("at must be >= 0 seconds")
        return SetpointStep(at, PowerCommand(max_w=max_w, min_w=min_w, target_w=target))
    except KeyError as e:
        raise ValueError(f"{where}: missing {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


@dataclass
class ChargingController:
    """The decisions for one charging point (see the module docstring).

    ``limit``: the standing command when nobody has said otherwise (charge up to the site limit, no
    export unless ``limit.min_w`` < 0). ``script``: setpoint steps relative to the start of energy
    transfer (:meth:`energy_transfer_started`), for testbenches and ``edge simulate``."""

    limit: PowerCommand = field(default_factory=lambda: PowerCommand(max_w=math.inf))
    script: Sequence[SetpointStep] = ()
    wishes: ChargingWishes = field(default_factory=ChargingWishes)  # for cars in dynamic control mode
    revision: int = 0
    stop_reason: str | None = None  # set by request_stop: the session tells the car to stop
    stop_revision: int | None = None  # the revision of that request: it concerns the sessions alive then
    needs: CarNeeds | None = None
    #: told every :data:`ChargingEvent` (the OCPP bridge records transactions from them); a listener's
    #: exception is logged and never reaches the session
    listeners: list[Callable[[ChargingEvent], None]] = field(default_factory=list)
    #: what whoever decides knows of the future: (horizon s) -> [(s from now, command)] (the CSMS's profiles);
    #: None: only the present command is known
    forecast: Callable[[float], list[tuple[float, PowerCommand]]] | None = None
    _override: PowerCommand | None = None
    _started_at: float | None = None
    _script_index: int = -1  # the script step in force (-1: none yet)

    def command(self, now: float) -> PowerCommand:
        """The command in force at ``now`` (session clock)."""
        self._advance(now)
        cmd = self._override
        if cmd is not None and cmd.valid_until is not None and now >= cmd.valid_until:
            self._override, cmd = None, None
            self.revision += 1
        return cmd if cmd is not None else self.limit

    def set_command(self, command: PowerCommand) -> None:
        """A new command from whoever decides (the CSMS, a test): in force until replaced or expired."""
        self._override = command
        self.revision += 1

    def schedule(self, now: float, horizon: float, max_entries: int = 24) -> list[tuple[float, PowerCommand]]:
        """The commands a car may plan with from ``now``: (s from now, command), the first in force now; at most
        ``max_entries`` (what the car and the protocol can take; the rest of the horizon keeps the last one)."""
        present = self.command(now)
        if self.forecast is None:
            return [(0.0, present)]
        try:
            future = [(t, c) for t, c in self.forecast(horizon) if 0.0 < t < horizon]
        except Exception:  # the forecaster's bug: the car plans with the present command only
            log.exception("the charging forecast failed")
            future = []
        return [(0.0, present), *future][:max(1, max_entries)]

    def clear_command(self) -> None:
        """Whoever decided withdraws its command: the standing limit (or the script) is in force again."""
        if self._override is not None:
            self._override = None
            self.revision += 1

    def request_stop(self, reason: str) -> None:
        """End the charge: the car's session is told to stop at its next loop response. It concerns the
        sessions alive now: a car that arrives later is not stopped by it."""
        self.revision += 1
        self.stop_reason, self.stop_revision = reason, self.revision

    def stop_for(self, born_revision: int) -> str | None:
        """The stop request that concerns a session begun at ``born_revision`` (None: carry on)."""
        if self.stop_revision is None or self.stop_revision <= born_revision:
            return None
        return self.stop_reason

    def car_needs(self, needs: CarNeeds, car: CarSession | None = None) -> None:
        self.needs = needs
        self._emit(NeedsReported(needs, car))

    def schedule_chosen(self, car: CarSession, periods: Sequence[tuple[float, float]]) -> None:
        if periods:
            self._emit(ScheduleChosen(car, tuple(periods)))

    def authorized(self, car: CarSession, method: str, emaid: str | None = None) -> None:
        self._emit(Authorized(car, method, emaid))

    def energy_transfer_started(self, now: float, car: CarSession | None = None) -> None:
        """The first power flows: a setpoint script counts from here (once per controller)."""
        if self._started_at is None:
            self._started_at = now
        if car is not None:
            self._emit(EnergyTransferStarted(car))

    def session_ended(self, reason: str = "stopped_by_ev", car: CarSession | None = None, detail: str = "") -> None:
        """The car that owned the power is gone: the next car starts with the standing limit and no stop
        request."""
        assert reason in END_REASONS, reason
        self.stop_reason, self.stop_revision = None, None
        self._override, self._started_at, self._script_index = None, None, -1
        self.needs = None
        self.revision += 1
        self._emit(SessionEnded(reason, car, detail))

    def _emit(self, event: ChargingEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # the recorder's bug must not stop the car's charge
                log.exception("a charging event listener failed on %s", type(event).__name__)

    def _advance(self, now: float) -> None:
        if not self.script or self._started_at is None:
            return
        elapsed = now - self._started_at
        index = self._script_index
        while index + 1 < len(self.script) and self.script[index + 1].at <= elapsed:
            index += 1
        if index != self._script_index:
            self._script_index = index
            self._override = self.script[index].command
            self.revision += 1
