"""Where ISO 15118 events meet OCPP: the charging point's events (:mod:`edge.controller`) become
TransactionEvents in the durable queue (:mod:`edge.ocpp.store`). Sans-IO: time and meter readings are
passed in; the station's trio shell sends what the store holds.

When a transaction starts and ends (documented in the README's OCPP section):
- it starts when the car that owns the power path closes it (:class:`~edge.controller.EnergyTransferStarted`,
  OCPP's TxStartPoint ``PowerPathClosed``), with the idToken of that car's authorisation (PnC: its
  eMAID; EIM without an external token: ``NoAuthorization``);
- Updated: the charging state changes, and every ``TxUpdatedInterval`` with the meter (energy imported
  and exported, power, the car's SoC when it told it);
- it ends with that car's session, with the stoppedReason of how it ended; a transaction still open
  in the store when the station starts (a crash or a power cut) is ended with ``PowerLoss``;
- a car that pauses its session (SessionStop Pause) keeps its transaction, ``SuspendedEV``, and resumes
  it when it comes back with the same SessionID; one that does not come back within ``suspended_timeout``
  (the TxCtrlr EVConnectionTimeOut) has it ended (``Timeout``).
A stranger's session on the same link never owns the power path, so it never starts or ends one.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.controller import Authorized, CarNeeds, ChargingEvent, EnergyTransferStarted, NeedsReported, SessionEnded

from .store import StationStore

log = logging.getLogger("edge.ocpp")

#: how the power owner's session ended -> (triggerReason, stoppedReason)
END_REASONS: dict[str, tuple[str, str]] = {
    "stopped_by_ev": ("ChargingStateChanged", "StoppedByEV"),
    "stopped_by_charger": ("ChargingStateChanged", "Local"),
    "failed": ("AbnormalCondition", "Other"),
    "communication_lost": ("EVCommunicationLost", "Other"),
    "power_taken": ("AbnormalCondition", "Timeout"),
    "paused": ("ChargingStateChanged", "Other"),  # only when the paused transaction is ended
    "ev_disconnected": ("EVDeparted", "EVDisconnected"),  # CP A: the cable was pulled mid-session
    "cp_error": ("AbnormalCondition", "Other"),  # CP E/F or a board fault
}
#: cars whose authorisation is remembered until their power path closes (strangers may authorise too)
_AUTHORISATIONS_KEPT = 8


@dataclass(frozen=True, slots=True)
class MeterReading:
    imported_wh: float
    exported_wh: float
    power_w: float  # import +, export -
    soc: float | None = None


def hardware_meter(hardware: Any, mode: Callable[[], str | None] = lambda: None) -> Callable[[], MeterReading]:
    """The meter of a :class:`edge.hardware.ChargerHardware` (registers and present power); ``mode``: what
    the power path drives now ("ac": present() is per phase)."""

    def read() -> MeterReading:
        voltage, current = hardware.present()
        ac = hardware.ac_limits() if mode() == "ac" else None
        phases = ac.phases if ac is not None else 1
        return MeterReading(hardware.energy_wh(), hardware.energy_exported_wh(), voltage * current * phases)

    return read


def timestamp(when: datetime | None = None) -> str:
    """OCPP's dateTime: UTC, milliseconds, Z."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meter_value(reading: MeterReading, at: str, context: str) -> dict[str, Any]:
    def sampled(value: float, measurand: str, unit: str) -> dict[str, Any]:
        return {"value": round(value, 3), "measurand": measurand, "context": context, "unitOfMeasure": {"unit": unit}}

    values = [sampled(reading.imported_wh, "Energy.Active.Import.Register", "Wh"),
              sampled(reading.exported_wh, "Energy.Active.Export.Register", "Wh"),
              sampled(max(reading.power_w, 0.0), "Power.Active.Import", "W"),
              sampled(max(-reading.power_w, 0.0), "Power.Active.Export", "W")]
    if reading.soc is not None:
        values.append(sampled(reading.soc, "SoC", "Percent"))
    return {"timestamp": at, "sampledValue": values}


@dataclass
class OpenTransaction:
    transaction_id: str
    session_id: str  # the V2G session that owns it
    charging_state: str
    id_token: dict[str, str]
    last_sample: float  # monotonic time of the last meter sample sent
    suspended_at: float | None = None  # the car paused its session then


class EvseTransactions:
    """The transactions of one EVSE, fed with the charging point's events (:meth:`on_event` is a
    controller listener) and sampled by the shell (:meth:`sample`)."""

    def __init__(self, evse_id: int, store: StationStore, meter: Callable[[], MeterReading], *,
                 online: Callable[[], bool] = lambda: True, connector_id: int = 1,
                 clock: Callable[[], float] | None = None, new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
                 updated_interval: Callable[[], float] = lambda: 60.0,
                 suspended_timeout: Callable[[], float] = lambda: 300.0) -> None:
        self.evse_id, self.connector_id = evse_id, connector_id
        self.store, self.meter, self.online, self.new_id = store, meter, online, new_id
        self.updated_interval, self.suspended_timeout = updated_interval, suspended_timeout
        self.clock = clock or (lambda: 0.0)
        self.open: OpenTransaction | None = None
        self._authorisations: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._needs: CarNeeds | None = None
        self._remote: tuple[dict[str, Any], int] | None = None  # RequestStartTransaction's idToken and id
        self._stop: tuple[str, str] | None = None  # the charger's reason to stop (RequestStopTransaction)

    # ------------------------------------------------------------------ events in
    def on_event(self, event: ChargingEvent) -> None:
        if isinstance(event, Authorized):
            token = ({"idToken": event.emaid or "", "type": "eMAID"} if event.method == "PnC"
                     else {"idToken": "", "type": "NoAuthorization"})
            self._authorisations[event.car.session_id] = token
            while len(self._authorisations) > _AUTHORISATIONS_KEPT:
                self._authorisations.popitem(last=False)
        elif isinstance(event, NeedsReported):
            self._needs = event.needs
        elif isinstance(event, EnergyTransferStarted):
            self._power_path_closed(event.car.session_id)
        elif isinstance(event, SessionEnded):
            if self.open is not None and (event.car is None or event.car.session_id == self.open.session_id):
                if event.reason == "paused":
                    self.open.suspended_at = self.clock()
                    self._state("SuspendedEV", "ChargingStateChanged")
                    self._needs = None
                    return
                trigger, stopped = END_REASONS[event.reason]
                if self._stop is not None and event.reason != "stopped_by_ev":  # the charger's own reason
                    trigger, stopped = self._stop
                self.end(trigger, stopped)
            self._needs = None

    def _power_path_closed(self, session_id: str) -> None:
        if self.open is not None:
            if self.open.session_id == session_id:
                self.open.suspended_at = None
                self._state("Charging", "ChargingStateChanged")
                return
            # the power owner changed without the old one's end reaching us: end it first
            log.warning("EVSE %d: transaction %s still open when another session closed the power path",
                        self.evse_id, self.open.transaction_id)
            self.end("AbnormalCondition", "Other")
        token: dict[str, Any] = self._authorisations.pop(session_id, {"idToken": "", "type": "NoAuthorization"})
        trigger = "Authorized" if token["type"] != "NoAuthorization" else "ChargingStateChanged"
        remote_id = None
        if self._remote is not None and token["type"] == "NoAuthorization":  # EIM: the CSMS's remote start
            (token, remote_id), trigger = self._remote, "RemoteStart"
        self._remote, self._stop = None, None
        tid = self.new_id()
        self.store.start_transaction(tid, self.evse_id, self.connector_id, {"idToken": token})
        self.open = OpenTransaction(tid, session_id, "Charging", token, self.clock())
        self._queue("Started", trigger, self._reading(), context="Transaction.Begin", extra={"idToken": token},
                    remote_start_id=remote_id)

    # ------------------------------------------------------------------ the station's calls
    def remote_start(self, id_token: dict[str, Any], remote_start_id: int) -> None:
        """RequestStartTransaction: the next car that charges here without a contract charges on this token."""
        self._remote = (id_token, remote_start_id)

    def stop_requested(self, trigger: str, stopped: str) -> None:
        """The charger asked the car to stop (e.g. RequestStopTransaction): the end carries these reasons."""
        self._stop = (trigger, stopped)

    def triggered(self) -> None:
        """TriggerMessage(TransactionEvent): an Updated event now, with the meter."""
        if self.open is not None:
            self._queue("Updated", "Trigger", self._reading(), context="Trigger")

    def sample(self) -> None:
        """Send the periodic meter values when ``TxUpdatedInterval`` has passed (the shell calls this often)."""
        tx, now = self.open, self.clock()
        if tx is not None and tx.suspended_at is not None and now - tx.suspended_at >= self.suspended_timeout():
            self.end("EVConnectTimeout", "Timeout")  # the paused car did not come back
            return
        interval = self.updated_interval()
        if tx is None or interval <= 0 or now - tx.last_sample < interval:
            return
        tx.last_sample = now
        self._queue("Updated", "MeterValuePeriodic", self._reading(), context="Sample.Periodic")

    def end(self, trigger: str, stopped: str) -> None:
        if self.open is None:
            return
        self._queue("Ended", trigger, self._reading(), context="Transaction.End", stopped=stopped)
        self.open = None

    def _state(self, state: str, trigger: str) -> None:
        assert self.open is not None
        if self.open.charging_state != state:
            self.open.charging_state = state
            self._queue("Updated", trigger, None)

    # ------------------------------------------------------------------
    def _reading(self) -> MeterReading:
        reading = self.meter()
        if reading.soc is None and self._needs is not None and self._needs.soc is not None:
            reading = MeterReading(reading.imported_wh, reading.exported_wh, reading.power_w, self._needs.soc)
        return reading

    def _queue(self, event_type: str, trigger: str, reading: MeterReading | None, *, context: str = "",
               stopped: str | None = None, extra: dict[str, Any] | None = None,
               remote_start_id: int | None = None) -> None:
        tx = self.open
        assert tx is not None
        now = timestamp()
        info: dict[str, Any] = {"transactionId": tx.transaction_id, "chargingState": tx.charging_state}
        if stopped is not None:
            info["stoppedReason"] = stopped
        if remote_start_id is not None:
            info["remoteStartId"] = remote_start_id
        evse = {"id": self.evse_id, "connectorId": self.connector_id}
        payload: dict[str, Any] = {"eventType": event_type, "timestamp": now, "triggerReason": trigger,
                                   "transactionInfo": info, "evse": evse, **(extra or {})}
        if not self.online():
            payload["offline"] = True
        if reading is not None:
            payload["meterValue"] = [meter_value(reading, now, context)]
            self.store.update_transaction_state(tx.transaction_id, {
                "idToken": tx.id_token, "meter": [reading.imported_wh, reading.exported_wh]})
        self.store.transaction_event(tx.transaction_id, payload)


def end_interrupted_transactions(store: StationStore, *, offline: bool, reason: str = "PowerLoss") -> list[str]:
    """At start-up: a transaction the store still holds open was interrupted (crash, power cut, kill):
    end it with the last meter reading it recorded. Returns their IDs."""
    ended = []
    for record in store.open_transactions():
        now = timestamp()
        payload: dict[str, Any] = {
            "eventType": "Ended", "timestamp": now, "triggerReason": "AbnormalCondition",
            "transactionInfo": {"transactionId": record.transaction_id, "stoppedReason": reason},
            "evse": {"id": record.evse_id, "connectorId": record.connector_id}}
        meter = record.state.get("meter")
        if isinstance(meter, list) and len(meter) == 2:
            payload["meterValue"] = [meter_value(MeterReading(float(meter[0]), float(meter[1]), 0.0), now,
                                                 "Transaction.End")]
        if offline:
            payload["offline"] = True
        store.transaction_event(record.transaction_id, payload)
        log.warning("transaction %s on EVSE %d was interrupted: ended (%s)", record.transaction_id, record.evse_id,
                    reason)
        ended.append(record.transaction_id)
    return ended
