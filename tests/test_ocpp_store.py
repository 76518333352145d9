"""edge/ocpp/store.py: the durable OCPP queue and transaction state (SQLite, WAL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.ocpp.store import StationStore, UnknownTransaction


def _event(kind: str, n: int = 0) -> dict:
    return {"eventType": kind, "timestamp": "2026-12-04T10:00:00Z", "triggerReason": "MeterValuePeriodic",
            "transactionInfo": {"transactionId": "t1"}, "n": n}


def test_queue_order_seq_numbers_and_acknowledgement(tmp_path: Path) -> None:
    with StationStore(tmp_path / "s.db") as store:
        store.enqueue("SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": "x"})
        store.start_transaction("t1", 1, 1, {"idToken": "abc"})
        seqs = [store.transaction_event("t1", _event(k)).payload["seqNo"] for k in ("Started", "Updated", "Ended")]
        assert seqs == [0, 1, 2]
        queued = store.next_messages(10)
        assert [m.action for m in queued] == ["SecurityEventNotification"] + ["TransactionEvent"] * 3
        store.delivered(queued[0].id)
        assert store.next_messages(1)[0].payload["eventType"] == "Started"
        assert store.open_transactions() == []  # Ended closes it
        with pytest.raises(ValueError):
            store.transaction_event("t1", _event("Updated"))
        with pytest.raises(UnknownTransaction):
            store.transaction_event("nope", _event("Started"))


def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StationStore(path) as store:
        store.start_transaction("t1", 2, 1, {"meterWh": 10})
        store.transaction_event("t1", _event("Started"))
        store.update_transaction_state("t1", {"meterWh": 250})
        store.set_variable("OCPPCommCtrlr/HeartbeatInterval", "60")
    with StationStore(path) as store:
        [record] = store.open_transactions()
        assert (record.evse_id, record.next_seq_no, record.state) == (2, 1, {"meterWh": 250})
        assert store.transaction_event("t1", _event("Ended")).payload["seqNo"] == 1
        assert store.variables() == {"OCPPCommCtrlr/HeartbeatInterval": "60"}
        assert store.queued() == 2


def test_refused_messages_count_attempts_and_can_be_discarded(tmp_path: Path) -> None:
    with StationStore(tmp_path / "s.db") as store:
        mid = store.enqueue("SecurityEventNotification", {})
        assert store.attempt_failed(mid) == 1 and store.attempt_failed(mid) == 2
        assert store.next_messages()[0].attempts == 2
        store.discard(mid, "refused")
        assert store.queued() == 0


def test_full_queue_drops_oldest_updated_never_started_or_ended(tmp_path: Path) -> None:
    with StationStore(tmp_path / "s.db", max_messages=4) as store:
        store.start_transaction("t1", 1, 1)
        for kind in ("Started", "Updated", "Updated", "Updated", "Updated", "Ended"):
            store.transaction_event("t1", _event(kind))
        left = [(m.payload["eventType"], m.payload["seqNo"]) for m in store.next_messages(10)]
        assert left == [("Started", 0), ("Updated", 3), ("Updated", 4), ("Ended", 5)]
        assert store.dropped == 2


CRASHER = textwrap.dedent("""
    import sys
    from edge.ocpp.store import StationStore
    store = StationStore(sys.argv[1])
    store.start_transaction("t1", 1, 1)
    n = 0
    while True:
        m = store.transaction_event("t1", {"eventType": "Started" if n == 0 else "Updated", "n": n})
        print(m.payload["seqNo"], flush=True)   # only printed once committed
        n += 1
""")


def test_committed_events_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.stdout is not None
    reported = [int(proc.stdout.readline()) for _ in range(200)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reported += [int(line) for line in proc.stdout.read().split()]
    with StationStore(path) as store:
        seqs = [m.payload["seqNo"] for m in store.next_messages(100_000)]
        # every number the crashed process reported as committed is there, contiguous from 0, none twice
        assert seqs == list(range(len(seqs))) and len(seqs) >= len(reported)
        assert store.open_transactions()[0].next_seq_no == len(seqs)


def test_the_queue_count_follows_every_change(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StationStore(path, max_messages=3) as store:
        store.start_transaction("t1", 1, 1)
        ids = [store.transaction_event("t1", _event(k)).id for k in ("Started", "Updated", "Updated", "Updated")]
        assert store.queued() == 3 and store.dropped == 1  # bounded: an Updated made room
        store.delivered(ids[0])
        store.delivered(ids[0])  # twice: counted once
        assert store.queued() == 2
        store.discard(ids[-1], "refused")
        with pytest.raises(UnknownTransaction):  # a failed step leaves the count as the database has it
            store.transaction_event("nope", _event("Updated"))
        assert store.queued() == 1
    with StationStore(path) as store:
        assert store.queued() == 1 == len(store.next_messages(10))
