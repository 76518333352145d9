"""The charger acts mid-session, end to end between two network namespaces (real SDP, TCP or TLS): the
controller's stop reaches a DIN car, a -2 car (over TLS 1.2) and a -20 car (over TLS 1.3) and each stops
cleanly with the power off; more power allowed reaches a -2 car as a renegotiation and its new schedule's
power flows."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from edge.controller import ChargingController, PowerCommand
from edge.ev.base import SimulatedCar
from edge.ev.din import DinCar
from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20DcCar
from edge.ev.run import run_ev
from edge.hardware import SimulatedCharger
from edge.v2g.charger import EvseConfig
from edge.v2g.tls import client_context_from_pki, client_context_iso20, server_context_combined
from tests.netns import charger_between_namespaces, inside

CAPACITY_WH = 2_000.0


async def charge_while(car: SimulatedCar, controller: ChargingController, act, *, pki: Path | None = None,
                       client_tls=None) -> SimulatedCharger:
    """``car`` against our charger; ``act(hw)`` runs beside it (it decides when to step in)."""
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    config = EvseConfig(controller=controller)
    server_tls = server_context_combined(pki) if pki else None
    async with charger_between_namespaces(hw, config=config, ssl_context=server_tls) as (ev_ns, _, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(act, hw)
            with inside(ev_ns), trio.fail_after(60):
                await run_ev("ev0", car, ssl_context=client_tls(pki) if client_tls else None)
            nursery.cancel_scope.cancel()
    return hw


def stop_once_charging(controller: ChargingController, after: float = 1.0):
    async def act(hw: SimulatedCharger) -> None:
        while not hw.closed or hw.energy_wh() == 0:
            await trio.sleep(0.02)
        await trio.sleep(after)
        controller.request_stop("the CSMS ended the transaction")
    return act


@pytest.mark.parametrize("name", ["din", "iso2 over TLS 1.2", "iso20 over TLS 1.3"])
async def test_a_charger_initiated_stop(name: str, pki: Path) -> None:
    car: SimulatedCar
    if name == "din":
        car, client_tls = DinCar(soc=50, target_soc=90, capacity_wh=CAPACITY_WH), None
    elif name.startswith("iso2 "):
        car, client_tls = Iso2Car(soc=50, target_soc=90, capacity_wh=CAPACITY_WH), client_context_from_pki
    else:
        car = Iso20DcCar(soc=50, target_soc=90, capacity_wh=CAPACITY_WH)
        client_tls = lambda p: client_context_iso20(p, folder="iso15118_20")  # noqa: E731
    controller = ChargingController()
    hw = await charge_while(car, controller, stop_once_charging(controller), pki=pki if client_tls else None,
                            client_tls=client_tls)
    assert car.stopped_cleanly and any("asked to stop" in n for n in car.notes), car.notes
    assert 50 < car.soc < 90 and car.energy_wh > 0  # it charged, then stopped on the charger's word
    assert not hw.closed and hw.target_i == 0


async def test_more_power_renegotiates_a_iso2_car() -> None:
    """The controller allows more than the car's schedule: ReNegotiation, and the new schedule's power
    flows (a lower limit needs none: it is enforced at once, see tests/test_charger_control.py)."""
    car = Iso2Car(soc=50, target_soc=51, capacity_wh=CAPACITY_WH)
    controller = ChargingController(limit=PowerCommand(max_w=8_000))
    powers: list[float] = []

    async def raise_the_limit(hw: SimulatedCharger) -> None:
        while not hw.closed or hw.energy_wh() == 0:
            await trio.sleep(0.02)
        controller.set_command(PowerCommand(max_w=40_000))
        while True:
            await trio.sleep(0.05)
            if car.renegotiations and hw.closed:
                powers.append(hw.present()[0] * hw.present()[1])

    hw = await charge_while(car, controller, raise_the_limit)
    assert car.stopped_cleanly and car.renegotiations == 1 and car.log.count("ChargeParameterDiscoveryReq") == 2
    assert len(powers) > 5 and max(powers) > 8_000 * 1.5 and max(powers) <= 40_000 * 1.02, powers
    assert not hw.closed
