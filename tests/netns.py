"""A network namespace with veth pairs, made and removed by the test itself (pyroute2)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


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
def inside(name: str) -> Iterator[None]:
    """Sockets created in this block belong to namespace ``name`` (and stay there after)."""
    from pyroute2 import netns

    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()
