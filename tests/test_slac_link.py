"""SLAC over real raw sockets: EV, two chargers and the emulated powerline on veth pairs in a
network namespace made by the test."""

from __future__ import annotations

import trio
from scapy.contrib.homeplugav import HomePlugAV
from scapy.layers.l2 import Ether

from slac import messages as m
from slac.emulator import PowerlineEmulator
from slac.ev import EvMatcher
from slac.evse import EvseMatcher, Matched
from slac.link import RawLink, run_emulator, run_ev, run_evse
from slac.timers import SlacTimers
from tests.netns import inside, require_root, veth_namespace

PAIRS = [("ev0", "ev0-line"), ("evse1", "evse1-line"), ("evse2", "evse2-line")]


async def test_match_over_veth_with_crosstalk() -> None:
    require_root()
    with veth_namespace(PAIRS) as ns:
        with inside(ns):
            links = {name: RawLink(name) for pair in PAIRS for name in pair}
        try:
            ev, near, far = links["ev0"].mac, links["evse1"].mac, links["evse2"].mac
            emulator = PowerlineEmulator({(ev, near): 19, (ev, far): 37})
            wire: list[bytes] = []
            tap = emulator.from_host

            def tapped(src: bytes, data: bytes) -> list[tuple[bytes, bytes]]:
                wire.append(data)
                out = tap(src, data)
                wire.extend(frame for _, frame in out)
                return out

            emulator.from_host = tapped  # type: ignore[method-assign]
            results: dict[str, object] = {}
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_emulator, emulator, {ev: links["ev0-line"], near: links["evse1-line"],
                                                               far: links["evse2-line"]})

                    async def side(key: str, coro) -> None:
                        results[key] = await coro

                    async with trio.open_nursery() as stations:
                        stations.start_soon(side, "near", run_evse(links["evse1"], EvseMatcher(near)))
                        # the far charger gives up at TT_EVSE_SLAC_init: shortened so the test is quick
                        short = SlacTimers().with_overrides(TT_EVSE_match_session=1.0, TT_EVSE_SLAC_init=2.0)
                        stations.start_soon(side, "far", run_evse(links["evse2"], EvseMatcher(far, timers=short)))
                        await trio.sleep(0.05)
                        stations.start_soon(side, "ev", run_ev(links["ev0"], EvMatcher(ev)))
                    nursery.cancel_scope.cancel()
            assert isinstance(results["ev"], Matched) and results["ev"].peer_mac == near
            assert isinstance(results["near"], Matched) and results["near"].peer_mac == ev
            assert results["ev"].nmk == results["near"].nmk == emulator.keys[ev]
            assert not isinstance(results["far"], Matched)
            # everything that crossed the line is a frame scapy's HomePlug GP layers understand too
            assert len(wire) > 30
            for frame in wire:
                parsed = Ether(frame)
                assert parsed.type == 0x88E1 and parsed[HomePlugAV].HPtype == m.decode_frame(frame).message.MMTYPE
        finally:
            for link in links.values():
                link.close()


async def test_cli_match_result_as_json() -> None:
    from edge.cli import slac_match

    require_root()
    pairs = [("ev0", "ev0-line"), ("evse1", "evse1-line")]
    with veth_namespace(pairs) as ns:
        with inside(ns):
            links = {name: RawLink(name) for pair in pairs for name in pair}
        try:
            ev, evse = links["ev0"].mac, links["evse1"].mac
            emulator = PowerlineEmulator({(ev, evse): 24})
            out: dict[str, dict] = {}
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_emulator, emulator, {ev: links["ev0-line"], evse: links["evse1-line"]})

                    async def side(role: str, link: RawLink) -> None:
                        out[role] = await slac_match(role, link)

                    async with trio.open_nursery() as stations:
                        stations.start_soon(side, "evse", links["evse1"])
                        await trio.sleep(0.05)
                        stations.start_soon(side, "ev", links["ev0"])
                    nursery.cancel_scope.cancel()
            assert out["evse"]["matched"] and out["evse"]["ev_mac"] == ev.hex(":")
            assert out["evse"]["attenuation_db"] == 24 and out["ev"]["evse_mac"] == evse.hex(":")
            assert out["ev"]["nid"] == out["evse"]["nid"] and 0 < out["evse"]["duration_s"] < 5
        finally:
            for link in links.values():
                link.close()


def test_cli_reports_a_bad_interface(capsys) -> None:
    from edge.cli import main

    assert main(["slac", "evse", "--iface", "no-such-if0"]) == 2
    assert "no network interface 'no-such-if0'" in capsys.readouterr().err
    assert main(["slac", "ev", "--iface", "lo", "--timer", "TT_bogus=1"]) == 2


async def test_interface_state_through_netlink() -> None:
    import pytest
    from pyroute2 import NetNS

    from slac.ifaces import link_state, wait_link_up

    require_root()
    with veth_namespace([("pl0", "pl0-line")]) as ns:
        state = link_state("pl0", ns)
        with inside(ns):
            link = RawLink("pl0")
        with link:
            assert state.up and state.mac == link.mac
        with NetNS(ns) as ip:
            ip.link("set", index=ip.link_lookup(ifname="pl0-line")[0], state="down")  # carrier gone
        assert not link_state("pl0", ns).up
        with pytest.raises(TimeoutError, match="pl0"):
            await wait_link_up("pl0", 0.3, netns=ns)
        with NetNS(ns) as ip:
            ip.link("set", index=ip.link_lookup(ifname="pl0-line")[0], state="up")
        assert (await wait_link_up("pl0", 2, netns=ns)).up
        with pytest.raises(ValueError, match="no network interface"):
            link_state("nope0", ns)


async def test_interface_removed_mid_match_is_a_failed_result() -> None:
    from pyroute2 import NetNS

    from slac.evse import Failed

    require_root()
    with veth_namespace([("gone0", "gone0-line")]) as ns:
        with inside(ns):
            link = RawLink("gone0")
        with link:
            async with trio.open_nursery() as nursery:
                result: list = []

                async def evse() -> None:
                    result.append(await run_evse(link, EvseMatcher(link.mac)))

                nursery.start_soon(evse)
                await trio.sleep(0.1)
                with NetNS(ns) as ip:
                    ip.link("del", index=ip.link_lookup(ifname="gone0")[0])
                with trio.fail_after(5):
                    while not result:
                        await trio.sleep(0.05)
            assert isinstance(result[0], Failed) and "gone0" in result[0].reason
