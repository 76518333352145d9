"""EV and EVSE matchers against each other over the emulated powerline, with a simulated clock."""

from __future__ import annotations

import heapq
import itertools

from slac.emulator import PowerlineEmulator
from slac.ev import EvMatcher, EvState
from slac.evse import EvseMatcher, Failed, Matched, Send, State

EV = bytes.fromhex("02aaaaaaaaaa")
NEAR = bytes.fromhex("021111111111")
FAR = bytes.fromhex("022222222222")
LATENCY = 0.002  # one frame over the powerline


def run(emulator: PowerlineEmulator, stations: dict[bytes, object], until: float = 30.0) -> dict[bytes, list]:
    """Deliver frames and fire deadlines in time order until nothing is left to do."""
    results: dict[bytes, list] = {mac: [] for mac in stations}
    queue: list = []
    seq = itertools.count()

    def handle(mac: bytes, actions: list, now: float) -> None:
        for a in actions:
            if isinstance(a, Send):
                for dst, frame in emulator.from_host(mac, a.frame):
                    if dst in stations:
                        heapq.heappush(queue, (now + LATENCY, next(seq), dst, frame))
            elif isinstance(a, Matched | Failed):
                results[mac].append(a)

    for mac, st in stations.items():
        handle(mac, st.plugged(0.0) if isinstance(st, EvseMatcher) else [], 0.0)
    for mac, st in stations.items():
        if not isinstance(st, EvseMatcher):
            handle(mac, st.start(0.5), 0.5)
    now = 0.5
    while now < until:
        deadlines = [(st.deadline, mac) for mac, st in stations.items() if st.deadline is not None]
        next_frame = queue[0][0] if queue else None
        next_deadline = min(deadlines) if deadlines else None
        if next_frame is None and next_deadline is None:
            break
        if next_frame is not None and (next_deadline is None or next_frame <= next_deadline[0]):
            now, _, dst, frame = heapq.heappop(queue)
            handle(dst, stations[dst].receive(frame, now), now)
        else:
            now, mac = next_deadline
            handle(mac, stations[mac].timeout(now), now)
    return results


def test_single_car_single_charger() -> None:
    emu = PowerlineEmulator({(EV, NEAR): 22})
    ev, evse = EvMatcher(EV), EvseMatcher(NEAR)
    res = run(emu, {EV: ev, NEAR: evse})
    (ev_match,) = res[EV]
    (evse_match,) = res[NEAR]
    assert isinstance(ev_match, Matched) and isinstance(evse_match, Matched)
    assert ev_match.peer_mac == NEAR and evse_match.peer_mac == EV
    assert ev_match.nmk == evse_match.nmk == emu.keys[EV] == emu.keys[NEAR]  # one logical network
    assert evse_match.attenuation_db == 22


def test_crosstalk_picks_the_nearer_charger() -> None:
    emu = PowerlineEmulator({(EV, NEAR): 18, (EV, FAR): 41})
    ev, near, far = EvMatcher(EV), EvseMatcher(NEAR), EvseMatcher(FAR)
    res = run(emu, {EV: ev, NEAR: near, FAR: far})
    assert ev.chosen == NEAR and isinstance(res[EV][0], Matched)
    assert isinstance(res[NEAR][0], Matched)
    assert near.state is State.MATCHED
    # the far charger sounded too but never got the match: it gives up after TT_EVSE_match_session
    assert far.state is State.FAILED and "CM_SLAC_MATCH.REQ" in res[FAR][0].reason
    assert emu.keys[EV] == emu.keys[NEAR] != emu.keys[FAR]


def test_set_key_rejected_once_then_match() -> None:
    emu = PowerlineEmulator({(EV, NEAR): 25}, reject_set_key={NEAR: 1})
    res = run(emu, {EV: EvMatcher(EV), NEAR: EvseMatcher(NEAR)})
    assert isinstance(res[NEAR][0], Matched)


def test_no_charger_fails_cleanly_after_retries() -> None:
    emu = PowerlineEmulator({(EV, NEAR): 25})
    ev = EvMatcher(EV)
    res = run(emu, {EV: ev})  # the charger is not there
    assert ev.state is EvState.FAILED and "CM_SLAC_PARM.CNF" in res[EV][0].reason
