"""One car connection on the charger: supportedAppProtocol first, then the chosen protocol's session.
This is the handler the V2GTP server runs per TCP connection; :class:`EvseConfig` is what the
sessions of one charging point share (identity, PnC, paused sessions)."""

from __future__ import annotations

from dataclasses import dataclass, field

import exi
from edge.hardware import ChargerHardware

from . import sap
from .din.session import DinSession
from .iso2.session import Iso2Session, PausedSessions
from .pnc import PlugAndCharge
from .session import V2gSession
from .timers import SessionTimers
from .v2gtp import PayloadType, V2gtpMessage

#: protocols with a session implementation here
SESSIONS = ("din", "iso2")


@dataclass
class EvseConfig:
    """What every session on one charging point shares, across connections."""

    evse_id: str = "DE*EDG*E0001*1"
    pnc: PlugAndCharge | None = None  # Contract (PnC) is offered when set, and only over TLS ...
    pnc_without_tls: bool = False  # ... unless a test rig says otherwise (ISO 15118-2 needs TLS for PnC)
    receipt_interval: float | None = None  # PnC: signed MeteringReceipt every this many seconds
    paused: PausedSessions = field(default_factory=PausedSessions)
    timers: dict[str, SessionTimers] = field(default_factory=dict)  # per protocol, overrides the defaults


@dataclass
class ChargerConnection:
    hardware: ChargerHardware
    protocols: list[sap.Protocol] = field(default_factory=lambda: [sap.ISO2, sap.DIN])
    config: EvseConfig = field(default_factory=EvseConfig)
    tls: bool = False  # the connection is TLS-protected (PnC is offered only then)
    session: V2gSession | None = None
    protocol: sap.Protocol | None = None
    closing: bool = False
    ended: str | None = None  # why the connection ended, once it has

    def _new_session(self, name: str) -> V2gSession:
        timers = self.config.timers.get(name)
        if name == "din":
            return DinSession(self.hardware, timers=timers)
        pnc = self.config.pnc if (self.tls or self.config.pnc_without_tls) else None
        return Iso2Session(self.hardware, timers=timers, evse_id=self.config.evse_id, pnc=pnc,
                           receipt_interval=self.config.receipt_interval, paused_sessions=self.config.paused)

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
                self.session = self._new_session(result.protocol.name)
            return V2gtpMessage(PayloadType.EXI, exi.encode("apphand", result.response))
        out, end = self.session.handle(message.payload, now)
        if out is None:
            return None
        self.closing = end  # after SessionStopRes or a failure response, nothing more is read
        return V2gtpMessage(PayloadType.EXI, out)

    def connection_lost(self, reason: str) -> None:
        """The car went away (or the connection failed): whatever the session's state, no power
        flows any more. A session that did not reach SessionStop is recorded as aborted."""
        if self.session is not None:
            self.session.power_off()
        else:
            self.hardware.set_contactors(False)
        aborted = self.session is not None and not self.session.done
        self.ended = f"aborted: {reason}" if aborted else reason
