"""One charging point's power: who may drive it, and the safety layer that takes it back. Sans-IO.

Every connection on a charging point gets its own :class:`LeasedHardware`, the board as one session
sees it. Reads (limits, present values, isolation, meter, CP) pass through. Power commands (isolation
check, contactors closed, a non-zero voltage or current target, the AC current limit, the CP duty
cycle) need the charging point's **power lease**: the first session that asks for power takes it,
and only it can drive or switch off the power path until its session ends (:meth:`LeasedHardware.release`)
or the safety layer revokes it. Another session asking for power gets :class:`PowerLeaseRefused`
(its session loop answers FAILED, no power); its "off" commands and its end change nothing. So a TCP
connect+close, a TLS handshake, an idle timeout or a second car on the link can never cut or move
the power of the car that is charging.

The safety layer is :meth:`ChargingPoint.check`, called by the shell at the times it returns: the
charge-loop communication watchdog. While the holder's contactors are closed and no valid request
has arrived for ``watchdog`` seconds, the current is ramped to 0 and, once it is below
``OPEN_BELOW_A`` or ``ramp_down`` s later, the contactors open and the lease is revoked (that
session can never power again; its car may start a new one). Before energy transfer, while the holder
has the DC output up (isolation check, pre-charge) with the contactors open, a car silent for
``energized_watchdog`` seconds has the output switched off and its lease revoked the same way.
:meth:`ChargingPoint.shutdown` switches
everything off (SIGTERM, a fault). Every contactor change is one INFO log line with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edge.hardware import AcLimits, ChargerHardware, DcLimits
from edge.v2g.timers import PowerSafetyTimers

log = logging.getLogger("edge.power")

#: below this output current (A) the contactors may open without breaking load current
OPEN_BELOW_A = 1.0
#: while the output is up before energy transfer, look again at least this often (s): the contactors
#: closing must arm the 1 s charge-loop watchdog at once, not when the 5 s pre-transfer one would expire
ENERGIZED_POLL = 0.1


class PowerLeaseRefused(Exception):
    """This session may not drive the power path: another session holds the lease, or the safety
    layer took it back from this one."""


@dataclass
class ChargingPoint:
    """The power path of one charging point (EVSE) and its lease; shared by every connection on it."""

    hardware: ChargerHardware
    name: str = "evse"
    timers: PowerSafetyTimers = field(default_factory=PowerSafetyTimers)
    holder: LeasedHardware | None = None
    closed: bool = False  # the contactors as last commanded
    mode: str | None = None  # "dc" or "ac": what the holder's last power command was
    last_heard: float = 0.0  # the holder's last valid request
    ramping_since: float | None = None  # the watchdog is ramping the current down since then
    energized: bool = False  # the holder has the DC output up (isolation check, pre-charge, charging)
    trips: int = 0  # how often the watchdog switched the power off
    connections: int = 0  # views handed out, to number them in the log
    target: tuple[float, float] = (0.0, 0.0)  # the last DC target (V, A) or AC limit (0, A) given to the board

    def lease(self, label: str | None = None) -> LeasedHardware:
        """A view of the hardware for one new connection; it holds no lease until it asks for power."""
        self.connections += 1
        return LeasedHardware(self, label or f"connection #{self.connections}")

    # ------------------------------------------------------------------ the lease
    def _claim(self, view: LeasedHardware, mode: str | None = None) -> None:
        if view.revoked is not None:
            raise PowerLeaseRefused(f"{self.name}: power was taken back from {view.label} ({view.revoked})")
        if self.holder is None:
            self.holder, self.last_heard, self.ramping_since = view, view.now, None
            log.info("%s: power lease to %s", self.name, view.label)
        elif self.holder is not view:
            log.warning("%s: %s asked for power while %s holds it: refused", self.name, view.label, self.holder.label)
            raise PowerLeaseRefused(f"{self.name}: the power path belongs to {self.holder.label}")
        if mode is not None:
            self.mode = mode

    def _release(self, view: LeasedHardware, reason: str) -> None:
        if self.holder is view:
            self._power_off(reason)
            self.holder = None
            log.info("%s: power lease of %s released (%s)", self.name, view.label, reason)

    def _set_contactors(self, closed: bool, reason: str) -> None:
        self.hardware.set_contactors(closed)
        if closed != self.closed:
            self.closed = closed
            log.info("%s: contactors %s (%s)", self.name, "closed" if closed else "open", reason)

    def _power_off(self, reason: str) -> None:
        hw = self.hardware
        hw.set_dc_target(0, 0)
        hw.set_ac_current_limit(0)
        self.target = (0.0, 0.0)
        self._set_contactors(False, reason)
        self.ramping_since = None
        self.energized = False
        self.mode = None  # the next holder says what it drives

    def shutdown(self, reason: str, why: str = "power_taken") -> None:
        """Everything off, whoever holds the lease (SIGTERM, a board fault, the car unplugged): one "power
        off" line (and the contactor line when they were closed). ``why``: how the holder's session ended,
        in the controller's words (edge.controller.END_REASONS)."""
        holder = self.holder
        if holder is not None:
            holder.revoked = reason
            holder.revoked_why = why
            self.holder = None
        self._power_off(reason)
        log.info("%s: power off (%s)%s", self.name, reason, f", lease of {holder.label} revoked" if holder else "")

    # ------------------------------------------------------------------ the watchdog
    def _heard(self, view: LeasedHardware, now: float) -> None:
        if self.holder is view and self.ramping_since is None:
            self.last_heard = now

    def watchdog_limit(self) -> float | None:
        """The silence allowed during energy transfer now (None: no watchdog in this mode)."""
        return self.timers.ac_communication_watchdog if self.mode == "ac" else self.timers.communication_watchdog

    def check(self, now: float) -> float | None:
        """The safety layer at ``now``: trips the watchdog or finishes its ramp. Returns when to check
        again (None: nothing to watch until the next request)."""
        limit = self.watchdog_limit()
        if self.holder is not None and not self.closed and self.energized:
            return self._check_energized(now)
        if self.holder is None or not self.closed or limit is None:
            return None
        if self.ramping_since is None:
            if now < self.last_heard + limit:  # (the same sum the caller sleeps until: no float ping-pong)
                return self.last_heard + limit
            self.ramping_since = now
            self.trips += 1
            # from now on the session cannot power again, even if its car wakes up during the ramp
            self.holder.revoked = f"communication watchdog ({limit:g} s without a valid message)"
            self.hardware.update(now)
            voltage, current = self.hardware.present()
            log.warning("%s: no valid message from %s for %.2f s during energy transfer: current to 0 "
                        "(%.0f A flowing)", self.name, self.holder.label, now - self.last_heard, current)
            self.hardware.set_dc_target(voltage if self.mode == "dc" else 0, 0)
            self.hardware.set_ac_current_limit(0)
        self.hardware.update(now)
        _, current = self.hardware.present()
        open_by = self.ramping_since + self.timers.ramp_down
        if abs(current) > OPEN_BELOW_A and now < open_by:
            return min(now + self.timers.ramp_poll, open_by)
        holder, self.holder = self.holder, None
        self._power_off(f"watchdog: {holder.label} silent, {abs(current):.1f} A at opening")
        return None


    def _check_energized(self, now: float) -> float | None:
        """Before energy transfer (contactors open) with the DC output up: a silent car loses it."""
        limit = self.timers.energized_watchdog
        if limit is None or self.holder is None:
            return None
        if now < self.last_heard + limit:
            return min(self.last_heard + limit, now + ENERGIZED_POLL)
        holder, self.holder = self.holder, None
        holder.revoked = f"watchdog ({limit:g} s without a valid message with the DC output up)"
        self.trips += 1
        log.warning("%s: no valid message from %s for %.2f s with the DC output energised (isolation check or "
                    "pre-charge): output off", self.name, holder.label, now - self.last_heard)
        self._power_off(f"watchdog: {holder.label} silent before energy transfer")
        return None


class LeasedHardware:
    """The charging point's hardware as one connection's session sees it (see the module docstring).
    Implements :class:`edge.hardware.ChargerHardware`."""

    def __init__(self, point: ChargingPoint, label: str) -> None:
        self.point = point
        self.label = label
        self.now = 0.0
        self.revoked: str | None = None  # why the safety layer took the lease back, once it has
        self.revoked_why = "power_taken"  # the same as the session's end reason (edge.controller.END_REASONS)

    @property
    def holds_lease(self) -> bool:
        return self.point.holder is self

    def release(self, reason: str) -> None:
        """This connection's session is over: if it held the lease, power off and let it go."""
        self.point._release(self, reason)

    # ------------------------------------------------------------------ reads
    def update(self, now: float) -> None:
        """Called by the session for every valid request: time for simulations, and the watchdog's
        sign of life."""
        self.now = now
        self.point.hardware.update(now)
        self.point._heard(self, now)

    def cp_state(self) -> str:
        return self.point.hardware.cp_state()

    def dc_limits(self) -> DcLimits | None:
        return self.point.hardware.dc_limits()

    def ac_limits(self) -> AcLimits | None:
        return self.point.hardware.ac_limits()

    def present(self) -> tuple[float, float]:
        return self.point.hardware.present()

    def isolation(self) -> str:
        return self.point.hardware.isolation()

    def energy_wh(self) -> float:
        return self.point.hardware.energy_wh()

    def energy_exported_wh(self) -> float:
        return self.point.hardware.energy_exported_wh()

    # ------------------------------------------------------------------ commands
    def set_pwm(self, duty_percent: float) -> None:
        self.point._claim(self)
        self.point.hardware.set_pwm(duty_percent)

    def start_isolation_check(self) -> None:
        self.point._claim(self, "dc")
        self.point.energized = True
        self.point.hardware.start_isolation_check()

    def set_contactors(self, closed: bool) -> None:
        if closed:
            self.point._claim(self)
            self.point._set_contactors(True, f"{self.label} asked for power")
        elif self.holds_lease:
            self.point._set_contactors(False, f"{self.label}: its session switched off")

    def set_dc_target(self, voltage: float, current: float) -> None:
        if voltage > 0 or current != 0:  # current < 0 is export: power too
            self.point._claim(self, "dc")
        elif not self.holds_lease:
            return  # "off" from a session without the lease: not its power
        self.point.energized = voltage > 0 or current != 0
        self.point.hardware.set_dc_target(voltage, current)
        self.point.target = (voltage, current)

    def set_ac_current_limit(self, current: float) -> None:
        if current != 0:
            self.point._claim(self, "ac")
        elif not self.holds_lease:
            return
        self.point.hardware.set_ac_current_limit(current)
        self.point.target = (0.0, current)
