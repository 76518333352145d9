"""The OCPP station (edge/ocpp/station.py) against ``edge csms`` on loopback: what the OCPP round trip adds to
Plug & Charge, and how fast the durable queue is replayed after an outage. Each number comes with a
reference measured in the same run.

1. **Plug & Charge relay.** A -2 PnC car (``Iso2Car(payment="pnc")``, test PKI) is driven in-process
   through ``ChargerConnection.handle`` up to its AuthorizationReq (not timed). Timed: from that request
   entering ``handle`` (signature check, then ``OcppPlugAndCharge.authorize`` queues an Authorize and the
   session answers EVSEProcessing=Ongoing) until the same request, handled again, is answered Finished
   with the CSMS's decision. In between the bench task waits on a trio.Event set by the station's call of
   ``pnc.answered`` (a wrapper around the real method), then hands the car's repeated AuthorizationReq to
   ``handle`` at once. The resolution is one trio scheduling pass (the "resolution" line of the split,
   tens of µs, inside the timed span); a real car asks again only when its own repeat comes, not counted.
   The station relays over a real WebSocket on loopback to ``edge csms`` (a subprocess: asyncio,
   websockets and the ``ocpp`` package). Each round is checked: the decision was the CSMS's ("CSMS:
   Accepted"), one Authorize per round in the CSMS's log. Reference: the same AuthorizationReq answered
   by ``LocalPlugAndCharge`` alone (no CSMS): one ``handle``, Finished at once. The CSMS's log stamps
   (wall clock, same machine) split each round into: first handle | to the CSMS | inside the CSMS | back
   to ``pnc.answered`` | handoff | second handle; the schema checks of Authorize and its answer are also
   timed alone.

2. **Replay of the durable queue.** With the CSMS down (the station running and retrying every second:
   ``RetryBackOffWaitMinimum`` 1, ``RetryBackOffRandomRange`` 0, ``RetryBackOffRepeatTimes`` 0), one
   transaction is queued through ``EvseTransactions`` (the station's own recorder class, on its store):
   Started, ``--events`` - 2 Updated (MeterValuePeriodic, four meter registers and the SoC) and Ended.
   The queueing rate (each event: the transaction's state and the event, two ``synchronous=FULL``
   commits) is its own line, with the rates of the first and the last tenth (the queue's depth matters).
   Then ``edge csms`` is started on the same port; the clock starts when the station's BootNotification
   is answered Accepted and stops when the last event is acknowledged in the store. Afterwards the
   CSMS's log must show every event once, in order, seqNo contiguous from 0, Started first and Ended
   last, each answered with a CALLRESULT. The interval also holds the station's queued
   SecurityEventNotification (start-up) and nothing else (StatusNotification goes after the queue).
   Reference: a minimal trio-websocket client in this process sending one CALL at a time to the same
   CSMS, no validation, no SQLite: first the very same TransactionEvent payload, then Heartbeats; the
   ratio says what the station's own work (schema validation both ways, SQLite read and ack, JSON, the
   RPC layer) costs on top of the CSMS's round trip. The CPU time of both processes over the interval
   says who bounds it, and the station's steps are also timed alone (sans-IO). ``--profile`` runs
   another, profiled, replay (cProfile in this process and in the CSMS) and prints where the time goes,
   grouped by package; its rate is not a measurement.

Target: replay >= 500 events/s.

    .venv/bin/python bench/ocpp.py                      # 300 PnC rounds, 10,000 events, ~1.5 min
    .venv/bin/python bench/ocpp.py --quick              # 20 rounds, 300 events, ~5 s
    .venv/bin/python bench/ocpp.py --profile            # also the profiled replay and its breakdown (+1 min)
    .venv/bin/python bench/ocpp.py --json out.json      # also write every number as JSON
    .venv/bin/python bench/ocpp.py --only pnc|replay    # one measurement
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import itertools
import json
import logging
import os
import pstats
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# this file is named like the ocpp package: its own folder must not shadow it
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from trio_websocket import open_websocket_url

from edge.chargingpoint import ChargingPoint
from edge.controller import Authorized, CarSession, ChargingController, EnergyTransferStarted, SessionEnded
from edge.ev import request_payload_type
from edge.ev.iso2 import ContractCredentials, Iso2Car
from edge.hardware import SimulatedCharger
from edge.ocpp.bridge import EvseTransactions, MeterReading
from edge.ocpp.station import EvseLink, OcppStation, StationSettings
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.testpki import create_test_pki
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.v2gtp import V2gtpMessage

REPO = Path(__file__).resolve().parents[1]
#: fast reconnects: the default back-off (5 s doubled three times, plus up to 10 s of jitter) would dominate
FAST_RETRY = {"OCPPCommCtrlr/RetryBackOffWaitMinimum": "1", "OCPPCommCtrlr/RetryBackOffRandomRange": "0",
              "OCPPCommCtrlr/RetryBackOffRepeatTimes": "0"}
TARGET_EVENTS_PER_S = 500
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: ``edge csms`` under cProfile, written when it exits (SIGTERM)
PROFILED_CSMS = """import cProfile, sys
from edge.cli import main
profile = cProfile.Profile()
profile.enable()
try:
    code = main(sys.argv[1:])
finally:
    profile.disable()
    profile.dump_stats({out!r})
sys.exit(code)
"""


# --- edge csms in a subprocess --------------------------------------------------------------------------------


class Csms:
    """``python -m edge.cli csms`` (optionally under cProfile), its port read from its first stdout line."""

    def __init__(self, log_path: Path, port: int = 0, profile: Path | None = None) -> None:
        self.log_path = log_path
        self.stderr_path = log_path.with_suffix(".stderr")
        # profiled: the main thread only (the ocpp package validates in executor threads: not in it)
        prefix = [sys.executable] + (["-c", PROFILED_CSMS.format(out=str(profile))] if profile else ["-m", "edge.cli"])
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen([*prefix, "csms", "--port", str(port), "--log", str(log_path)],
                                         stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"edge csms did not start: {self.stderr_path.read_text()[-2000:]}")
        announced = json.loads(line)
        self.port: int = announced["port"]
        self.url: str = announced["url"]

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process so far (Linux /proc; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def log(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


def station_frames(log: list[dict[str, Any]], station: str, action: str, direction: str = "in") -> list[dict]:
    """The log records of the CALLs ``action`` that came in from ``station``."""
    return [r for r in log if r.get("dir") == direction and r.get("station") == station and "frame" in r
            and r["frame"][0] == 2 and r["frame"][2] == action]


def answers_by_id(log: list[dict[str, Any]], station: str) -> dict[str, dict[str, Any]]:
    """The CSMS's CALLRESULT / CALLERROR records to ``station``, by message id."""
    return {r["frame"][1]: r for r in log if r.get("dir") == "out" and r.get("station") == station
            and "frame" in r and r["frame"][0] in (3, 4)}


@contextlib.contextmanager
def quiet_station_logs() -> Iterator[list[str]]:
    """The station's WARNING+ lines (connection refused while the CSMS is down...) are kept, not printed."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.name}: {record.getMessage()}")

    logger = logging.getLogger("edge")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    old, logger.propagate = logger.propagate, False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.propagate = old


def new_station(url: str, station_id: str, state_dir: Path, meter: Callable[[], MeterReading],
                controller: ChargingController | None = None) -> OcppStation:
    station = OcppStation(StationSettings(url, station_id, state_dir),
                          [EvseLink(1, controller or ChargingController(), meter, 100_000.0)],
                          overrides=dict(FAST_RETRY))
    station.random.seed(1)
    return station


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout) as scope:
        while not predicate():
            await trio.sleep(0.01)
    if scope.cancelled_caught:
        raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- 1. the Plug & Charge relay -------------------------------------------------------------------------------


@dataclass
class PncRound:
    total: float  # s, AuthorizationReq in -> Finished out
    first: float = 0.0  # the first handle (Ongoing, Authorize queued)
    to_csms: float = 0.0  # first handle done -> the CSMS logs the Authorize in
    csms: float = 0.0  # the CSMS's in -> out
    back: float = 0.0  # the CSMS's out -> pnc.answered called in the station
    handoff: float = 0.0  # pnc.answered -> this task runs again (one trio scheduling pass: the resolution)
    second: float = 0.0  # the second handle (Finished)


@dataclass
class PncResult:
    ocpp: list[PncRound] = field(default_factory=list)
    local: list[PncRound] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)  # s per call, each step alone


class PncHarness:
    """A -2 PnC car up to its AuthorizationReq, on one charging point whose sessions use ``pnc``."""

    def __init__(self, pki: Path, pnc: Any) -> None:
        self.board = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
        self.controller = ChargingController()
        self.config = EvseConfig(controller=self.controller, point=ChargingPoint(self.board, "bench"),
                                 pnc=pnc, pnc_without_tls=True)
        self.contract = ContractCredentials.from_pki(pki)

    def up_to_authorization(self, now: float) -> tuple[ChargerConnection, Iso2Car, V2gtpMessage]:
        car = Iso2Car(payment="pnc", contract=self.contract, soc=40, target_soc=80)
        conn = ChargerConnection(self.board, config=self.config)
        request: bytes | None = car.start()
        while not car.log or car.log[-1] != "AuthorizationReq":
            assert request is not None
            response = conn.handle(V2gtpMessage(request_payload_type(car), request), now)
            assert response is not None, f"the charger closed the connection after {car.log[-1:]}"
            request = car.handle(response.payload, now)
        assert request is not None
        return conn, car, V2gtpMessage(request_payload_type(car), request)


def session_state(conn: ChargerConnection) -> str:
    assert conn.session is not None
    return str(conn.session.state)


async def pnc_ocpp_rounds(pki: Path, tmp: Path, rounds: int, warmup: int, result: PncResult) -> None:
    csms = Csms(tmp / "csms-pnc.jsonl")
    station_id = "BENCH-PNC"
    station = new_station(csms.url, station_id, tmp / "state-pnc", lambda: MeterReading(0.0, 0.0, 0.0))
    try:
        harness = PncHarness(pki, None)
        pnc = station.use_pnc(LocalPlugAndCharge.from_pki_folder(pki))
        harness.config.pnc = pnc
        answered = trio.Event()
        answered_at = [0.0, 0.0]  # perf_counter, wall clock
        real_answered, real_failed = pnc.answered, pnc.failed

        def on_answered(key: str, response: dict[str, Any]) -> bool:
            answered_at[:] = [time.perf_counter(), time.time()]
            ok = real_answered(key, response)
            answered.set()
            return ok

        def on_failed(key: str, reason: str) -> bool:
            answered_at[:] = [time.perf_counter(), time.time()]
            ok = real_failed(key, reason)
            answered.set()
            return ok

        pnc.answered, pnc.failed = on_answered, on_failed  # type: ignore[method-assign]
        stamps: list[tuple[float, float, float]] = []  # wall: round start, first handle done, answered
        async with trio.open_nursery() as nursery:
            await nursery.start(station.run)
            await wait_until(station.online, 20, "the station to boot")
            await wait_until(lambda: not station.store.queued() and not station.pending, 10, "the boot messages")
            for n in range(warmup + rounds):
                conn, car, message = harness.up_to_authorization(trio.current_time())
                answered = trio.Event()
                now = trio.current_time()
                w0 = time.time()
                t0 = time.perf_counter()
                ongoing = conn.handle(message, now)
                t_first = time.perf_counter()
                w_first = time.time()
                state_first = session_state(conn)
                await answered.wait()
                t_again = time.perf_counter()
                finished = conn.handle(message, now)  # the car's repeated AuthorizationReq (checked below)
                t1 = time.perf_counter()
                state_final = session_state(conn)
                decision = pnc.decisions[-1].why if pnc.decisions else ""
                # not timed: the car's own view (its repeat is the same request; it takes Finished and goes on)
                assert ongoing is not None and finished is not None
                repeat = car.handle(ongoing.payload, now)
                after = car.handle(finished.payload, now)
                conn.connection_lost("bench: round over")
                if state_first != "AuthorizationReq:Ongoing" or state_final != "AuthorizationReq" \
                        or decision != "CSMS: Accepted":
                    result.problems.append(f"PnC round {n}: first {state_first}, then {state_final} ({decision})")
                if repeat != message.payload or after is None or car.log[-1] != "ChargeParameterDiscoveryReq":
                    result.problems.append(f"PnC round {n}: the car's repeat differs or it did not go on "
                                           f"({car.log[-3:]})")
                if n >= warmup:
                    result.ocpp.append(PncRound(t1 - t0, t_first - t0, handoff=t_again - answered_at[0],
                                                second=t1 - t_again))
                    stamps.append((w0, w_first, answered_at[1]))
            nursery.cancel_scope.cancel()
    finally:
        csms.stop()
        station.close()
    # the split from the CSMS's log stamps; the last rounds' Authorizes are the timed ones
    log = csms.log()
    calls = station_frames(log, station_id, "Authorize")
    answers = answers_by_id(log, station_id)
    if len(calls) != warmup + rounds:
        result.problems.append(f"the CSMS logged {len(calls)} Authorize, expected {warmup + rounds}")
        return
    from edge.ocpp import adapter

    request, response = calls[-1]["frame"][3], answers[calls[-1]["frame"][1]]["frame"][2]
    result.costs = {
        "validate Authorize request (adapter.validate)": per_call(
            lambda: adapter.validate(station.version, "Authorize", "request", request), 500),
        "validate AuthorizeResponse (adapter.validate)": per_call(
            lambda: adapter.validate(station.version, "Authorize", "response", response), 500)}
    for timed, call, (_, w_first, w_answered) in zip(result.ocpp, calls[warmup:], stamps, strict=True):
        answer = answers.get(call["frame"][1])
        if answer is None or answer["frame"][0] != 3 or answer["frame"][2]["idTokenInfo"]["status"] != "Accepted":
            result.problems.append(f"Authorize {call['frame'][1]} not answered Accepted: {answer}")
            continue
        timed.to_csms = call["t"] - w_first
        timed.csms = answer["t"] - call["t"]
        timed.back = w_answered - answer["t"]


def pnc_local_rounds(pki: Path, rounds: int, warmup: int, result: PncResult) -> None:
    local = LocalPlugAndCharge.from_pki_folder(pki)
    harness = PncHarness(pki, local)
    for n in range(warmup + rounds):
        conn, _, message = harness.up_to_authorization(time.monotonic())
        t0 = time.perf_counter()
        conn.handle(message, time.monotonic())
        t1 = time.perf_counter()
        if session_state(conn) != "AuthorizationReq":
            result.problems.append(f"local round {n}: {session_state(conn)}")
        conn.connection_lost("bench: round over")
        if n >= warmup:
            result.local.append(PncRound(t1 - t0, t1 - t0))


# --- 2. the replay of the durable queue ----------------------------------------------------------------------


@dataclass
class ReplayResult:
    events: int
    queue_s: float = 0.0  # queueing them (EvseTransactions -> SQLite, synchronous=FULL)
    queue_tenth: int = 1  # the first and the last tenth of the events queued:
    queue_first_s: float = 0.0
    queue_last_s: float = 0.0
    queued_count_s: float = 0.0  # one StationStore.queued() with every event queued
    replay_s: float = 0.0  # boot Accepted -> the last event acknowledged
    gaps: list[float] = field(default_factory=list)  # s between consecutive acknowledgements
    station_cpu_s: float = 0.0  # this process over the replay
    csms_cpu_s: float | None = None  # the CSMS over the replay
    reconnect_s: float = 0.0  # the CSMS started -> boot Accepted (not in the rate)
    payload: dict[str, Any] = field(default_factory=dict)  # one Updated event as sent (for the reference)
    payload_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: Counter[str] = field(default_factory=Counter)
    costs: dict[str, float] = field(default_factory=dict)  # station_costs()


@dataclass
class RawResult:
    action: str
    trips: list[float]  # s per CALL -> CALLRESULT
    total_s: float
    csms_cpu_s: float | None = None
    client_cpu_s: float = 0.0  # this process (the minimal client) over the timed CALLs


class FakeMeter:
    """A DC car charging at ~50 kW, one sample per second of its own clock."""

    def __init__(self) -> None:
        self.clock = 0.0

    def read(self) -> MeterReading:
        power = 50_000.0 + 250.0 * ((int(self.clock) % 7) - 3)
        return MeterReading(round(self.clock * 50_000.0 / 3600.0, 3), 0.0, power, min(100.0, 20 + self.clock / 60))


def queue_transaction(station: OcppStation, events: int) -> tuple[list[float], str]:
    """Started, events - 2 MeterValuePeriodic Updated, Ended, through EvseTransactions on the station's store
    (offline: the station is not connected). Returns when each event was queued (perf_counter, the start
    first) and the transaction id."""
    meter = FakeMeter()
    tx = EvseTransactions(1, station.store, meter.read, online=station.online, clock=lambda: meter.clock,
                          updated_interval=lambda: 1.0)
    car = CarSession("b3" * 8, "iso2")
    stamps = [time.perf_counter()]
    tx.on_event(Authorized(car, "PnC", "DE-EDG-C00000001-X"))
    tx.on_event(EnergyTransferStarted(car))
    stamps.append(time.perf_counter())
    assert tx.open is not None
    tid = tx.open.transaction_id
    for _ in range(events - 2):
        meter.clock += 1.0
        tx.sample()
        stamps.append(time.perf_counter())
    tx.on_event(SessionEnded("stopped_by_ev", car))
    stamps.append(time.perf_counter())
    return stamps, tid


async def replay(tmp: Path, events: int, name: str, profile: Path | None = None) -> tuple[ReplayResult, Csms]:
    """Queue ``events`` with the CSMS down, start it, time the replay. Returns the CSMS still running."""
    result = ReplayResult(events)
    first = Csms(tmp / f"csms-{name}-probe.jsonl")  # only to get a free port, then down
    port, url = first.port, first.url
    first.stop()
    station_id = f"BENCH-{name.upper()}"
    station = new_station(url, station_id, tmp / f"state-{name}", lambda: MeterReading(0.0, 0.0, 0.0))
    csms: Csms | None = None
    booted = trio.Event()
    done = trio.Event()
    t_boot = [0.0, 0.0, 0.0]  # perf_counter, process CPU, CSMS CPU
    acks: list[float] = []
    expected = events + station.store.queued()  # with the start-up SecurityEventNotification
    profiler = cProfile.Profile() if profile else None
    real_boot, real_delivered = station.boot.on_boot_answer, station.store.delivered

    def on_boot_answer(payload: dict[str, Any], now: float) -> None:
        real_boot(payload, now)
        if station.boot.status == "Accepted" and not booted.is_set():
            assert csms is not None
            t_boot[:] = [time.perf_counter(), time.process_time(), csms.cpu_seconds() or 0.0]
            if profiler is not None:
                profiler.enable()
            booted.set()

    def delivered(message_id: int) -> None:
        real_delivered(message_id)
        acks.append(time.perf_counter())
        if len(acks) == expected:
            if profiler is not None:
                profiler.disable()
            result.replay_s = acks[-1] - t_boot[0]
            result.station_cpu_s = time.process_time() - t_boot[1]
            cpu = csms.cpu_seconds() if csms is not None else None
            result.csms_cpu_s = cpu - t_boot[2] if cpu is not None else None
            done.set()

    station.boot.on_boot_answer = on_boot_answer  # type: ignore[method-assign]
    station.store.delivered = delivered  # type: ignore[method-assign]
    try:
        with quiet_station_logs() as warnings:
            async with trio.open_nursery() as nursery:
                await nursery.start(station.run)
                await trio.sleep(0.2)  # its first connection attempt fails: offline from here on
                stamps, tid = queue_transaction(station, events)
                result.queue_s = stamps[-1] - stamps[0]
                tenth = max(1, events // 10)
                result.queue_first_s, result.queue_last_s = stamps[tenth] - stamps[0], stamps[-1] - stamps[-1 - tenth]
                result.queue_tenth = tenth
                result.queued_count_s = per_call(station.store.queued, 10)  # at the full depth
                queued = station.store.next_messages(3)
                result.payload = next(m.payload for m in queued if m.payload.get("eventType") == "Updated")
                result.payload_bytes = len(json.dumps(result.payload))
                t_start = time.perf_counter()
                csms = Csms(tmp / f"csms-{name}.jsonl", port=port, profile=profile)
                with trio.move_on_after(30):
                    await booted.wait()
                if not booted.is_set():
                    raise RuntimeError("the station did not boot within 30 s of the CSMS starting")
                result.reconnect_s = t_boot[0] - t_start
                with trio.move_on_after(max(60.0, events / 50)):
                    await done.wait()
                if not done.is_set():
                    result.problems.append(f"only {len(acks)} of {expected} messages acknowledged")
                nursery.cancel_scope.cancel()
        result.warnings.update(w for w in warnings if "connection to" not in w)  # the outage's own lines
    except BaseException:
        if csms is not None:
            csms.stop()
        raise
    finally:
        station.close()
    result.gaps = [b - a for a, b in itertools.pairwise(acks)]
    if station.store.dropped:
        result.problems.append(f"the store dropped {station.store.dropped} events")
    if station.violations or station.bugs:
        result.problems.append(f"station: {station.violations} schema violations, {station.bugs} bugs")
    result.problems += check_replay_log(csms, station_id, tid, events)
    if profiler is not None:
        profiler.dump_stats(str(profile.with_suffix(".station")))
    return result, csms


def check_replay_log(csms: Csms, station_id: str, tid: str, events: int) -> list[str]:
    """Every event once, in order, seqNo contiguous from 0, Started first and Ended last, all answered."""
    log = csms.log()
    calls = [r["frame"] for r in station_frames(log, station_id, "TransactionEvent")]
    mine = [f for f in calls if f[3]["transactionInfo"]["transactionId"] == tid]
    problems = []
    if len(mine) != len(calls):
        problems.append(f"{len(calls) - len(mine)} TransactionEvents of another transaction")
    seq = [f[3]["seqNo"] for f in mine]
    if seq != list(range(events)):
        dupes = len(seq) - len(set(seq))
        problems.append(f"CSMS got {len(seq)} events, expected {events} with seqNo 0..{events - 1} in order "
                        f"({dupes} repeated)")
    kinds = Counter(f[3]["eventType"] for f in mine)
    if mine and (mine[0][3]["eventType"] != "Started" or mine[-1][3]["eventType"] != "Ended"
                 or kinds["Updated"] != events - 2):
        problems.append(f"event types {dict(kinds)}, first {mine[0][3]['eventType']}, last {mine[-1][3]['eventType']}")
    if not all(f[3].get("offline") is True for f in mine):
        problems.append("not every event says offline: true")
    answers = answers_by_id(log, station_id)
    unanswered = [f[1] for f in mine if answers.get(f[1], {}).get("frame", [0])[0] != 3]
    if unanswered:
        problems.append(f"{len(unanswered)} events not answered with a CALLRESULT")
    return problems


async def raw_client(csms: Csms, station_id: str, action: str, payload: dict[str, Any], n: int) -> RawResult:
    """One CALL at a time, straight on trio-websocket: json.dumps, send, receive, json.loads (id checked)."""
    trips: list[float] = []
    async with open_websocket_url(f"{csms.url}/{station_id}", subprotocols=["ocpp2.1"]) as ws:
        for i in range(20):  # warm-up, not timed
            await ws.send_message(json.dumps([2, f"w{i}", action, payload]))
            await ws.get_message()
        cpu0, t0, mine0 = csms.cpu_seconds(), time.perf_counter(), time.process_time()
        for i in range(n):
            a = time.perf_counter()
            await ws.send_message(json.dumps([2, str(i), action, payload]))
            answer = json.loads(await ws.get_message())
            trips.append(time.perf_counter() - a)
            if answer[0] != 3 or answer[1] != str(i):
                raise RuntimeError(f"the CSMS answered {answer!r} to {action} {i}")
        total = time.perf_counter() - t0
        mine = time.process_time() - mine0
        cpu1 = csms.cpu_seconds()
    return RawResult(action, trips, total, cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None, mine)


def per_call(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn``: the median of 5 batches of n // 5 calls, after one warm-up call."""
    fn()
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(max(1, n // 5)):
            fn()
        batches.append((time.perf_counter() - t0) / max(1, n // 5))
    return statistics.median(batches)


def station_costs(payload: dict[str, Any], tmp: Path, version: str = "2.1") -> dict[str, float]:
    """What the station does per replayed event besides the I/O, each step alone (s per event): the schema
    checks, the SQLite read and acknowledgement, the RPC framing; and the CSMS's own validation of the request
    (the ocpp package's Draft4Validator, which its ChargePoint runs in an executor thread)."""
    from ocpp.messages import get_validator

    from edge.ocpp import adapter
    from edge.ocpp.rpc import OcppRpc
    from edge.ocpp.store import StationStore

    costs = {
        "validate request (adapter.validate)": per_call(
            lambda: adapter.validate(version, "TransactionEvent", "request", payload), 250),
        "validate response (adapter.validate)": per_call(
            lambda: adapter.validate(version, "TransactionEvent", "response", {}), 1000),
    }
    rpc = OcppRpc()

    def frame_out_and_in() -> None:
        message_id = rpc.call("TransactionEvent", payload, 0.0)
        rpc.outgoing()
        rpc.receive(f'[3,"{message_id}",{{}}]', 0.0)

    costs["RPC framing out and in (OcppRpc, json)"] = per_call(frame_out_and_in, 1000)
    with StationStore(tmp / "costs.sqlite") as store:
        store._db.execute("BEGIN")  # filled in one commit: only the replay's read + ack is timed
        store._db.executemany("INSERT INTO outbox (action, payload) VALUES ('TransactionEvent', ?)",
                              [(json.dumps(payload),)] * 1100)
        store._db.execute("COMMIT")

        def read_and_ack() -> None:
            store.delivered(store.next_messages(1)[0].id)

        costs["SQLite next_messages(1) + delivered"] = per_call(read_and_ack, 1000)
    validator = get_validator(2, "TransactionEvent", version)
    costs["(CSMS) ocpp package: validate the request"] = per_call(lambda: validator.validate(payload), 250)
    return costs


# --- profile breakdown ---------------------------------------------------------------------------------------

#: (group, what a function's file or name contains), first match wins
GROUPS = (
    ("idle (epoll wait)", ("'poll' of 'select.epoll",)),
    ("jsonschema (validation; with attrs, referencing)", ("jsonschema", "referencing", "rpds", "/attr/",
                                                          "urllib/parse")),
    ("sqlite3", ("sqlite3",)),
    ("json", ("/json/", "_json", "'dumps'", "'loads'", "encode' of '_json", "scanner")),
    ("ocpp package", ("/ocpp/",)),
    ("edge.ocpp", ("edge/ocpp/",)),
    ("trio-websocket / wsproto / h11", ("trio_websocket", "wsproto", "h11")),
    ("websockets", ("/websockets/",)),
    ("trio", ("/trio/", "outcome", "sniffio")),
    ("asyncio", ("asyncio",)),
    ("socket calls", ("socket", "'send'", "'recv'", "epoll", "select", "'poll'")),
    ("dataclasses / typing / re / enum", ("dataclasses", "typing", "/re/", "_sre", "enum.py", "sre_")),
    ("file writes (log)", ("'write' of", "'flush' of")),
)


def profile_groups(path: Path, top: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float, int]], float]:
    """Own time by group (without the idle epoll wait) and the top functions by own time, from a cProfile
    dump; and the busy total (everything but the idle wait)."""
    stats = pstats.Stats(str(path), stream=io.StringIO())
    groups: dict[str, float] = defaultdict(float)
    funcs: list[tuple[str, float, int]] = []
    for (filename, line, name), (_cc, nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{filename} '{name}'"
        group = next((g for g, needles in GROUPS if any(s in key for s in needles)), "other Python")
        groups[group] += tt
        if group == GROUPS[0][0]:
            continue
        short = f"{filename}:{line}({name})".replace(str(REPO) + "/", "").split("site-packages/")[-1]
        funcs.append((short, tt, nc))
    idle = groups.pop(GROUPS[0][0], 0.0)
    funcs.sort(key=lambda f: -f[1])
    return [*sorted(groups.items(), key=lambda g: -g[1]), (GROUPS[0][0], idle)], funcs[:top], sum(groups.values())


def cumulative(path: Path, needles: tuple[str, ...]) -> dict[str, float]:
    """Cumulative time of the functions whose name contains one of ``needles`` (first match each)."""
    stats = pstats.Stats(str(path), stream=io.StringIO())
    out: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = f"{Path(filename).name}:{name}"
        for needle in needles:
            if needle == label and ct > out.get(needle, 0.0):
                out[needle] = ct
    return out


STATION_FUNCS = ("station.py:call", "adapter.py:validate", "store.py:next_messages", "store.py:delivered",
                 "connection.py:call", "rpc.py:receive", "rpc.py:call", "connection.py:_writer",
                 "_impl.py:send_message", "_impl.py:get_message", "station.py:_flush_queue")
CSMS_FUNCS = ("csms.py:route_message", "csms.py:log_frame", "charge_point.py:route_message",
              "charge_point.py:_handle_call", "messages.py:validate_payload", "csms.py:_send",
              "charge_point.py:_send", "connection.py:send", "connection.py:recv")


# --- the report ----------------------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x * 1e3:8.3f}"


def report_pnc(res: PncResult) -> dict[str, Any]:
    o = [r.total for r in res.ocpp]
    loc = [r.total for r in res.local]
    print(f"\n1. Plug & Charge: AuthorizationReq in -> Finished out ({len(o)} rounds each), ms")
    print(f"{'':44} {'p50':>8} {'p99':>8} {'max':>8}")
    print(f"{'local LocalPlugAndCharge (reference)':44} {ms(pct(loc, .5))} {ms(pct(loc, .99))} {ms(max(loc))}")
    print(f"{'OCPP relay via edge csms':44} {ms(pct(o, .5))} {ms(pct(o, .99))} {ms(max(o))}")
    added50, added99 = pct(o, .5) - pct(loc, .5), pct(o, .99) - pct(loc, .99)
    print(f"{'added by the relay (difference)':44} {ms(added50)} {ms(added99)}")
    print(f"  ratio OCPP / local: p50 {pct(o, .5) / pct(loc, .5):.1f}x, p99 {pct(o, .99) / pct(loc, .99):.1f}x")
    parts = ("first", "to_csms", "csms", "back", "handoff", "second")
    labels = {"first": "first handle (Ongoing, Authorize queued)", "to_csms": "-> the CSMS logs it in",
              "csms": "inside the CSMS (in -> out)", "back": "-> pnc.answered in the station",
              "handoff": "-> the bench task runs (resolution)", "second": "second handle (Finished)"}
    print("  split of the OCPP rounds (p50 each, ms; via the CSMS's log stamps):")
    split = {p: statistics.median(getattr(r, p) for r in res.ocpp) for p in parts}
    for p in parts:
        print(f"    {labels[p]:42} {ms(split[p])}")
    for what, cost in res.costs.items():
        print(f"  of which (timed alone): {what:46} {ms(cost)}")
    return {"rounds": len(o), "local_ms": {"p50": pct(loc, .5) * 1e3, "p99": pct(loc, .99) * 1e3},
            "ocpp_ms": {"p50": pct(o, .5) * 1e3, "p99": pct(o, .99) * 1e3, "max": max(o) * 1e3},
            "added_ms": {"p50": added50 * 1e3, "p99": added99 * 1e3},
            "split_p50_ms": {p: v * 1e3 for p, v in split.items()},
            "steps_ms": {k: v * 1e3 for k, v in res.costs.items()}, "problems": res.problems}


def report_replay(res: ReplayResult, raws: list[RawResult]) -> dict[str, Any]:
    rate = res.events / res.replay_s
    commits = res.events * 2 + 1  # state + event each; start_transaction once
    print(f"\n2. Durable queue: {res.events} TransactionEvents ({res.payload_bytes} B JSON each), one CALL at a time")
    print(f"  queueing (CSMS down): {res.events / res.queue_s:8.0f} events/s  "
          f"({commits / res.queue_s:.0f} synchronous=FULL commits/s, 2 per event; {res.queue_s:.1f} s)")
    first, last = res.queue_tenth / res.queue_first_s, res.queue_tenth / res.queue_last_s
    print(f"    the first {res.queue_tenth} events: {first:.0f}/s, the last {res.queue_tenth}: {last:.0f}/s; "
          f"StationStore.queued() (SELECT count(*), run by _make_room for every event) at depth {res.events}: "
          f"{res.queued_count_s * 1e6:.0f} µs")
    print(f"  reconnect after the CSMS started: {res.reconnect_s:.2f} s (not in the rate)")
    print(f"{'':44} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU/msg: here':>14} {'CSMS':>8}")

    def line(name: str, n: int, total: float, trips: list[float], here: float | None, there: float | None) -> None:
        here_s = f"{here / n * 1e6:9.0f} µs" if here is not None else f"{'':>12}"
        there_s = f"{there / n * 1e6:5.0f} µs" if there is not None else ""
        print(f"{name:44} {n / total:9.0f} {ms(pct(trips, .5))} {ms(pct(trips, .99))} {here_s:>14} {there_s:>8}")

    line("station replay (boot Accepted -> last ack)", res.events, res.replay_s, res.gaps, res.station_cpu_s,
         res.csms_cpu_s)
    out: dict[str, Any] = {"events": res.events, "payload_bytes": res.payload_bytes,
                           "queue_events_per_s": res.events / res.queue_s, "queue_commits_per_s": commits / res.queue_s,
                           "queue_first_tenth_per_s": first, "queue_last_tenth_per_s": last,
                           "queued_count_us_at_depth": res.queued_count_s * 1e6,
                           "replay_events_per_s": rate, "replay_s": res.replay_s,
                           "replay_gap_ms": {"p50": pct(res.gaps, .5) * 1e3, "p99": pct(res.gaps, .99) * 1e3},
                           "station_cpu_us_per_event": res.station_cpu_s / res.events * 1e6,
                           "csms_cpu_us_per_event": res.csms_cpu_s / res.events * 1e6 if res.csms_cpu_s else None,
                           "reconnect_s": res.reconnect_s, "references": {}, "problems": res.problems}
    for raw in raws:
        n = len(raw.trips)
        line(f"raw client, {raw.action} (reference)", n, raw.total_s, raw.trips, raw.client_cpu_s, raw.csms_cpu_s)
        out["references"][raw.action] = {"events_per_s": n / raw.total_s,
                                         "trip_ms": {"p50": pct(raw.trips, .5) * 1e3, "p99": pct(raw.trips, .99) * 1e3},
                                         "client_cpu_us_per_msg": raw.client_cpu_s / n * 1e6,
                                         "csms_cpu_us_per_msg": raw.csms_cpu_s / n * 1e6 if raw.csms_cpu_s else None}
    same = next((r for r in raws if r.action == "TransactionEvent"), None)
    if same is not None:
        ref = len(same.trips) / same.total_s
        print(f"  station / raw client, same payload: {rate / ref:.2f} of the raw rate "
              f"({(res.replay_s / res.events - same.total_s / len(same.trips)) * 1e6:.0f} µs more per event)")
        out["ratio_to_raw_same_payload"] = rate / ref
    print(f"  target >= {TARGET_EVENTS_PER_S} events/s: {'met' if rate >= TARGET_EVENTS_PER_S else 'NOT MET'} "
          f"({rate:.0f})")
    if res.costs:
        print("  the station's own steps per event, each timed alone (sans-IO), µs:")
        own = 0.0
        for what, cost in res.costs.items():
            print(f"    {what:46} {cost * 1e6:7.0f}")
            own += cost if not what.startswith("(CSMS)") else 0.0
        rest = res.station_cpu_s / res.events - own
        print(f"    {'the rest (trio, trio-websocket, the flush loop)':46} {rest * 1e6:7.0f}")
        out["station_steps_us"] = {k: v * 1e6 for k, v in res.costs.items()} | {"rest": rest * 1e6}
    for text, n in res.warnings.most_common(5):
        print(f"  {n} x station WARNING {text}")
    return out


def report_profile(tmp: Path, res: ReplayResult) -> dict[str, Any]:
    print(f"\nProfiled replay ({res.events} events, {res.events / res.replay_s:.0f} events/s under cProfile: "
          "not a measurement). Main thread, wall clock; own time by group as a share of the time not spent "
          "idle in epoll (the profiler inflates small calls, jsonschema's most; a socket send also counts the time "
          "this process was preempted by the peer it woke):")
    out: dict[str, Any] = {}
    for side, path, funcs in (("station (this process)", tmp / "profile.station", STATION_FUNCS),
                              ("edge csms", tmp / "profile", CSMS_FUNCS)):
        if not path.exists():
            print(f"  {side}: no profile written")
            continue
        groups, top, total = profile_groups(path)
        print(f"  {side}: {total:.2f} s not idle in the main thread (profiled), "
              f"{total / res.events * 1e6:.0f} µs/event")
        if side == "edge csms":
            print("    (the ocpp package validates in asyncio's executor threads: not in this profile; the process's "
                  f"CPU over the replay, all threads: {(res.csms_cpu_s or 0) / res.events * 1e6:.0f} µs/event)")
        for group, tt in groups[:9]:
            print(f"    {group:36} {tt / total * 100:5.1f} %  {tt / res.events * 1e6:6.0f} µs/event")
        print("    cumulative per event:")
        cum = cumulative(path, funcs)
        for name in funcs:
            if name in cum:
                print(f"      {name:34} {cum[name] / res.events * 1e6:7.0f} µs")
        print("    top functions by own time:")
        for where, tt, nc in top[:8]:
            print(f"      {tt / total * 100:5.1f} %  {nc:8d} calls  {where[:100]}")
        out[side] = {"total_s": total, "groups": {g: tt / total for g, tt in groups},
                     "cumulative_us_per_event": {k: v / res.events * 1e6 for k, v in cum.items()},
                     "top": [{"where": w, "own_s": t, "calls": c} for w, t, c in top]}
    return out


async def run_replay(tmp: Path, events: int, raw_n: int, profile: bool) -> tuple[ReplayResult, list[RawResult],
                                                                                  ReplayResult | None]:
    res, csms = await replay(tmp, events, "replay")
    res.costs = station_costs(res.payload, tmp)
    try:
        raws = [await raw_client(csms, "BENCH-RAW", "TransactionEvent", res.payload, raw_n),
                await raw_client(csms, "BENCH-RAW", "Heartbeat", {}, raw_n)]
    finally:
        csms.stop()
    profiled = None
    if profile:
        profiled, csms = await replay(tmp, events, "profiled", profile=tmp / "profile")
        csms.stop()  # SIGTERM: the CSMS exits cleanly and cProfile writes its file
    return res, raws, profiled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300, help="PnC rounds per row (default 300)")
    ap.add_argument("--events", type=int, default=10_000, help="TransactionEvents to replay (default 10000)")
    ap.add_argument("--raw", type=int, help="CALLs per raw-client reference row (default: --events)")
    ap.add_argument("--quick", action="store_true", help="20 rounds, 300 events: a smoke run, numbers rough")
    ap.add_argument("--only", choices=("pnc", "replay"), help="one measurement only")
    ap.add_argument("--profile", action="store_true", help="also a profiled replay and its breakdown")
    ap.add_argument("--state-dir", type=Path, help="where the SQLite stores and logs go (default: a temp dir; "
                                                   "the queueing rate depends on its disk)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write every number as JSON")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.events = min(args.rounds, 20), min(args.events, 300)
    if args.rounds < 5 or args.events < 3:
        ap.error("need --rounds >= 5 and --events >= 3")
    raw_n = args.raw or args.events
    warmup = 3 if args.quick else 10

    tmp = Path(tempfile.mkdtemp(prefix="bench-ocpp-", dir=args.state_dir))
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "load_start": os.getloadavg()[:2],
                           "python": sys.version.split()[0], "quick": args.quick}
    problems: list[str] = []
    try:
        pki = tmp / "pki"
        create_test_pki(pki)
        print(f"OCPP station vs edge csms on loopback ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
              + (", --quick: rough numbers" if args.quick else ""))
        if args.only in (None, "pnc"):
            res = PncResult()
            pnc_local_rounds(pki, args.rounds, warmup, res)
            with quiet_station_logs():
                trio.run(pnc_ocpp_rounds, pki, tmp, args.rounds, warmup, res)
            out["pnc"] = report_pnc(res)
            problems += res.problems
        if args.only in (None, "replay"):
            replayed, raws, profiled = trio.run(run_replay, tmp, args.events, raw_n, args.profile)
            out["replay"] = report_replay(replayed, raws)
            problems += replayed.problems
            if profiled is not None:
                out["profile"] = report_profile(tmp, profiled)
                problems += [f"profiled run: {p}" for p in profiled.problems]
    finally:
        if args.state_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")
    out["load_end"] = os.getloadavg()[:2]
    for problem in problems[:20]:
        print(f"CHECK FAILED: {problem}")
    if not problems:
        passed = []
        if "pnc" in out:
            passed.append("every PnC decision came from the CSMS, one Authorize per round")
        if "replay" in out:
            passed.append("the CSMS got every queued event once, in order, seqNo contiguous, each answered")
        print(f"Checks passed: {'; '.join(passed)}.")
    out["problems"] = problems
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
