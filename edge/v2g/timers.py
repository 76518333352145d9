"""Session timers and budgets per protocol (values from ../shared/spec/timers.md), in one place.

The SECC side: how long a phase may take before the charger gives up (the car's own timeouts minus
the margin the standards give the charger), and the performance time per response.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

log = logging.getLogger("edge.v2g.budget")


@dataclass(frozen=True, slots=True)
class SessionTimers:
    sequence_timeout: float = 60.0  # V2G_SECC_Sequence_Timeout: no request for this long ends the session
    ongoing: float = 55.0  # EVSEProcessing=Ongoing answers (authorization, parameters) at most this long
    cable_check: float = 38.0  # SECC CableCheck performance (EVCC timeout 40 s)
    pre_charge: float = 5.0  # SECC PreCharge performance (EVCC timeout 7 s)
    # -20: V2G_SECC_Sequence_Timeout after a ChargeLoopRes (None: sequence_timeout applies there too)
    charge_loop_sequence_timeout: float | None = None
    # EVSENotification's NotificationMaxDelay: how long a car has to act on the charger's stop or
    # renegotiation request; a car still charging after a stop request this long is cut off (FAILED)
    notification_max_delay: float = 10.0
    performance: dict[str, float] = field(default_factory=dict)  # per request, seconds
    default_performance: float = 1.5

    def budget(self, request: str) -> float:
        return self.performance.get(request, self.default_performance)

    def with_overrides(self, **values: float) -> SessionTimers:
        for name, v in values.items():
            if name not in self.__dataclass_fields__ or name == "performance":  # type: ignore[attr-defined]
                raise ValueError(f"unknown session timer {name!r}")
            if not isinstance(v, int | float) or v <= 0:
                raise ValueError(f"session timer {name} must be a positive number of seconds, got {v!r}")
        return replace(self, **values)


@dataclass(frozen=True, slots=True)
class PowerSafetyTimers:
    """The charging point's safety layer (:mod:`edge.chargingpoint`), independent of the protocol.

    ``communication_watchdog``: during DC energy transfer (contactors closed) a car that sends no valid
    request for this long has its current ramped to 0 and its contactors opened, while its session still
    waits out V2G_SECC_Sequence_Timeout (60 s in -2, which alone would keep 125 A flowing for a minute).
    1 s: IEC 61851-23/-25 style requirements expect an error shutdown when no valid data arrives for more
    than about 1 s during energy transfer (the IEC texts are not public; the figure is the one the safety
    review that asked for this watchdog gives). Cars send CurrentDemandReq / DC_ChargeLoopReq every 50-250 ms
    (their own timeout is 250 ms), so 1 s is four missed messages.
    ``ac_communication_watchdog``: the same for AC, where the car's on-board charger sets the current itself
    (within the CP duty cycle and the limit it was given) and no -2 rule bounds how often it sends
    ChargingStatusReq: off by default (None), the sequence timeout applies; a number enables it.
    ``ramp_down``: after the watchdog trips, the contactors open once the current is below 1 A or this many
    seconds later, whichever comes first (never under full load unless the power module does not follow).
    """

    communication_watchdog: float | None = 1.0
    ac_communication_watchdog: float | None = None
    # DC output energised before energy transfer (isolation test voltage, pre-charge): a car silent this
    # long has the output switched off and its lease revoked, instead of 60 s of sequence timeout with the
    # voltage up. Generous, as cars poll CableCheck/PreCharge back to back and wait 2 s at most for a reply
    energized_watchdog: float | None = 5.0
    ramp_down: float = 0.5
    ramp_poll: float = 0.02  # how often the ramp is checked


#: a V2GTP message must arrive completely within this many seconds of its first byte (besides the
#: sequence timeout between messages): the biggest message (a certificate installation, a few kB) takes
#: milliseconds over HomePlug Green PHY; 5 s leaves room for TCP retransmissions on a noisy link while a
#: peer dripping bytes is cut off instead of holding a connection for hours
V2GTP_MESSAGE_DEADLINE = 5.0

DIN = SessionTimers(performance={"CurrentDemandReq": 0.025})
ISO2 = SessionTimers(performance={"CurrentDemandReq": 0.025, "PowerDeliveryReq": 4.5, "PaymentDetailsReq": 4.5,
                                  "CertificateInstallationReq": 4.5, "CertificateUpdateReq": 4.5,
                                  "ServiceDetailReq": 4.5})
# ISO 15118-20 (Tables 215-218): 1.5 s by default, 4.5 s where the EV waits 5 s, 0.25 s in the charge loop;
# PreCharge: the EV waits 10 s (Josev), the charger keeps the 2 s margin -2 has; after a ChargeLoopRes
# the next request must come within 0.5 s ([V2G20-1500], [V2G20-1502])
ISO20 = SessionTimers(pre_charge=8.0, charge_loop_sequence_timeout=0.5,
                      performance={"DC_ChargeLoopReq": 0.25, "AC_ChargeLoopReq": 0.25, "ServiceDetailReq": 4.5,
                                   "CertificateInstallationReq": 4.5})


def note_response_time(timers: SessionTimers, request: str, used: float) -> None:
    """Log one response's time against its budget: a warning when over (the car may give up), else debug."""
    budget = timers.budget(request)
    if used > budget:
        log.warning("%s answered in %.1f ms, over its %.0f ms budget", request, used * 1e3, budget * 1e3)
    else:
        log.debug("%s answered in %.2f ms (%.0f%% of %.0f ms)", request, used * 1e3, 100 * used / budget, budget * 1e3)


def budget_report(timers: SessionTimers, stats: dict[str, list[float]]) -> str:
    """How much of each request's budget its slowest response used, worst first (for the session log)."""
    rows = sorted(((max(times) / timers.budget(name), name, max(times), len(times)) for name, times in stats.items()
                   if times), reverse=True)
    return "; ".join(f"{name} x{count} max {worst * 1e3:.2f} ms ({share:.0%} of {timers.budget(name) * 1e3:.0f} ms)"
                     for share, name, worst, count in rows)
