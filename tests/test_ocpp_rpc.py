"""OCPP-J framing, sans-IO: one CALL of ours at a time (queued, bounded, timed out), answers matched by
message ID, and every frame the framing does not allow answered with the right CALLERROR without
raising (fuzzed)."""

from __future__ import annotations

import json
from itertools import count

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.ocpp.rpc import (
    CallAnswered,
    CallFailed,
    IncomingCall,
    IncomingSend,
    OcppRpc,
    ProtocolViolation,
    ResultRejected,
    RpcQueueFull,
)


def rpc(**kw) -> OcppRpc:
    ids = count(1)
    return OcppRpc(new_id=lambda: f"m{next(ids)}", **kw)


def test_one_call_at_a_time_in_order() -> None:
    r = rpc(call_timeout=30)
    assert r.call("BootNotification", {"reason": "PowerUp"}, 0.0) == "m1"
    r.call("Heartbeat", {}, 0.1)
    assert [json.loads(f) for f in r.outgoing()] == [[2, "m1", "BootNotification", {"reason": "PowerUp"}]]
    assert r.outgoing() == [] and r.deadline() == 30.0  # the second waits for the first's answer
    events = r.receive('[3,"m1",{"status":"Accepted","interval":300,"currentTime":"2026-12-04T00:00:00Z"}]', 1.0)
    assert events == [CallAnswered("m1", "BootNotification", {"status": "Accepted", "interval": 300,
                                                               "currentTime": "2026-12-04T00:00:00Z"})]
    assert [json.loads(f) for f in r.outgoing()] == [[2, "m2", "Heartbeat", {}]] and r.deadline() == 31.0


def test_a_call_without_answer_times_out_and_frees_the_slot() -> None:
    r = rpc(call_timeout=5)
    r.call("Heartbeat", {}, 0.0)
    r.call("StatusNotification", {}, 0.0)
    r.outgoing()
    assert r.handle_timeout(4.9) == []
    [failed] = r.handle_timeout(5.0)
    assert isinstance(failed, CallFailed) and failed.code == "Timeout" and failed.message_id == "m1"
    assert json.loads(r.outgoing()[0])[1] == "m2"
    assert r.receive('[3,"m1",{}]', 6.0) == [ProtocolViolation("CALLRESULT m1 answers no CALL of ours: dropped")]


def test_errors_and_2_1_frames() -> None:
    r = rpc()
    r.call("Authorize", {}, 0.0)
    [failed] = r.receive('[4,"m1","NotSupported","no",{"x":1}]', 0.5)
    assert failed == CallFailed("m1", "Authorize", "NotSupported", "no", {"x": 1})
    assert r.receive('[5,"m9","FormatViolation","bad result",{}]', 0.6) == [
        ResultRejected("m9", "FormatViolation", "bad result")]
    assert r.receive('[6,"s1","NotifyPeriodicEventStream",{"data":[]}]', 0.7) == [
        IncomingSend("s1", "NotifyPeriodicEventStream", {"data": []})]
    assert r.outgoing()[-1:] == ['[2,"m1","Authorize",{}]']  # nothing answers a SEND or a CALLRESULTERROR


def test_the_peers_calls_are_answered_one_at_a_time() -> None:
    r = rpc()
    call = IncomingCall("c1", "Reset", {"type": "Immediate"})
    assert r.receive('[2,"c1","Reset",{"type":"Immediate"}]', 0.0) == [call]
    [violation] = r.receive('[2,"c2","Reset",{"type":"Immediate"}]', 0.1)  # c1 still unanswered
    assert isinstance(violation, ProtocolViolation)
    assert json.loads(r.outgoing()[0])[:3] == [4, "c2", "RpcFrameworkError"]
    r.reply("c1", {"status": "Accepted"})
    assert r.outgoing() == ['[3,"c1",{"status":"Accepted"}]']
    assert isinstance(r.receive('[2,"c3","Reset",{"type":"OnIdle"}]', 0.2)[0], IncomingCall)
    r.reply_error("c3", "NotImplemented", "later")
    assert json.loads(r.outgoing()[0]) == [4, "c3", "NotImplemented", "later", {}]
    with pytest.raises(ValueError):
        r.reply_error("c4", "Oops")


@pytest.mark.parametrize(("text", "answer"), [
    ("not json", [4, "-1", "RpcFrameworkError"]),
    ('{"a": 1}', [4, "-1", "RpcFrameworkError"]),
    ('[2, "c1"]', [4, "c1", "RpcFrameworkError"]),
    ('[9, "c1", "X", {}]', [4, "c1", "MessageTypeNotSupported"]),
    ('[2, "c1", "Reset", []]', [4, "c1", "FormatViolation"]),
    ('[2, "c1", "", {}]', [4, "c1", "FormatViolation"]),
    ('[2, 17, "Reset", {}]', [4, "-1", "RpcFrameworkError"]),
    ('[2, "' + "x" * 37 + '", "Reset", {}]', [4, "-1", "RpcFrameworkError"]),
    ('[true, "c1", "Reset", {}]', [4, "c1", "RpcFrameworkError"]),
])
def test_malformed_frames_get_the_right_callerror(text: str, answer: list) -> None:
    r = rpc()
    events = r.receive(text, 0.0)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert json.loads(r.outgoing()[0])[:3] == answer


def test_the_queue_is_bounded() -> None:
    r = rpc(max_queued=2)
    for _ in range(3):  # one outstanding, two waiting
        r.call("Heartbeat", {}, 0.0)
    with pytest.raises(RpcQueueFull):
        r.call("Heartbeat", {}, 0.0)
    assert r.queued == 3


@given(st.one_of(st.binary(max_size=64), st.text(max_size=64),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                              max_leaves=12).map(json.dumps)))
def test_no_frame_raises_and_every_answer_is_one_frame(text: str | bytes) -> None:
    r = rpc()
    r.call("Heartbeat", {}, 0.0)
    r.outgoing()
    for event in r.receive(text, 1.0):
        assert isinstance(event, IncomingCall | IncomingSend | CallAnswered | CallFailed | ResultRejected
                          | ProtocolViolation)
    for frame in r.outgoing():
        decoded = json.loads(frame)
        assert isinstance(decoded, list) and decoded[0] in (2, 3, 4) and len(decoded[1]) <= 36
