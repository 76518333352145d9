"""HomePlug Green PHY management messages (MMEs) used by ISO 15118-3 SLAC: encode and decode.

A frame is Ethernet (dst, src, ethertype 0x88E1), the MME header (MMV, MMTYPE little-endian, and for
MMV 1 the two fragment-management bytes), then the payload. Ethernet pads short frames to 60 bytes,
so a decoder accepts trailing bytes after a payload but never a payload that is too short. Qualcomm
vendor-specific MMEs (MMV 0, OUI 00:B0:52 after the header) carry the local modem's link status.

Every decode failure is a :class:`SlacFrameError` saying what was wrong; nothing else escapes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, fields
from typing import ClassVar

ETHERTYPE_HOMEPLUG = 0x88E1
BROADCAST = b"\xff" * 6
QUALCOMM_OUI = b"\x00\xb0\x52"
MIN_FRAME = 60  # Ethernet minimum without FCS: shorter frames are padded with zeros


class SlacFrameError(ValueError):
    """A frame that is not a well-formed MME we know (truncated, wrong MMV, unknown MMTYPE, ...)."""


def _mac(b: bytes, what: str) -> bytes:
    if len(b) != 6:
        raise ValueError(f"{what} must be 6 bytes, got {len(b)}")
    return bytes(b)


def _fixed(b: bytes, n: int, what: str) -> bytes:
    if len(b) != n:
        raise ValueError(f"{what} must be {n} bytes, got {len(b)}")
    return bytes(b)


class Message:
    """Base of the MME payload classes: ``MMTYPE`` and a fixed ``FORMAT`` (or custom pack/unpack)."""

    MMTYPE: ClassVar[int]
    MMV: ClassVar[int] = 1
    FORMAT: ClassVar[str] = ""

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, *self._values())

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))  # type: ignore[arg-type]

    @classmethod
    def unpack(cls, payload: bytes) -> Message:
        size = struct.calcsize(cls.FORMAT)
        if len(payload) < size:
            raise SlacFrameError(f"{cls.__name__}: payload of {len(payload)} bytes, needs {size}")
        msg = cls(*struct.unpack_from(cls.FORMAT, payload))
        mvf = getattr(cls, "MVF_LENGTH", None)  # SLAC_MATCH: the variable field's length is fixed
        if mvf is not None and msg.mvf_length != mvf:
            raise SlacFrameError(f"{cls.__name__}: MVF length {msg.mvf_length:#x}, expected {mvf:#x}")
        return msg


# --------------------------------------------------------------------------- key management


@dataclass(slots=True)
class SetKeyReq(Message):
    """CM_SET_KEY.REQ to the local modem: join the logical network (NID) with this NMK."""

    MMTYPE: ClassVar[int] = 0x6008
    FORMAT: ClassVar[str] = "<BIIBHBB7sB16s"
    key_type: int = 0x01  # NMK (AES-128)
    my_nonce: int = 0
    your_nonce: int = 0
    pid: int = 0x04  # HLE protocol
    prn: int = 0
    pmn: int = 0
    cco_capability: int = 0
    nid: bytes = b"\x00" * 7
    new_eks: int = 0x01
    new_key: bytes = b"\x00" * 16

    def __post_init__(self) -> None:
        self.nid = _fixed(self.nid, 7, "NID")
        self.new_key = _fixed(self.new_key, 16, "NMK")


@dataclass(slots=True)
class SetKeyCnf(Message):
    MMTYPE: ClassVar[int] = 0x6009
    FORMAT: ClassVar[str] = "<BIIBHBB"
    result: int = 0  # 0 = success (some Qualcomm firmware says 1 although it applied the key)
    my_nonce: int = 0
    your_nonce: int = 0
    pid: int = 0x04
    prn: int = 0
    pmn: int = 0
    cco_capability: int = 0


# --------------------------------------------------------------------------- SLAC


@dataclass(slots=True)
class SlacParmReq(Message):
    MMTYPE: ClassVar[int] = 0x6064
    FORMAT: ClassVar[str] = "<BB8s"
    application_type: int = 0
    security_type: int = 0
    run_id: bytes = b"\x00" * 8

    def __post_init__(self) -> None:
        self.run_id = _fixed(self.run_id, 8, "RunID")


@dataclass(slots=True)
class SlacParmCnf(Message):
    MMTYPE: ClassVar[int] = 0x6065
    FORMAT: ClassVar[str] = "<6sBBB6sBB8s"
    msound_target: bytes = BROADCAST
    num_sounds: int = 10  # C_EV_match_MNBC
    time_out: int = 6  # TT_EVSE_match_MNBC in units of 100 ms
    resp_type: int = 1
    forwarding_sta: bytes = b"\x00" * 6  # the EV's MAC
    application_type: int = 0
    security_type: int = 0
    run_id: bytes = b"\x00" * 8

    def __post_init__(self) -> None:
        self.msound_target = _mac(self.msound_target, "M-SOUND target")
        self.forwarding_sta = _mac(self.forwarding_sta, "forwarding STA")
        self.run_id = _fixed(self.run_id, 8, "RunID")


@dataclass(slots=True)
class StartAttenCharInd(Message):
    MMTYPE: ClassVar[int] = 0x606A
    FORMAT: ClassVar[str] = "<BBBBB6s8s"
    application_type: int = 0
    security_type: int = 0
    num_sounds: int = 10
    time_out: int = 6
    resp_type: int = 1
    forwarding_sta: bytes = b"\x00" * 6
    run_id: bytes = b"\x00" * 8

    def __post_init__(self) -> None:
        self.forwarding_sta = _mac(self.forwarding_sta, "forwarding STA")
        self.run_id = _fixed(self.run_id, 8, "RunID")


@dataclass(slots=True)
class MnbcSoundInd(Message):
    MMTYPE: ClassVar[int] = 0x6076
    FORMAT: ClassVar[str] = "<BB17sB8s8s16s"
    application_type: int = 0
    security_type: int = 0
    sender_id: bytes = b"\x00" * 17
    count: int = 0  # sounds still to come after this one
    run_id: bytes = b"\x00" * 8
    reserved: bytes = b"\x00" * 8
    random: bytes = b"\x00" * 16

    def __post_init__(self) -> None:
        self.sender_id = _fixed(self.sender_id, 17, "sender ID")
        self.run_id = _fixed(self.run_id, 8, "RunID")
        self.reserved = _fixed(self.reserved, 8, "reserved")
        self.random = _fixed(self.random, 16, "random")


@dataclass(slots=True)
class AttenProfileInd(Message):
    """From the local modem: the attenuation it measured for one M-SOUND of ``pev_mac``."""

    MMTYPE: ClassVar[int] = 0x6086
    pev_mac: bytes = b"\x00" * 6
    groups: list[int] = field(default_factory=list)  # average attenuation per carrier group, dB

    def pack(self) -> bytes:
        return _mac(self.pev_mac, "PEV MAC") + bytes([len(self.groups), 0]) + bytes(self.groups)

    @classmethod
    def unpack(cls, payload: bytes) -> AttenProfileInd:
        if len(payload) < 8:
            raise SlacFrameError(f"AttenProfileInd: payload of {len(payload)} bytes, needs at least 8")
        n = payload[6]
        if len(payload) < 8 + n:
            raise SlacFrameError(f"AttenProfileInd: {n} groups announced, {len(payload) - 8} present")
        return cls(bytes(payload[:6]), list(payload[8:8 + n]))


@dataclass(slots=True)
class AttenCharInd(Message):
    MMTYPE: ClassVar[int] = 0x606E
    HEAD: ClassVar[str] = "<BB6s8s17s17sBB"
    application_type: int = 0
    security_type: int = 0
    source_address: bytes = b"\x00" * 6  # the EV's MAC
    run_id: bytes = b"\x00" * 8
    source_id: bytes = b"\x00" * 17
    resp_id: bytes = b"\x00" * 17
    num_sounds: int = 0
    groups: list[int] = field(default_factory=list)

    def pack(self) -> bytes:
        if any(not 0 <= g <= 255 for g in self.groups) or len(self.groups) > 255:
            raise ValueError("attenuation groups must be at most 255 values of 0..255 dB")
        return struct.pack(self.HEAD, self.application_type, self.security_type,
                           _mac(self.source_address, "source address"), _fixed(self.run_id, 8, "RunID"),
                           _fixed(self.source_id, 17, "source ID"), _fixed(self.resp_id, 17, "response ID"),
                           self.num_sounds, len(self.groups)) + bytes(self.groups)

    @classmethod
    def unpack(cls, payload: bytes) -> AttenCharInd:
        size = struct.calcsize(cls.HEAD)
        if len(payload) < size:
            raise SlacFrameError(f"AttenCharInd: payload of {len(payload)} bytes, needs at least {size}")
        *head, n = struct.unpack_from(cls.HEAD, payload)
        if len(payload) < size + n:
            raise SlacFrameError(f"AttenCharInd: {n} groups announced, {len(payload) - size} present")
        return cls(*head, list(payload[size:size + n]))


@dataclass(slots=True)
class AttenCharRsp(Message):
    MMTYPE: ClassVar[int] = 0x606F
    FORMAT: ClassVar[str] = "<BB6s8s17s17sB"
    application_type: int = 0
    security_type: int = 0
    source_address: bytes = b"\x00" * 6
    run_id: bytes = b"\x00" * 8
    source_id: bytes = b"\x00" * 17
    resp_id: bytes = b"\x00" * 17
    result: int = 0


@dataclass(slots=True)
class ValidateReq(Message):
    MMTYPE: ClassVar[int] = 0x6078
    FORMAT: ClassVar[str] = "<BBB"
    signal_type: int = 0
    timer: int = 0  # toggle window in 100 ms units (first request: 0)
    result: int = 1  # 1 = ready


@dataclass(slots=True)
class ValidateCnf(Message):
    MMTYPE: ClassVar[int] = 0x6079
    FORMAT: ClassVar[str] = "<BBB"
    signal_type: int = 0
    toggle_num: int = 0
    result: int = 1  # 0 not ready, 1 ready, 2 success, 3 failure, 4 not required


_MATCH_REQ_MVF = 0x3E
_MATCH_CNF_MVF = 0x56


@dataclass(slots=True)
class SlacMatchReq(Message):
    MMTYPE: ClassVar[int] = 0x607C
    FORMAT: ClassVar[str] = "<BBH17s6s17s6s8s8s"
    MVF_LENGTH: ClassVar[int] = _MATCH_REQ_MVF
    application_type: int = 0
    security_type: int = 0
    mvf_length: int = _MATCH_REQ_MVF
    pev_id: bytes = b"\x00" * 17
    pev_mac: bytes = b"\x00" * 6
    evse_id: bytes = b"\x00" * 17
    evse_mac: bytes = b"\x00" * 6
    run_id: bytes = b"\x00" * 8
    reserved: bytes = b"\x00" * 8


@dataclass(slots=True)
class SlacMatchCnf(Message):
    MMTYPE: ClassVar[int] = 0x607D
    FORMAT: ClassVar[str] = "<BBH17s6s17s6s8s8s7sB16s"
    MVF_LENGTH: ClassVar[int] = _MATCH_CNF_MVF
    application_type: int = 0
    security_type: int = 0
    mvf_length: int = _MATCH_CNF_MVF
    pev_id: bytes = b"\x00" * 17
    pev_mac: bytes = b"\x00" * 6
    evse_id: bytes = b"\x00" * 17
    evse_mac: bytes = b"\x00" * 6
    run_id: bytes = b"\x00" * 8
    reserved: bytes = b"\x00" * 8
    nid: bytes = b"\x00" * 7
    reserved2: int = 0
    nmk: bytes = b"\x00" * 16


@dataclass(slots=True)
class AmpMapReq(Message):
    """CM_AMP_MAP.REQ: per-carrier amplitude map, one 4-bit value per carrier."""

    MMTYPE: ClassVar[int] = 0x601C
    amplitudes: list[int] = field(default_factory=list)

    def pack(self) -> bytes:
        if any(not 0 <= a <= 15 for a in self.amplitudes):
            raise ValueError("amplitude map values are 4-bit (0..15)")
        padded = [*self.amplitudes, 0] if len(self.amplitudes) % 2 else list(self.amplitudes)
        data = bytes(padded[i] | (padded[i + 1] << 4) for i in range(0, len(padded), 2))
        return struct.pack("<H", len(self.amplitudes)) + data

    @classmethod
    def unpack(cls, payload: bytes) -> AmpMapReq:
        if len(payload) < 2:
            raise SlacFrameError("AmpMapReq: payload shorter than its length field")
        n = struct.unpack_from("<H", payload)[0]
        need = 2 + (n + 1) // 2
        if len(payload) < need:
            raise SlacFrameError(f"AmpMapReq: {n} carriers announced, {len(payload) - 2} bytes present")
        values = [v for b in payload[2:need] for v in (b & 0x0F, b >> 4)]
        return cls(values[:n])


@dataclass(slots=True)
class AmpMapCnf(Message):
    MMTYPE: ClassVar[int] = 0x601D
    FORMAT: ClassVar[str] = "<B"
    result: int = 0


# --------------------------------------------------------------------------- Qualcomm vendor MMEs


@dataclass(slots=True)
class QcaLinkStatusReq(Message):
    """Qualcomm VS_PL_LNK_STATUS.REQ: is the local modem's powerline link up?"""

    MMTYPE: ClassVar[int] = 0xA0B8
    MMV: ClassVar[int] = 0

    def pack(self) -> bytes:
        return QUALCOMM_OUI

    @classmethod
    def unpack(cls, payload: bytes) -> QcaLinkStatusReq:
        _check_oui(payload, cls.__name__)
        return cls()


@dataclass(slots=True)
class QcaLinkStatusCnf(Message):
    MMTYPE: ClassVar[int] = 0xA0B9
    MMV: ClassVar[int] = 0
    status: int = 0  # MSTATUS: 0 = success
    link_up: bool = False

    def pack(self) -> bytes:
        return QUALCOMM_OUI + bytes([self.status, 1 if self.link_up else 0])

    @classmethod
    def unpack(cls, payload: bytes) -> QcaLinkStatusCnf:
        _check_oui(payload, cls.__name__)
        if len(payload) < 5:
            raise SlacFrameError(f"{cls.__name__}: payload of {len(payload)} bytes, needs 5")
        return cls(payload[3], payload[4] == 1)


def _check_oui(payload: bytes, name: str) -> None:
    if payload[:3] != QUALCOMM_OUI:
        raise SlacFrameError(f"{name}: vendor OUI {payload[:3].hex(':')} is not Qualcomm's")


MESSAGES: dict[int, type[Message]] = {cls.MMTYPE: cls for cls in (
    SetKeyReq, SetKeyCnf, SlacParmReq, SlacParmCnf, StartAttenCharInd, MnbcSoundInd, AttenProfileInd,
    AttenCharInd, AttenCharRsp, ValidateReq, ValidateCnf, SlacMatchReq, SlacMatchCnf, AmpMapReq, AmpMapCnf,
    QcaLinkStatusReq, QcaLinkStatusCnf)}


# --------------------------------------------------------------------------- frames


@dataclass(slots=True)
class Frame:
    dst: bytes
    src: bytes
    message: Message


def encode_frame(dst: bytes, src: bytes, message: Message) -> bytes:
    """The whole Ethernet frame, padded to the 60-byte minimum."""
    header = _mac(dst, "destination") + _mac(src, "source") + struct.pack(">H", ETHERTYPE_HOMEPLUG)
    if message.MMV == 1:
        mme = struct.pack("<BHH", 1, message.MMTYPE, 0)  # FMI 0: not fragmented
    else:
        mme = struct.pack("<BH", 0, message.MMTYPE)
    frame = header + mme + message.pack()
    return frame + b"\x00" * (MIN_FRAME - len(frame)) if len(frame) < MIN_FRAME else frame


def decode_frame(data: bytes) -> Frame:
    """Parse one Ethernet frame; raises :class:`SlacFrameError` for anything malformed or unknown."""
    if len(data) < 17:
        raise SlacFrameError(f"frame of {len(data)} bytes is shorter than the Ethernet and MME headers")
    ethertype = struct.unpack_from(">H", data, 12)[0]
    if ethertype != ETHERTYPE_HOMEPLUG:
        raise SlacFrameError(f"ethertype {ethertype:#06x} is not HomePlug AV (0x88e1)")
    mmv = data[14]
    mmtype = struct.unpack_from("<H", data, 15)[0]
    if mmv == 1:
        if len(data) < 19:
            raise SlacFrameError("MMV 1 frame without fragment-management bytes")
        if data[17] & 0x0F or data[18]:  # fragment count / sequence: SLAC MMEs are never fragmented
            raise SlacFrameError("fragmented MME (FMI != 0) is not supported")
        payload = data[19:]
    elif mmv == 0:
        payload = data[17:]
    else:
        raise SlacFrameError(f"unsupported MMV {mmv} (expected 0 or 1)")
    cls = MESSAGES.get(mmtype)
    if cls is None:
        raise SlacFrameError(f"unknown MMTYPE {mmtype:#06x}")
    if cls.MMV != mmv:
        raise SlacFrameError(f"{cls.__name__} with MMV {mmv}, expected {cls.MMV}")
    try:
        message = cls.unpack(payload)
    except SlacFrameError:
        raise
    except (ValueError, struct.error, IndexError) as e:
        raise SlacFrameError(f"{cls.__name__}: {e}") from e
    return Frame(bytes(data[0:6]), bytes(data[6:12]), message)
