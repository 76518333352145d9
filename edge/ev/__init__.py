"""The simulated car (testbench runs and our own end-to-end tests): sans-IO cars in
:mod:`edge.ev.din`, :mod:`edge.ev.iso2` and :mod:`edge.ev.iso20` (shared parts in :mod:`edge.ev.base`),
:func:`drive` to run one over a stream, and :mod:`edge.ev.run` for SDP, connection and pause/resume on an interface."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

import trio

from edge.v2g.v2gtp import PayloadType, V2gtpDecoder, frame

#: the message log: one INFO line per request and response (name, time), one DEBUG line with its content
message_log = logging.getLogger("edge.ev.messages")


class Car(Protocol):
    """A sans-IO car. One that speaks ISO 15118-20 also has ``request_payload_type() -> int``: the V2GTP
    payload type of the request it just made (0x8001 SAP, 0x8002 -20 common, 0x8004 -20 DC, ...); without
    it every request goes as 0x8001, as DIN and -2 need."""

    log: list[str]
    last_request: Any  # the decoded request just made and response just read (message log)
    last_response: Any

    @property
    def in_charge_loop(self) -> bool: ...
    def response_timeout(self) -> float: ...
    def start(self) -> bytes: ...
    def handle(self, payload: bytes, now: float) -> bytes | None: ...


def request_payload_type(car: Car) -> int:
    """The payload type of the car's latest request (0x8001 unless the car says otherwise)."""
    say = getattr(car, "request_payload_type", None)
    return int(say()) if say is not None else PayloadType.EXI


def one_line(value: Any, depth: int = 0) -> str:
    """A decoded message on one line for the message log: elements that are set, bytes as short hex,
    RationalNumbers as numbers."""
    if depth > 12:
        return "..."
    if isinstance(value, bytes | bytearray):
        return value[:16].hex() + ("..." if len(value) > 16 else "")
    if isinstance(value, list):
        return "[" + ", ".join(one_line(v, depth + 1) for v in value) + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        if set(names) == {"Exponent", "Value"}:  # -20 RationalNumber
            return f"{(value.Value or 0) * 10.0 ** (value.Exponent or 0):g}"
        if {"Multiplier", "Unit", "Value"} <= set(names):  # DIN/-2 PhysicalValue
            return f"{(value.Value or 0) * 10.0 ** (value.Multiplier or 0):g} {value.Unit or ''}".rstrip()
        inner = ", ".join(f"{n}={one_line(getattr(value, n), depth + 1)}" for n in names
                          if getattr(value, n) is not None)
        return f"{type(value).__name__.removesuffix('Type')}({inner})"
    return str(value)


def _log_message(direction: str, name: str, message: Any, now: float, origin: float) -> None:
    if not message_log.isEnabledFor(logging.INFO):
        return
    message_log.info("%9.3f s %s %s", now - origin, direction, name)
    if message_log.isEnabledFor(logging.DEBUG) and message is not None:
        message_log.debug("%9.3f s %s %s", now - origin, direction, one_line(message))


def _response_name(request: str) -> str:
    return "supportedAppProtocolRes" if request == "supportedAppProtocolReq" else request[:-3] + "Res"


async def drive(stream: trio.abc.Stream, car: Car, *, loop_period: float = 0.05, step: float = 0.01,
                timeout_factor: float | None = None, origin: float | None = None) -> int:
    """Run ``car`` over a V2GTP stream until its session (or a paused part of it) ends; returns the
    number of requests sent. Requests follow responses after ``step`` seconds (``loop_period`` in the
    charge loop). With ``timeout_factor`` the car waits at most that many times its own timeout for
    each response (V2G_EVCC_Msg_Timeout; 1.0 is the standard's value) and raises TimeoutError. Each
    request and response goes to the ``edge.ev.messages`` log, timed from ``origin`` (trio's clock;
    default: now)."""
    decoder = V2gtpDecoder()
    origin = trio.current_time() if origin is None else origin
    request = car.start()
    count = 0
    while request is not None:
        payload_type = request_payload_type(car)
        sent = car.log[-1] if car.log and count else "supportedAppProtocolReq"
        _log_message("->", sent, car.last_request, trio.current_time(), origin)
        await stream.send_all(frame(payload_type, request))  # one send: header and payload together
        count += 1
        limit = car.response_timeout() * timeout_factor if timeout_factor is not None else float("inf")
        messages = []
        with trio.move_on_after(limit) as waiting:
            while not messages:
                data = await stream.receive_some(65536)
                if not data:
                    raise ConnectionError(f"the charger closed the connection after {car.log[-1:]}")
                messages = decoder.feed(data)
        if waiting.cancelled_caught:
            raise TimeoutError(f"no response to {car.log[-1] if car.log else 'supportedAppProtocolReq'} "
                               f"within {limit:g} s")
        if messages[0].payload_type != payload_type:  # every response goes in its request's message set
            raise ConnectionError(f"the charger answered {car.log[-1] if car.log else 'supportedAppProtocolReq'} "
                                  f"with payload type {messages[0].payload_type:#06x}, not {payload_type:#06x}")
        received = trio.current_time()
        await trio.sleep(loop_period if car.in_charge_loop else step)
        try:
            request = car.handle(messages[0].payload, trio.current_time())
        finally:  # logged also when the car refuses the answer (decoded, unless the error says why not)
            _log_message("<-", _response_name(sent), car.last_response, received, origin)
    return count
