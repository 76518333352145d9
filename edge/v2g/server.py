"""The charger's V2GTP server shell: accept TCP connections, reassemble V2GTP messages, hand each to
a per-connection handler (a session core), and write each response as one send (header and
payload together: Josev reads one TCP read as one message).

A header error (version, unknown payload type, length over the limit) closes the connection; a
handler that raises closes only its own connection; the server keeps serving the next car.

With an ``ssl.SSLContext`` (see :mod:`edge.v2g.tls`) each accepted connection is wrapped in
``trio.SSLStream`` and the handshake must finish within ``handshake_timeout``; V2GTP then runs over
it exactly as over TCP. One ``send_all`` of a frame up to 16 KiB is one TLS record written in one
TCP send, so a peer that reads one read as one message (Josev) still gets whole messages.
"""

from __future__ import annotations

import errno
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from edge.logs import RateLimitedLog

from .admission import ConnectionAdmission, ConnectionSlot
from .timers import V2GTP_MESSAGE_DEADLINE
from .v2gtp import ANSWER_LATER, DEFAULT_MAX_PAYLOAD, V2gtpDecoder, V2gtpError, V2gtpMessage, frame

log = logging.getLogger("edge.v2gtp")

#: the SECC's TCP port must be a dynamic port (IETF RFC 6335; DIN 70121 and ISO 15118-2 SDP): EVs
#: reject an SDP response with any other port (Josev does), so port 0 means "a free one of these"
DYNAMIC_PORTS = range(49152, 65536)
#: a session waiting for its backend (see ANSWER_LATER) is asked again this often, and for at most this long
ANSWER_LATER_POLL = 0.02
MAX_ANSWER_WAIT = 10.0


class ConnectionHandler(Protocol):
    """One per connection: returns the response message, or None to close the connection.

    Optional, used when present (:class:`edge.v2g.charger.ChargerConnection` has them all):
    ``idle_timeout`` (the sequence timeout now), ``connection_lost(reason)``, ``set_peer(peer)``,
    ``tls_established(version, peer_certificate)`` and ``in_session`` (never evicted while true)."""

    def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage | None: ...


def broken_reason(e: BaseException) -> str:
    """What broke a connection, in words: trio's BrokenResourceError carries no text of its own, its
    cause (an SSL error, a reset) does."""
    while not str(e) and e.__cause__ is not None:
        e = e.__cause__
    return str(e) or type(e).__name__


async def serve_connection(stream: trio.abc.Stream, handler: ConnectionHandler, *,
                           max_payload: int = DEFAULT_MAX_PAYLOAD, idle_timeout: float = 60.0,
                           message_deadline: float = V2GTP_MESSAGE_DEADLINE) -> str:
    """Serve one connection until the car closes it, an error, or a deadline: ``idle_timeout`` from a
    response (or the start) to the next complete request (V2G_SECC_Sequence_Timeout; a handler's own
    ``idle_timeout`` attribute wins: its session knows the protocol's timers), and ``message_deadline``
    from a message's first byte to its last. Bytes trickling in restart neither. Returns why it
    ended; however it ends (cancellation and network errors included), the handler's
    ``connection_lost(reason)`` runs so the session can make the hardware safe."""
    why = "cancelled or failed"
    try:
        why = await _serve(stream, handler, max_payload, idle_timeout, message_deadline)
        return why
    except (trio.BrokenResourceError, OSError) as e:
        why = f"connection broken: {broken_reason(e)}"
        return why
    finally:
        lost = getattr(handler, "connection_lost", None)
        if lost is not None:
            lost(why)


async def _serve(stream: trio.abc.Stream, handler: ConnectionHandler, max_payload: int, idle_timeout: float,
                 message_deadline: float) -> str:
    decoder = V2gtpDecoder(max_payload)
    async with stream:
        request_by = trio.current_time() + getattr(handler, "idle_timeout", idle_timeout)
        message_by: float | None = None  # set while a message is partly received
        while True:
            with trio.move_on_at(request_by if message_by is None else min(request_by, message_by)) as wait:
                data = await stream.receive_some(65536)
            if wait.cancelled_caught:
                if message_by is not None and trio.current_time() >= message_by:
                    return f"V2GTP message incomplete {message_deadline:g} s after its first byte"
                return "sequence timeout: no request"
            if not data:
                return "closed by the car"
            now = trio.current_time()
            if decoder.pending == 0:
                message_by = now + message_deadline  # these bytes start a message
            try:
                messages = decoder.feed(data)
            except V2gtpError as e:
                return f"V2GTP header error: {e}"
            for message in messages:
                response = handler.handle(message, trio.current_time())
                asked = trio.current_time()
                while response is ANSWER_LATER:  # the session's backend is deciding: the same request again
                    if trio.current_time() - asked > MAX_ANSWER_WAIT:
                        return f"no answer to the request within {MAX_ANSWER_WAIT:g} s"
                    await trio.sleep(ANSWER_LATER_POLL)
                    response = handler.handle(message, trio.current_time())
                if response is None:
                    return "closed by the session"
                await stream.send_all(frame(response.payload_type, response.payload))
            if messages:
                now = trio.current_time()
                request_by = now + getattr(handler, "idle_timeout", idle_timeout)
                message_by = now + message_deadline if decoder.pending else None


async def serve_tcp(port: int, handler_factory: Callable[[], ConnectionHandler], *, host: str = "::",
                    ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 15.0,
                    admission: ConnectionAdmission | None = None, tap: WireTap | None = None,
                    task_status=trio.TASK_STATUS_IGNORED, **kwargs) -> None:
    """Listen on ``host``:``port`` (0: a free dynamic port); one handler per connection; runs until
    cancelled. ``task_status.started`` gets the port. With ``ssl_context`` every connection is TLS;
    the handler is made only once the handshake has succeeded. With ``admission`` (shared by the
    listeners of one charging point) connections beyond its caps evict idle ones or are refused.
    A connection's failure, a peer's flood or running out of file descriptors never ends the server.
    With ``tap`` and TLS, the bytes of every connection are shown to it as they cross (session traces)."""
    quiet = RateLimitedLog(log, burst=10, interval=10.0)

    async def one(stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        slot = None
        with trio.CancelScope() as scope:
            if admission is not None:
                slot, evicted = admission.admit(_peer_host(stream), trio.current_time(), scope.cancel)
                for text in evicted:
                    quiet.info("%s to admit %s", text, peer)
                if slot is None:
                    quiet.warning("refused a V2G connection from %s: %d connections with a session already "
                                  "(cap %d, %d per address)", peer, len(admission.slots), admission.max_connections,
                                  admission.max_per_peer)
                    await trio.aclose_forcefully(stream)
                    return
            try:
                why = await _serve_one(stream, peer, slot)
            except Exception:  # a bug in one session must not stop the charger from serving others
                quiet.log(logging.ERROR, "V2G connection from %s failed", peer, exc_info=True)
                return
            finally:
                if slot is not None:
                    admission.leave(slot)  # type: ignore[union-attr]
                await trio.aclose_forcefully(stream)  # also when evicted mid-handshake: no descriptor left open
            if why is not None:  # (a failed TLS handshake has had its line)
                quiet.info("V2G connection from %s ended: %s", peer, why)
        if scope.cancelled_caught:
            quiet.info("V2G connection from %s ended: evicted to admit another", peer)

    async def _serve_one(stream: trio.SocketStream, peer: str, slot: ConnectionSlot | None) -> str | None:
        v2g_stream: trio.abc.Stream = stream
        if ssl_context is not None:
            raw: trio.abc.Stream = TappedStream(stream, tap, peer) if tap is not None else stream
            tls = await tls_handshake(raw, ssl_context, handshake_timeout, peer, quiet)
            if tls is None:
                return None
            if tap is not None:
                tap("handshake", b"", peer)
            v2g_stream = tls
        handler = handler_factory()
        if slot is not None:
            slot.in_session = lambda: bool(getattr(handler, "in_session", False))
        if hasattr(handler, "set_peer"):
            handler.set_peer(peer)
        if isinstance(v2g_stream, trio.SSLStream) and hasattr(handler, "tls_established"):
            # the protocols allowed depend on the TLS version (-20 needs 1.3); PnC may use the car's certificate
            handler.tls_established(v2g_stream.version(), v2g_stream.getpeercert(binary_form=True))
        return await serve_connection(v2g_stream, handler, **kwargs)

    listeners = await _listen(port, host)
    task_status.started(listeners[0].socket.getsockname()[1])
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_forever, listener, one, nursery)
    finally:
        quiet.flush("connection log lines (evicted, refused, ended)")


#: accept() errors that mean "no resources now" (too many open files, no memory): wait and retry
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


async def _accept_forever(listener: trio.SocketListener, handle: Callable[[trio.SocketStream], Awaitable[None]],
                          nursery: trio.Nursery) -> None:
    """trio.serve_listeners, but out of file descriptors it logs one line per episode (not a traceback per
    attempt) and backs off exponentially (10 ms to 1 s) until accept works again."""
    pause, failing_since = 0.01, None
    while True:
        try:
            stream = await listener.accept()
        except OSError as e:
            if e.errno not in ACCEPT_CAPACITY_ERRNOS:
                raise
            if failing_since is None:
                failing_since = trio.current_time()
                log.error("cannot accept V2G connections: %s; retrying with back-off", e.strerror or e)
            await trio.sleep(pause)
            pause = min(pause * 2, 1.0)
            continue
        if failing_since is not None:
            log.warning("accepting V2G connections again after %.1f s", trio.current_time() - failing_since)
            pause, failing_since = 0.01, None
        nursery.start_soon(handle, stream)


#: what a wire tap is told: ("rx"|"tx", the bytes as they crossed the socket, "[addr]:port"), and ("handshake",
#: b"", peer) once a TLS handshake is done (the key-log lines of that session exist from then on)
WireTap = Callable[[str, bytes, str], None]


class TappedStream(trio.abc.HalfCloseableStream):
    """A TCP stream whose bytes are shown to a tap as they cross (the TLS records of a traced session)."""

    def __init__(self, inner: trio.SocketStream, tap: WireTap, peer: str) -> None:
        self.inner, self.tap, self.peer = inner, tap, peer
        self.socket = inner.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.tap("rx", data, self.peer)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.tap("tx", bytes(data), self.peer)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def tls_handshake(stream: trio.abc.Stream, ssl_context: ssl.SSLContext, timeout: float,
                        peer: str = "the car", quiet: RateLimitedLog | None = None) -> trio.SSLStream | None:
    """The server side of the TLS handshake on ``stream`` within ``timeout`` s (real EVs take
    10-11 s; 15 s is common practice). On failure or timeout: logged, ``stream`` closed, None."""
    tls = trio.SSLStream(stream, ssl_context, server_side=True)
    why = ""
    with trio.move_on_after(timeout) as handshake:
        try:
            await tls.do_handshake()
            return tls
        except trio.BrokenResourceError as e:
            cause = e.__cause__  # OpenSSL's reason reads best, e.g. NO_SHARED_CIPHER -> "no shared cipher"
            reason = cause.reason if isinstance(cause, ssl.SSLError) and cause.reason else None
            why = f"failed: {reason.replace('_', ' ').lower() if reason else cause or e}"
    if handshake.cancelled_caught:
        why = f"not completed within {timeout:g} s"
    (quiet.warning if quiet is not None else log.warning)("TLS handshake with %s %s; connection closed", peer, why)
    await trio.aclose_forcefully(tls)
    return None


def _peer_host(stream: trio.abc.Stream) -> str:
    try:
        return str(stream.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return "?"


def _peer(stream: trio.abc.Stream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return "the car"
    return f"[{host}]:{port}"


async def _listen(port: int, host: str) -> list[trio.SocketListener]:
    if port:
        return await trio.open_tcp_listeners(port, host=host)
    for candidate in random.sample(DYNAMIC_PORTS, 100):
        try:
            return await trio.open_tcp_listeners(candidate, host=host)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free TCP port in the dynamic range 49152-65535")
