"""The OCPP charging station: what the CSMS is told and what it decides, for the EVSEs of one station.

:class:`OcppStation` holds the sans-IO parts (device model, durable store, boot rules, charging
profiles, one transaction recorder per EVSE) and answers the CSMS's CALLs in :meth:`OcppStation.handle_call`
(plain, testable without sockets). :meth:`OcppStation.run` is the trio shell: connect (security profile
1: Basic auth over ws/wss, 2: TLS + Basic auth, 3: mutual TLS with the station certificate), boot, then
heartbeats, status notifications, the durable queue, charging needs and profile re-evaluation, and
reconnect with the device model's back-off when the connection drops.

Every frame is checked against the official schemas of the negotiated version (:mod:`edge.ocpp.adapter`):
an invalid CALL from the CSMS is answered with the CALLERROR its fault names; an invalid payload of ours
is our bug: logged as an error and not sent (a queued message is discarded, a CALL result becomes an
InternalError CALLERROR).
"""

from __future__ import annotations

import base64
import logging
import math
import random
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edge.controller import (
    ChargingController,
    ChargingEvent,
    EnergyTransferStarted,
    NeedsReported,
    PowerCommand,
    ScheduleChosen,
    SessionEnded,
)
from edge.pki.ocsp import OcspError
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.store import CertificateStore, CertificateUse

from . import adapter
from .boot import BootState
from .bridge import EvseTransactions, MeterReading, end_interrupted_transactions, timestamp
from .certificates import StationCertificates
from .connection import OCPP_SUBPROTOCOLS, CallRefused, OcppCallFailed, OcppConnection, connect
from .device_model import DeviceModel, report_pages
from .pnc import AuthorizeRequest, CertificateRequest, OcppPlugAndCharge
from .smart_charging import ChargingProfiles, ProfileRejected
from .store import StationStore

log = logging.getLogger("edge.ocpp")

#: non-durable messages waiting for the connection (StatusNotification, NotifyReport...): the newest kept
MAX_PENDING = 256
#: how often the shell looks at meters, profiles and the offline fallback without other reasons (s)
TICK = 1.0


class InvalidOutgoing(Exception):
    """A payload of ours that the schema refuses: a bug here, never sent."""


@dataclass
class StationSettings:
    csms_url: str  # ws://host:port/path or wss://...; the station id is appended as the last path segment
    station_id: str
    state_dir: Path
    versions: tuple[str, ...] = OCPP_SUBPROTOCOLS
    security_profile: int = 1
    password: str | None = None  # Basic auth (profiles 1 and 2); the device model's BasicAuthPassword wins
    ca_file: Path | None = None  # trust for the CSMS's TLS certificate (profiles 2 and 3)
    cert_file: Path | None = None  # the station certificate and key (profile 3)
    key_file: Path | None = None
    model: str = "edge"
    vendor: str = "edge"
    serial: str | None = None
    firmware: str | None = None
    secc_id: str | None = None  # ISO15118Ctrlr.SeccId and the CN of the SECC certificate (default: station id)
    organization: str = "edge"  # O of the station's and the SECC's certificates
    country: str = "DE"  # C of the SECC certificate

    def url(self) -> str:
        return self.csms_url.rstrip("/") + "/" + self.station_id

    def ssl_context(self, csms_roots: list[x509.Certificate] | None = None,
                    station_certificate: Path | None = None) -> ssl.SSLContext | None:
        """TLS to the CSMS: its certificate checked against ``ca_file`` and the CSMS roots the CSMS installed
        (InstallCertificate); profile 3 presents the station certificate the CSMS signed (CertificateSigned)
        or else the configured one."""
        if not self.csms_url.startswith("wss://"):
            if self.security_profile >= 2:
                raise ValueError(f"security profile {self.security_profile} needs a wss:// CSMS URL")
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        for root in csms_roots or ():
            context.load_verify_locations(cadata=root.public_bytes(Encoding.PEM).decode())
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.security_profile == 3:
            if station_certificate is not None:
                context.load_cert_chain(str(station_certificate))
            elif self.cert_file and self.key_file:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            else:
                raise ValueError("security profile 3 needs the station certificate and key")
        return context


@dataclass
class EvseLink:
    """One EVSE as the station sees it: its controller (the seam to the V2G sessions), its meter and its
    maximum power (for composite schedules)."""

    evse_id: int
    controller: ChargingController
    meter: Callable[[], MeterReading]
    max_power_w: float = 22_000.0
    transactions: EvseTransactions | None = None
    status: str = "Available"  # ConnectorStatusEnumType
    reported_status: str | None = None  # what the CSMS was last told
    available: bool = True  # ChangeAvailability
    tx_started_at: datetime | None = None
    applied: PowerCommand | None = None  # the profile command last given to the controller
    applied_change: datetime | None = None


@dataclass
class OcppStation:
    settings: StationSettings
    evses: list[EvseLink]
    overrides: dict[str, str] = field(default_factory=dict)  # device model values from the configuration
    version: str = ""  # the negotiated subprotocol while connected
    connected_at: float | None = None
    offline_since: float | None = 0.0  # trio time the connection was lost (0: never connected yet)
    violations: int = 0
    bugs: int = 0  # exceptions of ours the connection loop survived (logged with their traceback)
    reset_requested: str | None = None
    boot_reason: str = "PowerUp"
    random: random.Random = field(default_factory=random.Random)
    frames: Callable[[str, str], None] | None = None  # every OCPP frame ("rx"|"tx", text): the daemon's traces

    def __post_init__(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = StationStore(self.settings.state_dir / "ocpp.sqlite")
        self.device = DeviceModel.standard(len(self.evses), model=self.settings.model, vendor=self.settings.vendor,
                                           identity=self.settings.station_id,
                                           secc_id=self.settings.secc_id or self.settings.station_id,
                                           organization=self.settings.organization, country=self.settings.country,
                                           overrides=self.overrides, stored=self.store.variables(),
                                           persist=self.store.set_variable)
        self.certificates = StationCertificates(CertificateStore(self.settings.state_dir / "pki"), self.device,
                                                lambda: datetime.now(UTC), identity=self.settings.station_id)
        self.signing: deque[dict[str, Any]] = deque(maxlen=4)  # SignCertificate requests triggered by the CSMS
        self.boot = BootState(self.settings.model, self.settings.vendor, self.settings.serial, self.settings.firmware,
                              heartbeat_interval=float(self.device.heartbeat_interval))
        self.device.on_change(self._variable_changed)
        self.device.update("SecurityCtrlr", "SecurityProfile", str(self.settings.security_profile))
        self.profiles = ChargingProfiles(negative_limit_discharges=lambda: self.device.negative_limit_is_discharge)
        self.pending: deque[tuple[str, dict[str, Any]]] = deque(maxlen=MAX_PENDING)
        self.sent: Counter[str] = Counter()  # messages the CSMS answered, by action
        # TransactionEvents delivered: transaction, type, seqNo, offline
        self.delivered_events: list[tuple[str, str, int, bool]] = []
        self.calls_received: Counter[str] = Counter()  # the CSMS's CALLs answered, by action
        self._wake = trio.Event()
        self._pnc_wake = trio.Event()
        self.pnc: OcppPlugAndCharge | None = None
        self._by_id = {e.evse_id: e for e in self.evses}
        end_interrupted_transactions(self.store, offline=True)
        self._restore_profiles()
        self.security_event("StartupOfTheDevice", "edge started")  # A04: queued, survives until delivered
        for evse in self.evses:
            evse.transactions = EvseTransactions(evse.evse_id, self.store, evse.meter, online=self.online,
                                                 clock=time.monotonic,
                                                 updated_interval=lambda: float(self.device.tx_updated_interval),
                                                 suspended_timeout=lambda: float(self.device.ev_connection_timeout))
            evse.controller.listeners.append(evse.transactions.on_event)
            evse.controller.listeners.append(lambda event, e=evse: self._on_charging_event(e, event))
            evse.controller.forecast = lambda horizon, e=evse: self._forecast(e, horizon)

    def _restore_profiles(self) -> None:
        """The profiles the CSMS installed before a restart (a TxProfile only while its transaction is open)."""
        open_transactions = {r.transaction_id for r in self.store.open_transactions()}
        for _, evse_id, transaction_id, wire in self.store.charging_profiles():
            if transaction_id is not None and transaction_id not in open_transactions:
                continue
            try:
                self.profiles.install(evse_id, wire, evse_ids={e.evse_id for e in self.evses},
                                      transaction_id=transaction_id)
            except (ProfileRejected, KeyError, TypeError, ValueError) as e:
                log.warning("stored charging profile %s dropped: %s", wire.get("id"), e)
        self._save_profiles()

    def _save_profiles(self) -> None:
        self.store.save_profiles([(p.id, p.evse_id, p.transaction_id, p.wire) for p in self.profiles.profiles.values()])

    def _variable_changed(self, change: Any) -> None:
        if change.key == "OCPPCommCtrlr/HeartbeatInterval":
            self.boot.heartbeat_interval = float(change.value)

    def close(self) -> None:
        self.store.close()

    def online(self) -> bool:
        return self.connected_at is not None and self.boot.status == "Accepted"

    def wake(self) -> None:
        self._wake.set()
        self._pnc_wake.set()

    def use_pnc(self, local: LocalPlugAndCharge) -> OcppPlugAndCharge:
        """Plug & Charge decided with the CSMS (C07): the PlugAndCharge the EVSEs' sessions must be given."""
        self.pnc = OcppPlugAndCharge(local, self.device, online=self.online, clock=time.monotonic, wake=self.wake)
        return self.pnc

    # ------------------------------------------------------------------ charging events -> OCPP
    def _on_charging_event(self, evse: EvseLink, event: ChargingEvent) -> None:
        if isinstance(event, NeedsReported):
            self.send_later("NotifyEVChargingNeeds", charging_needs(evse.evse_id, event.needs, self.version))
        elif isinstance(event, ScheduleChosen):  # K15: what the car plans within what it was offered
            periods = [{"startPeriod": int(start), "limit": round(power, 1)} for start, power in event.periods[:1024]]
            self.send_later("NotifyEVChargingSchedule", {
                "timeBase": timestamp(), "evseId": evse.evse_id,
                "chargingSchedule": {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": periods}})
        elif isinstance(event, EnergyTransferStarted):
            evse.tx_started_at = datetime.now(UTC)
            self._set_status(evse, "Occupied")
            self.apply_profiles(evse, force=True)
        elif isinstance(event, SessionEnded) and event.reason == "paused":
            self._set_status(evse, "Occupied")  # the car is still there, asleep
        elif isinstance(event, SessionEnded):
            evse.tx_started_at = None
            self.profiles.transaction_ended(evse.evse_id)
            self._save_profiles()
            evse.applied = None
            self._set_status(evse, "Available" if evse.available else "Unavailable")
        self.wake()

    def _set_status(self, evse: EvseLink, status: str) -> None:
        evse.status = status
        if self.online() and evse.reported_status != status:
            self._queue_status(evse)

    def _queue_status(self, evse: EvseLink) -> None:
        evse.reported_status = evse.status
        self.send_later("StatusNotification", {"timestamp": timestamp(), "connectorStatus": evse.status,
                                               "evseId": evse.evse_id, "connectorId": 1})

    def security_event(self, kind: str, info: str = "") -> None:
        """A04: a SecurityEventNotification, durable like the transaction events (kinds: the specification's
        security events list, e.g. StartupOfTheDevice, ResetOrReboot, InvalidCsmsCertificate)."""
        payload: dict[str, Any] = {"type": kind, "timestamp": timestamp()}
        if info:
            payload["techInfo"] = info[:255]
        self.store.enqueue("SecurityEventNotification", payload)
        self.wake()

    def send_later(self, action: str, payload: dict[str, Any]) -> None:
        """A message that need not survive a restart: sent once connected and booted (oldest dropped first
        beyond :data:`MAX_PENDING`)."""
        self.pending.append((action, payload))
        self.wake()

    # ------------------------------------------------------------------ smart charging -> controller
    def _transaction_id(self, evse: EvseLink) -> str | None:
        assert evse.transactions is not None
        return evse.transactions.open.transaction_id if evse.transactions.open else None

    def apply_profiles(self, evse: EvseLink, *, force: bool = False, now: datetime | None = None) -> None:
        """Give the EVSE's controller the command the profiles say now (and, offline for longer than
        V2XOfflineChargeOnlyAfter, without discharge); the controller is told only of a change."""
        now = now or datetime.now(UTC)
        if not force and evse.applied_change is not None and now < evse.applied_change and not self._offline_fallback():
            return
        command, change = self.profiles.command(evse.evse_id, now, transaction_id=self._transaction_id(evse),
                                                tx_start=evse.tx_started_at)
        if command is not None and command.min_w < 0 and self._offline_fallback():
            command = PowerCommand(max_w=max(command.max_w, 0.0))
        evse.applied_change = change
        if command != evse.applied:
            evse.applied = command
            if command is None:
                evse.controller.clear_command()
            else:
                evse.controller.set_command(command)
            log.info("EVSE %d: charging limit from the CSMS's profiles: %s", evse.evse_id, command or "none")

    def _forecast(self, evse: EvseLink, horizon: float) -> list[tuple[float, PowerCommand]]:
        """What the profiles will say over the next ``horizon`` s (the car's -2 schedule is built from it)."""
        commands = self.profiles.timeline(evse.evse_id, datetime.now(UTC), horizon,
                                          transaction_id=self._transaction_id(evse), tx_start=evse.tx_started_at,
                                          limit=self.device.max_schedule_entries)
        fallback = self._offline_fallback()
        out = []
        for offset, command in commands:
            command = command or evse.controller.limit
            if fallback and command.min_w < 0:
                command = PowerCommand(max_w=max(command.max_w, 0.0))
            out.append((offset, command))
        return out

    def _offline_fallback(self) -> bool:
        if self.offline_since is None:
            return False
        return trio.current_time() - self.offline_since >= self.device.offline_charge_only_after

    # ------------------------------------------------------------------ the CSMS's CALLs
    def handle_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The CALLRESULT payload for a schema-checked CALL, or CallRefused."""
        handler = getattr(self, "_on_" + action, None)
        if handler is None:
            raise CallRefused("NotSupported", f"{action} is not supported by this station")
        return handler(payload)

    def _on_GetVariables(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._limits("GetVariables", payload)
        return self.device.get_variables(payload)

    def _on_SetVariables(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._limits("SetVariables", payload)
        return self.device.set_variables(payload)

    def _limits(self, action: str, payload: dict[str, Any]) -> None:
        code = self.device.request_limit_error(action, payload)
        if code is not None:
            raise CallRefused(code, f"{action}: more than this station takes in one message")

    def _on_GetBaseReport(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            data = self.device.base_report(payload["reportBase"])
        except ValueError:
            return {"status": "NotSupported"}
        self._report(payload["requestId"], data)
        return {"status": "Accepted"}

    def _on_GetReport(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._limits("GetReport", payload)
        data = self.device.get_report(payload.get("componentCriteria"), payload.get("componentVariable"))
        if not data:
            return {"status": "EmptyResultSet"}
        self._report(payload["requestId"], data)
        return {"status": "Accepted"}

    def _report(self, request_id: int, data: list[dict[str, Any]]) -> None:
        for page in report_pages(data, self.device.items_per_message("GetReport"), request_id=request_id,
                                 generated_at=timestamp(), max_bytes=self.device.bytes_per_message("GetReport")):
            self.send_later("NotifyReport", page)

    # -- certificate management (A02/A03, M03-M05): edge.ocpp.certificates on the station's store
    def _on_InstallCertificate(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._with_security_events(self.certificates.install_certificate(payload))

    def _on_DeleteCertificate(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._with_security_events(self.certificates.delete_certificate(payload))

    def _on_GetInstalledCertificateIds(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.certificates.get_installed_certificate_ids(payload, version=self.version or "2.0.1")

    def _on_CertificateSigned(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._with_security_events(self.certificates.certificate_signed(payload))

    def _with_security_events(self, answer: dict[str, Any]) -> dict[str, Any]:
        for event in self.certificates.take_security_events():
            self.security_event(event.kind, event.tech_info or "")
        return answer

    def _on_Reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse_id = payload.get("evseId")
        if evse_id is not None:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest"}}
        busy = any(e.transactions and e.transactions.open for e in self.evses)
        kind = payload["type"]
        if kind == "OnIdle" and busy:
            self.reset_requested = "OnIdle"
            return {"status": "Scheduled"}
        self.reset_requested = kind
        self.wake()
        return {"status": "Accepted"}

    def _on_ChangeAvailability(self, payload: dict[str, Any]) -> dict[str, Any]:
        operative = payload["operationalStatus"] == "Operative"
        target = payload.get("evse")
        evses = self.evses if target is None or target.get("id", 0) == 0 else [self._by_id.get(target["id"])]
        if any(e is None for e in evses):
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        scheduled = False
        for evse in evses:
            assert evse is not None and evse.transactions is not None
            evse.available = operative
            if evse.transactions.open is not None:
                scheduled = True  # takes effect when the transaction ends
            else:
                self._set_status(evse, "Available" if operative else "Unavailable")
        return {"status": "Scheduled" if scheduled else "Accepted"}

    def _on_TriggerMessage(self, payload: dict[str, Any]) -> dict[str, Any]:
        what = payload["requestedMessage"]
        evse_id = (payload.get("evse") or {}).get("id")
        if evse_id is not None and evse_id not in self._by_id:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        targets = [self._by_id[evse_id]] if evse_id is not None else self.evses
        if what == "BootNotification":
            if self.boot.status == "Accepted":  # B01.FR.?: a triggered boot after Accepted is refused
                return {"status": "Rejected"}
            self.boot.next_boot_at = 0.0
        elif what == "Heartbeat":
            self.send_later("Heartbeat", {})
        elif what == "StatusNotification":
            for evse in targets:
                self._queue_status(evse)
        elif what == "TransactionEvent":
            for evse in targets:
                assert evse.transactions is not None
                if evse.transactions.open is not None:
                    evse.transactions.triggered()
        elif what in SIGN_TRIGGERS:
            try:
                self.signing.append(self.certificates.sign_request(SIGN_TRIGGERS[what]))
            except ValueError as e:
                return {"status": "Rejected", "statusInfo": {"reasonCode": "MissingDevModelInfo",
                                                             "additionalInfo": str(e)[:512]}}
        elif what == "MeterValues":
            for evse in targets:
                reading = evse.meter()
                from .bridge import meter_value
                self.send_later("MeterValues", {"evseId": evse.evse_id,
                                                "meterValue": [meter_value(reading, timestamp(), "Trigger")]})
        else:
            return {"status": "NotImplemented"}
        self.wake()
        return {"status": "Accepted"}

    def _on_RequestStartTransaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse = self._by_id.get(payload.get("evseId", self.evses[0].evse_id))
        if evse is None or not evse.available:
            return {"status": "Rejected"}
        assert evse.transactions is not None
        if evse.transactions.open is not None:
            return {"status": "Rejected", "transactionId": evse.transactions.open.transaction_id}
        if "chargingProfile" in payload:  # refused before anything is kept: no token waits for the next car
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedParam"}}
        evse.transactions.remote_start(payload["idToken"], payload["remoteStartId"])
        return {"status": "Accepted"}

    def _on_RequestStopTransaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        for evse in self.evses:
            if self._transaction_id(evse) == payload["transactionId"]:
                evse.controller.request_stop("the CSMS asked to stop (RequestStopTransaction)")
                assert evse.transactions is not None
                evse.transactions.stop_requested("RemoteStop", "Remote")
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    def _on_UnlockConnector(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse = self._by_id.get(payload["evseId"])
        if evse is None or payload["connectorId"] != 1:
            return {"status": "UnknownConnector"}
        if self._transaction_id(evse) is not None:
            return {"status": "OngoingAuthorizedTransaction"}
        return {"status": "Unlocked"}  # no cable lock on this hardware: nothing holds the cable

    def _on_DataTransfer(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "UnknownVendorId"}

    def _on_SetChargingProfile(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse_id = payload["evseId"]
        evse = self._by_id.get(evse_id)
        try:
            self.profiles.install(evse_id, payload["chargingProfile"], evse_ids=set(self._by_id),
                                  transaction_id=self._transaction_id(evse) if evse else None)
        except ProfileRejected as e:
            log.warning("SetChargingProfile refused: %s", e)
            return {"status": "Rejected", "statusInfo": {"reasonCode": e.reason_code, "additionalInfo": e.info[:512]}}
        self._save_profiles()
        for target in self.evses if evse_id == 0 else [evse]:
            assert target is not None
            self.apply_profiles(target, force=True)
        return {"status": "Accepted"}

    def _on_ClearChargingProfile(self, payload: dict[str, Any]) -> dict[str, Any]:
        found = self.profiles.clear(payload)
        self._save_profiles()
        for evse in self.evses:
            self.apply_profiles(evse, force=True)
        return {"status": "Accepted" if found else "Unknown"}

    def _on_GetChargingProfiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        found = self.profiles.report(payload)
        if not found:
            return {"status": "NoProfiles"}
        items = list(found.items())
        for n, (evse_id, profiles) in enumerate(items):
            self.send_later("ReportChargingProfiles", {
                "requestId": payload["requestId"], "chargingLimitSource": "CSO", "evseId": evse_id,
                "chargingProfile": profiles, "tbc": n < len(items) - 1})
        return {"status": "Accepted"}

    def _on_GetCompositeSchedule(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse_id = payload["evseId"]
        evse = self._by_id.get(evse_id)
        if evse is None and evse_id != 0:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        unit = payload.get("chargingRateUnit")
        default = evse.max_power_w if evse else sum(e.max_power_w for e in self.evses)
        start = datetime.now(UTC).replace(microsecond=0)
        schedule = self.profiles.composite(evse_id, start, payload["duration"], unit, default_w=default,
                                           transaction_id=self._transaction_id(evse) if evse else None,
                                           tx_start=evse.tx_started_at if evse else None)
        return {"status": "Accepted", "schedule": schedule}

    # ------------------------------------------------------------------ trio shell
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected to the CSMS (reconnecting with back-off), until cancelled; meanwhile, connected or
        not, sample the meters and keep the profiles' commands current."""
        self.offline_since = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._local_duties)
            task_status.started()
            await self._stay_connected()

    async def _local_duties(self) -> None:
        while True:
            self._tick()
            await trio.sleep(TICK)

    async def _stay_connected(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connected_once()
                attempt = 0
            except Exception as e:  # the connection failed or broke: reconnect
                why = connection_failure(e)
                if why is None:  # a bug of ours: logged loudly, and the charging points go on; reconnect
                    self.bugs += 1
                    log.exception("OCPP station bug: the connection is restarted")
                else:
                    log.warning("OCPP: connection to %s lost or refused: %s", self.settings.url(), why)
            self.connected_at = None
            if self.offline_since is None:
                self.offline_since = trio.current_time()
            self.boot.connection_lost()
            if self.reset_requested is not None:
                self._perform_reset()
            await trio.sleep(self._backoff(attempt))
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """The OCPP reconnect back-off: RetryBackOffWaitMinimum doubled per attempt, RetryBackOffRepeatTimes
        times at most, plus up to RetryBackOffRandomRange s of jitter."""
        wait = self.device.retry_back_off_wait_minimum * 2 ** min(attempt, self.device.retry_back_off_repeat_times)
        return wait + self.random.uniform(0, self.device.retry_back_off_random_range)

    def _headers(self) -> list[tuple[str, str]]:
        password = self.device.basic_auth_password or self.settings.password
        if self.settings.security_profile == 3 or not password:
            return []
        token = base64.b64encode(f"{self.settings.station_id}:{password}".encode()).decode()
        return [("Authorization", f"Basic {token}")]

    async def _connected_once(self) -> None:
        context = self.settings.ssl_context(self.certificates.store.roots(CertificateUse.CSMS_ROOT),
                                            self.certificates.station_certificate_file())
        async with connect(self.settings.url(), subprotocols=self.settings.versions,
                           ssl_context=context, headers=self._headers(),
                           call_timeout=float(self.device.message_timeout)) as conn:
            conn.observe = self.frames
            self.version = adapter.VERSIONS[conn.version]
            self.profiles.version = self.version
            self.connected_at, self.offline_since = trio.current_time(), None
            log.info("OCPP: connected to %s (%s)", self.settings.url(), conn.version)
            async with trio.open_nursery() as nursery:
                async def serve() -> None:
                    await conn.serve(self._answer)
                    nursery.cancel_scope.cancel()  # the CSMS closed: reconnect

                nursery.start_soon(serve)
                nursery.start_soon(self._talk, conn)
                nursery.start_soon(self._relay_authorizations, conn, nursery)

    async def _answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            adapter.validate(self.version, action, "request", payload)
        except adapter.UnknownAction:
            raise CallRefused("NotImplemented", f"{action} is not an OCPP {self.version} action") from None
        except adapter.SchemaViolation as e:
            self.violations += 1
            log.warning("OCPP: the CSMS's %s refused: %s", action, e)
            raise CallRefused(e.code, str(e)[:255]) from None
        if not self.boot.may_receive(action):
            raise CallRefused("SecurityError", "the CSMS has not accepted this station yet")
        result = self.handle_call(action, payload)
        self.calls_received[action] += 1
        try:
            adapter.validate(self.version, action, "response", result)
        except adapter.SchemaViolation as e:
            log.error("OCPP BUG: our %s response is invalid and was not sent: %s", action, e)
            raise CallRefused("InternalError", "the station could not build a valid answer") from None
        self.wake()
        return result

    async def call(self, conn: OcppConnection, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one CALL of ours, checked against the schema both ways."""
        try:
            adapter.validate(self.version, action, "request", payload)
        except (adapter.SchemaViolation, adapter.UnknownAction) as e:
            log.error("OCPP BUG: our %s is invalid and was not sent: %s", action, e)
            raise InvalidOutgoing(str(e)) from None
        result = await conn.call(action, payload)
        self.boot.heard(trio.current_time())
        self.sent[action] += 1
        if action == "TransactionEvent" and len(self.delivered_events) < 10_000:
            self.delivered_events.append((payload["transactionInfo"]["transactionId"], payload["eventType"],
                                          payload["seqNo"], bool(payload.get("offline"))))
        try:
            adapter.validate(self.version, action, "response", result)
        except adapter.SchemaViolation as e:
            self.violations += 1
            log.warning("OCPP: the CSMS's answer to %s is invalid (%s); taken as received", action, e)
        return result

    async def _talk(self, conn: OcppConnection) -> None:
        """Boot, then keep the CSMS told: statuses, the durable queue, pending messages, heartbeats."""
        await self._boot(conn)
        for evse in self.evses:
            self._queue_status(evse)
        while True:
            await self._flush_queue(conn)
            await self._flush_pending(conn)
            await self._certificate_duties(conn)
            now = trio.current_time()
            if self.boot.heartbeat_due(now):
                answer = await self.call(conn, "Heartbeat", {})
                log.debug("OCPP heartbeat: CSMS time %s", answer.get("currentTime"))
            if self.reset_requested is not None and self._reset_may_happen():
                await conn.ws.aclose()
                return
            self._wake = trio.Event()
            if self.pending or self.store.queued():
                continue
            with trio.move_on_at(min(self.boot.next_wakeup(), now + TICK)):
                await self._wake.wait()

    async def _relay_authorizations(self, conn: OcppConnection, nursery: trio.Nursery) -> None:
        """Plug & Charge: the sessions' Authorize requests go out at once, beside the queue (a car waits)."""
        while True:
            self._pnc_wake = trio.Event()
            if self.pnc is not None and self.online():
                for request in self.pnc.take_requests():
                    nursery.start_soon(self._authorize, conn, request)
                for certificate in self.pnc.take_certificate_requests():
                    nursery.start_soon(self._get_certificate, conn, certificate)
            with trio.move_on_after(TICK):  # also lets the core expire requests that waited too long
                await self._pnc_wake.wait()

    async def _authorize(self, conn: OcppConnection, request: AuthorizeRequest) -> None:
        assert self.pnc is not None
        await self._relay(conn, "Authorize", request.payload, request.key, self.pnc.answered, self.pnc.failed)

    async def _get_certificate(self, conn: OcppConnection, request: CertificateRequest) -> None:
        """M01/M02: the car's CertificateInstallationReq/UpdateReq to the CSMS, its answer back to the session."""
        assert self.pnc is not None
        await self._relay(conn, "Get15118EVCertificate", request.payload, request.key,
                          self.pnc.certificate_answered, self.pnc.certificate_failed)

    async def _relay(self, conn: OcppConnection, action: str, payload: dict[str, Any], key: str,
                     answered: Callable[[str, dict[str, Any]], bool], failed: Callable[[str, str], bool]) -> None:
        """A session's question to the CSMS: its answer, or why there is none, back to the sessions' side
        exactly once (also when cancelled with its connection: the car gets the offline decision now)."""
        try:
            answer = await self.call(conn, action, payload)
        except (OcppCallFailed, InvalidOutgoing) as e:
            failed(key, str(e))
            return
        except BaseException:  # cancelled with its connection
            failed(key, "the connection closed")
            raise
        answered(key, answer)

    async def _boot(self, conn: OcppConnection) -> None:
        while self.boot.status != "Accepted":
            now = trio.current_time()
            if self.boot.boot_due(now):
                try:
                    answer = await self.call(conn, "BootNotification", self.boot.boot_request(self.boot_reason))
                except OcppCallFailed as e:
                    log.warning("OCPP: BootNotification failed: %s", e)
                    self.boot.on_boot_failed(trio.current_time())
                else:
                    self.boot.on_boot_answer(answer, trio.current_time())
                    log.info("OCPP: boot %s (interval %s s)", answer.get("status"), answer.get("interval"))
            if self.boot.status == "Accepted":
                break
            # while Pending, the CSMS may still call us (handled by serve); triggered messages go out
            await self._flush_pending(conn, triggered_only=True)
            self._wake = trio.Event()
            with trio.move_on_at(self.boot.next_wakeup()):
                await self._wake.wait()
        # B01: the CSMS's interval becomes HeartbeatInterval
        self.device.update("OCPPCommCtrlr", "HeartbeatInterval", str(int(self.boot.heartbeat_interval)))

    async def _flush_queue(self, conn: OcppConnection) -> None:
        """The durable queue, oldest first, one at a time; delivered = answered (even with an invalid
        payload: the CSMS has it); refused (CALLERROR) = retried MessageAttempts times, then discarded."""
        while True:
            batch = self.store.next_messages(1)
            if not batch:
                return
            message = batch[0]
            try:
                await self.call(conn, message.action, message.payload)
            except InvalidOutgoing as e:
                self.store.discard(message.id, f"invalid: {e}")
                continue
            except OcppCallFailed as e:
                if e.failure.code in ("ConnectionClosed", "Timeout"):
                    raise trio.BrokenResourceError(str(e)) from None  # the connection is gone: reconnect
                attempts = self.store.attempt_failed(message.id)
                if attempts >= self.device.transaction_message_attempts:
                    self.store.discard(message.id, str(e))
                else:
                    await trio.sleep(self.device.transaction_message_attempt_interval)
                continue
            self.store.delivered(message.id)

    async def _certificate_duties(self, conn: OcppConnection) -> None:
        """SignCertificate requests (triggered, or due again: A02's retry rule) and fresh OCSP responses for the
        SECC chain (M06), each answer given to edge.ocpp.certificates."""
        while True:
            request = self.signing.popleft() if self.signing else self.certificates.due_sign_request()
            if request is None:
                break
            answer: dict[str, Any] | None = None
            try:
                answer = await self.call(conn, "SignCertificate", request)
            except OcppCallFailed as e:
                if e.failure.code in ("ConnectionClosed", "Timeout"):
                    raise trio.BrokenResourceError(str(e)) from None
            except InvalidOutgoing:
                pass
            self.certificates.sign_request_answered(request["certificateType"], answer)
        due = self.certificates.ocsp_due()
        if due is not None and due <= datetime.now(UTC):
            for request in self.certificates.ocsp_requests():
                try:
                    answer = await self.call(conn, "GetCertificateStatus", request)
                    self.certificates.ocsp_answer(request, answer)
                except (OcspError, InvalidOutgoing) as e:
                    log.warning("OCPP: OCSP status for the SECC chain not usable: %s", e)
                except OcppCallFailed as e:
                    if e.failure.code in ("ConnectionClosed", "Timeout"):
                        raise trio.BrokenResourceError(str(e)) from None
                    log.warning("OCPP: GetCertificateStatus refused: %s", e)

    async def _flush_pending(self, conn: OcppConnection, *, triggered_only: bool = False) -> None:
        while self.pending:
            action, payload = self.pending[0]
            if triggered_only and not self.boot.may_send(action, triggered=True):
                return
            self.pending.popleft()
            try:
                await self.call(conn, action, payload)
            except InvalidOutgoing:
                continue
            except OcppCallFailed as e:
                if e.failure.code in ("ConnectionClosed", "Timeout"):
                    self.pending.appendleft((action, payload))
                    raise trio.BrokenResourceError(str(e)) from None
                log.warning("OCPP: the CSMS refused %s: %s", action, e)

    def summary(self) -> str:
        """One line on what the CSMS got from this station (for ``edge simulate`` and logs)."""
        if not self.sent:
            return "nothing delivered (the CSMS was not reachable)"
        events = self.delivered_events
        parts = [f"OCPP {self.version}, boot {self.boot.status}"]
        if events:
            kinds = Counter(kind for _, kind, _, _ in events)
            numbers: dict[str, list[int]] = {}
            for tid, _, n, _ in events:
                numbers.setdefault(tid, []).append(n)
            contiguous = all(seq == list(range(len(seq))) for seq in numbers.values())
            parts.append(f"{len(numbers)} transaction(s): TransactionEvent {kinds['Started']} Started / "
                         f"{kinds['Updated']} Updated / {kinds['Ended']} Ended, seqNo "
                         f"{'contiguous from 0' if contiguous else 'WITH GAPS'}")
        others = ", ".join(f"{n} {a}" for a, n in sorted(self.sent.items())
                           if a not in ("TransactionEvent", "BootNotification"))
        if others:
            parts.append(others)
        if self.calls_received:
            parts.append("the CSMS sent " + ", ".join(f"{n} {a}" for a, n in sorted(self.calls_received.items())))
        left = self.store.queued()
        if left:
            parts.append(f"{left} still queued")
        return "; ".join(parts)

    async def drained(self, poll: float = 0.05) -> None:
        """Returns once the durable queue and the pending messages are sent (the caller bounds the wait)."""
        while self.store.queued() or self.pending:
            self.wake()
            await trio.sleep(poll)

    def _tick(self) -> None:
        for evse in self.evses:
            assert evse.transactions is not None
            evse.transactions.sample()
            self.apply_profiles(evse)

    def _reset_may_happen(self) -> bool:
        return self.reset_requested != "OnIdle" or not any(e.transactions and e.transactions.open for e in self.evses)

    def _perform_reset(self) -> None:
        """Reset: charging stops, transactions end (ImmediateReset), and the station boots again."""
        kind, self.reset_requested = self.reset_requested, None
        for evse in self.evses:
            assert evse.transactions is not None
            if evse.transactions.open is not None:
                evse.controller.request_stop(f"Reset {kind} from the CSMS")
                evse.transactions.end("ResetCommand", "ImmediateReset")
        self.boot_reason = "RemoteReset"
        self.security_event("ResetOrReboot", f"Reset {kind} requested by the CSMS")
        self.boot.status, self.boot.next_boot_at = None, 0.0
        log.warning("OCPP: reset (%s) performed: booting again", kind)


#: TriggerMessage's requests for a new certificate -> the certificate type edge.ocpp.certificates signs for
SIGN_TRIGGERS = {"SignChargingStationCertificate": "ChargingStationCertificate", "SignV2GCertificate": "V2GCertificate",
                 "SignV2G20Certificate": "V2G20Certificate"}

#: what ends a connection without being a bug here (trio-websocket's, by name: its classes move between versions)
_CONNECTION_ERRORS = ("ConnectionRejected", "HandshakeError", "NoCommonSubprotocol", "DisconnectionTimeout",
                      "ConnectionClosed", "ConnectionTimeout")


def connection_failure(error: BaseException) -> str | None:
    """Why the CSMS connection ended, when every exception in ``error`` (a group from the connection's
    nursery, or one) is a network or protocol failure; None when one of them is a bug."""
    leaves = error.exceptions if isinstance(error, BaseExceptionGroup) else (error,)
    reasons = []
    for leaf in leaves:
        if isinstance(leaf, BaseExceptionGroup):
            inner = connection_failure(leaf)
            if inner is None:
                return None
            reasons.append(inner)
        elif isinstance(leaf, OSError | trio.BrokenResourceError | trio.ClosedResourceError | ssl.SSLError
                        | OcppCallFailed) or type(leaf).__name__ in _CONNECTION_ERRORS:
            reasons.append(f"{type(leaf).__name__}: {leaf}".rstrip(": "))
        else:
            return None
    return "; ".join(reasons) or type(error).__name__


def charging_needs(evse_id: int, needs: Any, version: str) -> dict[str, Any]:
    """NotifyEVChargingNeeds from the car's needs (:class:`edge.controller.CarNeeds`)."""
    service = needs.service
    if version == "2.0.1":
        transfer = "DC" if service.startswith("DC") else "AC_three_phase"
    else:
        transfer = service if service in ("DC", "DC_BPT", "AC_BPT") else "AC_three_phase"
    body: dict[str, Any] = {"requestedEnergyTransfer": transfer}
    if needs.departure_time is not None:
        body["departureTime"] = timestamp(datetime.fromtimestamp(datetime.now(UTC).timestamp() + needs.departure_time,
                                                                 UTC))
    if version != "2.0.1":
        v2x: dict[str, Any] = {}
        if needs.max_charge_power is not None and math.isfinite(needs.max_charge_power):
            v2x["maxChargePower"] = float(needs.max_charge_power)
        if needs.max_discharge_power:
            v2x["maxDischargePower"] = float(needs.max_discharge_power)
        if needs.target_energy_wh is not None:
            v2x["evTargetEnergyRequest"] = float(needs.target_energy_wh)
        if needs.min_energy_wh is not None:
            v2x["evMinEnergyRequest"] = float(needs.min_energy_wh)
        if needs.max_energy_wh is not None:
            v2x["evMaxEnergyRequest"] = float(needs.max_energy_wh)
        if v2x:
            body["v2xChargingParameters"] = v2x
        body["controlMode"] = "DynamicControl" if needs.control_mode == "dynamic" else "ScheduledControl"
    return {"evseId": evse_id, "chargingNeeds": body}
