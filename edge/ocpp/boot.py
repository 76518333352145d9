"""BootNotification and Heartbeat rules of OCPP 2.0.1/2.1 (use cases B01-B04, G02), sans-IO.

:class:`BootState` says what the station must send and when, and what it may send at all:
- nothing but BootNotification until the CSMS answered Accepted (B02/B03: while Pending only messages
  the CSMS triggered with TriggerMessage; while Rejected nothing), and BootNotification again after the
  interval the CSMS gave (its own ``default_retry`` when the CSMS says 0);
- once Accepted, a Heartbeat every ``interval`` seconds of silence (any other message the CSMS answers
  counts as a sign of life, so heartbeats only fill quiet times);
- a CALLERROR or no answer to a BootNotification: retry after ``default_retry``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: the station's retry interval when the CSMS gives none (its answer says 0 or nothing came back)
DEFAULT_RETRY_S = 30.0
#: heartbeat interval until the CSMS says otherwise
DEFAULT_HEARTBEAT_S = 300.0


@dataclass
class BootState:
    model: str
    vendor: str
    serial: str | None = None
    firmware: str | None = None
    default_retry: float = DEFAULT_RETRY_S
    status: str | None = None  # None (not booted yet), "Pending", "Accepted", "Rejected"
    heartbeat_interval: float = DEFAULT_HEARTBEAT_S
    next_boot_at: float = 0.0  # when to send BootNotification (again); math.inf once Accepted
    last_traffic: float = 0.0  # the CSMS's last answer to us (any message)

    def boot_request(self, reason: str = "PowerUp") -> dict[str, Any]:
        station: dict[str, Any] = {"model": self.model, "vendorName": self.vendor}
        if self.serial:
            station["serialNumber"] = self.serial
        if self.firmware:
            station["firmwareVersion"] = self.firmware
        return {"reason": reason, "chargingStation": station}

    def boot_due(self, now: float) -> bool:
        return self.status != "Accepted" and now >= self.next_boot_at

    def on_boot_answer(self, payload: dict[str, Any], now: float) -> None:
        """The CSMS's BootNotificationResponse (already schema-checked by the caller)."""
        status = payload.get("status")
        interval = payload.get("interval")
        if status not in ("Accepted", "Pending", "Rejected") or not isinstance(interval, int | float) \
                or isinstance(interval, bool) or interval < 0:
            self.on_boot_failed(now)  # not an answer we can act on: as if none came
            return
        self.status, self.last_traffic = status, now
        if status == "Accepted":
            self.next_boot_at = math.inf
            if interval > 0:
                self.heartbeat_interval = float(interval)
        else:
            self.next_boot_at = now + (interval or self.default_retry)

    def on_boot_failed(self, now: float) -> None:
        """A CALLERROR, a timeout or the connection lost before the answer: try again later."""
        if self.status != "Accepted":
            self.next_boot_at = now + self.default_retry

    def connection_lost(self) -> None:
        """The connection dropped: once Accepted, the next connection needs no new boot; a boot still
        unanswered or refused is sent again at once on the next connection."""
        if self.status != "Accepted":
            self.next_boot_at = 0.0

    def may_send(self, action: str, *, triggered: bool = False) -> bool:
        """Whether the station may send ``action`` now (``triggered``: the CSMS asked for it by TriggerMessage)."""
        if action == "BootNotification":
            return self.status != "Accepted" or triggered
        if self.status == "Accepted":
            return True
        return self.status == "Pending" and triggered

    def may_receive(self, action: str) -> bool:
        """Whether a CALL from the CSMS is answered: not while it has Rejected this station (B03)."""
        return self.status != "Rejected"

    def heard(self, now: float) -> None:
        """The CSMS answered something: the heartbeat clock restarts."""
        self.last_traffic = now

    def heartbeat_due(self, now: float) -> bool:
        return self.status == "Accepted" and now >= self.last_traffic + self.heartbeat_interval

    def next_wakeup(self) -> float:
        """When the shell should look again (the boot retry or the next heartbeat)."""
        if self.status == "Accepted":
            return self.last_traffic + self.heartbeat_interval
        return self.next_boot_at
