"""EV and EVSE matchers against each other over the emulated powerline, with a simulated clock."""

from __future__ import annotations

import heapq
import itertools

from slac.emulator import PowerlineEmulator
from slac.ev import EvMatcher, EvState, ToggleCp
from slac.evse import EvseMatcher, Failed, Matched, Send, State

EV = bytes.fromhex("02aaaaaaaaaa")
NEAR = bytes.fromhex("021111111111")
FAR = bytes.fromhex("022222222222")
LATENCY = 0.002  # one frame over the powerline


def run(emulator: PowerlineEmulator, stations: dict[bytes, object], until: float = 30.0,
        plugged_into: bytes | None = None) -> dict[bytes, list]:
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
            elif isinstance(a, ToggleCp) and plugged_into is not None:
                # the car's CP line reaches only the charger it is plugged into
                for i in range(a.count):
                    heapq.heappush(queue, (now + a.within * (i + 0.5) / (a.count + 1), next(seq), plugged_into, None))

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
            if frame is None:
                handle(dst, stations[dst].cp_toggle(now), now)
            else:
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


def test_validation_confirms_the_charger_the_car_is_plugged_into() -> None:
    emu = PowerlineEmulator({(EV, NEAR): 18, (EV, FAR): 41})
    ev = EvMatcher(EV, validate_toggles=3)
    res = run(emu, {EV: ev, NEAR: EvseMatcher(NEAR, validate=True), FAR: EvseMatcher(FAR, validate=True)},
              plugged_into=NEAR)
    assert isinstance(res[EV][0], Matched) and res[EV][0].peer_mac == NEAR
    assert isinstance(res[NEAR][0], Matched)


def test_validation_catches_a_crosstalk_pick() -> None:
    """The neighbour's line measures better, but the car is plugged in here: the toggles tell."""
    emu = PowerlineEmulator({(EV, NEAR): 18, (EV, FAR): 41})
    ev = EvMatcher(EV, validate_toggles=3)
    res = run(emu, {EV: ev, NEAR: EvseMatcher(NEAR, validate=True), FAR: EvseMatcher(FAR, validate=True)},
              plugged_into=FAR)
    assert isinstance(res[EV][0], Failed) and "CM_VALIDATE failed" in res[EV][0].reason
    assert not any(isinstance(r, Matched) for r in res[NEAR] + res[FAR])


def test_charger_without_validation_says_not_required() -> None:
    emu = PowerlineEmulator({(EV, NEAR): 20})
    res = run(emu, {EV: EvMatcher(EV, validate_toggles=2), NEAR: EvseMatcher(NEAR)}, plugged_into=NEAR)
    assert isinstance(res[EV][0], Matched)
