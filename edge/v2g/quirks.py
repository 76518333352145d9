"""Car quirk profiles matched when a car connects: by the OUI of its MAC address (from SLAC's match, or the
EUI-64 interface identifier of its IPv6 link-local address) or by a protocol namespace it offers in
supportedAppProtocolReq. Profiles matched by EVCCID prefix are applied later, at SessionSetupReq, by the -20
session (:class:`edge.v2g.power.SignQuirks`). The first matching profile wins; every use is logged and noted
on the session."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .power import SignConvention

CONNECTION_MATCH_KINDS = ("mac_oui", "sap_namespace")


@dataclass(frozen=True, slots=True)
class CarQuirkProfile:
    name: str
    kind: str  # "mac_oui" ("AA:BB:CC") or "sap_namespace" ("urn:...")
    value: str
    signs: SignConvention

    def matches(self, mac: bytes | None, namespaces: Iterable[str]) -> bool:
        if self.kind == "mac_oui":
            return mac is not None and len(mac) == 6 and mac[:3].hex(":").upper() == self.value.upper()
        return self.value in namespaces


@dataclass(frozen=True, slots=True)
class CarQuirks:
    """The profiles a connection is matched against, in the configuration's order."""

    profiles: tuple[CarQuirkProfile, ...] = ()

    def at_connection(self, mac: bytes | None, namespaces: Iterable[str]) -> CarQuirkProfile | None:
        offered = list(namespaces)
        return next((p for p in self.profiles if p.matches(mac, offered)), None)


def mac_from_link_local(address: str) -> bytes | None:
    """The MAC address behind a modified EUI-64 interface identifier (fe80::XXYY:ZZff:feAA:BBCC), None when the
    address is not link-local or its identifier is not one (privacy addresses, manually set ones)."""
    try:
        ip = ipaddress.IPv6Address(address.split("%")[0].strip("[]"))
    except ValueError:
        return None
    if not ip.is_link_local:
        return None
    iid = ip.packed[8:]
    if iid[3:5] != b"\xff\xfe":
        return None
    return bytes([iid[0] ^ 0x02, iid[1], iid[2], iid[5], iid[6], iid[7]])


def peer_host(peer: str | None) -> str:
    """"[fe80::1%secc0]:50000" -> "fe80::1%secc0"."""
    if not peer:
        return ""
    return peer[1:].rsplit("]", 1)[0] if peer.startswith("[") else peer.rsplit(":", 1)[0]
