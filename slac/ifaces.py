"""Interface state and MAC through pyroute2 (netlink), for the SLAC link and its callers."""

from __future__ import annotations

from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True)
class LinkState:
    ifname: str
    mac: bytes
    up: bool  # administratively up and the carrier is there (IFF_UP and IFF_LOWER_UP)


IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def link_state(ifname: str, netns: str | None = None) -> LinkState:
    """The interface's MAC and whether it is up; ``ValueError`` if there is no such interface."""
    from pyroute2 import IPRoute, NetNS

    with (NetNS(netns) if netns else IPRoute()) as ip:
        found = ip.link_lookup(ifname=ifname)
        if not found:
            raise ValueError(f"no network interface {ifname!r}")
        (link,) = ip.get_links(found[0])
    mac = bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))
    flags = link["flags"]
    return LinkState(ifname, mac, bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP))


async def wait_link_up(ifname: str, timeout: float, *, netns: str | None = None, poll: float = 0.1) -> LinkState:
    """Wait until the interface is up (the PLC modem's Ethernet side); ``TimeoutError`` otherwise."""
    with trio.move_on_after(timeout):
        while True:
            state = link_state(ifname, netns)
            if state.up:
                return state
            await trio.sleep(poll)
    raise TimeoutError(f"interface {ifname} not up after {timeout} s")
