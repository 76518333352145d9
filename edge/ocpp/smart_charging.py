"""Smart charging as OCPP 2.0.1/2.1 define it (use cases K01-K08, K15-K17, and 2.1's V2X operation
modes), sans-IO: the charging profiles the CSMS installed, and the one internal power command they
mean for an EVSE at a given time (:class:`~edge.controller.PowerCommand`, W, import positive).

How a period becomes a command:
- ``ChargingOnly`` (2.1's default, and every 2.0.1 period): at most ``limit``, no export;
- ``CentralSetpoint`` (2.1): follow ``setpoint`` (negative: discharge), within ``limit`` and
  ``dischargeLimit`` (negative) when given;
- ``Idle`` (2.1): no power either way;
- the other 2.1 modes (ExternalSetpoint, ExternalLimits, frequency and load-balancing modes) are refused
  with Rejected and reasonCode ``UnsupportedOperation``: nothing here could honour them;
- on 2.0.1, a negative ``limit`` means "discharge at up to |limit|" only when the station's device model
  allows it (``negative_limit_discharges``; off by default, as the specification forbids negative
  limits), and a period's ``customData`` carrying 2.1's ``operationMode``/``setpoint``/``dischargeLimit``
  is read like a 2.1 period.
Ampere schedules are converted with the nominal voltage (230 V per phase, ``numberPhases`` or 3).

Which profiles apply (K08): a TxProfile of the EVSE's running transaction, else the EVSE's
TxDefaultProfile, else the station-wide (evseId 0) TxDefaultProfile, each the highest stackLevel in
force; the ChargingStationMaxProfile caps the result (applied to each EVSE on its own: this station
does not share the grid connection's limit among EVSEs yet).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from edge.controller import PowerCommand

NOMINAL_VOLTAGE = 230.0
#: profiles kept across all EVSEs (a CSMS cannot grow memory without bound)
MAX_PROFILES = 64
#: periods per schedule we accept (PeriodsPerSchedule)
MAX_PERIODS = 1024
SUPPORTED_MODES = ("ChargingOnly", "CentralSetpoint", "Idle")
RECURRENCE = {"Daily": timedelta(days=1), "Weekly": timedelta(days=7)}


class ProfileRejected(Exception):
    """SetChargingProfile answered Rejected, with a reasonCode (at most 20 characters) and why."""

    def __init__(self, reason_code: str, info: str) -> None:
        super().__init__(f"{reason_code}: {info}")
        assert len(reason_code) <= 20
        self.reason_code, self.info = reason_code, info


def parse_time(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return when


@dataclass(frozen=True, slots=True)
class Period:
    start: float  # s from the schedule's start
    command: PowerCommand


@dataclass(frozen=True)
class Profile:
    evse_id: int
    id: int
    stack_level: int
    purpose: str
    kind: str
    periods: tuple[Period, ...]
    start_schedule: datetime | None
    duration: float | None
    valid_from: datetime | None
    valid_to: datetime | None
    recurrency: str | None
    transaction_id: str | None
    wire: dict[str, Any]  # as the CSMS sent it (for GetChargingProfiles)

    def valid_at(self, at: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= at) and (self.valid_to is None or at < self.valid_to)

    def schedule_start(self, at: datetime, tx_start: datetime | None) -> datetime | None:
        if self.kind == "Relative":
            return tx_start or at
        assert self.start_schedule is not None
        if self.kind == "Recurring":
            step = RECURRENCE[self.recurrency or "Daily"]
            if at < self.start_schedule:
                return self.start_schedule
            return self.start_schedule + step * ((at - self.start_schedule) // step)
        return self.start_schedule

    def at(self, at: datetime, tx_start: datetime | None) -> tuple[PowerCommand | None, datetime | None]:
        """This profile's command at ``at`` (None: not in force) and when that may change next."""
        if not self.valid_at(at):
            return None, self.valid_from if self.valid_from and at < self.valid_from else None
        start = self.schedule_start(at, tx_start)
        assert start is not None
        elapsed = (at - start).total_seconds()
        if elapsed < 0:
            return None, start
        if self.duration is not None and elapsed >= self.duration:
            nxt = start + RECURRENCE[self.recurrency or "Daily"] if self.kind == "Recurring" else None
            return None, _earliest(nxt, self.valid_to)
        current = None
        following = None
        for period in self.periods:
            if period.start <= elapsed:
                current = period
            else:
                following = start + timedelta(seconds=period.start)
                break
        end = start + timedelta(seconds=self.duration) if self.duration is not None else None
        if following is None and self.kind == "Recurring":
            following = start + RECURRENCE[self.recurrency or "Daily"]
        return (current.command if current else None), _earliest(following, end, self.valid_to)


def _earliest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


class ChargingProfiles:
    """The profiles the CSMS installed (all EVSEs; evseId 0 is the station)."""

    def __init__(self, *, version: str = "2.0.1", max_stack_level: int = 8,
                 negative_limit_discharges: Callable[[], bool] = lambda: False,
                 max_profiles: int = MAX_PROFILES) -> None:
        self.version, self.max_stack_level, self.max_profiles = version, max_stack_level, max_profiles
        self.negative_limit_discharges = negative_limit_discharges
        self.profiles: dict[int, Profile] = {}  # by chargingProfile id

    # ------------------------------------------------------------------ SetChargingProfile (K01)
    def install(self, evse_id: int, wire: dict[str, Any], *, evse_ids: set[int],
                transaction_id: str | None) -> Profile:
        """Check and install ``wire`` (a chargingProfile) for ``evse_id``; ``transaction_id``: the EVSE's
        running transaction. Raises :class:`ProfileRejected`."""
        purpose = wire["chargingProfilePurpose"]
        if evse_id != 0 and evse_id not in evse_ids:
            raise ProfileRejected("UnknownEvse", f"no EVSE {evse_id}")
        if purpose == "ChargingStationMaxProfile" and evse_id != 0:
            raise ProfileRejected("InvalidValue", "a ChargingStationMaxProfile is for evseId 0 only")
        if purpose == "TxProfile":
            if evse_id == 0:
                raise ProfileRejected("InvalidValue", "a TxProfile needs an EVSE")
            if transaction_id is None:
                raise ProfileRejected("TxNotFound", f"no transaction on EVSE {evse_id}")
            if wire.get("transactionId", transaction_id) != transaction_id:
                raise ProfileRejected("TxNotFound", f"transaction {wire.get('transactionId')} is not running here")
        elif purpose not in ("TxDefaultProfile", "ChargingStationMaxProfile"):
            raise ProfileRejected("UnsupportedParam", f"purpose {purpose} is not supported")
        stack = int(wire["stackLevel"])
        if not 0 <= stack <= self.max_stack_level:
            raise ProfileRejected("InvalidStackLevel", f"stackLevel {stack} not in 0..{self.max_stack_level}")
        profile = self._parse(evse_id, wire, transaction_id if purpose == "TxProfile" else None)
        for other in self.profiles.values():
            if (other.id != profile.id and other.evse_id == evse_id and other.purpose == purpose
                    and other.stack_level == stack and _overlap(other, profile)):
                raise ProfileRejected("DuplicateProfile",
                                      f"profile {other.id} has the same stackLevel and purpose on this EVSE")
        if profile.id not in self.profiles and len(self.profiles) >= self.max_profiles:
            raise ProfileRejected("TooManyProfiles", f"{self.max_profiles} profiles installed already")
        self.profiles[profile.id] = profile
        return profile

    def _parse(self, evse_id: int, wire: dict[str, Any], transaction_id: str | None) -> Profile:
        kind = wire["chargingProfileKind"]
        schedules = wire["chargingSchedule"]
        schedule = schedules[0]  # more are alternatives for an ISO 15118 car; the first is the one we apply
        try:
            start = parse_time(schedule["startSchedule"]) if "startSchedule" in schedule else None
            valid_from = parse_time(wire["validFrom"]) if "validFrom" in wire else None
            valid_to = parse_time(wire["validTo"]) if "validTo" in wire else None
        except ValueError as e:
            raise ProfileRejected("InvalidValue", str(e)) from None
        if kind in ("Absolute", "Recurring") and start is None:
            raise ProfileRejected("MissingParam", f"an {kind} schedule needs startSchedule")
        if kind == "Recurring" and wire.get("recurrencyKind") not in RECURRENCE:
            raise ProfileRejected("MissingParam", "a Recurring profile needs recurrencyKind Daily or Weekly")
        raw = schedule["chargingSchedulePeriod"]
        if len(raw) > MAX_PERIODS:
            raise ProfileRejected("InvalidSchedule", f"more than {MAX_PERIODS} periods")
        starts = [p["startPeriod"] for p in raw]
        if starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
            raise ProfileRejected("InvalidSchedule", "periods must start at 0 and ascend")
        unit = schedule["chargingRateUnit"]
        periods = tuple(Period(float(p["startPeriod"]), self._command(p, unit)) for p in raw)
        duration = schedule.get("duration")
        return Profile(evse_id, int(wire["id"]), int(wire["stackLevel"]), wire["chargingProfilePurpose"], kind,
                       periods, start, float(duration) if duration is not None else None, valid_from, valid_to,
                       wire.get("recurrencyKind"), transaction_id, wire)

    def _command(self, period: dict[str, Any], unit: str) -> PowerCommand:
        scale = NOMINAL_VOLTAGE * period.get("numberPhases", 3) if unit == "A" else 1.0
        fields = period
        if self.version == "2.0.1":
            custom = period.get("customData") or {}
            v2x = ("operationMode", "setpoint", "dischargeLimit")
            fields = {**period, **{k: custom[k] for k in v2x if k in custom}}
        mode = fields.get("operationMode", "ChargingOnly")
        limit = fields.get("limit")
        limit_w = limit * scale if limit is not None else math.inf
        if mode not in SUPPORTED_MODES:
            raise ProfileRejected("UnsupportedOperation", f"operationMode {mode} is not supported")
        if mode == "Idle":
            return PowerCommand(max_w=0.0, min_w=0.0, target_w=0.0)
        if mode == "CentralSetpoint":
            if "setpoint" not in fields:
                raise ProfileRejected("MissingParam", "CentralSetpoint needs a setpoint")
            setpoint = fields["setpoint"] * scale
            discharge = fields.get("dischargeLimit")
            low = discharge * scale if discharge is not None else min(setpoint, 0.0)
            high = limit_w if limit is not None else max(setpoint, 0.0)
            if low > 0 or high < low:
                raise ProfileRejected("InvalidValue", "dischargeLimit must be <= 0 and <= limit")
            return PowerCommand(max_w=high, min_w=low, target_w=min(max(setpoint, low), high))
        if limit is None:
            raise ProfileRejected("MissingParam", "a ChargingOnly period needs a limit")
        if limit_w < 0:
            if self.version == "2.0.1" and self.negative_limit_discharges():
                return PowerCommand(max_w=0.0, min_w=limit_w, target_w=limit_w)
            raise ProfileRejected("InvalidValue", "a negative limit (discharge) is not allowed here")
        return PowerCommand(max_w=limit_w)

    # ------------------------------------------------------------------ ClearChargingProfile, GetChargingProfiles
    def clear(self, request: dict[str, Any]) -> bool:
        """ClearChargingProfile: True when something matched (Accepted), else False (Unknown)."""
        matched = self._select(request.get("chargingProfileId"), request.get("chargingProfileCriteria") or {})
        for profile in matched:
            del self.profiles[profile.id]
        return bool(matched)

    def report(self, request: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
        """GetChargingProfiles: the matching profiles as sent, per EVSE."""
        criteria = dict(request.get("chargingProfile") or {})
        ids = criteria.pop("chargingProfileId", None) or []
        found: dict[int, list[dict[str, Any]]] = {}
        evse = request.get("evseId")
        for profile in self.profiles.values():
            if evse is not None and profile.evse_id != evse:
                continue
            if ids and profile.id not in ids:
                continue
            if not _criteria_match(profile, criteria):
                continue
            found.setdefault(profile.evse_id, []).append(profile.wire)
        return found

    def _select(self, profile_id: int | None, criteria: dict[str, Any]) -> list[Profile]:
        if profile_id is not None:
            return [p for p in self.profiles.values() if p.id == profile_id]
        if not criteria:
            return list(self.profiles.values())
        return [p for p in self.profiles.values()
                if ("evseId" not in criteria or p.evse_id == criteria["evseId"]) and _criteria_match(p, criteria)]

    def transaction_ended(self, evse_id: int) -> None:
        """A TxProfile ends with its transaction (K01)."""
        for profile in [p for p in self.profiles.values() if p.evse_id == evse_id and p.purpose == "TxProfile"]:
            del self.profiles[profile.id]

    # ------------------------------------------------------------------ the command in force
    def command(self, evse_id: int, at: datetime, *, transaction_id: str | None = None,
                tx_start: datetime | None = None) -> tuple[PowerCommand | None, datetime | None]:
        """The command the profiles give this EVSE at ``at`` (None: they say nothing) and when it may change."""
        changes: list[datetime | None] = []

        def best(candidates: list[Profile]) -> PowerCommand | None:
            chosen = None
            for profile in sorted(candidates, key=lambda p: -p.stack_level):
                command, change = profile.at(at, tx_start)
                changes.append(change)
                if command is not None and chosen is None:
                    chosen = command
            return chosen

        profiles = list(self.profiles.values())
        tx = None
        if transaction_id is not None:
            tx = best([p for p in profiles if p.purpose == "TxProfile" and p.evse_id == evse_id
                       and p.transaction_id == transaction_id])
        if tx is None:
            tx = best([p for p in profiles if p.purpose == "TxDefaultProfile" and p.evse_id == evse_id])
        if tx is None:
            tx = best([p for p in profiles if p.purpose == "TxDefaultProfile" and p.evse_id == 0])
        cap = best([p for p in profiles if p.purpose == "ChargingStationMaxProfile"])
        return _capped(tx, cap), _earliest(*changes)

    def timeline(self, evse_id: int, start: datetime, duration: float, *, transaction_id: str | None = None,
                 tx_start: datetime | None = None, limit: int = MAX_PERIODS) -> list[tuple[float, PowerCommand | None]]:
        """The commands in force from ``start`` for ``duration`` s: (seconds from ``start``, command or None where
        no profile says anything), one entry per change (at most ``limit``)."""
        end = start + timedelta(seconds=duration)
        tx_start = tx_start or start  # a Relative profile with no transaction yet would begin now
        at, out = start, []
        while at < end and len(out) < limit:
            command, change = self.command(evse_id, at, transaction_id=transaction_id, tx_start=tx_start)
            if not out or out[-1][1] != command:
                out.append(((at - start).total_seconds(), command))
            if change is None or change <= at:
                break
            at = change
        return out

    def composite(self, evse_id: int, start: datetime, duration: int, unit: str | None, *, default_w: float,
                  transaction_id: str | None = None, tx_start: datetime | None = None) -> dict[str, Any]:
        """GetCompositeSchedule (K08): the periods in force from ``start`` for ``duration`` s; where no
        profile says anything, the EVSE's own maximum ``default_w``."""
        periods: list[dict[str, Any]] = []
        for offset, command in self.timeline(evse_id, start, duration, transaction_id=transaction_id,
                                             tx_start=tx_start):
            period = _wire_period(command or PowerCommand(max_w=default_w), int(offset), unit or "W", self.version)
            if not periods or _without_start(periods[-1]) != _without_start(period):
                periods.append(period)
        return {"evseId": evse_id, "duration": duration,
                "scheduleStart": start.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "chargingRateUnit": unit or "W", "chargingSchedulePeriod": periods}


def _without_start(period: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in period.items() if k != "startPeriod"}


def _capped(tx: PowerCommand | None, cap: PowerCommand | None) -> PowerCommand | None:
    if cap is None:
        return tx
    if tx is None:
        return cap
    high, low = min(tx.max_w, cap.max_w), max(tx.min_w, cap.min_w)
    low = min(low, high)
    target = None if tx.target_w is None else min(max(tx.target_w, low), high)
    return PowerCommand(max_w=high, min_w=low, target_w=target)


def _wire_period(command: PowerCommand, offset: int, unit: str, version: str) -> dict[str, Any]:
    scale = NOMINAL_VOLTAGE * 3 if unit == "A" else 1.0
    period: dict[str, Any] = {"startPeriod": offset, "limit": round(command.max_w / scale, 1)}
    if version != "2.0.1" and command.min_w < 0:  # 2.1 says discharge in its own words
        period["dischargeLimit"] = round(command.min_w / scale, 1)
        if command.target_w is not None:
            period.update(operationMode="CentralSetpoint", setpoint=round(command.target_w / scale, 1))
    if unit == "A":
        period["numberPhases"] = 3
    return period


def _criteria_match(profile: Profile, criteria: dict[str, Any]) -> bool:
    purpose = criteria.get("chargingProfilePurpose")
    stack = criteria.get("stackLevel")
    return (purpose is None or profile.purpose == purpose) and (stack is None or profile.stack_level == stack)


def _overlap(a: Profile, b: Profile) -> bool:
    """Do the validity intervals meet (open ends reach forever)?"""
    if a.valid_from is not None and b.valid_to is not None and b.valid_to <= a.valid_from:
        return False
    return not (b.valid_from is not None and a.valid_to is not None and a.valid_to <= b.valid_from)
