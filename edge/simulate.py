"""``edge simulate``: the charger and the simulated car in one process over loopback TCP (no SLAC, no
root): a DIN DC session and an ISO 15118-2 DC session in turn, a summary line each. Later issues add
SLAC, TLS/PnC, -20 and a CSMS."""

from __future__ import annotations

import json
from dataclasses import dataclass

import trio

from edge.ev import drive
from edge.ev.din import DinCar
from edge.ev.iso2 import Iso2DcCar
from edge.hardware import SimulatedDcCharger
from edge.v2g.charger import ChargerConnection
from edge.v2g.server import serve_tcp


@dataclass
class Summary:
    protocol: str
    messages: int
    energy_wh: float
    duration_s: float
    soc: tuple[float, float]
    slowest: tuple[str, float, float]  # request, response time used (ms), budget (ms)
    clean_stop: bool

    def text(self) -> str:
        name, used, budget = self.slowest
        return (f"{self.protocol}: {self.messages} messages, {self.energy_wh:.1f} Wh in {self.duration_s:.1f} s, "
                f"SoC {self.soc[0]:.1f}% -> {self.soc[1]:.1f}%, slowest response {name} {used:.2f} ms "
                f"of {budget:.0f} ms, {'clean SessionStop' if self.clean_stop else 'NO clean stop'}")


async def simulate(car, label: str) -> Summary:
    """One session between the charger (offering ISO 15118-2 and DIN) and ``car`` over loopback."""
    hw = SimulatedDcCharger(voltage_tau=0.1, isolation_s=0.5)
    connections: list[ChargerConnection] = []

    def factory() -> ChargerConnection:
        connections.append(ChargerConnection(hw))
        return connections[-1]

    start_soc = car.soc
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp, 0, factory)
        stream = await trio.open_tcp_stream("::1", port)
        with trio.fail_after(120):
            async with stream:
                count = await drive(stream, car)
        nursery.cancel_scope.cancel()
    session = connections[0].session
    slow = max(((n, max(ts)) for n, ts in session.stats.items()), key=lambda x: x[1] / session.timers.budget(x[0]))
    return Summary(label, count, car.energy_wh, trio.current_time() - start, (start_soc, car.soc),
                   (slow[0], slow[1] * 1e3, session.timers.budget(slow[0]) * 1e3),
                   car.stopped_cleanly)


async def simulate_all() -> list[Summary]:
    return [await simulate(DinCar(soc=30.0, target_soc=32.0, capacity_wh=2_000.0), "DIN SPEC 70121 DC"),
            await simulate(Iso2DcCar(soc=30.0, target_soc=32.0, capacity_wh=2_000.0, renegotiate_at_soc=31.0),
                           "ISO 15118-2 DC EIM (with a renegotiation)")]


def main(as_json: bool = False) -> int:
    summaries = trio.run(simulate_all)
    for summary in summaries:
        print(json.dumps(summary.__dict__) if as_json else summary.text())
    return 0 if all(s.clean_stop for s in summaries) else 1
