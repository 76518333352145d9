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
class EvseMatcher:
    evse_mac: bytes
    timers: SlacTimers = field(default_factory=SlacTimers)
    atten_offset_db: float = 0.0  # added to the measured attenuation (board/cable calibration)
    evse_id: bytes = b"\x00" * 17
    modem_mac: bytes = LOCAL_MODEM
    restart_on_new_run: bool = True  # a car that starts over with a new RunID mid-match is followed
    keygen: Callable[[], tuple[bytes, bytes]] = random_key

    state: State = State.UNPLUGGED
    deadline: float | None = None
    nid: bytes = b""
    nmk: bytes = b""
    ev_mac: bytes | None = None
    run_id: bytes | None = None
    _tries: int = 0
    _sounds: int = 0
    _profiles: list[list[int]] = field(default_factory=list)
    _expected_sounds: int = 0
    _atten_groups: list[int] = field(default_factory=list)
    _pending_key: bytes = b""  # the SET_KEY.REQ frame, for retries
    _after_key: State = State.WAIT_PARM_REQ
    _session_deadline: float = 0.0

    # ------------------------------------------------------------------ events
    def plugged(self, now: float) -> list[Action]:
        """CP went to state B: join a fresh logical network, then wait for the car."""
        self._reset_run()
        return self._set_key(now, then=State.WAIT_PARM_REQ)

    def unplugged(self, now: float) -> list[Action]:
        """CP back to A: leave the logical network by setting a new key nobody else knows."""
        self._reset_run()
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
        if self.ev_mac is None or frame.src != self.ev_mac:
            return [Note(f"dropped {type(msg).__name__} from {frame.src.hex(':')}: not the car in session")]
        run_id = getattr(msg, "run_id", None)
        if run_id is not None and run_id != self.run_id:
            return [Note(f"dropped {type(msg).__name__} with RunID {run_id.hex()}: session is {self.run_id.hex()}")]
        if isinstance(msg, m.StartAttenCharInd):
            return self._on_start_atten(msg, now)
        if isinstance(msg, m.MnbcSoundInd):
            return self._on_sound(msg, now)
        if isinstance(msg, m.AttenCharRsp):
            return self._on_atten_rsp(msg, now)
        if isinstance(msg, m.SlacMatchReq):
            return self._on_match_req(msg, now)
        return [Note(f"ignored {type(msg).__name__} in state {self.state.value}")]

    def timeout(self, now: float) -> list[Action]:
        """Call when ``deadline`` has passed."""
        if self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        st = self.state
        if st is State.SETTING_KEY:
            if self._tries <= self.timers.C_sequ_retry:
                return self._retry_key(now, "no CM_SET_KEY.CNF")
            return self._fail("the modem never confirmed CM_SET_KEY")
        if st is State.WAIT_PARM_REQ:
            return self._fail("no CM_SLAC_PARM.REQ within TT_EVSE_SLAC_init")
        if st in (State.WAIT_START_ATTEN, State.SOUNDING):
            if self._profiles:
                return self._send_atten_char(now)
            return self._fail("no sounds from the car within TT_EVSE_match_MNBC")
        if st is State.WAIT_ATTEN_RSP:
            if self._tries <= self.timers.C_sequ_retry:
                return [Note("no CM_ATTEN_CHAR.RSP: repeating CM_ATTEN_CHAR.IND"), *self._send_atten_char(now)]
            return self._fail("no CM_ATTEN_CHAR.RSP after retries")
        if st is State.WAIT_MATCH_REQ:
            return self._fail("no CM_SLAC_MATCH.REQ within TT_EVSE_match_session")
        return []

    # ------------------------------------------------------------------ handlers
    def _set_key(self, now: float, then: State) -> list[Action]:
        self.nid, self.nmk = self.keygen()
        self._tries = 0
        self._after_key = then
        req = m.SetKeyReq(my_nonce=int.from_bytes(os.urandom(4), "big"), nid=self.nid, new_key=self.nmk)
        self._pending_key = m.encode_frame(self.modem_mac, self.evse_mac, req)
        return self._retry_key(now, None)

    def _retry_key(self, now: float, why: str | None) -> list[Action]:
        self.state = State.SETTING_KEY
        self._tries += 1
        self.deadline = now + self.timers.TT_match_response
        out: list[Action] = [Send(self._pending_key)]
        if why:
            out.insert(0, Note(f"{why}: repeating CM_SET_KEY.REQ"))
        return out

    def _on_set_key_cnf(self, msg: m.SetKeyCnf, now: float) -> list[Action]:
        if self.state is not State.SETTING_KEY:
            return [Note("unexpected CM_SET_KEY.CNF")]
        if msg.result != 0:
            if self._tries <= self.timers.C_sequ_retry:
                return self._retry_key(now, f"CM_SET_KEY.CNF result {msg.result}")
            return self._fail(f"the modem rejected CM_SET_KEY (result {msg.result})")
        self.state = self._after_key
        self.deadline = now + self.timers.TT_EVSE_SLAC_init if self.state is State.WAIT_PARM_REQ else None
        return []

    def _on_parm_req(self, src: bytes, msg: m.SlacParmReq, now: float) -> list[Action]:
        if self.state is State.WAIT_PARM_REQ or (
                self.restart_on_new_run and self.state in (State.WAIT_START_ATTEN, State.SOUNDING,
                                                           State.WAIT_ATTEN_RSP, State.WAIT_MATCH_REQ)
                and src == self.ev_mac and msg.run_id != self.run_id):
            notes: list[Action] = []
            if self.state is not State.WAIT_PARM_REQ:
                notes.append(Note(f"car restarted SLAC with RunID {msg.run_id.hex()}: following it"))
            self._reset_run()
            self.ev_mac, self.run_id = src, msg.run_id
            self.state = State.WAIT_START_ATTEN
            self.deadline = now + self.timers.TT_match_sequence
            self._session_deadline = now + self.timers.TT_EVSE_match_session
            cnf = m.SlacParmCnf(num_sounds=self.timers.C_EV_match_MNBC, time_out=self.timers.mnbc_timeout_units,
                                forwarding_sta=src, run_id=msg.run_id)
            return [*notes, Send(m.encode_frame(src, self.evse_mac, cnf))]
        return [Note(f"ignored CM_SLAC_PARM.REQ from {src.hex(':')} in state {self.state.value}")]

    def _on_start_atten(self, msg: m.StartAttenCharInd, now: float) -> list[Action]:
        if self.state is State.WAIT_START_ATTEN:
            self.state = State.SOUNDING
            self._expected_sounds = msg.num_sounds
            self.deadline = now + self.timers.TT_EVSE_match_MNBC
        return []  # the car repeats it (C_EV_start_atten_char_inds): later copies change nothing

    def _on_sound(self, msg: m.MnbcSoundInd, now: float) -> list[Action]:
        if self.state is State.WAIT_START_ATTEN:  # START_ATTEN lost: the first sound starts the window
            self.state = State.SOUNDING
            self._expected_sounds = self.timers.C_EV_match_MNBC
            self.deadline = now + self.timers.TT_EVSE_match_MNBC
        if self.state is State.SOUNDING:
            self._sounds += 1
        return []

    def _on_profile(self, msg: m.AttenProfileInd, now: float) -> list[Action]:
        if self.state not in (State.SOUNDING, State.WAIT_START_ATTEN) or msg.pev_mac != self.ev_mac:
            return [Note("dropped CM_ATTEN_PROFILE.IND outside a sounding window or for another car")]
        if not msg.groups:
            return [Note("CM_ATTEN_PROFILE.IND without attenuation values (modem reports none)")]
        if self._profiles and len(msg.groups) != len(self._profiles[0]):
            return [Note(f"dropped CM_ATTEN_PROFILE.IND with {len(msg.groups)} groups, "
                         f"earlier ones had {len(self._profiles[0])}")]
        self._profiles.append(msg.groups)
        if len(self._profiles) >= self._expected_sounds > 0:
            return self._send_atten_char(now)
        return []

    def _send_atten_char(self, now: float) -> list[Action]:
        if not self._atten_groups:
            n = len(self._profiles)
            offset = self.atten_offset_db
            self._atten_groups = [min(255, max(0, round(sum(col) / n + offset))) for col in zip(*self._profiles,
                                                                                               strict=True)]
            self._tries = 0
        self._tries += 1
        self.state = State.WAIT_ATTEN_RSP
        self.deadline = now + self.timers.TT_match_response
        ind = m.AttenCharInd(source_address=self.ev_mac, run_id=self.run_id, num_sounds=len(self._profiles),
                             groups=self._atten_groups)
        return [Send(m.encode_frame(self.ev_mac, self.evse_mac, ind))]

    def _on_atten_rsp(self, msg: m.AttenCharRsp, now: float) -> list[Action]:
        if self.state is not State.WAIT_ATTEN_RSP:
            return []
        if msg.result != 0:
            return self._fail(f"the car rejected CM_ATTEN_CHAR.IND (result {msg.result})")
        self.state = State.WAIT_MATCH_REQ
        self.deadline = self._session_deadline
        return []

    def _on_match_req(self, msg: m.SlacMatchReq, now: float) -> list[Action]:
        if self.state not in (State.WAIT_MATCH_REQ, State.WAIT_ATTEN_RSP, State.MATCHED):
            return [Note(f"ignored CM_SLAC_MATCH.REQ in state {self.state.value}")]
        cnf = m.SlacMatchCnf(pev_id=msg.pev_id, pev_mac=msg.pev_mac, evse_id=self.evse_id, evse_mac=self.evse_mac,
                             run_id=self.run_id, nid=self.nid, nmk=self.nmk)
        out: list[Action] = [Send(m.encode_frame(self.ev_mac, self.evse_mac, cnf))]
        if self.state is not State.MATCHED:  # a repeated MATCH.REQ (our CNF was lost) gets the CNF again
            self.state = State.MATCHED
            self.deadline = None
            groups = self._atten_groups
            out.append(Matched(self.ev_mac, self.nid, self.nmk, sum(groups) / len(groups) if groups else 0.0))
        return out

    def _fail(self, reason: str) -> list[Action]:
        self.state = State.FAILED
        self.deadline = None
        return [Failed(reason)]

    def _reset_run(self) -> None:
        self.ev_mac = self.run_id = None
        self._sounds = 0
        self._profiles = []
        self._expected_sounds = 0
        self._atten_groups = []
        self._session_deadline = 0.0
