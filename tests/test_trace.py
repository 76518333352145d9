"""Session traces (edge.trace): the records written come back equal, a cut file gives its complete
prefix, rotation, and ``edge trace list/show`` on traces of real (in-memory) sessions."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import exi
from edge.cli import main
from edge.ev.din import DinCar
from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20Car
from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.trace import (
    EvseTrace,
    KeyLogTail,
    SessionTraceWriter,
    TraceDirectory,
    TraceRecord,
    V2gDecoder,
    decode_v2g,
    parse_trace_name,
    read_trace,
    sample_hardware,
    trace_file_name,
)
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.sdp import SECURITY_NONE, SdpRequest, SdpResponse
from edge.v2g.v2gtp import V2gtpMessage
from slac.messages import SlacParmReq, encode_frame
from tests.inmemory import run

WALL = 1_796_400_000.0  # 2026-12-04 16:00 UTC: the header's wall clock in these tests
PEER = "[fe80::2]:50123"


@dataclass
class Recorded:
    """A trace written in a test: its file, what each record should read back as, and the exchange."""

    path: Path
    expected: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    exchange: list[tuple[V2gtpMessage, V2gtpMessage]] = field(default_factory=list)  # request, response
    requests: list[str] = field(default_factory=list)  # the car's own log of its requests (after SAP)
    protocol: str = ""


def record_session(path: Path, car: Any, *, extras: bool = True, session: str = "s1", evse: str = "evse1") -> Recorded:
    """Drive ``car`` against a charger in memory, recording every request and response (as the lead's
    ChargerConnection wiring will), with a record of every other kind around it when ``extras``."""
    writer = SessionTraceWriter(path, evse=evse, interface="eth1", session=session, now=100.0, wall=WALL,
                                software="test")
    rec = Recorded(path)
    rec.expected.append(("header", 0.0, {"v": 1, "evse": evse, "iface": "eth1", "sw": "test", "session": session,
                                         "wall": WALL, "mono": 100.0}))
    board = bidirectional_charger(isolation_s=0.2)
    if extras:
        frame = encode_frame(b"\xff" * 6, bytes.fromhex("02aabbccddee"), SlacParmReq(run_id=bytes(range(8))))
        writer.slac("rx", frame, now=100.01)
        rec.expected.append(("slac", 0.01, {"dir": "rx", "frame": frame}))
        sdp_req = SdpRequest(SECURITY_NONE, 0).encode()
        sdp_res = SdpResponse(bytes.fromhex("fe80" + "00" * 13 + "01"), 50000, SECURITY_NONE).encode()
        writer.sdp(sdp_req, sdp_res, now=100.02, peer="[fe80::2]:61000")
        rec.expected.append(("sdp", 0.02, {"req": sdp_req, "res": sdp_res, "peer": "[fe80::2]:61000"}))
    conn_id = writer.connection_opened(PEER, now=100.03, tls="TLSv1.3")
    rec.expected.append(("connection", 0.03, {"event": "open", "conn": conn_id, "peer": PEER, "tls": "TLSv1.3"}))
    if extras:
        line = "CLIENT_HANDSHAKE_TRAFFIC_SECRET " + "ab" * 32 + " " + "cd" * 48
        writer.tls_key(line + "\n", now=100.04, conn=conn_id)
        rec.expected.append(("tls", 0.04, {"line": line, "conn": conn_id}))
    connection = ChargerConnection(board, config=EvseConfig())
    handle = connection.handle

    def recording_handle(message: V2gtpMessage, now: float) -> V2gtpMessage | None:
        writer.v2gtp("rx", message.payload_type, message.payload, now=100 + now, conn=conn_id)
        rec.expected.append(("v2gtp", now, {"dir": "rx", "pt": message.payload_type, "data": message.payload,
                                            "conn": conn_id}))
        response = handle(message, now)
        assert response is not None
        used, budget = 0.0004, 0.025 if len(rec.exchange) % 2 else None  # some with a budget, some without
        writer.v2gtp("tx", response.payload_type, response.payload, now=100 + now + 0.001, conn=conn_id,
                     used=used, budget=budget)
        fields: dict[str, Any] = {"dir": "tx", "pt": response.payload_type, "data": response.payload,
                                  "conn": conn_id, "used": used}
        if budget is not None:
            fields["budget"] = budget
        rec.expected.append(("v2gtp", now + 0.001, fields))
        rec.exchange.append((message, response))
        if extras and len(rec.exchange) == 12:  # in the middle of the session: the other kinds
            values = sample_hardware(board, target_voltage=400.0, target_current=100.0, soc=40.5, contactors=True)
            writer.hardware(values, now=100 + now + 0.002)
            rec.expected.append(("hardware", now + 0.002, {"values": values}))
            writer.state("EnergyTransfer", "contactors closed", now=100 + now + 0.003)
            rec.expected.append(("state", now + 0.003, {"state": "EnergyTransfer", "note": "contactors closed"}))
            call = json.dumps([2, "m1", "TransactionEvent", {"eventType": "Started", "seqNo": 0}])
            result = json.dumps([3, "m1", {"idTokenInfo": {"status": "Accepted"}}])
            writer.ocpp("tx", call, now=100 + now + 0.004)
            writer.ocpp("rx", result, now=100 + now + 0.005)
            rec.expected += [("ocpp", now + 0.004, {"dir": "tx", "text": call}),
                             ("ocpp", now + 0.005, {"dir": "rx", "text": result})]
        return response

    connection.handle = recording_handle  # type: ignore[method-assign]
    end = run(car, connection)
    writer.connection_closed(conn_id, "closed by the car", now=100 + end + 0.01)
    rec.expected.append(("connection", end + 0.01, {"event": "close", "conn": conn_id, "reason": "closed by the car"}))
    writer.close("stopped_by_ev", now=100 + end + 0.02, energy_wh=board.energy_wh())
    rec.expected.append(("end", end + 0.02, {"outcome": "stopped_by_ev", "energy_wh": board.energy_wh()}))
    rec.requests = list(car.log)
    rec.protocol = connection.protocol.name if connection.protocol else ""
    return rec


def as_tuples(records: list[TraceRecord]) -> list[tuple[str, float, dict[str, Any]]]:
    return [(r.kind, r.t, r.fields) for r in records]


def same(actual: list[tuple[str, float, dict[str, Any]]], expected: list[tuple[str, float, dict[str, Any]]]) -> None:
    assert len(actual) == len(expected)
    for (kind, t, fields), (want_kind, want_t, want_fields) in zip(actual, expected, strict=True):
        assert (kind, fields) == (want_kind, want_fields)
        assert t == pytest.approx(want_t, abs=1e-9)


@pytest.fixture(scope="module")
def iso2_trace(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return record_session(tmp_path_factory.mktemp("iso2") / "iso2.cbor", Iso2Car(soc=40, target_soc=40.1))


# --------------------------------------------------------------------------- the format


def test_every_record_kind_reads_back_equal(iso2_trace: Recorded) -> None:
    reader = read_trace(iso2_trace.path)
    records = list(reader)
    assert reader.complete and reader.truncated_at is None and reader.error is None
    kinds = {r.kind for r in records}
    assert kinds == {"header", "slac", "sdp", "connection", "tls", "v2gtp", "hardware", "state", "ocpp", "end"}
    same(as_tuples(records), iso2_trace.expected)
    # wall time = the header's wall clock + the monotonic offset; offsets are where each record begins
    assert records[0].wall == WALL and records[-1].wall == pytest.approx(WALL + records[-1].t)
    assert [r.offset for r in records] == sorted({r.offset for r in records}) and records[0].offset == 0
    assert reader.header is not None and reader.header["evse"] == "evse1"


def test_a_file_cut_anywhere_in_its_last_record_gives_every_record_before_it(iso2_trace: Recorded,
                                                                             tmp_path: Path) -> None:
    full = list(read_trace(iso2_trace.path))
    data = iso2_trace.path.read_bytes()
    last = full[-1].offset
    cut = tmp_path / "cut.cbor"
    for size in range(last, len(data)):
        cut.write_bytes(data[:size])
        reader = read_trace(cut)
        records = list(reader)
        assert as_tuples(records) == as_tuples(full[:-1]), size
        assert reader.truncated_at == (last if size > last else None) and reader.error is None
    cut.write_bytes(data)
    assert len(list(read_trace(cut))) == len(full)


def test_a_file_cut_in_the_middle_gives_the_complete_prefix(iso2_trace: Recorded, tmp_path: Path) -> None:
    full = list(read_trace(iso2_trace.path))
    data = iso2_trace.path.read_bytes()
    cut = tmp_path / "cut.cbor"
    biggest = max(range(len(full) - 1), key=lambda i: full[i + 1].offset - full[i].offset)  # a long v2gtp one
    for index in (0, 1, 7, len(full) // 2, biggest):
        start, end = full[index].offset, full[index + 1].offset
        for size in range(start + 1, end):
            cut.write_bytes(data[:size])
            reader = read_trace(cut)
            assert as_tuples(list(reader)) == as_tuples(full[:index]), (index, size)
            assert reader.truncated_at == start


def test_a_corrupt_record_in_the_middle_stops_reading_there_naming_its_offset(iso2_trace: Recorded,
                                                                              tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    full = list(read_trace(iso2_trace.path))
    data = bytearray(iso2_trace.path.read_bytes())
    index = len(full) // 2
    at = full[index].offset
    for bad in (0xFF, 0x01):  # a break code; a plain integer (valid CBOR, not a record)
        data[at] = bad
        path = tmp_path / f"corrupt{bad}.cbor"
        path.write_bytes(bytes(data))
        reader = read_trace(path)
        records = list(reader)
        assert as_tuples(records) == as_tuples(full[:index])
        assert reader.error is not None and f"byte {at} " in reader.error and reader.truncated_at is None
    assert f"byte {at} " in caplog.text


def test_every_charge_loop_message_decodes_with_the_negotiated_protocol(iso2_trace: Recorded) -> None:
    decoder = V2gDecoder()
    decoded = [decoder.decode(r) for r in read_trace(iso2_trace.path) if r.kind == "v2gtp"]
    assert all(d.error is None and not d.guessed for d in decoded)
    assert [d.protocol for d in decoded[:3]] == ["apphand", "apphand", "iso2"]
    requests = [d.name for d in decoded[2::2]]
    assert requests == iso2_trace.requests
    assert [d.name for d in decoded[3::2]] == [name[:-3] + "Res" for name in iso2_trace.requests]


def test_a_trace_that_begins_mid_connection_guesses_the_protocol(iso2_trace: Recorded) -> None:
    demand = next(r for r in read_trace(iso2_trace.path) if r.kind == "v2gtp" and r.get("dir") == "rx"
                  and decode_v2g(r, "iso2").name == "CurrentDemandReq")
    decoded = V2gDecoder().decode(TraceRecord("v2gtp", 1.0, {**demand.fields, "conn": 99}, 0))
    assert decoded.name == "CurrentDemandReq" and decoded.protocol == "iso2" and decoded.guessed


def test_undecodable_payloads_give_their_error() -> None:
    garbage = TraceRecord("v2gtp", 0.0, {"dir": "rx", "pt": 0x8002, "data": b"\x80\xff\xff\xff"}, 0)
    decoded = decode_v2g(garbage)
    assert decoded.name is None and decoded.protocol == "iso20-common" and decoded.error
    sdp_type = decode_v2g(TraceRecord("v2gtp", 0.0, {"dir": "rx", "pt": 0x9000, "data": b"\x10\x00"}, 0))
    assert sdp_type.error is not None and "0x9000" in sdp_type.error


# --------------------------------------------------------------------------- the writer


def test_a_file_stops_growing_at_its_limit_with_one_note(tmp_path: Path) -> None:
    path = tmp_path / "big.cbor"
    writer = SessionTraceWriter(path, evse="e", now=0.0, wall=WALL, max_file_bytes=2000)
    for i in range(200):
        writer.v2gtp("rx", 0x8001, bytes(20), now=i * 0.1)
    writer.close("stopped_by_ev", now=30.0)
    records = list(read_trace(path))
    notes = [r for r in records if r.kind == "state"]
    assert len(notes) == 1 and "limit" in notes[0].get("note")
    assert records[-1].kind == "end" and path.stat().st_size < 2000 + 200
    assert 10 < sum(r.kind == "v2gtp" for r in records) < 200


def test_buffered_records_reach_the_file_at_the_limit_or_on_close(tmp_path: Path) -> None:
    path = tmp_path / "buffered.cbor"
    writer = SessionTraceWriter(path, evse="e", now=0.0, wall=WALL, flush_every_record=False, buffer_limit=500)
    assert path.stat().st_size == 0  # even the header waits
    writer.v2gtp("rx", 0x8001, bytes(100), now=0.1)
    assert path.stat().st_size == 0
    for i in range(5):
        writer.v2gtp("tx", 0x8001, bytes(100), now=0.2 + i)
    assert 500 <= path.stat().st_size < writer.bytes_written  # the last two wait for the next flush
    writer.close(now=9.0)
    assert path.stat().st_size == writer.bytes_written
    assert [r.kind for r in read_trace(path)] == ["header"] + ["v2gtp"] * 6 + ["end"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_write_error_stops_the_trace_without_raising() -> None:
    writer = SessionTraceWriter(Path("/dev/full"), evse="e", now=0.0)
    assert writer.failed is not None and "write failed" in writer.failed
    writer.v2gtp("rx", 0x8001, b"\x80", now=0.1)  # dropped, no exception
    writer.close(now=1.0)
    assert writer.closed


def test_a_value_cbor_cannot_hold_drops_only_its_record(tmp_path: Path) -> None:
    path = tmp_path / "odd-values.cbor"
    writer = SessionTraceWriter(path, evse="e", now=0.0, wall=WALL)
    writer.hardware({"present_voltage": 400.0, "board": object()}, now=0.1)
    writer.hardware({"present_voltage": 401.0}, now=0.2)
    writer.close(now=0.3)
    records = list(read_trace(path))
    assert [r.kind for r in records] == ["header", "hardware", "end"]
    assert records[1].get("values") == {"present_voltage": 401.0} and writer.failed is None


def test_writing_a_charge_loop_record_is_cheap(tmp_path: Path) -> None:
    """Measured, not asserted (machines differ): the budget is 50 us per charge-loop message record."""
    writer = SessionTraceWriter(tmp_path / "timing.cbor", evse="e", now=0.0, wall=WALL)
    request, response = bytes(range(20)), bytes(range(26))  # a -2 CurrentDemandReq/Res is 16-30 bytes
    n = 5000
    started = time.perf_counter()
    for i in range(n):
        writer.v2gtp("rx", 0x8001, request, now=i * 0.05, conn=1)
        writer.v2gtp("tx", 0x8001, response, now=i * 0.05 + 0.001, conn=1, used=0.0004, budget=0.025)
    per_record = (time.perf_counter() - started) / (2 * n)
    writer.close(now=n * 0.05)
    print(f"\ntrace: {per_record * 1e6:.1f} us per v2gtp record (flushed each), "
          f"{writer.bytes_written / writer.records:.0f} bytes per record")
    assert writer.records == 2 * n + 2 and writer.failed is None


# --------------------------------------------------------------------------- files and rotation


def test_file_names_sort_by_evse_and_start() -> None:
    name = trace_file_name("DE*EDG*E0001*1", 1_796_379_300.0, "a1b2c3")
    assert name == "DE_EDG_E0001_1-20261204T101500Z-a1b2c3.cbor"
    assert parse_trace_name(name) == ("DE_EDG_E0001_1", 1_796_379_300.0, "a1b2c3")
    assert parse_trace_name("notes.txt") is None and parse_trace_name("evse1-2026-x.cbor") is None


def _old_trace(directory: Path, evse: str, wall: float, size: int) -> Path:
    path = directory / trace_file_name(evse, wall, "old")
    path.write_bytes(bytes(size))
    os.utime(path, (wall + 60, wall + 60))  # last written a minute after its start
    return path


def test_rotation_deletes_the_oldest_beyond_size_and_age_never_the_current(tmp_path: Path) -> None:
    now = WALL
    day = 86400.0
    ancient = _old_trace(tmp_path, "evse1", now - 40 * day, 100)  # beyond max_age_days
    old = _old_trace(tmp_path, "evse2", now - 3 * day, 4000)
    older = _old_trace(tmp_path, "evse1", now - 4 * day, 4000)
    newer = _old_trace(tmp_path, "evse1", now - 1 * day, 4000)
    foreign = tmp_path / "README.txt"
    foreign.write_bytes(bytes(50_000))
    directory = TraceDirectory(tmp_path, max_bytes_total=9000, max_age_days=30, wall_clock=lambda: now)
    writer = directory.open("evse1", "eth1", now=0.0)
    # 12,000 bytes of old traces and the new header: the oldest two go (age, then size), the newest stays
    assert not ancient.exists() and not older.exists() and old.exists() and newer.exists() and foreign.exists()
    assert writer.path.exists() and directory.open_writers() == [writer]
    assert directory.traces()[-1] == writer.path  # the newest start sorts last
    # a limit the open trace alone exceeds: everything else goes, the trace being written stays
    writer.v2gtp("rx", 0x8001, bytes(3000), now=1.0)
    os.utime(writer.path, (now - 2 * day, now - 2 * day))  # only being open protects it now
    directory.max_bytes_total = 100
    deleted = directory.prune()
    assert set(deleted) == {old, newer} and writer.path.exists()
    writer.close(now=2.0)
    os.utime(writer.path, (now, now))
    # once closed (and not written to for a while) it is an old trace like any other
    later = TraceDirectory(tmp_path, max_bytes_total=100, wall_clock=lambda: now + day)
    second = later.open("evse1", now=0.0)
    assert not writer.path.exists() and second.path.exists()
    second.close(now=1.0)


def test_rotation_keeps_a_trace_another_process_is_writing(tmp_path: Path) -> None:
    now = WALL
    theirs = _old_trace(tmp_path, "evse9", now - 7200, 5000)
    os.utime(theirs, (now - 10, now - 10))  # written to 10 s ago: someone has it open
    stale = _old_trace(tmp_path, "evse9", now - 3600, 5000)
    assert TraceDirectory(tmp_path, max_bytes_total=1000, wall_clock=lambda: now).prune() == [stale]
    assert theirs.exists()


def test_an_evse_trace_opens_at_the_first_record_and_ends_with_the_session(tmp_path: Path) -> None:
    clock = {"now": 0.0}
    walls = iter(WALL + i for i in range(100))
    directory = TraceDirectory(tmp_path, clock=lambda: clock["now"], wall_clock=lambda: next(walls))
    evse = EvseTrace(directory, "evse1", "eth1", idle_rollover=600.0)
    first = evse.writer(now=5.0)
    assert first is not None and evse.writer(now=6.0) is first
    first.state("SessionSetup", now=6.0)
    path = evse.end_session("stopped_by_ev", now=7.0)
    assert path == first.path and first.closed and evse.current is None
    second = evse.writer(now=8.0)
    assert second is not None and second is not first and second.path != first.path
    second.state(note="SDP only", now=8.0)
    clock["now"] = 1000.0
    third = evse.writer()  # silent for more than idle_rollover: the old one ends as idle
    assert third is not None and third is not second and second.closed
    ends = [r for r in read_trace(second.path) if r.kind == "end"]
    assert [e.get("outcome") for e in ends] == ["idle"] and ends[0].t == pytest.approx(0.0)
    assert [r.get("outcome") for r in read_trace(first.path) if r.kind == "end"] == ["stopped_by_ev"]
    evse.end_session("stopped_by_ev")


def test_an_evse_trace_that_cannot_open_records_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    evse = EvseTrace(TraceDirectory(blocker / "traces"), "evse1", retry_after=60.0)
    assert evse.writer(now=0.0) is None and evse.end_session("stopped_by_ev") is None
    blocker.unlink()  # the directory can be made now, but the next attempt waits a minute
    assert evse.writer(now=30.0) is None
    later = evse.writer(now=61.0)
    assert later is not None and later.path.parent == blocker / "traces"
    later.close(now=62.0)


def test_key_log_tail_gives_only_new_complete_lines(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    keylog.write_text("CLIENT_RANDOM old old\n")
    tail = KeyLogTail(keylog)
    with keylog.open("a") as f:
        f.write("# comment\nSERVER_TRAFFIC_SECRET_0 aa bb\nCLIENT_TRAFFIC_SECRET_0 cc")
    assert tail.read_new() == ["SERVER_TRAFFIC_SECRET_0 aa bb"]
    with keylog.open("a") as f:
        f.write(" dd\n")
    assert tail.read_new() == ["CLIENT_TRAFFIC_SECRET_0 cc dd"] and tail.read_new() == []


def test_a_hardware_sample_reads_the_board() -> None:
    board = SimulatedCharger()
    values = sample_hardware(board, target_voltage=400.0)
    assert values["present_voltage"] == 0.0 and values["target_voltage"] == 400.0 and values["cp"] in "ABCDEF"


# --------------------------------------------------------------------------- the command line


def _response_codes(recorded: Recorded) -> list[str]:
    """Every response's ResponseCode, decoded here without edge.trace."""
    codes = []
    for index, (_, response) in enumerate(recorded.exchange):
        proto = "apphand" if index == 0 else recorded.protocol
        message = exi.decode(proto, response.payload)
        body = message if index == 0 else next(getattr(message.Body, n) for n in message.Body.__slots__
                                                if getattr(message.Body, n) is not None)
        codes.append(str(body.ResponseCode))
    return codes


def test_show_prints_the_messages_and_response_codes_in_order(iso2_trace: Recorded,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "show", str(iso2_trace.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    v2g = [line for line in out if line.split()[2] in ("apphand", "iso2")]
    names = [line.split()[3].split("#")[0] for line in v2g]
    expected = ["supportedAppProtocolReq", "supportedAppProtocolRes"]
    for request in iso2_trace.requests:
        expected += [request, request[:-3] + "Res"]
    assert names == expected
    codes = [line.split("ResponseCode=")[1].split()[0] for line in v2g if "ResponseCode=" in line]
    assert codes == _response_codes(iso2_trace)
    demand = next(line for line in v2g if " CurrentDemandReq#" in line)
    assert "EVTargetVoltage=" in demand and "EVTargetCurrent=" in demand and "EVRESSSOC=40" in demand
    answer = next(line for line in v2g if " CurrentDemandRes#" in line)
    assert "EVSEPresentVoltage=" in answer and "[0.40 ms / 25 ms]" in answer  # budget from the record or timers
    others = " ".join(out)
    assert "SlacParmReq" in others and "CALL TransactionEvent" in others and "CALLRESULT TransactionEvent" in others
    assert "security=none" in others and "[fe80::1]:50000" in others and "session end" in others


def test_show_full_prints_xml_and_json_parses(iso2_trace: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "show", "--full", str(iso2_trace.path)]) == 0
    out = capsys.readouterr().out
    assert "CurrentDemandReq" in out and "<" in out and "EVTargetVoltage>" in out and '"eventType"' in out
    assert main(["trace", "show", "--json", str(iso2_trace.path)]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["kind"] for o in objects] == [kind for kind, _, _ in iso2_trace.expected]
    v2g = [o for o in objects if o["kind"] == "v2gtp"]
    assert [bytes.fromhex(o["data"]) for o in v2g[::2]] == [req.payload for req, _ in iso2_trace.exchange]
    assert [o["name"] for o in v2g[2::2]] == iso2_trace.requests
    assert all(o["t"] >= 0 and o["wall"] >= WALL for o in objects)


def test_show_survives_undecodable_payloads_and_reports_a_cut(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "odd.cbor"
    writer = SessionTraceWriter(path, evse="e", now=0.0, wall=WALL)
    writer.v2gtp("rx", 0x8001, b"\x80\x12\x34garbage", now=0.1, conn=1)
    writer.v2gtp("rx", 0x9999, b"\x01\x02", now=0.2)
    writer.ocpp("rx", "not json", now=0.3)
    writer.slac("rx", b"\x00" * 10, now=0.4)
    writer.record("future-kind", now=0.5, value=1)
    writer.close(now=0.6)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    assert main(["trace", "show", str(path)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 6  # header, five records; the cut end record is reported, not shown
    assert "undecodable" in lines[1] and "80123467617262616765" in lines[1]
    assert "undecodable" in lines[2] and "0x9999" in lines[2]
    assert "not JSON" in lines[3] and "?" in lines[4] and "future-kind" in lines[5]
    assert "ends inside a record" in captured.err
    assert main(["trace", "show", "--json", str(path)]) == 0
    assert len([json.loads(line) for line in capsys.readouterr().out.splitlines()]) == 6


def test_show_of_a_corrupt_file_fails_after_the_good_records(tmp_path: Path, iso2_trace: Recorded,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(iso2_trace.path.read_bytes())
    third = list(read_trace(iso2_trace.path))[3].offset
    data[third] = 0xFF
    path = tmp_path / "corrupt.cbor"
    path.write_bytes(bytes(data))
    assert main(["trace", "show", str(path)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3 and f"byte {third} " in captured.err
    assert main(["trace", "show", str(tmp_path / "missing.cbor")]) == 2


def test_list_shows_each_trace_with_its_evse_protocol_and_message_count(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    recorded = {}
    for wall, evse, car in ((WALL, "evse1", DinCar(soc=40, target_soc=40.1)),
                            (WALL + 3600, "evse2", Iso20Car(service="dc", soc=40, target_soc=40.1))):
        recorded[evse] = record_session(traces / trace_file_name(evse, wall, "abc"), car, extras=False, evse=evse)
    cut = traces / trace_file_name("evse3", WALL + 7200, "cut")
    shutil.copy(recorded["evse1"].path, cut)
    cut.write_bytes(cut.read_bytes()[:-5])
    (traces / "unrelated.txt").write_text("x")
    assert main(["trace", "list", str(traces)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    din, iso20, partial = lines
    assert " evse1 " in din and " din " in din and f" {len(recorded['evse1'].exchange) * 2} msgs" in din
    assert "stopped_by_ev" in din and "2026-12-04" in din
    assert " evse2 " in iso20 and " iso20-dc " in iso20 and f" {len(recorded['evse2'].exchange) * 2} msgs" in iso20
    assert " kWh" in iso20 and "stopped_by_ev" in iso20
    assert "cut" in partial and partial.endswith(cut.name)
    assert main(["trace", "list", str(tmp_path / "none")]) == 2


def test_a_charging_point_records_its_sessions(tmp_path: Path) -> None:
    """ChargerConnection with a trace: every request and response in order, the connection's open and close,
    the session's end with its energy; a stranger's connection on the same point is in the file too."""
    from edge.ev.iso2 import Iso2Car
    from edge.hardware import SimulatedCharger
    from edge.trace import EvseTrace, TraceDirectory, read_trace
    from edge.v2g.charger import ChargerConnection, EvseConfig
    from tests.inmemory import run

    clock = [0.0]
    directory = TraceDirectory(tmp_path, clock=lambda: clock[0])
    config = EvseConfig(trace=EvseTrace(directory, "evse1", "secc0"))
    hw = SimulatedCharger(isolation_s=0.2)
    car = Iso2Car(soc=40, target_soc=40.1, capacity_wh=2_000.0)
    conn = ChargerConnection(hw, config=config)
    conn.set_peer("[fe80::1]:50000")
    run(car, conn)
    conn.connection_lost("closed by the car")
    [path] = list(tmp_path.glob("evse1-*.cbor"))
    records = list(read_trace(path))
    kinds = [r.kind for r in records]
    assert kinds[0] == "header" and kinds[1] == "connection" and kinds[-1] == "end"
    v2g = [r for r in records if r.kind == "v2gtp"]
    # every request (supportedAppProtocol, then what the car logs), each followed by its response
    assert [r.get("dir") for r in v2g] == ["rx", "tx"] * (1 + len(car.log))
    assert all(r.get("used") is not None for r in v2g if r.get("dir") == "tx")
    assert records[-1].get("energy_wh") == pytest.approx(hw.energy_wh()) and hw.energy_wh() > 0
