"""A charging site in network namespaces (root only), for `edge simulate` and the tests: a charger namespace
with one V2G interface and one PLC interface per EVSE, one namespace per car (its V2G and PLC interfaces),
and a powerline namespace where the emulator's ends of the PLC cables meet. Made with pyroute2 and removed
when the block ends; no traffic leaves the namespaces.

    charger ns:  secc<n>  (V2G, veth to car n's ev0)      plc<n> (SLAC, veth to line ns plc<n>-line)
    car n ns:    ev0      (V2G)                           evplc0 (SLAC, veth to line ns car<n>-line)
    line ns:     plc<n>-line, car<n>-line                 the powerline emulator (slac.emulator) serves these
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Site:
    charger: str
    cars: list[str]
    line: str
    evse_interfaces: list[str] = field(default_factory=list)  # secc<n>
    plc_interfaces: list[str] = field(default_factory=list)  # plc<n>
    line_interfaces: dict[str, str] = field(default_factory=dict)  # plc<n> / car<n> -> its end in the line ns


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Sockets made in this block belong to namespace ``name`` (the whole process is in it meanwhile)."""
    from pyroute2 import netns

    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


def link_local(ns: str, ifname: str, timeout: float = 5.0) -> str:
    """The interface's IPv6 link-local address in namespace ``ns`` once it is usable (not tentative)."""
    from pyroute2 import NetNS

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with NetNS(ns) as ip:
            index = ip.link_lookup(ifname=ifname)[0]
            for addr in ip.get_addr(family=10, index=index):
                value = addr.get_attr("IFA_ADDRESS")
                if value.startswith("fe80") and not addr["flags"] & 0x40:  # IFA_F_TENTATIVE
                    return value
        time.sleep(0.05)
    raise TimeoutError(f"no link-local address on {ifname} in {ns}")


@contextlib.contextmanager
def charging_site(count: int, tag: str = "sim") -> Iterator[Site]:
    """``count`` EVSEs, each with its car, joined by V2G and PLC cables (see the module docstring)."""
    from pyroute2 import NetNS, netns

    suffix = f"{tag}-{os.getpid()}"
    site = Site(f"edge-charger-{suffix}", [f"edge-car{n}-{suffix}" for n in range(count)], f"edge-line-{suffix}",
                [f"secc{n}" for n in range(count)], [f"plc{n}" for n in range(count)])
    made: list[str] = []
    try:
        for ns in (site.charger, *site.cars, site.line):
            netns.create(ns)
            made.append(ns)
        with NetNS(site.charger) as ip:
            for n, car in enumerate(site.cars):
                ip.link("add", ifname=f"secc{n}", kind="veth", peer={"ifname": "ev0", "net_ns_fd": car})
                ip.link("add", ifname=f"plc{n}", kind="veth", peer={"ifname": f"plc{n}-line", "net_ns_fd": site.line})
                site.line_interfaces[f"plc{n}"] = f"plc{n}-line"
        for n, car in enumerate(site.cars):
            with NetNS(car) as ip:
                ip.link("add", ifname="evplc0", kind="veth", peer={"ifname": f"car{n}-line", "net_ns_fd": site.line})
            site.line_interfaces[f"car{n}"] = f"car{n}-line"
        interfaces = {site.charger: [*site.evse_interfaces, *site.plc_interfaces],
                      **{car: ["ev0", "evplc0"] for car in site.cars}, site.line: list(site.line_interfaces.values())}
        for ns, names in interfaces.items():
            with inside(ns):  # addresses usable at once: no duplicate address detection on these cables
                for path in ("default", *names):
                    with open(f"/proc/sys/net/ipv6/conf/{path}/accept_dad", "w") as f:
                        f.write("0")
            with NetNS(ns) as ip:
                for ifname in ("lo", *names):
                    ip.link("set", index=ip.link_lookup(ifname=ifname)[0], state="up")
        for n, car in enumerate(site.cars):
            link_local(site.charger, f"secc{n}")
            link_local(car, "ev0")
        yield site
    finally:
        for ns in made:
            netns.remove(ns)
