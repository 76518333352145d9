"""EV side of ISO 15118-3 SLAC as a sans-IO state machine (testbench runs and our own tests).

``start`` broadcasts CM_SLAC_PARM.REQ and collects the chargers' CNFs for TT_match_response; then it
sends CM_START_ATTEN_CHAR.IND and the M-SOUNDs, waits TT_EV_atten_results for each charger's
CM_ATTEN_CHAR.IND (answering each with CM_ATTEN_CHAR.RSP), picks the charger with the lowest average
attenuation, sends it CM_SLAC_MATCH.REQ, and sets the NID/NMK of its CNF on the local modem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum

from . import messages as m
from .evse import LOCAL_MODEM, Failed, Matched, Note, Send
from .timers import SlacTimers

TT_EV_atten_results = 1.2  # Table A.1


@dataclass(frozen=True, slots=True)
class ToggleCp:
    """Ask the hardware to toggle CP (B -> C -> B) ``count`` times within ``within`` seconds."""

    count: int
    within: float


class EvState(Enum):
    IDLE = "idle"
    WAIT_PARM_CNF = "waiting for CM_SLAC_PARM.CNF"
    WAIT_ATTEN = "waiting for CM_ATTEN_CHAR.IND"
    VALIDATING = "validating (CM_VALIDATE)"
    WAIT_MATCH_CNF = "waiting for CM_SLAC_MATCH.CNF"
    SETTING_KEY = "setting key"
    MATCHED = "matched"
    FAILED = "failed"


@dataclass
class EvMatcher:
    ev_mac: bytes
    timers: SlacTimers = field(default_factory=SlacTimers)
    pev_id: bytes = b"\x00" * 17
    modem_mac: bytes = LOCAL_MODEM
    max_attenuation_db: float | None = None  # refuse chargers measured worse than this
    validate_toggles: int | None = None  # run CM_VALIDATE with this many CP toggles before matching
    validate_window: float = 2.0  # seconds announced for the toggles

    state: EvState = EvState.IDLE
    deadline: float | None = None
    run_id: bytes = b""
    chosen: bytes | None = None
    _cnfs: dict[bytes, m.SlacParmCnf] = field(default_factory=dict)
    _atten: dict[bytes, float] = field(default_factory=dict)
    _tries: int = 0
    _match: m.SlacMatchCnf | None = None
    _validate_step: int = 0  # 1: asked whether the charger is ready, 2: toggles announced

    def start(self, now: float) -> list:
        self.run_id = os.urandom(8)
        self._cnfs, self._atten, self.chosen, self._match = {}, {}, None, None
        self._tries = 0
        return self._send_parm(now)

    def _send_parm(self, now: float) -> list:
        self.state = EvState.WAIT_PARM_CNF
        self._tries += 1
        self.deadline = now + self.timers.TT_match_response
        return [Send(m.encode_frame(m.BROADCAST, self.ev_mac, m.SlacParmReq(run_id=self.run_id)))]

    def receive(self, data: bytes, now: float) -> list:
        try:
            frame = m.decode_frame(data)
        except m.SlacFrameError as e:
            return [Note(f"dropped frame: {e}")]
        msg = frame.message
        if frame.dst not in (self.ev_mac, m.BROADCAST):
            return []
        if isinstance(msg, m.SetKeyCnf) and self.state is EvState.SETTING_KEY:
            if msg.result != 0:
                return [Note(f"CM_SET_KEY.CNF result {msg.result} (some modems say so and apply the key)"),
                        *self._done()]
            return self._done()
        if getattr(msg, "run_id", self.run_id) != self.run_id:
            return [Note(f"dropped {type(msg).__name__}: another RunID")]
        if isinstance(msg, m.SlacParmCnf) and self.state is EvState.WAIT_PARM_CNF:
            self._cnfs[frame.src] = msg
            return []
        if isinstance(msg, m.AttenCharInd) and self.state is EvState.WAIT_ATTEN and frame.src in self._cnfs:
            groups = msg.groups or [255]
            self._atten[frame.src] = sum(groups) / len(groups)
            rsp = m.AttenCharRsp(source_address=self.ev_mac, run_id=self.run_id)
            return [Send(m.encode_frame(frame.src, self.ev_mac, rsp))]
        if isinstance(msg, m.ValidateCnf) and self.state is EvState.VALIDATING and frame.src == self.chosen:
            return self._on_validate_cnf(msg, now)
        if isinstance(msg, m.SlacMatchCnf) and self.state is EvState.WAIT_MATCH_CNF and frame.src == self.chosen:
            self._match = msg
            self.state = EvState.SETTING_KEY
            self.deadline = now + self.timers.TT_match_response
            req = m.SetKeyReq(nid=msg.nid, new_key=msg.nmk)
            return [Send(m.encode_frame(self.modem_mac, self.ev_mac, req))]
        return []

    def timeout(self, now: float) -> list:
        if self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        if self.state is EvState.WAIT_PARM_CNF:
            if self._cnfs:
                return self._sound(now)
            if self._tries <= self.timers.C_sequ_retry:
                return self._send_parm(now)
            return self._fail("no CM_SLAC_PARM.CNF from any charger")
        if self.state is EvState.WAIT_ATTEN:
            return self._choose(now)
        if self.state is EvState.WAIT_MATCH_CNF:
            if self._tries <= self.timers.C_sequ_retry:
                return self._send_match(now)
            return self._fail("no CM_SLAC_MATCH.CNF")
        if self.state is EvState.VALIDATING:
            if self._validate_step == 1 and self._tries <= self.timers.C_sequ_retry:
                return self._send_validate(now, 0)
            return self._fail("no CM_VALIDATE.CNF from the chosen charger")
        if self.state is EvState.SETTING_KEY:
            return [Note("no CM_SET_KEY.CNF from the local modem: assuming the key is set"), *self._done()]
        return []

    def _sound(self, now: float) -> list:
        cnf = next(iter(self._cnfs.values()))
        n = cnf.num_sounds
        out: list = []
        start = m.StartAttenCharInd(num_sounds=n, time_out=cnf.time_out, forwarding_sta=self.ev_mac,
                                    run_id=self.run_id)
        out.extend(Send(m.encode_frame(m.BROADCAST, self.ev_mac, start)) for _ in range(3))
        for i in range(n):
            sound = m.MnbcSoundInd(sender_id=self.pev_id, count=n - 1 - i, run_id=self.run_id, random=os.urandom(16))
            out.append(Send(m.encode_frame(m.BROADCAST, self.ev_mac, sound)))
        self.state = EvState.WAIT_ATTEN
        self.deadline = now + TT_EV_atten_results
        return out

    def _choose(self, now: float) -> list:
        candidates = {mac: a for mac, a in self._atten.items()
                      if self.max_attenuation_db is None or a <= self.max_attenuation_db}
        if not candidates:
            return self._fail("no charger reported an acceptable attenuation")
        self.chosen = min(candidates, key=candidates.__getitem__)
        self._tries = 0
        notes = [Note(f"charger {mac.hex(':')}: {a:.1f} dB") for mac, a in sorted(self._atten.items())]
        if self.validate_toggles:
            return [*notes, *self._send_validate(now, 0)]
        return [*notes, *self._send_match(now)]

    def _send_validate(self, now: float, timer: int) -> list:
        assert self.chosen is not None
        self.state = EvState.VALIDATING
        self._validate_step = 1 if timer == 0 else 2
        if timer == 0:
            self._tries += 1
            self.deadline = now + self.timers.TT_match_response
        else:  # the charger answers after the window it counts in
            self.deadline = now + timer / 10 + self.timers.TT_match_response + self.timers.TT_match_sequence
        req = m.ValidateReq(timer=timer, result=1)
        return [Send(m.encode_frame(self.chosen, self.ev_mac, req))]

    def _on_validate_cnf(self, msg: m.ValidateCnf, now: float) -> list:
        if msg.result == 4:  # the charger does not validate: go on with the match
            self._tries = 0
            return [Note("charger says CM_VALIDATE is not required"), *self._send_match(now)]
        if self._validate_step == 1:
            if msg.result != 1:
                return self._fail(f"charger not ready for CM_VALIDATE (result {msg.result})")
            timer = max(1, round(self.validate_window * 10))
            n = self.validate_toggles or 0
            return [*self._send_validate(now, timer), ToggleCp(n, self.validate_window)]
        if msg.result == 2 and msg.toggle_num == self.validate_toggles:
            self._tries = 0
            return self._send_match(now)
        return self._fail(f"CM_VALIDATE failed: charger counted {msg.toggle_num} toggles, "
                          f"we made {self.validate_toggles} (result {msg.result}): wrong charger?")

    def _send_match(self, now: float) -> list:
        assert self.chosen is not None
        self.state = EvState.WAIT_MATCH_CNF
        self._tries += 1
        self.deadline = now + self.timers.TT_match_response
        req = m.SlacMatchReq(pev_id=self.pev_id, pev_mac=self.ev_mac, evse_mac=self.chosen, run_id=self.run_id)
        return [Send(m.encode_frame(self.chosen, self.ev_mac, req))]

    def _done(self) -> list:
        assert self._match is not None and self.chosen is not None
        self.state = EvState.MATCHED
        self.deadline = None
        return [Matched(self.chosen, self._match.nid, self._match.nmk, self._atten.get(self.chosen, 0.0))]

    def _fail(self, reason: str) -> list:
        self.state = EvState.FAILED
        self.deadline = None
        return [Failed(reason)]
