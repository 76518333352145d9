"""SDP over real IPv6 multicast between two network namespaces joined by a veth pair."""

from __future__ import annotations

import ipaddress

import trio

from edge.v2g import sdp
from edge.v2g.net import discover, serve_sdp
from tests.netns import inside, link_local, require_root, two_namespaces


async def test_car_discovers_the_charger() -> None:
    require_root()
    with two_namespaces("secc0", "ev0") as (secc_ns, ev_ns):
        secc_addr = link_local(secc_ns, "secc0")
        link_local(ev_ns, "ev0")
        server = sdp.SdpServer(secc_addr, tcp_port=61000, tls_port=64000)
        async with trio.open_nursery() as nursery:
            with inside(secc_ns):
                # the socket is made when the task starts: start it while inside the namespace
                await nursery.start(serve_sdp, server, "secc0")
            with inside(ev_ns):
                ev_task = discover("ev0", sdp.SECURITY_NONE, attempts=20)
                with trio.fail_after(5):
                    answer = await ev_task
            nursery.cancel_scope.cancel()
    assert ipaddress.IPv6Address(answer.address) == ipaddress.IPv6Address(secc_addr)
    assert (answer.port, answer.security) == (61000, sdp.SECURITY_NONE)


async def test_din_session_between_namespaces() -> None:
    """Charger and car in two namespaces: SDP over multicast, TCP to the link-local address, a full
    DIN DC session with the simulated hardware."""
    from edge.ev.din import DinCar
    from edge.ev.run import run_ev
    from edge.hardware import SimulatedCharger
    from edge.secc import run_secc

    require_root()
    with two_namespaces("secc0", "ev0") as (secc_ns, ev_ns):
        link_local(secc_ns, "secc0")
        link_local(ev_ns, "ev0")
        hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
        async with trio.open_nursery() as nursery:
            with inside(secc_ns):
                await nursery.start(run_secc, "secc0", 0, hw)
            with inside(ev_ns):
                with trio.fail_after(60):
                    car = (await run_ev("ev0", DinCar(soc=60, target_soc=60.02))).car
            nursery.cancel_scope.cancel()
    assert car.stopped_cleanly and car.energy_wh > 0 and hw.energy_wh() > 0
    assert not hw.closed
