"""A software Green PHY powerline: the local modems of several stations and the line between them.

Sans-IO: ``from_host(mac, frame)`` returns ``(host mac, frame)`` deliveries. Each host (a car or a
charger) has a local modem that answers CM_SET_KEY and, for every M-SOUND it hears from a car,
reports CM_ATTEN_PROFILE.IND with the attenuation configured for that car-charger pair. Frames
between hosts travel only over pairs that have an attenuation, so crosstalk is modelled by giving a
car two chargers (the nearer one with the lower value). The trio shell puts it on veth pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import messages as m
from .evse import LOCAL_MODEM


@dataclass
class PowerlineEmulator:
    #: (car MAC, charger MAC) -> attenuation in dB; the pair can hear each other
    attenuation: dict[tuple[bytes, bytes], float]
    groups: int = 58
    #: SET_KEY requests to answer with "rejected" first, per host (tests the retry path)
    reject_set_key: dict[bytes, int] = field(default_factory=dict)
    #: the NMK each host's modem currently uses (hosts with the same NMK share a logical network)
    keys: dict[bytes, bytes] = field(default_factory=dict)

    def hosts(self) -> set[bytes]:
        return {mac for pair in self.attenuation for mac in pair}

    def _heard_by(self, src: bytes) -> list[tuple[bytes, float]]:
        out = []
        for (ev, evse), db in self.attenuation.items():
            if src == ev:
                out.append((evse, db))
            elif src == evse:
                out.append((ev, db))
        return out

    def from_host(self, src: bytes, data: bytes) -> list[tuple[bytes, bytes]]:
        try:
            frame = m.decode_frame(data)
        except m.SlacFrameError:
            return []  # a real modem drops what it cannot parse; so do we
        msg = frame.message
        if frame.dst == LOCAL_MODEM or isinstance(msg, m.SetKeyReq):
            if not isinstance(msg, m.SetKeyReq):
                return []
            pending = self.reject_set_key.get(src, 0)
            if pending:
                self.reject_set_key[src] = pending - 1
                result = 1
            else:
                self.keys[src] = msg.new_key
                result = 0
            cnf = m.SetKeyCnf(result=result, your_nonce=msg.my_nonce)
            return [(src, m.encode_frame(src, LOCAL_MODEM, cnf))]
        out: list[tuple[bytes, bytes]] = []
        for peer, db in self._heard_by(src):
            if frame.dst not in (peer, m.BROADCAST):
                continue
            out.append((peer, data))
            if isinstance(msg, m.MnbcSoundInd):
                profile = m.AttenProfileInd(pev_mac=src, groups=[round(db)] * self.groups)
                out.append((peer, m.encode_frame(peer, LOCAL_MODEM, profile)))
        return out
