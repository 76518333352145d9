"""EVSE side of ISO 15118-3 SLAC as a sans-IO state machine.

Feed it frames (``receive``), CP events (``plugged``/``unplugged``) and the time (``timeout``); it
returns actions: frames to send, a deadline, the match result, log notes. It owns no socket and no
clock, so tests drive it with time as a number (the trio link that runs it comes next).

Sequence on the EVSE side::

    plug-in (CP B)     -> CM_SET_KEY.REQ to the local modem (a fresh random NID/NMK), await CNF
    CM_SLAC_PARM.REQ   -> CM_SLAC_PARM.CNF                         (within TT_EVSE_SLAC_init of plug-in)
    CM_START_ATTEN_CHAR.IND, CM_MNBC_SOUND.IND x N, and from the modem CM_ATTEN_PROFILE.IND x N
                       -> CM_ATTEN_CHAR.IND with the averaged attenuation (after N profiles or
                          TT_EVSE_match_MNBC), repeated up to C_sequ_retry times until CM_ATTEN_CHAR.RSP
    CM_SLAC_MATCH.REQ  -> CM_SLAC_MATCH.CNF with NID/NMK           (within TT_EVSE_match_session)
    unplug (CP A)      -> leave the logical network: CM_SET_KEY.REQ with a new random key
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from . import messages as m
from .timers import SlacTimers

#: destination for frames to the local modem (Qualcomm modems answer to this "local" address)
LOCAL_MODEM = bytes.fromhex("00b052000001")


class State(Enum):
    UNPLUGGED = "unplugged"
    SETTING_KEY = "setting key"
    WAIT_PARM_REQ = "waiting for CM_SLAC_PARM.REQ"
    WAIT_START_ATTEN = "waiting for CM_START_ATTEN_CHAR.IND"
    SOUNDING = "collecting sounds"
    WAIT_ATTEN_RSP = "waiting for CM_ATTEN_CHAR.RSP"
    WAIT_MATCH_REQ = "waiting for CM_SLAC_MATCH.REQ"
    MATCHED = "matched"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Send:
    frame: bytes


@dataclass(frozen=True, slots=True)
class Matched:
    """The match: ``peer_mac`` is the car's MAC on the EVSE side (Autocharge uses it), the charger's
    on the EV side."""

    peer_mac: bytes
    nid: bytes
    nmk: bytes
    attenuation_db: float  # average over the carrier groups, offset included


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth a log line (dropped frames, retries); the shell rate-limits these."""

    text: str


Action = Send | Matched | Failed | Note


def random_key() -> tuple[bytes, bytes]:
    """A fresh (NID, NMK). The NID's last byte keeps the security level bits at 0 (simple connect)."""
    nid = bytearray(os.urandom(7))
    nid[6] &= 0x0F
    return bytes(nid), os.urandom(16)


@dataclass
class _Run:
    """One car's SLAC run (keyed by its MAC): cars next door can be heard too (crosstalk), so an
    EVSE keeps a run per car and matches whichever one asks for the match."""

    ev_mac: bytes
    run_id: bytes
    phase: State
    deadline: float
    session_deadline: float
    toggles: int | None = None  # counting CP toggles for CM_VALIDATE while not None
    toggle_end: float = 0.0
    expected_sounds: int = 0
    sounds: int = 0
    profiles: list[list[int]] = field(default_factory=list)
    atten_groups: list[int] = field(default_factory=list)
    tries: int = 0


@dataclass
class EvseMatcher:
    evse_mac: bytes
    timers: SlacTimers = field(default_factory=SlacTimers)
    atten_offset_db: float = 0.0  # added to the measured attenuation (board/cable calibration)
    evse_id: bytes = b"\x00" * 17
    modem_mac: bytes = LOCAL_MODEM
    restart_on_new_run: bool = True  # a car that starts over with a new RunID mid-match is followed
    validate: bool = False  # take part in CM_VALIDATE (count the car's CP toggles); else "not required"
    # modem quirks (interop facts): some Qualcomm firmware answers CM_SET_KEY "rejected" although it
    # applied the key; some TP-Link modems send CM_ATTEN_PROFILE.IND without values
    set_key_rejected_means_applied: bool = False
    missing_attenuation_db: float | None = None  # used for value-less profiles; None: ignore them
    keygen: Callable[[], tuple[bytes, bytes]] = random_key

    nid: bytes = b""
    nmk: bytes = b""
    runs: dict[bytes, _Run] = field(default_factory=dict)
    matched: _Run | None = None
    _phase: State = State.UNPLUGGED  # UNPLUGGED, SETTING_KEY, WAIT_PARM_REQ (listening), MATCHED, FAILED
    _own_deadline: float | None = None  # SET_KEY response, or TT_EVSE_SLAC_init while listening
    _tries: int = 0
    _pending_key: bytes = b""
    _after_key: State = State.WAIT_PARM_REQ
    _last_failure: str = ""

    # ------------------------------------------------------------------ views
    @property
    def state(self) -> State:
        """The matcher's state; while listening with exactly one car's run, that run's phase."""
        if self._phase is State.WAIT_PARM_REQ and len(self.runs) == 1:
            return next(iter(self.runs.values())).phase
        return self._phase

    @property
    def deadline(self) -> float | None:
        times = [r.deadline for r in self.runs.values()]
        if self._own_deadline is not None:
            times.append(self._own_deadline)
        return min(times) if times else None

    @property
    def ev_mac(self) -> bytes | None:
        run = self.matched or (next(iter(self.runs.values())) if len(self.runs) == 1 else None)
        return run.ev_mac if run else None

    @property
    def run_id(self) -> bytes | None:
        run = self.matched or (next(iter(self.runs.values())) if len(self.runs) == 1 else None)
        return run.run_id if run else None

    # ------------------------------------------------------------------ events
    def plugged(self, now: float) -> list[Action]:
        """CP went to state B: join a fresh logical network, then wait for the car."""
        self.runs.clear()
        self.matched = None
        return self._set_key(now, then=State.WAIT_PARM_REQ)

    def unplugged(self, now: float) -> list[Action]:
        """CP back to A: leave the logical network by setting a new key nobody else knows."""
        self.runs.clear()
        self.matched = None
        actions = self._set_key(now, then=State.UNPLUGGED)
        actions.append(Note("unplugged: leaving the logical network"))
        return actions

    def receive(self, data: bytes, now: float) -> list[Action]:
        try:
            frame = m.decode_frame(data)
        except m.SlacFrameError as e:
            return [Note(f"dropped frame: {e}")]
        msg = frame.message
        if frame.dst not in (self.evse_mac, m.BROADCAST):
            return []  # not for us (another EVSE's exchange on the same wire)
        if isinstance(msg, m.SetKeyCnf):
            return self._on_set_key_cnf(msg, now)
        if isinstance(msg, m.AttenProfileInd):
            return self._on_profile(msg, now)
        if isinstance(msg, m.SlacParmReq):
            return self._on_parm_req(frame.src, msg, now)
        if isinstance(msg, m.ValidateReq):
            return self._on_validate(frame.src, msg, now)
        run = self.runs.get(frame.src)
        if self.matched is not None and frame.src == self.matched.ev_mac:
            run = self.matched
        if run is None:
            return [Note(f"dropped {type(msg).__name__} from {frame.src.hex(':')}: no SLAC run with that car")]
        run_id = getattr(msg, "run_id", None)
        if run_id is not None and run_id != run.run_id:
            return [Note(f"dropped {type(msg).__name__} with RunID {run_id.hex()}: the car's run is "
                         f"{run.run_id.hex()}")]
        if isinstance(msg, m.StartAttenCharInd):
            return self._on_start_atten(run, msg, now)
        if isinstance(msg, m.MnbcSoundInd):
            return self._on_sound(run, now)
        if isinstance(msg, m.AttenCharRsp):
            return self._on_atten_rsp(run, msg, now)
        if isinstance(msg, m.SlacMatchReq):
            return self._on_match_req(run, msg, now)
        return [Note(f"ignored {type(msg).__name__} in state {self.state.value}")]

    def cp_toggle(self, now: float) -> list[Action]:
        """The hardware saw the car toggle CP (B -> C -> B) once: counted during CM_VALIDATE."""
        for run in self.runs.values():
            if run.toggles is not None and now <= run.toggle_end:
                run.toggles += 1
        return []

    def _on_validate(self, src: bytes, msg: m.ValidateReq, now: float) -> list[Action]:
        run = self.runs.get(src)
        if not self.validate:
            cnf = m.ValidateCnf(signal_type=msg.signal_type, result=4)  # not required
        elif run is None or run.phase is not State.WAIT_MATCH_REQ:
            cnf = m.ValidateCnf(signal_type=msg.signal_type, result=0)  # not ready
        elif msg.timer == 0:
            cnf = m.ValidateCnf(signal_type=msg.signal_type, result=1)  # ready: the car may toggle
        else:
            # count toggles for the window the car announces (100 ms units), capped by TT_EVSE_vald_toggle
            window = min(msg.timer / 10, self.timers.TT_EVSE_vald_toggle)
            run.toggles, run.toggle_end = 0, now + window
            run.deadline = run.toggle_end
            return []
        return [Send(m.encode_frame(src, self.evse_mac, cnf))]

    def timeout(self, now: float) -> list[Action]:
        """Call when ``deadline`` has passed; handles every timer that is due."""
        out: list[Action] = []
        for run in [r for r in self.runs.values() if r.deadline <= now]:
            out.extend(self._run_timeout(run, now))
        if self._own_deadline is not None and self._own_deadline <= now:
            self._own_deadline = None
            if self._phase is State.SETTING_KEY:
                if self._tries <= self.timers.C_sequ_retry:
                    out.extend(self._retry_key(now, "no CM_SET_KEY.CNF"))
                else:
                    out.extend(self._fail("the modem never confirmed CM_SET_KEY"))
            elif self._phase is State.WAIT_PARM_REQ:
                why = f" (last run: {self._last_failure})" if self._last_failure else ""
                out.extend(self._fail(f"no match within TT_EVSE_SLAC_init{why}" if self._last_failure or self.runs
                                      else "no CM_SLAC_PARM.REQ within TT_EVSE_SLAC_init"))
        return out

    def _run_timeout(self, run: _Run, now: float) -> list[Action]:
        if run.toggles is not None:  # the validation window closed: report what we counted
            count, run.toggles = run.toggles, None
            run.deadline = run.session_deadline
            cnf = m.ValidateCnf(toggle_num=count, result=2 if count else 3)
            return [Send(m.encode_frame(run.ev_mac, self.evse_mac, cnf))]
        if run.phase in (State.WAIT_START_ATTEN, State.SOUNDING):
            if run.profiles:
                return self._send_atten_char(run, now)
            return self._drop_run(run, "no sounds from the car within TT_EVSE_match_MNBC")
        if run.phase is State.WAIT_ATTEN_RSP:
            if run.tries <= self.timers.C_sequ_retry:
                return [Note("no CM_ATTEN_CHAR.RSP: repeating CM_ATTEN_CHAR.IND"), *self._send_atten_char(run, now)]
            return self._drop_run(run, "no CM_ATTEN_CHAR.RSP after retries")
        return self._drop_run(run, "no CM_SLAC_MATCH.REQ within TT_EVSE_match_session")

    def _drop_run(self, run: _Run, reason: str) -> list[Action]:
        self.runs.pop(run.ev_mac, None)
        self._last_failure = reason
        return [Note(f"SLAC run with {run.ev_mac.hex(':')} ended: {reason}")]

    # ------------------------------------------------------------------ key
    def _set_key(self, now: float, then: State) -> list[Action]:
        self.nid, self.nmk = self.keygen()
        self._tries = 0
        self._after_key = then
        self._last_failure = ""
        req = m.SetKeyReq(my_nonce=int.from_bytes(os.urandom(4), "big"), nid=self.nid, new_key=self.nmk)
        self._pending_key = m.encode_frame(self.modem_mac, self.evse_mac, req)
        return self._retry_key(now, None)

    def _retry_key(self, now: float, why: str | None) -> list[Action]:
        self._phase = State.SETTING_KEY
        self._tries += 1
        self._own_deadline = now + self.timers.TT_match_response
        out: list[Action] = [Send(self._pending_key)]
        if why:
            out.insert(0, Note(f"{why}: repeating CM_SET_KEY.REQ"))
        return out

    def _on_set_key_cnf(self, msg: m.SetKeyCnf, now: float) -> list[Action]:
        if self._phase is not State.SETTING_KEY:
            return [Note("unexpected CM_SET_KEY.CNF")]
        notes: list[Action] = []
        if msg.result != 0:
            if self.set_key_rejected_means_applied:
                notes.append(Note(f"CM_SET_KEY.CNF result {msg.result}: taken as applied (modem quirk profile)"))
            elif self._tries <= self.timers.C_sequ_retry:
                return self._retry_key(now, f"CM_SET_KEY.CNF result {msg.result}")
            else:
                return self._fail(f"the modem rejected CM_SET_KEY (result {msg.result})")
        self._phase = self._after_key
        self._own_deadline = now + self.timers.TT_EVSE_SLAC_init if self._phase is State.WAIT_PARM_REQ else None
        return notes

    # ------------------------------------------------------------------ SLAC
    def _on_parm_req(self, src: bytes, msg: m.SlacParmReq, now: float) -> list[Action]:
        if self._phase is not State.WAIT_PARM_REQ:
            return [Note(f"ignored CM_SLAC_PARM.REQ from {src.hex(':')} in state {self.state.value}")]
        notes: list[Action] = []
        old = self.runs.get(src)
        if old is not None and old.run_id != msg.run_id:
            if not self.restart_on_new_run:
                return [Note(f"ignored CM_SLAC_PARM.REQ with a new RunID from {src.hex(':')} mid-run")]
            notes.append(Note(f"car {src.hex(':')} restarted SLAC with RunID {msg.run_id.hex()}: following it"))
        if old is None or old.run_id != msg.run_id:
            self.runs[src] = _Run(src, msg.run_id, State.WAIT_START_ATTEN, now + self.timers.TT_match_sequence,
                                  now + self.timers.TT_EVSE_match_session)
        cnf = m.SlacParmCnf(num_sounds=self.timers.C_EV_match_MNBC, time_out=self.timers.mnbc_timeout_units,
                            forwarding_sta=src, run_id=msg.run_id)
        return [*notes, Send(m.encode_frame(src, self.evse_mac, cnf))]  # a repeated REQ gets the CNF again

    def _on_start_atten(self, run: _Run, msg: m.StartAttenCharInd, now: float) -> list[Action]:
        if run.phase is State.WAIT_START_ATTEN:
            run.phase = State.SOUNDING
            run.expected_sounds = msg.num_sounds
            run.deadline = now + self.timers.TT_EVSE_match_MNBC
        return []  # the car repeats it (C_EV_start_atten_char_inds): later copies change nothing

    def _on_sound(self, run: _Run, now: float) -> list[Action]:
        if run.phase is State.WAIT_START_ATTEN:  # START_ATTEN lost: the first sound opens the window
            run.phase = State.SOUNDING
            run.expected_sounds = self.timers.C_EV_match_MNBC
            run.deadline = now + self.timers.TT_EVSE_match_MNBC
        if run.phase is State.SOUNDING:
            run.sounds += 1
        return []

    def _on_profile(self, msg: m.AttenProfileInd, now: float) -> list[Action]:
        run = self.runs.get(msg.pev_mac)
        if run is None or run.phase not in (State.SOUNDING, State.WAIT_START_ATTEN):
            return [Note("dropped CM_ATTEN_PROFILE.IND outside a sounding window or for an unknown car")]
        if not msg.groups:
            if self.missing_attenuation_db is None:
                return [Note("CM_ATTEN_PROFILE.IND without attenuation values (modem reports none)")]
            msg = m.AttenProfileInd(msg.pev_mac, [round(self.missing_attenuation_db)] * 58)
        if run.profiles and len(msg.groups) != len(run.profiles[0]):
            return [Note(f"dropped CM_ATTEN_PROFILE.IND with {len(msg.groups)} groups, "
                         f"earlier ones had {len(run.profiles[0])}")]
        run.profiles.append(msg.groups)
        if len(run.profiles) >= run.expected_sounds > 0:
            return self._send_atten_char(run, now)
        return []

    def _send_atten_char(self, run: _Run, now: float) -> list[Action]:
        if not run.atten_groups:
            n = len(run.profiles)
            run.atten_groups = [min(255, max(0, round(sum(col) / n + self.atten_offset_db)))
                                for col in zip(*run.profiles, strict=True)]
            run.tries = 0
        run.tries += 1
        run.phase = State.WAIT_ATTEN_RSP
        run.deadline = now + self.timers.TT_match_response
        ind = m.AttenCharInd(source_address=run.ev_mac, run_id=run.run_id, num_sounds=len(run.profiles),
                             groups=run.atten_groups)
        return [Send(m.encode_frame(run.ev_mac, self.evse_mac, ind))]

    def _on_atten_rsp(self, run: _Run, msg: m.AttenCharRsp, now: float) -> list[Action]:
        if run.phase is not State.WAIT_ATTEN_RSP:
            return []
        if msg.result != 0:
            return self._drop_run(run, f"the car rejected CM_ATTEN_CHAR.IND (result {msg.result})")
        run.phase = State.WAIT_MATCH_REQ
        run.deadline = run.session_deadline
        return []

    def _on_match_req(self, run: _Run, msg: m.SlacMatchReq, now: float) -> list[Action]:
        if run.phase not in (State.WAIT_MATCH_REQ, State.WAIT_ATTEN_RSP, State.MATCHED):
            return [Note(f"ignored CM_SLAC_MATCH.REQ in phase {run.phase.value}")]
        cnf = m.SlacMatchCnf(pev_id=msg.pev_id, pev_mac=msg.pev_mac, evse_id=self.evse_id, evse_mac=self.evse_mac,
                             run_id=run.run_id, nid=self.nid, nmk=self.nmk)
        out: list[Action] = [Send(m.encode_frame(run.ev_mac, self.evse_mac, cnf))]
        if self.matched is None:  # a repeated MATCH.REQ (our CNF was lost) gets the CNF again
            run.phase = State.MATCHED
            self.matched = run
            self.runs.clear()  # other cars heard through crosstalk are not ours
            self._phase = State.MATCHED
            self._own_deadline = None
            groups = run.atten_groups
            out.append(Matched(run.ev_mac, self.nid, self.nmk, sum(groups) / len(groups) if groups else 0.0))
        return out

    def _fail(self, reason: str) -> list[Action]:
        self._phase = State.FAILED
        self._own_deadline = None
        self.runs.clear()
        return [Failed(reason)]
