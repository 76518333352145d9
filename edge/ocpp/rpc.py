"""OCPP-J RPC (the JSON-over-WebSocket framing of OCPP 2.0.1 and 2.1), sans-IO.

:class:`OcppRpc` takes WebSocket text messages in (:meth:`OcppRpc.receive`) and returns events; what to
send comes out of :meth:`OcppRpc.outgoing`; time comes in as numbers (:meth:`OcppRpc.handle_timeout` at
:meth:`OcppRpc.deadline`). A trio shell over trio-websocket carries it (a later slice of issue 11).

Frames: CALL ``[2, id, action, payload]``, CALLRESULT ``[3, id, payload]``, CALLERROR
``[4, id, code, description, details]``; OCPP 2.1 adds CALLRESULTERROR ``[5, id, code, description,
details]`` (the answer to a CALLRESULT that could not be processed) and SEND ``[6, id, action, payload]``
(no answer). Rules kept here, once:
- at most one CALL of ours outstanding: more wait in a bounded queue (``max_queued``); an answer or
  ``call_timeout`` frees the slot;
- message IDs are strings of at most 36 characters;
- a frame from the peer that is not what the framing allows never raises: it is answered with the
  CALLERROR the specification gives (RpcFrameworkError for an unreadable frame, with message ID "-1" when
  none can be read; MessageTypeNotSupported; FormatViolation for a CALL of the wrong shape) and recorded
  as a :class:`ProtocolViolation` event; answers to CALLs we did not make are dropped (recorded);
- the peer's second CALL while its first is unanswered is refused with RpcFrameworkError.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CALL, CALLRESULT, CALLERROR, CALLRESULTERROR, SEND = 2, 3, 4, 5, 6
MAX_MESSAGE_ID = 36  # characters
UNKNOWN_ID = "-1"  # the message ID of an error about a frame whose own ID cannot be read

#: CALLERROR codes (OCPP-J 2.0.1 section 4.3, 2.1 adds none we send)
ERROR_CODES = frozenset({
    "FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported", "NotImplemented",
    "NotSupported", "OccurrenceConstraintViolation", "PropertyConstraintViolation", "ProtocolError",
    "RpcFrameworkError", "SecurityError", "TypeConstraintViolation"})


class RpcQueueFull(Exception):
    """More CALLs waiting than the queue holds: the caller decides what to drop (nothing is lost silently)."""


# ------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class IncomingCall:
    message_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IncomingSend:
    """OCPP 2.1 SEND: an unconfirmed message (no answer)."""

    message_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallAnswered:
    message_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallFailed:
    """Our CALL got a CALLERROR, or no answer within the call timeout (``code`` "Timeout")."""

    message_id: str
    action: str
    code: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResultRejected:
    """OCPP 2.1 CALLRESULTERROR: the peer could not process our CALLRESULT."""

    message_id: str
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """A frame the framing does not allow (answered where the specification says so)."""

    note: str


Event = IncomingCall | IncomingSend | CallAnswered | CallFailed | ResultRejected | ProtocolViolation


@dataclass
class _Pending:
    message_id: str
    action: str
    frame: str
    deadline: float | None = None


def _dump(frame: list[Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


@dataclass
class OcppRpc:
    """One OCPP-J connection's framing state (see the module docstring)."""

    call_timeout: float = 30.0
    max_queued: int = 1000
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())
    _queue: deque[_Pending] = field(default_factory=deque)
    _outstanding: _Pending | None = None
    _out: list[str] = field(default_factory=list)  # frames ready to send, in order
    _peer_call: str | None = None  # the peer's CALL we have not answered yet

    # ------------------------------------------------------------------ our side
    def call(self, action: str, payload: dict[str, Any], now: float) -> str:
        """Queue a CALL; returns its message ID. It goes out when no other CALL of ours is outstanding."""
        if len(self._queue) >= self.max_queued:
            raise RpcQueueFull(f"{len(self._queue)} CALLs already waiting")
        message_id = self.new_id()
        if not message_id or len(message_id) > MAX_MESSAGE_ID:
            raise ValueError(f"message ID {message_id!r} is not 1-{MAX_MESSAGE_ID} characters")
        self._queue.append(_Pending(message_id, action, _dump([CALL, message_id, action, payload])))
        self._advance(now)
        return message_id

    def send_unconfirmed(self, action: str, payload: dict[str, Any]) -> str:
        """OCPP 2.1 SEND (no answer expected; not bound by the one-CALL rule)."""
        message_id = self.new_id()
        self._out.append(_dump([SEND, message_id, action, payload]))
        return message_id

    def reply(self, message_id: str, payload: dict[str, Any]) -> None:
        """The CALLRESULT to the peer's CALL ``message_id``."""
        self._answered(message_id)
        self._out.append(_dump([CALLRESULT, message_id, payload]))

    def reply_error(self, message_id: str, code: str, description: str = "",
                    details: dict[str, Any] | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"{code!r} is no OCPP-J error code")
        self._answered(message_id)
        self._out.append(_dump([CALLERROR, message_id, code, description[:255], details or {}]))

    def outgoing(self) -> list[str]:
        """The frames to send now, in order (each one WebSocket text message)."""
        out, self._out = self._out, []
        return out

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def deadline(self) -> float | None:
        """When :meth:`handle_timeout` must run next (the outstanding CALL's timeout)."""
        return self._outstanding.deadline if self._outstanding else None

    def handle_timeout(self, now: float) -> list[Event]:
        pending = self._outstanding
        if pending is None or pending.deadline is None or now < pending.deadline:
            return []
        self._outstanding = None
        self._advance(now)
        return [CallFailed(pending.message_id, pending.action, "Timeout",
                           f"no answer within {self.call_timeout:g} s")]

    @property
    def queued(self) -> int:
        return len(self._queue) + (self._outstanding is not None)

    def _advance(self, now: float) -> None:
        if self._outstanding is None and self._queue:
            self._outstanding = self._queue.popleft()
            self._outstanding.deadline = now + self.call_timeout
            self._out.append(self._outstanding.frame)

    def _answered(self, message_id: str) -> None:
        if self._peer_call == message_id:
            self._peer_call = None

    # ------------------------------------------------------------------ the peer's side
    def receive(self, text: str | bytes, now: float) -> list[Event]:
        """One WebSocket message from the peer: the events it makes (answers to bad frames queued)."""
        try:
            frame = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            return self._violation(UNKNOWN_ID, "RpcFrameworkError", f"not JSON: {e}")
        if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[0], int) \
                or isinstance(frame[0], bool):
            message_id = frame[1] if isinstance(frame, list) and len(frame) > 1 and _valid_id(frame[1]) \
                else UNKNOWN_ID
            return self._violation(message_id, "RpcFrameworkError", "not an OCPP-J frame")
        kind, message_id = frame[0], frame[1]
        if not _valid_id(message_id):
            return self._violation(UNKNOWN_ID, "RpcFrameworkError", f"message ID {message_id!r} is not a "
                                                                    f"string of 1-{MAX_MESSAGE_ID} characters")
        if kind in (CALL, SEND):
            return self._receive_call(kind, frame, now)
        if kind == CALLRESULT:
            return self._receive_result(frame, now)
        if kind in (CALLERROR, CALLRESULTERROR):
            return self._receive_error(kind, frame, now)
        return self._violation(message_id, "MessageTypeNotSupported", f"message type {kind}")

    def _receive_call(self, kind: int, frame: list[Any], now: float) -> list[Event]:
        message_id = frame[1]
        if len(frame) != 4 or not isinstance(frame[2], str) or not frame[2] or not isinstance(frame[3], dict):
            if kind == SEND:  # nothing may answer a SEND
                return [ProtocolViolation(f"malformed SEND {message_id}")]
            return self._violation(message_id, "FormatViolation", "a CALL is [2, id, action, {payload}]")
        if kind == SEND:
            return [IncomingSend(message_id, frame[2], frame[3])]
        if self._peer_call is not None:  # the peer broke the one-CALL-at-a-time rule
            return self._violation(message_id, "RpcFrameworkError",
                                   f"CALL {self._peer_call} is still unanswered")
        self._peer_call = message_id
        return [IncomingCall(message_id, frame[2], frame[3])]

    def _receive_result(self, frame: list[Any], now: float) -> list[Event]:
        pending = self._take(frame[1], now)
        if pending is None:
            return [ProtocolViolation(f"CALLRESULT {frame[1]} answers no CALL of ours: dropped")]
        if len(frame) != 3 or not isinstance(frame[2], dict):
            return [CallFailed(pending.message_id, pending.action, "FormatViolation",
                               "the CALLRESULT is not [3, id, {payload}]")]
        return [CallAnswered(pending.message_id, pending.action, frame[2])]

    def _receive_error(self, kind: int, frame: list[Any], now: float) -> list[Event]:
        code = frame[2] if isinstance(frame[2], str) else "GenericError"
        description = frame[3] if len(frame) > 3 and isinstance(frame[3], str) else ""
        details = frame[4] if len(frame) > 4 and isinstance(frame[4], dict) else {}
        if kind == CALLRESULTERROR:
            return [ResultRejected(frame[1], code, description)]
        pending = self._take(frame[1], now)
        if pending is None:
            return [ProtocolViolation(f"CALLERROR {frame[1]} answers no CALL of ours: dropped")]
        return [CallFailed(pending.message_id, pending.action, code, description, details)]

    def _take(self, message_id: str, now: float) -> _Pending | None:
        pending = self._outstanding
        if pending is None or pending.message_id != message_id:
            return None
        self._outstanding = None
        self._advance(now)
        return pending

    def _violation(self, message_id: str, code: str, note: str) -> list[Event]:
        self._out.append(_dump([CALLERROR, message_id, code, note[:255], {}]))
        return [ProtocolViolation(f"{code}: {note}")]


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_MESSAGE_ID
