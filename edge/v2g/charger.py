"""One car connection on the charger: supportedAppProtocol first, then the chosen protocol's session.
This is the handler the V2GTP server runs per TCP connection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import exi
from edge.hardware import ChargerHardware

from . import sap
from .din.session import DinSession
from .iso2.session import Iso2DcSession
from .v2gtp import PayloadType, V2gtpMessage

#: protocols with a session implementation here
SESSIONS: dict[str, Callable[[ChargerHardware], object]] = {"din": DinSession, "iso2": Iso2DcSession}


@dataclass
class ChargerConnection:
    hardware: ChargerHardware
    protocols: list[sap.Protocol] = field(default_factory=lambda: [sap.ISO2, sap.DIN])
    session: DinSession | Iso2DcSession | None = None
    protocol: sap.Protocol | None = None
    closing: bool = False
    ended: str | None = None  # why the connection ended, once it has

    def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage | None:
        if self.closing or message.payload_type != PayloadType.EXI:
            return None
        if self.session is None:
            try:
                req = exi.decode("apphand", message.payload)
            except exi.DecodeError:
                return None
            enabled = [p for p in self.protocols if p.name in SESSIONS]
            result = sap.negotiate(req, enabled)
            if result.protocol is None:
                self.closing = True
            else:
                self.protocol = result.protocol
                self.session = SESSIONS[result.protocol.name](self.hardware)
            return V2gtpMessage(PayloadType.EXI, exi.encode("apphand", result.response))
        out, end = self.session.handle(message.payload, now)
        if out is None:
            return None
        self.closing = end  # after SessionStopRes or a failure response, nothing more is read
        return V2gtpMessage(PayloadType.EXI, out)

    def connection_lost(self, reason: str) -> None:
        """The car went away (or the connection failed): whatever the session's state, no power
        flows any more. A session that did not reach SessionStop is recorded as aborted."""
        self.hardware.set_dc_target(0, 0)
        self.hardware.set_contactors(False)
        aborted = self.session is not None and not self.session.done
        self.ended = f"aborted: {reason}" if aborted else reason
