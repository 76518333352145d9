"""The EVSE SLAC state machine driven with frames and time as numbers (no sockets)."""

from __future__ import annotations

from slac import messages as m
from slac.evse import LOCAL_MODEM, EvseMatcher, Failed, Matched, Note, Send, State
from slac.timers import SlacTimers

EVSE = bytes.fromhex("021122334455")
EV = bytes.fromhex("02aabbccddee")
OTHER = bytes.fromhex("02deadbeef00")
RUN = bytes(range(1, 9))
NID, NMK = bytes(range(7)), bytes(range(16))


def matcher(**kw) -> EvseMatcher:
    return EvseMatcher(EVSE, keygen=lambda: (NID, NMK), **kw)


def frames(actions) -> list[m.Message]:
    return [m.decode_frame(a.frame).message for a in actions if isinstance(a, Send)]


def from_ev(msg: m.Message, src: bytes = EV, dst: bytes = EVSE) -> bytes:
    return m.encode_frame(dst, src, msg)


def from_modem(msg: m.Message) -> bytes:
    return m.encode_frame(EVSE, LOCAL_MODEM, msg)


def joined(t: float = 0.0, **kw) -> EvseMatcher:
    s = matcher(**kw)
    (req,) = frames(s.plugged(t))
    assert isinstance(req, m.SetKeyReq) and (req.nid, req.new_key) == (NID, NMK)
    assert s.receive(from_modem(m.SetKeyCnf(result=0)), t + 0.01) == []
    assert s.state is State.WAIT_PARM_REQ
    return s


def sound(s: EvseMatcher, t: float, n: int = 10, atten: int = 30) -> list:
    out = s.receive(from_ev(m.StartAttenCharInd(num_sounds=n, forwarding_sta=EV, run_id=RUN)), t)
    for i in range(n):
        out += s.receive(from_ev(m.MnbcSoundInd(count=n - 1 - i, run_id=RUN)), t + 0.01 * i)
        out += s.receive(from_modem(m.AttenProfileInd(pev_mac=EV, groups=[atten + i % 3] * 58)), t + 0.01 * i)
    return out


def test_full_match() -> None:
    s = joined(atten_offset_db=2)
    (cnf,) = frames(s.receive(from_ev(m.SlacParmReq(run_id=RUN), dst=m.BROADCAST), 1.0))
    assert isinstance(cnf, m.SlacParmCnf) and cnf.forwarding_sta == EV and cnf.run_id == RUN
    assert (cnf.num_sounds, cnf.time_out) == (10, 6)
    (ind,) = frames(sound(s, 1.05))
    assert isinstance(ind, m.AttenCharInd) and ind.num_sounds == 10
    assert ind.groups == [round((30 * 4 + 31 * 3 + 32 * 3) / 10 + 2)] * 58  # average + offset
    assert s.receive(from_ev(m.AttenCharRsp(source_address=EV, run_id=RUN)), 1.3) == []
    out = s.receive(from_ev(m.SlacMatchReq(pev_mac=EV, evse_mac=EVSE, run_id=RUN)), 1.4)
    (match_cnf,) = frames(out)
    assert isinstance(match_cnf, m.SlacMatchCnf) and (match_cnf.nid, match_cnf.nmk) == (NID, NMK)
    (result,) = [a for a in out if isinstance(a, Matched)]
    assert result.peer_mac == EV and result.attenuation_db == 33
    assert s.state is State.MATCHED and s.deadline is None


def test_set_key_rejected_then_retried() -> None:
    s = matcher()
    s.plugged(0)
    out = s.receive(from_modem(m.SetKeyCnf(result=1)), 0.01)
    assert any(isinstance(a, Note) for a in out) and isinstance(frames(out)[0], m.SetKeyReq)
    s.receive(from_modem(m.SetKeyCnf(result=0)), 0.02)
    assert s.state is State.WAIT_PARM_REQ


def test_set_key_never_confirmed_fails_after_retries() -> None:
    s = matcher()
    s.plugged(0)
    sent = 1
    while s.state is State.SETTING_KEY:
        out = s.timeout(s.deadline)
        sent += len(frames(out))
    assert sent == 1 + SlacTimers().C_sequ_retry and isinstance(out[-1], Failed)


def test_atten_char_repeated_then_the_run_ends_and_slac_init_fails() -> None:
    s = joined()
    s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.0)
    sound(s, 1.05)
    repeats = 0
    while s.state is State.WAIT_ATTEN_RSP:
        out = s.timeout(s.deadline)
        repeats += sum(isinstance(f, m.AttenCharInd) for f in frames(out))
    assert repeats == SlacTimers().C_sequ_retry
    assert "CM_ATTEN_CHAR.RSP" in out[-1].text and s.state is State.WAIT_PARM_REQ  # the car may try again
    (f,) = s.timeout(s.deadline)
    assert isinstance(f, Failed) and "TT_EVSE_SLAC_init" in f.reason and "CM_ATTEN_CHAR.RSP" in f.reason


def test_neighbours_car_heard_first_does_not_block_ours() -> None:
    """Crosstalk: the car next door sounds here too; our car asks for the match and gets it."""
    s = joined()
    other_run = b"O" * 8
    frames(s.receive(from_ev(m.SlacParmReq(run_id=other_run), src=OTHER), 1.0))
    (cnf,) = frames(s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.01))
    assert cnf.forwarding_sta == EV and set(s.runs) == {EV, OTHER}
    s.receive(from_ev(m.StartAttenCharInd(forwarding_sta=OTHER, run_id=other_run), src=OTHER), 1.02)
    s.receive(from_modem(m.AttenProfileInd(pev_mac=OTHER, groups=[45] * 58)), 1.03)
    sound(s, 1.05)
    s.receive(from_ev(m.AttenCharRsp(source_address=EV, run_id=RUN)), 1.3)
    out = s.receive(from_ev(m.SlacMatchReq(pev_mac=EV, evse_mac=EVSE, run_id=RUN)), 1.4)
    (result,) = [a for a in out if isinstance(a, Matched)]
    assert result.peer_mac == EV and s.state is State.MATCHED and not s.runs


def test_sounding_window_closes_with_the_profiles_received() -> None:
    s = joined()
    s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.0)
    s.receive(from_ev(m.StartAttenCharInd(num_sounds=10, forwarding_sta=EV, run_id=RUN)), 1.01)
    for _ in range(4):
        s.receive(from_modem(m.AttenProfileInd(pev_mac=EV, groups=[40] * 58)), 1.02)
    assert s.deadline == 1.01 + SlacTimers().TT_EVSE_match_MNBC
    (ind,) = frames(s.timeout(s.deadline))
    assert ind.num_sounds == 4 and ind.groups == [40] * 58


def test_no_parm_req_fails_at_slac_init_timeout() -> None:
    s = joined(timers=SlacTimers().with_overrides(TT_EVSE_SLAC_init=20))
    assert s.deadline == 20.01
    assert s.timeout(19) == [] and s.state is State.WAIT_PARM_REQ
    (f,) = s.timeout(20.01)
    assert isinstance(f, Failed) and "TT_EVSE_SLAC_init" in f.reason


def test_third_mac_and_wrong_run_id_are_dropped() -> None:
    s = joined()
    s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.0)
    (note,) = s.receive(from_ev(m.StartAttenCharInd(run_id=RUN, forwarding_sta=OTHER), src=OTHER), 1.01)
    assert isinstance(note, Note) and "no SLAC run with that car" in note.text
    (note,) = s.receive(from_ev(m.StartAttenCharInd(run_id=b"x" * 8, forwarding_sta=EV)), 1.01)
    assert "RunID" in note.text and s.state is State.WAIT_START_ATTEN
    (note,) = s.receive(b"\x00" * 5, 1.02)
    assert "dropped frame" in note.text


def test_car_restarting_mid_match_is_followed() -> None:
    s = joined()
    s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.0)
    sound(s, 1.05)
    new_run = b"R" * 8
    out = s.receive(from_ev(m.SlacParmReq(run_id=new_run)), 1.5)
    (cnf,) = frames(out)
    assert cnf.run_id == new_run and s.run_id == new_run and s.state is State.WAIT_START_ATTEN
    assert any(isinstance(a, Note) and "restarted" in a.text for a in out)


def test_unplug_leaves_the_network_with_a_new_key() -> None:
    keys = iter([(NID, NMK), (b"\x01" * 7, b"\x02" * 16)])
    s = EvseMatcher(EVSE, keygen=lambda: next(keys))
    s.plugged(0)
    s.receive(from_modem(m.SetKeyCnf()), 0.01)
    (req,) = frames(s.unplugged(5.0))
    assert isinstance(req, m.SetKeyReq) and req.new_key == b"\x02" * 16 and req.nid != NID
    s.receive(from_modem(m.SetKeyCnf()), 5.01)
    assert s.state is State.UNPLUGGED and s.deadline is None


def test_timer_overrides_are_checked() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown"):
        SlacTimers().with_overrides(TT_bogus=1)
    with pytest.raises(ValueError, match="positive"):
        SlacTimers().with_overrides(TT_match_response=0)


def test_fuzz_matcher_never_raises() -> None:
    """10^5 mutated frames (and timeouts) into a matcher in every state: only actions come out."""
    import random

    rng = random.Random(3)
    seeds = [from_ev(m.SlacParmReq(run_id=RUN)), from_ev(m.StartAttenCharInd(forwarding_sta=EV, run_id=RUN)),
             from_ev(m.MnbcSoundInd(run_id=RUN)), from_modem(m.AttenProfileInd(pev_mac=EV, groups=[9] * 58)),
             from_ev(m.AttenCharRsp(source_address=EV, run_id=RUN)),
             from_ev(m.SlacMatchReq(pev_mac=EV, evse_mac=EVSE, run_id=RUN)), from_modem(m.SetKeyCnf())]
    s = joined()
    t = 1.0
    for i in range(100_000):
        data = bytearray(rng.choice(seeds))
        if rng.random() < 0.7:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)):]
        t += 0.01
        s.receive(bytes(data), t)
        if s.deadline is not None and (rng.random() < 0.05 or t >= s.deadline):
            s.timeout(s.deadline)
        if s.state in (State.FAILED, State.MATCHED, State.UNPLUGGED) or i % 5000 == 0:
            s = joined(t)


def test_bad_frame_flood_is_one_log_line(caplog) -> None:
    import logging

    from slac.link import _NoteLimiter

    s = joined()
    limiter = _NoteLimiter(interval=60)
    with caplog.at_level(logging.INFO, logger="edge.slac"):
        for i in range(1000):
            for action in s.receive(bytes([i % 256]) * 20, 1.0 + i / 1000):
                assert isinstance(action, Note)
                limiter.note(action.text)
    assert len(caplog.records) == 1 and "dropped frame" in caplog.records[0].getMessage()
    assert s.state is State.WAIT_PARM_REQ


def _to_match_wait(s: EvseMatcher) -> None:
    s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.0)
    sound(s, 1.05)
    s.receive(from_ev(m.AttenCharRsp(source_address=EV, run_id=RUN)), 1.3)
    assert s.state is State.WAIT_MATCH_REQ


def test_validate_not_required_unless_configured() -> None:
    s = joined()
    _to_match_wait(s)
    (cnf,) = frames(s.receive(from_ev(m.ValidateReq(timer=0)), 1.4))
    assert isinstance(cnf, m.ValidateCnf) and cnf.result == 4


def test_validate_counts_cp_toggles() -> None:
    s = joined(validate=True)
    _to_match_wait(s)
    (ready,) = frames(s.receive(from_ev(m.ValidateReq(timer=0)), 1.4))
    assert ready.result == 1
    assert s.receive(from_ev(m.ValidateReq(timer=20)), 1.5) == []  # a 2 s window opens
    assert s.deadline == 3.5
    for t in (1.8, 2.1, 2.6):
        s.cp_toggle(t)
    s.cp_toggle(3.9)  # after the window: not counted
    (cnf,) = frames(s.timeout(3.5))
    assert (cnf.toggle_num, cnf.result) == (3, 2)
    out = s.receive(from_ev(m.SlacMatchReq(pev_mac=EV, evse_mac=EVSE, run_id=RUN)), 4.0)
    assert any(isinstance(a, Matched) for a in out)


def test_validate_before_sounding_is_not_ready() -> None:
    s = joined(validate=True)
    s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.0)
    (cnf,) = frames(s.receive(from_ev(m.ValidateReq(timer=0)), 1.1))
    assert cnf.result == 0


def test_quirk_set_key_rejected_but_applied() -> None:
    s = matcher(set_key_rejected_means_applied=True)
    s.plugged(0)
    (note,) = s.receive(from_modem(m.SetKeyCnf(result=1)), 0.01)
    assert "quirk" in note.text and s.state is State.WAIT_PARM_REQ


def test_quirk_modem_without_attenuation_values() -> None:
    s = joined(missing_attenuation_db=30)
    s.receive(from_ev(m.SlacParmReq(run_id=RUN)), 1.0)
    s.receive(from_ev(m.StartAttenCharInd(num_sounds=2, forwarding_sta=EV, run_id=RUN)), 1.01)
    s.receive(from_modem(m.AttenProfileInd(pev_mac=EV, groups=[])), 1.02)
    (ind,) = frames(s.receive(from_modem(m.AttenProfileInd(pev_mac=EV, groups=[])), 1.03))
    assert ind.groups == [30] * 58
