"""What the station must not lose, in SQLite under the state directory: the outbound queue of messages
the CSMS must receive (TransactionEvent, SecurityEventNotification), the state of each open
transaction, and the device model's persisted variables.

Durability rules, kept here once:
- a message is committed (WAL, ``synchronous=FULL``: on disk when :meth:`StationStore.enqueue` returns)
  before anything tries to send it; the queue is delivered in commit order, oldest first;
- a TransactionEvent's ``seqNo`` is allocated in the same SQL transaction that queues it, so the numbers
  of a transaction are contiguous whatever crashes;
- an acknowledgement (:meth:`StationStore.delivered`) is written without waiting for the disk (a second
  connection with ``synchronous=NORMAL``): a power cut may forget the last few, which are then sent
  again, with the same seqNo (at-least-once; the CSMS recognises a repeat by transactionId and seqNo);
- the queue is bounded (``max_messages``): when full, the oldest *Updated* TransactionEvent is dropped
  (counted in :attr:`StationStore.dropped`; Started and Ended are never dropped, as OCPP asks), so a
  station offline for weeks fills neither disk nor memory.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("edge.ocpp")

#: queued messages kept while the CSMS is unreachable (OCPP asks for Started/Ended never to be dropped)
MAX_MESSAGES = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    transaction_id TEXT,
    event_type TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id TEXT PRIMARY KEY,
    evse_id INTEGER NOT NULL,
    connector_id INTEGER NOT NULL,
    next_seq_no INTEGER NOT NULL DEFAULT 0,
    ended INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS charging_profiles (
    id INTEGER PRIMARY KEY,
    evse_id INTEGER NOT NULL,
    transaction_id TEXT,
    wire TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS variables (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    action: str
    payload: dict[str, Any]
    attempts: int
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """An open transaction as the store keeps it (``state``: what is needed to end it after a restart,
    e.g. the last meter reading and the idToken)."""

    transaction_id: str
    evse_id: int
    connector_id: int
    next_seq_no: int
    state: dict[str, Any] = field(default_factory=dict)


class UnknownTransaction(KeyError):
    """An event for a transaction the store never started (a bug in the caller)."""


class StationStore:
    def __init__(self, path: str | Path, *, max_messages: int = MAX_MESSAGES) -> None:
        self.path = str(path)
        self.max_messages = max_messages
        self.dropped = 0
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open("FULL")
        self._db.executescript(_SCHEMA)
        # acknowledgements only: losing the last few to a power cut means a resend, never a loss
        self._acks = self._open("NORMAL") if self.path != ":memory:" else self._db
        # kept in memory: a count(*) per queued event cost ms at a deep queue, inside the sessions' time
        self._queued = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def _open(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def close(self) -> None:
        if self._acks is not self._db:
            self._acks.close()
        self._db.close()

    def __enter__(self) -> StationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ outbound queue
    def enqueue(self, action: str, payload: dict[str, Any]) -> int:
        """Queue a message that is not part of a transaction (e.g. SecurityEventNotification); on disk on return."""
        with self._transaction():
            self._make_room()
            cur = self._db.execute("INSERT INTO outbox (action, payload) VALUES (?, ?)", (action, json.dumps(payload)))
        self._queued += 1
        assert cur.lastrowid is not None
        return cur.lastrowid

    def start_transaction(self, transaction_id: str, evse_id: int, connector_id: int,
                          state: dict[str, Any] | None = None) -> TransactionRecord:
        with self._transaction():
            self._db.execute("INSERT INTO transactions (transaction_id, evse_id, connector_id, state) VALUES (?,?,?,?)",
                             (transaction_id, evse_id, connector_id, json.dumps(state or {})))
        return TransactionRecord(transaction_id, evse_id, connector_id, 0, state or {})

    def transaction_event(self, transaction_id: str, payload: dict[str, Any]) -> QueuedMessage:
        """Queue a TransactionEvent: its ``seqNo`` is the transaction's next number, allocated and queued in
        one SQL transaction; an ``Ended`` event closes the transaction's record."""
        event_type = payload["eventType"]
        with self._transaction():
            row = self._db.execute("SELECT next_seq_no, ended FROM transactions WHERE transaction_id = ?",
                                   (transaction_id,)).fetchone()
            if row is None:
                raise UnknownTransaction(transaction_id)
            seq_no, ended = row
            if ended:
                raise ValueError(f"transaction {transaction_id} has already ended")
            payload = {**payload, "seqNo": seq_no}
            self._make_room()
            cur = self._db.execute(
                "INSERT INTO outbox (action, payload, transaction_id, event_type) VALUES ('TransactionEvent', ?, ?, ?)",
                (json.dumps(payload), transaction_id, event_type))
            self._db.execute("UPDATE transactions SET next_seq_no = ?, ended = ? WHERE transaction_id = ?",
                             (seq_no + 1, int(event_type == "Ended"), transaction_id))
        self._queued += 1
        assert cur.lastrowid is not None
        return QueuedMessage(cur.lastrowid, "TransactionEvent", payload, 0, transaction_id)

    def update_transaction_state(self, transaction_id: str, state: dict[str, Any]) -> None:
        """Remember what ending this transaction after a crash needs (last meter reading, idToken...)."""
        with self._transaction():
            self._db.execute("UPDATE transactions SET state = ? WHERE transaction_id = ?",
                             (json.dumps(state), transaction_id))

    def open_transactions(self) -> list[TransactionRecord]:
        rows = self._db.execute("SELECT transaction_id, evse_id, connector_id, next_seq_no, state FROM transactions "
                                "WHERE ended = 0 ORDER BY rowid").fetchall()
        return [TransactionRecord(t, e, c, n, json.loads(s)) for t, e, c, n, s in rows]

    def next_messages(self, limit: int = 1) -> list[QueuedMessage]:
        """The oldest queued messages, in the order they must be delivered."""
        rows = self._db.execute("SELECT id, action, payload, attempts, transaction_id FROM outbox ORDER BY id LIMIT ?",
                                (limit,)).fetchall()
        return [QueuedMessage(i, a, json.loads(p), n, t) for i, a, p, n, t in rows]

    def delivered(self, message_id: int) -> None:
        self._queued -= self._acks.execute("DELETE FROM outbox WHERE id = ?", (message_id,)).rowcount

    def attempt_failed(self, message_id: int) -> int:
        """The CSMS answered with an error: count it; returns the attempts so far."""
        with self._transaction():
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (message_id,))
            row = self._db.execute("SELECT attempts FROM outbox WHERE id = ?", (message_id,)).fetchone()
        return int(row[0]) if row else 0

    def discard(self, message_id: int, why: str) -> None:
        """Give up on one message (the CSMS refused it as often as MessageAttempts allows); logged."""
        row = self._db.execute("SELECT action, payload FROM outbox WHERE id = ?", (message_id,)).fetchone()
        if row is not None:
            log.error("OCPP: %s discarded after repeated refusal (%s): %s", row[0], why, row[1][:400])
        self._queued -= self._db.execute("DELETE FROM outbox WHERE id = ?", (message_id,)).rowcount

    def queued(self) -> int:
        return self._queued

    def _make_room(self) -> None:
        if self.queued() < self.max_messages:
            return
        row = self._db.execute("SELECT id FROM outbox WHERE event_type = 'Updated' ORDER BY id LIMIT 1").fetchone()
        if row is None:  # only Started/Ended/security events: they stay, the bound is exceeded and said so
            log.error("OCPP queue holds %d messages none of which may be dropped", self.queued())
            return
        self._queued -= self._db.execute("DELETE FROM outbox WHERE id = ?", row).rowcount
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.warning("OCPP queue full (%d): %d TransactionEvent Updated dropped so far", self.max_messages,
                        self.dropped)

    # ------------------------------------------------------------------ charging profiles (K01: kept across restarts)
    def save_profiles(self, profiles: list[tuple[int, int, str | None, dict[str, Any]]]) -> None:
        """Replace the stored profiles with (id, evse_id, transaction_id, chargingProfile) rows."""
        with self._transaction():
            self._db.execute("DELETE FROM charging_profiles")
            self._db.executemany("INSERT INTO charging_profiles (id, evse_id, transaction_id, wire) VALUES (?,?,?,?)",
                                 [(i, e, t, json.dumps(w)) for i, e, t, w in profiles])

    def charging_profiles(self) -> list[tuple[int, int, str | None, dict[str, Any]]]:
        rows = self._db.execute("SELECT id, evse_id, transaction_id, wire FROM charging_profiles ORDER BY id")
        return [(i, e, t, json.loads(w)) for i, e, t, w in rows.fetchall()]

    # ------------------------------------------------------------------ device model variables
    def variables(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM variables").fetchall())

    def set_variable(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute("INSERT INTO variables (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # ------------------------------------------------------------------
    def _transaction(self) -> _SqlTransaction:
        return _SqlTransaction(self._db, self._recount)

    def _recount(self) -> None:
        self._queued = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])


class _SqlTransaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception, then ``rolled_back()``): one atomic, durable step."""

    def __init__(self, db: sqlite3.Connection, rolled_back: Callable[[], None]) -> None:
        self.db, self.rolled_back = db, rolled_back

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type:
            self.db.execute("ROLLBACK")
            self.rolled_back()  # counts kept in memory follow the database again
        else:
            self.db.execute("COMMIT")
