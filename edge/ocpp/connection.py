"""The trio shell of one OCPP-J connection: a WebSocket (trio-websocket) carrying :class:`~edge.ocpp.rpc.OcppRpc`.

The station offers the OCPP subprotocols it speaks (``ocpp2.1``, ``ocpp2.0.1`` by default) and works in
the one the CSMS picks (:attr:`OcppConnection.version`); a CSMS that picks none is refused. The CSMS's
CALLs go to a handler (``await handler(action, payload)`` returns the CALLRESULT payload; raising
:class:`CallRefused` answers a CALLERROR; any other exception is our bug: logged with its traceback,
answered InternalError, and the connection stays up). Our CALLs are ``await connection.call(action,
payload)``: one outstanding at a time (the core queues), a CALLERROR, the call timeout or the
connection closing raise :class:`OcppCallFailed`. Frames the peer gets wrong are answered by the core
and logged, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from .rpc import CallAnswered, CallFailed, Event, IncomingCall, IncomingSend, OcppRpc, ProtocolViolation

log = logging.getLogger("edge.ocpp")

#: what the station offers, in order of preference (the CSMS picks)
OCPP_SUBPROTOCOLS = ("ocpp2.1", "ocpp2.0.1")

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class CallRefused(Exception):
    """A handler's refusal of the CSMS's CALL, answered as a CALLERROR with ``code``."""

    def __init__(self, code: str, description: str = "") -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description = code, description


class OcppCallFailed(Exception):
    """Our CALL was answered with a CALLERROR, or not at all within the call timeout."""

    def __init__(self, failure: CallFailed) -> None:
        super().__init__(f"{failure.action} {failure.message_id}: {failure.code} {failure.description}".strip())
        self.failure = failure


class NoCommonSubprotocol(Exception):
    """The CSMS accepted the WebSocket without picking one of the OCPP versions we offered."""


@dataclass
class OcppConnection:
    ws: WebSocketConnection
    rpc: OcppRpc = field(default_factory=OcppRpc)
    version: str = ""
    violations: int = 0  # frames from the CSMS the framing does not allow
    observe: Callable[[str, str], None] | None = None  # every frame as it crosses: ("rx"|"tx", text) (traces)
    _waiting: dict[str, trio.MemorySendChannel[Event]] = field(default_factory=dict)
    _wake: trio.Event = field(default_factory=trio.Event)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One CALL and its CALLRESULT payload (OcppCallFailed on a CALLERROR or the call timeout)."""
        send, receive = trio.open_memory_channel[Event](1)
        message_id = self.rpc.call(action, payload, trio.current_time())
        self._waiting[message_id] = send
        self._kick()
        try:
            event = await receive.receive()
        finally:
            self._waiting.pop(message_id, None)
        if isinstance(event, CallFailed):
            raise OcppCallFailed(event)
        assert isinstance(event, CallAnswered)
        return event.payload

    async def serve(self, handler: Handler) -> None:
        """Read frames, answer the CSMS's CALLs, deliver answers and time out our CALLs, until the
        connection closes (returns) or the caller cancels."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            try:
                while True:
                    try:
                        text = await self.ws.get_message()
                    except ConnectionClosed as e:
                        self._fail_waiting(f"connection closed: {e.reason}")
                        return
                    if self.observe is not None:
                        self.observe("rx", text if isinstance(text, str) else repr(text))
                    for event in self.rpc.receive(text, trio.current_time()):
                        self._dispatch(event, handler, nursery)
                    self._kick()
            finally:
                nursery.cancel_scope.cancel()

    def _fail_waiting(self, why: str) -> None:
        """The connection is gone: every CALL still waiting for its answer fails now (not at its timeout)."""
        for message_id in list(self._waiting):
            self._deliver(CallFailed(message_id, "", "ConnectionClosed", why))

    def _deliver(self, event: CallAnswered | CallFailed) -> None:
        """Hand an answer to the waiting call(); a second outcome for the same call (a timeout, then the
        connection closing before call() took the first) is dropped."""
        waiting = self._waiting.get(event.message_id)
        if waiting is not None:
            with contextlib.suppress(trio.WouldBlock):
                waiting.send_nowait(event)

    def _dispatch(self, event: Event, handler: Handler, nursery: trio.Nursery) -> None:
        if isinstance(event, IncomingCall):
            nursery.start_soon(self._answer, event, handler)
        elif isinstance(event, CallAnswered | CallFailed):
            self._deliver(event)
        elif isinstance(event, ProtocolViolation):
            self.violations += 1
            log.warning("CSMS frame refused: %s", event.note)
        elif isinstance(event, IncomingSend):
            log.info("CSMS sent %s (unconfirmed): not handled", event.action)
        else:
            log.warning("CSMS: %s", event)

    async def _answer(self, call: IncomingCall, handler: Handler) -> None:
        try:
            result = await handler(call.action, call.payload)
        except CallRefused as e:
            self.rpc.reply_error(call.message_id, e.code, e.description)
        except Exception:
            log.exception("handling the CSMS's %s failed", call.action)
            self.rpc.reply_error(call.message_id, "InternalError", f"{call.action} failed in the station")
        else:
            self.rpc.reply(call.message_id, result)
        self._kick()

    def _kick(self) -> None:
        self._wake.set()

    async def _writer(self) -> None:
        """Sends what the core has ready, and runs its call timeout."""
        while True:
            try:
                for frame in self.rpc.outgoing():
                    if self.observe is not None:
                        self.observe("tx", frame)
                    await self.ws.send_message(frame)
            except ConnectionClosed as e:  # the reader sees it too and ends serve(); nothing to raise here
                self._fail_waiting(f"connection closed: {e.reason}")
                return
            for event in self.rpc.handle_timeout(trio.current_time()):
                self._deliver(event)
            if self.rpc.has_output:  # a timeout released the next CALL: send it at once
                continue
            deadline = self.rpc.deadline()
            self._wake = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()


@contextlib.asynccontextmanager
async def connect(url: str, *, subprotocols: tuple[str, ...] = OCPP_SUBPROTOCOLS,
                  ssl_context: ssl.SSLContext | None = None, headers: list[tuple[str, str]] | None = None,
                  call_timeout: float = 30.0) -> AsyncIterator[OcppConnection]:
    """The WebSocket to the CSMS at ``url`` (ws:// or wss://) with one of ``subprotocols`` negotiated."""
    async with open_websocket_url(url, ssl_context=ssl_context, subprotocols=list(subprotocols),
                                  extra_headers=headers or []) as ws:
        if ws.subprotocol not in subprotocols:
            raise NoCommonSubprotocol(f"the CSMS picked {ws.subprotocol!r}, we offered {', '.join(subprotocols)}")
        yield OcppConnection(ws, OcppRpc(call_timeout=call_timeout), ws.subprotocol)
