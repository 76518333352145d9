"""Which connections a charging point keeps, sans-IO: a small cap in total and per peer address.

A charging link carries one car, so a handful of connections is plenty (a car that reconnects while its
old connection has not timed out yet, a pause and resume). When a new connection would exceed a cap,
the oldest connection of the same scope (the same peer first, then any) that has no session yet (still
in its TLS handshake, or before supportedAppProtocol) is evicted; if there is none, the new connection
is refused. A connection with a session is never evicted: a flood of connections can keep a new car
waiting, but never cut the one that is charging. Evicting or refusing is the shell's job (cancel the
connection's task, close the socket): this class only decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: default caps: a charging point's connections in total, and from one address
MAX_CONNECTIONS = 4
MAX_PER_PEER = 2


@dataclass(eq=False)
class ConnectionSlot:
    peer: str  # the peer's address (no port)
    opened: float
    evict: Callable[[], None]  # how the shell ends this connection
    in_session: Callable[[], bool] = lambda: False  # set once the connection has its handler


@dataclass
class ConnectionAdmission:
    max_connections: int = MAX_CONNECTIONS
    max_per_peer: int = MAX_PER_PEER
    slots: list[ConnectionSlot] = field(default_factory=list)
    evicted: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_peer < 1:
            raise ValueError("connection caps must be at least 1")

    def admit(self, peer: str, now: float, evict: Callable[[], None]) -> tuple[ConnectionSlot | None, list[str]]:
        """A slot for a new connection from ``peer`` (None: refuse it), and what was done to make room
        (one text per evicted connection, for the log)."""
        done: list[str] = []
        for cap, same_scope in ((self.max_per_peer, lambda s: s.peer == peer), (self.max_connections, lambda s: True)):
            members = [s for s in self.slots if same_scope(s)]
            while len(members) >= cap:
                idle = [s for s in members if not s.in_session()]
                if not idle:
                    self.refused += 1
                    return None, done
                oldest = min(idle, key=lambda s: s.opened)
                self.slots.remove(oldest)
                members.remove(oldest)
                oldest.evict()
                self.evicted += 1
                done.append(f"evicted a connection from {oldest.peer} without a session, open "
                            f"{now - oldest.opened:.1f} s")
        slot = ConnectionSlot(peer, now, evict)
        self.slots.append(slot)
        return slot, done

    def leave(self, slot: ConnectionSlot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)
