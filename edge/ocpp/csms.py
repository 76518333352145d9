"""``edge csms``: a small OCPP 2.0.1/2.1 Central System for tests and testbenches.

A test peer of our trio station, so deliberately independent of it: asyncio, a ``websockets`` server and the
``ocpp`` package's own ``ChargePoint`` (:mod:`ocpp.v21` or :mod:`ocpp.v201`, by the subprotocol negotiated).
Nothing here imports the station's OCPP modules.

* Subprotocols accepted in the order of ``--versions`` (default ``ocpp2.1,ocpp2.0.1``); a station offering
  none of them is refused (HTTP 400). The station id is the last segment of the request path.
* Security profiles: ``--password`` (HTTP Basic auth, user = the station id, else 401), ``--tls-cert/--tls-key``
  (wss) and ``--client-ca`` (mutual TLS: a client certificate chaining to it is required).
* Every frame in and out, parsed, is one JSON line of the log (``--log FILE``, default stdout), flushed at
  once: ``{"t", "dir": "in"|"out", "station", "version", "frame": [...]}`` (``"raw": text`` instead of
  ``"frame"`` when the text is no JSON array), plus ``{"event": ...}`` lines: connected, disconnected,
  refused (a handshake answered other than 101), step (a script step done), error (a defect on our side).
* Requests of the station are answered by ``@on`` handlers (:class:`CsmsHandlers`) that read the wire-form
  request (never the package's snake_case keyword arguments, which mangle OCPP 2.1 names such as
  ``setpoint_L2``), the package validating requests and answers against its JSON schemas.
* A script (:class:`CsmsScript`) sends CALLs exactly as written, raw text, or closes the WebSocket, a delay
  after the first occurrence of a trigger per station (``Connected``, ``BootAccepted``,
  ``TransactionEvent:Started|Updated|Ended``, or any action the station sends, such as ``Authorize``).

On startup one line ``{"event": "listening", "port": P, "url": "ws://HOST:P"}`` goes to stdout; SIGTERM or
SIGINT close every connection and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import signal
import ssl
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from ocpp import v21, v201
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult
from ocpp.routing import on
from ocpp.v21.enums import Action
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import AuthorizationStatusEnumType
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.headers import build_www_authenticate_basic, parse_authorization_basic
from websockets.http11 import Request, Response

#: the subprotocols this CSMS speaks, in its default order of preference
SUPPORTED_VERSIONS = ("ocpp2.1", "ocpp2.0.1")
#: script triggers besides the names of actions the station sends
SPECIAL_TRIGGERS = ("Connected", "BootAccepted", "TransactionEvent:Started", "TransactionEvent:Updated",
                    "TransactionEvent:Ended")
ACTIONS = frozenset(a.value for a in Action)  # OCPP 2.1 is a superset of 2.0.1's action names
ACTIONS_201 = frozenset(a.value for a in Action201)
AUTHORIZATION_STATUSES = frozenset(s.value for s in AuthorizationStatusEnumType)  # the same set in 2.1
DEFAULT_CALL_TIMEOUT = 30.0


class _WithoutOcppErrors(logging.Filter):
    """The package logs a traceback (with the whole JSON schema) for every request it answers with a CALLERROR;
    the CALLERROR is in the frame log already. Other exceptions (defects) keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], OCPPError))


#: the logger our ChargePoints give the package (its INFO lines, one per frame, are the frame log's job)
PACKAGE_LOG = logging.getLogger("ocpp.csms")
PACKAGE_LOG.addFilter(_WithoutOcppErrors())


def utc_now() -> str:
    """Now as ISO 8601 UTC with milliseconds and a Z (what OCPP dateTime fields carry)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def station_id_from_path(path: str) -> str:
    """The station id: the last non-empty segment of the request path, percent-decoded ("" when none)."""
    segments = [s for s in urllib.parse.urlsplit(path).path.split("/") if s]
    return urllib.parse.unquote(segments[-1]) if segments else ""


# --- configuration --------------------------------------------------------------------------------------------


class ScriptError(ValueError):
    """A script that cannot be run, with where in it the problem is."""


@dataclass(frozen=True)
class ScriptStep:
    """One thing the CSMS does ``delay`` seconds after the first ``after`` trigger of a station: a CALL of
    ``action`` with ``payload`` sent as written (wire form, not validated), ``raw`` text, or ``close``."""

    after: str
    delay: float = 0.0
    action: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None
    close: bool = False
    timeout: float = DEFAULT_CALL_TIMEOUT
    station: str | None = None  # only for this station id (None: every station)

    @property
    def kind(self) -> str:
        return "close" if self.close else "raw" if self.raw is not None else "call"

    def describe(self) -> dict[str, str]:
        """What the log says of the step."""
        return {"kind": self.kind, "action": self.action} if self.action else {"kind": self.kind}

    @classmethod
    def from_json(cls, data: Any, where: str) -> ScriptStep:
        if not isinstance(data, dict):
            raise ScriptError(f"{where}: a step is a JSON object, not {type(data).__name__}")
        unknown = set(data) - {"after", "delay", "action", "payload", "raw", "close", "timeout", "station"}
        if unknown:
            raise ScriptError(f"{where}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}")
        after = data.get("after")
        if not isinstance(after, str) or not (after in SPECIAL_TRIGGERS or after in ACTIONS):
            raise ScriptError(f"{where}: 'after' must be one of {', '.join(SPECIAL_TRIGGERS)} or the name of an "
                              f"action the station sends (e.g. Authorize), not {after!r}")
        delay = data.get("delay", 0.0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ScriptError(f"{where}: 'delay' must be a number of seconds >= 0, not {delay!r}")
        kinds = [k for k in ("action", "raw", "close") if k in data]
        if len(kinds) != 1:
            raise ScriptError(f"{where}: a step has exactly one of 'action' (with 'payload'), 'raw' or 'close', "
                              f"not {kinds or 'none'}")
        if "payload" in data and "action" not in data:
            raise ScriptError(f"{where}: 'payload' belongs to an 'action' step")
        if "timeout" in data and "action" not in data:
            raise ScriptError(f"{where}: 'timeout' (for the answer) belongs to an 'action' step")
        station = data.get("station")
        if station is not None and (not isinstance(station, str) or not station):
            raise ScriptError(f"{where}: 'station' must be a station id")
        step = cls(after=after, delay=float(delay), station=station)
        if "action" in data:
            action, payload, timeout = data["action"], data.get("payload", {}), data.get("timeout", step.timeout)
            if not isinstance(action, str) or not action:
                raise ScriptError(f"{where}: 'action' must be an action name such as SetChargingProfile")
            if not isinstance(payload, dict):
                raise ScriptError(f"{where}: 'payload' must be a JSON object (the wire-form camelCase payload)")
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise ScriptError(f"{where}: 'timeout' must be a positive number of seconds, not {timeout!r}")
            return cls(after=after, delay=float(delay), action=action, payload=payload, timeout=float(timeout),
                       station=station)
        if "raw" in data:
            if not isinstance(data["raw"], str):
                raise ScriptError(f"{where}: 'raw' must be a string (sent verbatim as one text frame)")
            return cls(after=after, delay=float(delay), raw=data["raw"], station=station)
        if data["close"] is not True:
            raise ScriptError(f"{where}: 'close' must be true")
        return cls(after=after, delay=float(delay), close=True, station=station)


@dataclass(frozen=True)
class CsmsScript:
    """What ``--script FILE`` holds: answers the CSMS gives (``exi_response`` for Get15118EVCertificate,
    ``ocsp_result`` for GetCertificateStatus) and steps it takes unasked."""

    steps: tuple[ScriptStep, ...] = ()
    exi_response: str | None = None
    ocsp_result: str | None = None

    @classmethod
    def from_json(cls, data: Any, source: str = "script") -> CsmsScript:
        if not isinstance(data, dict):
            raise ScriptError(f"{source}: a script is a JSON object, not {type(data).__name__}")
        unknown = set(data) - {"steps", "exi_response", "ocsp_result"}
        if unknown:
            raise ScriptError(f"{source}: unknown key(s) {', '.join(sorted(map(repr, unknown)))} "
                              "(expected steps, exi_response, ocsp_result)")
        for key in ("exi_response", "ocsp_result"):
            if key in data and not isinstance(data[key], str):
                raise ScriptError(f"{source}: {key!r} must be a string (base64, as it goes on the wire)")
        steps = data.get("steps", [])
        if not isinstance(steps, list):
            raise ScriptError(f"{source}: 'steps' must be a list")
        return cls(steps=tuple(ScriptStep.from_json(s, f"{source}: steps[{i}]") for i, s in enumerate(steps)),
                   exi_response=data.get("exi_response"), ocsp_result=data.get("ocsp_result"))

    @classmethod
    def load(cls, path: Path) -> CsmsScript:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ScriptError(f"script {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ScriptError(f"script {path}: not JSON: {e}") from None
        return cls.from_json(data, f"script {path}")

    def steps_after(self, trigger: str, station: str | None = None) -> list[ScriptStep]:
        return [s for s in self.steps if s.after == trigger and (s.station is None or s.station == station)]


@dataclass(frozen=True)
class BootPolicy:
    """How BootNotifications are answered: ``accepted``, ``pending:N`` (the first N of a station Pending,
    then Accepted) or ``rejected``; ``interval`` for Accepted (1 s for Pending and Rejected)."""

    mode: str = "accepted"
    pending: int = 0
    interval: int = 300

    @classmethod
    def parse(cls, text: str, interval: int = 300) -> BootPolicy:
        if interval < 0:
            raise ValueError(f"--interval must be >= 0 seconds, not {interval}")
        mode, _, count = text.partition(":")
        if mode in ("accepted", "rejected") and not count:
            return cls(mode, 0, interval)
        if mode == "pending" and count.isdigit():
            return cls(mode, int(count), interval)
        raise ValueError(f"--boot must be accepted, pending:N or rejected, not {text!r}")

    def answer(self, earlier_boots: int) -> tuple[str, int]:
        """(status, interval) for a station's BootNotification after ``earlier_boots`` others."""
        if self.mode == "rejected":
            return "Rejected", 1
        if self.mode == "pending" and earlier_boots < self.pending:
            return "Pending", 1
        return "Accepted", self.interval


@dataclass(frozen=True)
class AuthorizePolicy:
    """The idTokenInfo status of an Authorize: one for every token, or per token from a JSON file
    (``{"idToken string": "Accepted"|"Blocked"|...}``; tokens not in it are Unknown)."""

    status: str = "Accepted"
    tokens: Mapping[str, str] | None = None

    @classmethod
    def parse(cls, text: str) -> AuthorizePolicy:
        if text == "accepted":
            return cls("Accepted")
        if text == "invalid":
            return cls("Invalid")
        path = Path(text)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"--authorize is accepted, invalid or a JSON file: {text}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"--authorize {text}: not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"--authorize {text}: expected an object mapping idToken to status")
        for token, status in data.items():
            if status not in AUTHORIZATION_STATUSES:
                raise ValueError(f"--authorize {text}: {token!r}: {status!r} is not an authorization status "
                                 f"({', '.join(sorted(AUTHORIZATION_STATUSES))})")
        return cls("Unknown", dict(data))

    def status_for(self, id_token: str | None) -> str:
        if self.tokens is None:
            return self.status
        return self.tokens.get(id_token or "", self.status)


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context (TLS 1.2+) presenting ``cert``; with ``client_ca`` a client certificate chaining to it
    is required (security profile 3)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


@dataclass(frozen=True)
class CsmsConfig:
    host: str = "127.0.0.1"
    port: int = 0
    versions: tuple[str, ...] = SUPPORTED_VERSIONS
    boot: BootPolicy = BootPolicy()
    authorize: AuthorizePolicy = AuthorizePolicy()
    script: CsmsScript = CsmsScript()
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CsmsConfig:
        """The configuration ``edge csms`` options describe; ValueError (ScriptError) for ones that do not fit."""
        versions = tuple(v.strip() for v in args.versions.split(",") if v.strip())
        wrong = [v for v in versions if v not in SUPPORTED_VERSIONS]
        if not versions or wrong or len(set(versions)) != len(versions):
            raise ValueError(f"--versions is a list from {','.join(SUPPORTED_VERSIONS)}, not {args.versions!r}")
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if args.client_ca is not None and args.tls_cert is None:
            raise ValueError("--client-ca (mutual TLS) needs --tls-cert and --tls-key")
        context = None
        if args.tls_cert is not None:
            try:
                context = tls_context(args.tls_cert, args.tls_key, args.client_ca)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"TLS files: {e}") from None
        return cls(host=args.host, port=args.port, versions=versions, boot=BootPolicy.parse(args.boot, args.interval),
                   authorize=AuthorizePolicy.parse(args.authorize),
                   script=CsmsScript.load(args.script) if args.script else CsmsScript(),
                   password=args.password, ssl_context=context)


# --- the log --------------------------------------------------------------------------------------------------


class JsonLog:
    """JSON lines, each flushed at once (tests read the log while the CSMS runs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def parse_frame(message: str | bytes) -> list[Any] | None:
    """The OCPP-J array a text frame holds, or None when it holds no JSON array."""
    try:
        frame = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return None
    return frame if isinstance(frame, list) else None


class Verdict(NamedTuple):
    """What to do with an incoming frame before the ``ocpp`` package sees it."""

    route: bool  # hand it to ChargePoint.route_message
    answer: str | None = None  # a CALLERROR to send instead


def check_frame(frame: list[Any] | None, version: str) -> Verdict:
    """Frames the package cannot unpack (it logs a traceback and answers nothing) answered here instead:
    no JSON array or no message type: RpcFrameworkError with id "-1"; a CALL without id or action:
    RpcFrameworkError; one whose payload is no object: FormatViolation; an unknown message type:
    MessageTypeNotSupported. OCPP 2.1's CALLRESULTERROR (5) and SEND (6) are never answered; malformed
    CALLRESULTs and CALLERRORs neither."""

    def error(unique_id: Any, code: str, description: str) -> Verdict:
        return Verdict(False, CallError(unique_id if isinstance(unique_id, str) else "-1", code, description,
                                        {}).to_json())

    if not frame or isinstance(frame[0], bool) or not isinstance(frame[0], int):
        return error(None, "RpcFrameworkError", "not an OCPP-J message (a JSON array with a message type)")
    unique_id = frame[1] if len(frame) > 1 else None
    match frame[0]:
        case 2:
            if len(frame) != 4 or not isinstance(unique_id, str) or not isinstance(frame[2], str):
                return error(unique_id, "RpcFrameworkError", "a CALL is [2, messageId, action, {payload}]")
            if not isinstance(frame[3], dict):
                return error(unique_id, "FormatViolation", "the payload of a CALL is a JSON object")
            return Verdict(True)
        case 3 | 4:
            well_formed = isinstance(unique_id, str) and len(frame) == (3 if frame[0] == 3 else 5)
            return Verdict(well_formed)
        case 5 | 6 if version == "ocpp2.1":
            return Verdict(False)
    return error(unique_id, "MessageTypeNotSupported", f"message type {frame[0]!r} is not supported")


# --- one connection -------------------------------------------------------------------------------------------


@dataclass
class StationState:
    """What the CSMS remembers of a station across its connections."""

    boots: int = 0
    fired: set[str] = field(default_factory=set)  # triggers seen (each fires its steps once)


class CsmsHandlers:
    """The CSMS side of a ChargePoint: hooks on every frame and one ``@on`` handler per request answered.

    Mixed in before ``ocpp.v21.ChargePoint`` or ``ocpp.v201.ChargePoint`` (:data:`CHARGE_POINTS`); the
    handlers build the answer dataclasses of that version (``self._call_result``). The action names come
    from :class:`ocpp.v21.enums.Action`: its values are 2.0.1's too, while the member names differ
    (``get15118_ev_certificate`` here, ``get_15118_ev_certificate`` in v201)."""

    _call_result: Any
    _call_lock: asyncio.Lock
    route_map: dict[str, Any]

    def __init__(self, link: StationLink, connection: ServerConnection) -> None:
        super().__init__(link.station, connection, response_timeout=DEFAULT_CALL_TIMEOUT,  # type: ignore[call-arg]
                         logger=PACKAGE_LOG)
        self.link = link
        self.request: dict[str, Any] = {}  # the wire-form payload of the CALL being answered
        self._answering: str | None = None  # its message id
        self._answered = False  # a CALLRESULT went out for it

    # frames in and out

    async def route_message(self, raw_msg: str | bytes) -> None:
        frame = self.link.log_frame("in", raw_msg)
        verdict = check_frame(frame, self.link.version)
        if verdict.answer is not None:
            await self._send(verdict.answer)
        if not verdict.route:
            return
        assert frame is not None
        if frame[0] != 2:
            await super().route_message(raw_msg)  # type: ignore[misc]
            return
        unique_id, action, self.request = frame[1], frame[2], frame[3]
        self._answering, self._answered = unique_id, False
        if action not in self.route_map:  # the package answers nothing at all for OCPP 2.1 (its _raise_key_error)
            known = action in (ACTIONS if self.link.version == "ocpp2.1" else ACTIONS_201)
            code = "NotImplemented" if known else "NotSupported"
            await self._send(CallError(unique_id, code, f"no handler for {action}", {}).to_json())
            return
        try:
            await super().route_message(raw_msg)  # type: ignore[misc]
        except ConnectionClosed:
            raise
        except Exception as e:  # a defect of ours or the package's: answer, log, keep the connection
            self.link.log_event("error", where=f"answering {action}", error=repr(e))
            if not self._answered:
                await self._send(CallError(unique_id, "InternalError", repr(e)[:200], {}).to_json())
        finally:
            self._answering = None
        if self._answered:
            self.link.answered(action, self.request)

    async def _send(self, message: str) -> None:
        frame = self.link.log_frame("out", message)
        if frame is not None and len(frame) > 1 and frame[0] == 3 and frame[1] == self._answering:
            self._answered = True
        await super()._send(message)  # type: ignore[misc]

    async def call_as_written(self, unique_id: str, text: str, timeout: float) -> CallResult | CallError | None:
        """Send one CALL frame as it is and wait for its answer (None: none within ``timeout``), one CALL of
        ours at a time as ``ChargePoint.call`` does."""
        async with self._call_lock:
            await self._send(text)
            try:
                return await self._get_specific_response(unique_id, timeout)  # type: ignore[attr-defined]
            except TimeoutError:
                return None

    # the handlers (keyword arguments ignored: they are the package's snake_case renaming of the payload)

    @on(Action.boot_notification)
    def on_boot_notification(self, **_: Any) -> Any:
        state = self.link.state
        status, interval = self.link.config.boot.answer(state.boots)
        state.boots += 1
        self.link.boot_status = status
        return self._call_result.BootNotification(current_time=utc_now(), interval=interval, status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return self._call_result.Heartbeat(current_time=utc_now())

    @on(Action.status_notification)
    def on_status_notification(self, **_: Any) -> Any:
        return self._call_result.StatusNotification()

    @on(Action.notify_event)
    def on_notify_event(self, **_: Any) -> Any:
        return self._call_result.NotifyEvent()

    @on(Action.security_event_notification)
    def on_security_event_notification(self, **_: Any) -> Any:
        return self._call_result.SecurityEventNotification()

    @on(Action.notify_report)
    def on_notify_report(self, **_: Any) -> Any:
        return self._call_result.NotifyReport()

    @on(Action.transaction_event)
    def on_transaction_event(self, **_: Any) -> Any:
        if "idToken" in self.request:
            return self._call_result.TransactionEvent(id_token_info={"status": "Accepted"})
        return self._call_result.TransactionEvent()

    @on(Action.authorize)
    def on_authorize(self, **_: Any) -> Any:
        id_token = self.request.get("idToken")
        token = id_token.get("idToken") if isinstance(id_token, dict) else None
        status = self.link.config.authorize.status_for(token)
        certificate = "Accepted" if "iso15118CertificateHashData" in self.request else None
        return self._call_result.Authorize(id_token_info={"status": status}, certificate_status=certificate)

    @on(Action.notify_ev_charging_needs)
    def on_notify_ev_charging_needs(self, **_: Any) -> Any:
        return self._call_result.NotifyEVChargingNeeds(status="Accepted")

    @on(Action.notify_ev_charging_schedule)
    def on_notify_ev_charging_schedule(self, **_: Any) -> Any:
        return self._call_result.NotifyEVChargingSchedule(status="Accepted")

    @on(Action.get15118_ev_certificate)
    def on_get_15118_ev_certificate(self, **_: Any) -> Any:
        exi = self.link.config.script.exi_response
        if exi is None:
            return self._call_result.Get15118EVCertificate(status="Failed", exi_response="")
        return self._call_result.Get15118EVCertificate(status="Accepted", exi_response=exi)

    @on(Action.get_certificate_status)
    def on_get_certificate_status(self, **_: Any) -> Any:
        ocsp = self.link.config.script.ocsp_result
        if ocsp is None:
            return self._call_result.GetCertificateStatus(status="Failed")
        return self._call_result.GetCertificateStatus(status="Accepted", ocsp_result=ocsp)

    @on(Action.sign_certificate)
    def on_sign_certificate(self, **_: Any) -> Any:
        return self._call_result.SignCertificate(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any) -> Any:
        return self._call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> Any:
        return self._call_result.MeterValues()

    @on(Action.notify_charging_limit)
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return self._call_result.NotifyChargingLimit()

    @on(Action.report_charging_profiles)
    def on_report_charging_profiles(self, **_: Any) -> Any:
        return self._call_result.ReportChargingProfiles()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return self._call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status_notification(self, **_: Any) -> Any:
        return self._call_result.LogStatusNotification()


class CsmsChargePoint21(CsmsHandlers, v21.ChargePoint):
    pass


class CsmsChargePoint201(CsmsHandlers, v201.ChargePoint):
    pass


CHARGE_POINTS: dict[str, type[CsmsHandlers]] = {"ocpp2.1": CsmsChargePoint21, "ocpp2.0.1": CsmsChargePoint201}


class StationLink:
    """One station's WebSocket connection: its ChargePoint, the log lines it writes, its script steps."""

    def __init__(self, connection: ServerConnection, station: str, version: str, config: CsmsConfig,
                 state: StationState, log: JsonLog) -> None:
        self.connection, self.station, self.version = connection, station, version
        self.config, self.state, self.log = config, state, log
        self.boot_status: str | None = None  # of the last BootNotification answered
        self.charge_point = CHARGE_POINTS[version](self, connection)
        self._steps: set[asyncio.Task[None]] = set()

    def log_frame(self, direction: str, message: str | bytes) -> list[Any] | None:
        frame = parse_frame(message)
        record: dict[str, Any] = {"t": time.time(), "dir": direction, "station": self.station,
                                  "version": self.version}
        if frame is not None:
            record["frame"] = frame
        else:
            record["raw"] = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        self.log.write(record)
        return frame

    def log_event(self, event: str, **details: Any) -> None:
        self.log.write({"t": time.time(), "event": event, "station": self.station, "version": self.version,
                        **details})

    async def run(self) -> None:
        self.log_event("connected")
        try:
            self.fire("Connected")
            await self.charge_point.start()  # type: ignore[attr-defined]
        except ConnectionClosed:
            pass
        finally:
            for task in list(self._steps):
                task.cancel()
            self.log_event("disconnected", code=self.connection.close_code, reason=self.connection.close_reason)

    def answered(self, action: str, request: dict[str, Any]) -> None:
        """After a CALLRESULT to the station's ``action``: the triggers it makes."""
        if action == "BootNotification" and self.boot_status == "Accepted":
            self.fire("BootAccepted")
        if action == "TransactionEvent":
            self.fire(f"TransactionEvent:{request.get('eventType')}")
        self.fire(action)

    def fire(self, trigger: str) -> None:
        """The first ``trigger`` of this station starts its steps, in the script's order."""
        if trigger in self.state.fired:
            return
        self.state.fired.add(trigger)
        steps = self.config.script.steps_after(trigger, self.station)
        if steps:
            task = asyncio.get_running_loop().create_task(self._run_steps(trigger, steps))
            self._steps.add(task)
            task.add_done_callback(self._steps.discard)

    async def _run_steps(self, trigger: str, steps: list[ScriptStep]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, step in enumerate(steps):
            try:
                await asyncio.sleep(max(0.0, start + step.delay - loop.time()))
                await self._perform(trigger, step)
            except asyncio.CancelledError:  # the connection closed (a close step's own: expected, not logged)
                if not step.close:
                    self.log_event("step", after=trigger, **step.describe(), result="cancelled",
                                   skipped=len(steps) - index - 1)
                raise
            except ConnectionClosed:
                self.log_event("step", after=trigger, **step.describe(), result="disconnected")
                return

    async def _perform(self, trigger: str, step: ScriptStep) -> None:
        if step.close:
            self.log_event("step", after=trigger, kind="close", result="closing")
            await self.connection.close()
            return
        if step.raw is not None:
            await self.charge_point._send(step.raw)
            self.log_event("step", after=trigger, kind="raw", result="sent")
            return
        assert step.action is not None
        unique_id = str(uuid.uuid4())
        text = Call(unique_id, step.action, step.payload).to_json()
        answer = await self.charge_point.call_as_written(unique_id, text, step.timeout)
        details: dict[str, Any]
        if answer is None:
            details = {"result": "timeout"}
        elif isinstance(answer, CallError):
            details = {"result": "CALLERROR", "error_code": answer.error_code}
        else:
            details = {"result": "CALLRESULT", "payload": answer.payload}
        self.log_event("step", after=trigger, **step.describe(), unique_id=unique_id, **details)


# --- the server -----------------------------------------------------------------------------------------------


class Csms:
    """The WebSocket server: the handshake's checks, one :class:`StationLink` per connection."""

    def __init__(self, config: CsmsConfig, log: JsonLog) -> None:
        self.config, self.log = config, log
        self.stations: dict[str, StationState] = {}

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        station = station_id_from_path(request.path)
        if not station:
            return connection.respond(HTTPStatus.NOT_FOUND, "no station id in the path (ws://host:port/ID)\n")
        if self.config.password is None:
            return None
        try:
            user, password = parse_authorization_basic(request.headers["Authorization"])
        except (KeyError, InvalidHeader):
            user = password = None
        if user != station or password is None or not hmac.compare_digest(
                password.encode("utf-8", "surrogateescape"), self.config.password.encode("utf-8", "surrogateescape")):
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "station id and password required (Basic)\n")
            response.headers["WWW-Authenticate"] = build_www_authenticate_basic("edge csms")
            return response
        return None

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS:
            self.log.write({"t": time.time(), "event": "refused", "station": station_id_from_path(request.path),
                            "status": response.status_code, "reason": response.body.decode("utf-8", "replace")
                            .strip(), "offered": request.headers.get("Sec-WebSocket-Protocol")})

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        station = station_id_from_path(connection.request.path)
        version = connection.subprotocol
        if version not in CHARGE_POINTS:  # the handshake refuses a station offering none of ours
            await connection.close(1002, "no OCPP subprotocol")
            return
        state = self.stations.setdefault(station, StationState())
        await StationLink(connection, station, version, self.config, state, self.log).run()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Server]:
        async with serve(self._handle, self.config.host, self.config.port, subprotocols=list(self.config.versions),
                         process_request=self._process_request, process_response=self._process_response,
                         ssl=self.config.ssl_context, compression=None) as server:
            yield server

    async def run_until(self, stop: asyncio.Event, announce: Callable[[Server], None]) -> None:
        async with self.serving() as server:
            announce(server)
            await stop.wait()
            server.close()
            await server.wait_closed()


def _announce(config: CsmsConfig) -> Callable[[Server], None]:
    def announce(server: Server) -> None:
        port = next(iter(server.sockets)).getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        scheme = "wss" if config.ssl_context else "ws"
        sys.stdout.write(json.dumps({"event": "listening", "port": port, "url": f"{scheme}://{host}:{port}"}) + "\n")
        sys.stdout.flush()

    return announce


async def serve_until_signal(config: CsmsConfig, log: JsonLog) -> None:
    """Serve until SIGTERM or SIGINT, then close every connection."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Csms(config, log).run_until(stop, _announce(config))


def main(args: argparse.Namespace) -> int:
    """``edge csms``: exit 0 after SIGTERM/SIGINT, 2 for options that do not fit or a port in use."""
    try:
        config = CsmsConfig.from_args(args)
    except ValueError as e:
        print(f"edge csms: {e}", file=sys.stderr)
        return 2
    try:
        stream = args.log.open("a", encoding="utf-8") if args.log else sys.stdout
    except OSError as e:
        print(f"edge csms: --log {args.log}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_until_signal(config, JsonLog(stream)))
    except OSError as e:  # the address is in use or not ours
        print(f"edge csms: cannot listen on {config.host}:{config.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    finally:
        if stream is not sys.stdout:
            stream.close()
    return 0
