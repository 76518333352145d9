"""A network namespace with veth pairs, made and removed by the test itself (pyroute2)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from edge.netbench import inside, link_local


def require_root() -> None:
    if os.geteuid() != 0:
        stop = pytest.fail if os.environ.get("CI") else pytest.skip
        stop("network-namespace tests need root (CI runs as root)")


@contextlib.contextmanager
def veth_namespace(pairs: list[tuple[str, str]]) -> Iterator[str]:
    """Yield the name of a fresh namespace holding the given veth pairs, all up; remove it after."""
    from pyroute2 import NetNS, netns

    name = f"edge-test-{os.getpid()}"
    netns.create(name)
    try:
        with NetNS(name) as ip:
            for a, b in pairs:
                ip.link("add", ifname=a, kind="veth", peer={"ifname": b})
            for a, b in pairs:
                for ifname in (a, b):
                    ip.link("set", index=ip.link_lookup(ifname=ifname)[0], state="up")
        yield name
    finally:
        netns.remove(name)


@contextlib.contextmanager
def two_namespaces(a_if: str, b_if: str) -> Iterator[tuple[str, str]]:
    """Two fresh namespaces joined by a veth pair (``a_if`` in the first), IPv6 link-local up
    without duplicate-address detection, so addresses are usable at once."""
    from pyroute2 import NetNS, netns

    a, b = f"edge-a-{os.getpid()}", f"edge-b-{os.getpid()}"
    netns.create(a)
    netns.create(b)
    try:
        # made inside the first namespace with its peer sent straight to the second: the names never
        # exist in the root namespace, so test processes running side by side cannot collide
        with NetNS(a) as ip:
            ip.link("add", ifname=a_if, kind="veth", peer={"ifname": b_if, "net_ns_fd": b})
        for ns, ifname in ((a, a_if), (b, b_if)):
            with inside(ns):
                for path in ("default", ifname):
                    with open(f"/proc/sys/net/ipv6/conf/{path}/accept_dad", "w") as f:
                        f.write("0")
            with NetNS(ns) as ip:
                ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
                ip.link("set", index=ip.link_lookup(ifname=ifname)[0], state="up")
        yield a, b
    finally:
        netns.remove(a)
        netns.remove(b)


@contextlib.asynccontextmanager
async def charger_between_namespaces(hardware, protocols=None, *, config=None, ssl_context=None,
                                     tls_only: bool = False, connection_class=None, secc_if: str = "secc0",
                                     ev_if: str = "ev0") -> AsyncIterator[tuple[str, tuple, list]]:
    """Two namespaces joined by ``secc_if``/``ev_if`` with usable link-local addresses (cars such as
    Josev refuse tentative ones), our charger (``run_secc`` with SDP) serving in the first. Yields the
    car's namespace, the charger's ``(tcp, tls)`` ports and the connections it makes (instances of
    ``connection_class``, a ChargerConnection by default); the charger stops when the block ends."""
    from functools import partial

    import trio

    import edge.secc
    from edge.v2g.charger import ChargerConnection

    require_root()
    connections: list = []
    make = connection_class or ChargerConnection

    def recording_connection(*args, **kwargs):
        connections.append(make(*args, **kwargs))
        return connections[-1]

    with pytest.MonkeyPatch.context() as patch, two_namespaces(secc_if, ev_if) as (secc_ns, ev_ns):
        patch.setattr(edge.secc, "ChargerConnection", recording_connection)
        link_local(secc_ns, secc_if)
        link_local(ev_ns, ev_if)
        async with trio.open_nursery() as nursery:
            with inside(secc_ns):  # sockets belong to the namespace they are made in
                ports = await nursery.start(partial(edge.secc.run_secc, secc_if, 0, hardware, protocols,
                                                    config=config, ssl_context=ssl_context, tls_only=tls_only))
            yield ev_ns, ports, connections
            nursery.cancel_scope.cancel()


@contextlib.contextmanager
def charger_and_cars(count: int) -> Iterator[tuple[str, list[str]]]:
    """A charger namespace with ``secc0``..``secc{count-1}``, each joined to its own car namespace (``ev0``
    there), IPv6 link-local usable at once. Yields the charger's namespace and the cars'."""
    from pyroute2 import NetNS, netns

    charger = f"edge-c-{os.getpid()}"
    cars = [f"edge-ev{n}-{os.getpid()}" for n in range(count)]
    for ns in (charger, *cars):
        netns.create(ns)
    try:
        with NetNS(charger) as ip:
            for n, car in enumerate(cars):
                ip.link("add", ifname=f"secc{n}", kind="veth", peer={"ifname": "ev0", "net_ns_fd": car})
        for ns, ifnames in ((charger, [f"secc{n}" for n in range(count)]), *((car, ["ev0"]) for car in cars)):
            with inside(ns):
                for path in ("default", *ifnames):
                    with open(f"/proc/sys/net/ipv6/conf/{path}/accept_dad", "w") as f:
                        f.write("0")
            with NetNS(ns) as ip:
                for ifname in ("lo", *ifnames):
                    ip.link("set", index=ip.link_lookup(ifname=ifname)[0], state="up")
        for n, car in enumerate(cars):
            link_local(charger, f"secc{n}")
            link_local(car, "ev0")
        yield charger, cars
    finally:
        for ns in (charger, *cars):
            netns.remove(ns)
