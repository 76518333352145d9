"""The car's way to its charger: SDP (asking for TLS when it has a TLS context), then TCP to the
answered address, then, if the charger answered "TLS", the TLS handshake. The result is a
``trio.abc.Stream`` that :func:`edge.ev.drive` runs a session over, plain or TLS alike."""

from __future__ import annotations

import socket
import ssl

import trio

from edge.v2g.net import discover
from edge.v2g.sdp import SECURITY_NONE, SECURITY_TLS

#: how long the car waits for the charger's side of the TLS handshake
HANDSHAKE_TIMEOUT = 15.0


async def open_v2g_stream(host: str, port: int, scope_id: int = 0, ssl_context: ssl.SSLContext | None = None, *,
                          handshake_timeout: float = HANDSHAKE_TIMEOUT) -> trio.abc.Stream:
    """TCP to ``host``:``port`` (``scope_id``: the interface index for a link-local IPv6 address), and
    with ``ssl_context`` the TLS handshake, done here so a bad chain fails now, not at the first send.
    Raises ``OSError`` if the connection fails and ``ConnectionError`` if the handshake does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port, 0, scope_id) if family == socket.AF_INET6 else (host, port))
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    if ssl_context is None:
        return stream
    tls = trio.SSLStream(stream, ssl_context, server_side=False)
    try:
        with trio.fail_after(handshake_timeout):
            await tls.do_handshake()
    except (trio.BrokenResourceError, trio.TooSlowError) as e:
        await trio.aclose_forcefully(tls)
        cause = e.__cause__ if isinstance(e, trio.BrokenResourceError) else f"no answer within {handshake_timeout:g} s"
        raise ConnectionError(f"TLS handshake with [{host}]:{port} failed: {cause or e}") from None
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    return tls


async def connect_to_charger(iface: str, ssl_context: ssl.SSLContext | None = None, *, require_tls: bool = False,
                             sdp_attempts: int = 50) -> trio.abc.Stream:
    """SDP on ``iface``, then :func:`open_v2g_stream` to the answer. With ``ssl_context`` the car asks
    for TLS; a charger that answers "no TLS" is then used without TLS unless ``require_tls``. Without
    one, an answer of "TLS" is an error (the car cannot speak it)."""
    answer = await discover(iface, SECURITY_TLS if ssl_context is not None else SECURITY_NONE,
                            attempts=sdp_attempts)
    host = socket.inet_ntop(socket.AF_INET6, answer.address)
    where = f"the charger at [{host}]:{answer.port}"
    if answer.security not in (SECURITY_TLS, SECURITY_NONE):
        raise ConnectionError(f"{where} answered an unknown security {answer.security:#04x}")
    if answer.security == SECURITY_TLS and ssl_context is None:
        raise ConnectionError(f"{where} offers only TLS and this car has no TLS context")
    if answer.security == SECURITY_NONE and ssl_context is not None and require_tls:
        raise ConnectionError(f"{where} offers no TLS and this car requires it")
    use_tls = ssl_context if answer.security == SECURITY_TLS else None
    return await open_v2g_stream(host, answer.port, socket.if_nametoindex(iface), use_tls)
