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
from collections.abc import Callable
from typing import Protocol

import trio

from .v2gtp import DEFAULT_MAX_PAYLOAD, V2gtpDecoder, V2gtpError, V2gtpMessage, frame

log = logging.getLogger("edge.v2gtp")

#: the SECC's TCP port must be a dynamic port (IETF RFC 6335; DIN 70121 and ISO 15118-2 SDP): EVs
#: reject an SDP response with any other port (Josev does), so port 0 means "a free one of these"
DYNAMIC_PORTS = range(49152, 65536)


class ConnectionHandler(Protocol):
    """One per connection: returns the response message, or None to close the connection."""

    def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage | None: ...


async def serve_connection(stream: trio.abc.Stream, handler: ConnectionHandler, *,
                           max_payload: int = DEFAULT_MAX_PAYLOAD, idle_timeout: float = 60.0) -> str:
    """Serve one connection until the car closes it, an error, or ``idle_timeout`` without a request
    (V2G_SECC_Sequence_Timeout; a handler's own ``idle_timeout`` attribute wins: its session knows the
    protocol's timers). Returns why it ended; however it ends (cancellation and network
    errors included), the handler's ``connection_lost(reason)`` runs so the session can make the
    hardware safe."""
    why = "cancelled or failed"
    try:
        why = await _serve(stream, handler, max_payload, idle_timeout)
        return why
    except (trio.BrokenResourceError, OSError) as e:
        why = f"connection broken: {e}"
        return why
    finally:
        lost = getattr(handler, "connection_lost", None)
        if lost is not None:
            lost(why)


async def _serve(stream: trio.abc.Stream, handler: ConnectionHandler, max_payload: int, idle_timeout: float) -> str:
    decoder = V2gtpDecoder(max_payload)
    async with stream:
        while True:
            with trio.move_on_after(getattr(handler, "idle_timeout", idle_timeout)) as idle:
                data = await stream.receive_some(65536)
            if idle.cancelled_caught:
                return "sequence timeout: no request"
            if not data:
                return "closed by the car"
            try:
                messages = decoder.feed(data)
            except V2gtpError as e:
                return f"V2GTP header error: {e}"
            for message in messages:
                response = handler.handle(message, trio.current_time())
                if response is None:
                    return "closed by the session"
                await stream.send_all(frame(response.payload_type, response.payload))


async def serve_tcp(port: int, handler_factory: Callable[[], ConnectionHandler], *, host: str = "::",
                    ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 15.0,
                    task_status=trio.TASK_STATUS_IGNORED, **kwargs) -> None:
    """Listen on ``host``:``port`` (0: a free dynamic port); one handler per connection; runs until
    cancelled. ``task_status.started`` gets the port. With ``ssl_context`` every connection is TLS;
    the handler is made only once the handshake has succeeded."""

    async def one(stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        v2g_stream: trio.abc.Stream = stream
        try:
            if ssl_context is not None:
                tls = await tls_handshake(stream, ssl_context, handshake_timeout, peer)
                if tls is None:
                    return
                v2g_stream = tls
            handler = handler_factory()
            if isinstance(v2g_stream, trio.SSLStream) and hasattr(handler, "tls_established"):
                # the protocols allowed depend on the TLS version (-20 needs 1.3); PnC may use the car's certificate
                handler.tls_established(v2g_stream.version(), v2g_stream.getpeercert(binary_form=True))
            why = await serve_connection(v2g_stream, handler, **kwargs)
        except Exception:  # a bug in one session must not stop the charger from serving others
            log.exception("V2G connection from %s failed", peer)
            return
        log.info("V2G connection ended: %s", why)

    listeners = await _listen(port, host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(one, listeners)


async def tls_handshake(stream: trio.abc.Stream, ssl_context: ssl.SSLContext, timeout: float,
                        peer: str = "the car") -> trio.SSLStream | None:
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
    log.warning("TLS handshake with %s %s; connection closed", peer, why)
    await trio.aclose_forcefully(tls)
    return None


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
