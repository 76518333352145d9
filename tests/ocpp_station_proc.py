"""A station process for the durability tests (killed with SIGKILL by them):

    python -m tests.ocpp_station_proc URL STATE charge    # a -2 car charging for a long time, CSMS or not
    python -m tests.ocpp_station_proc URL STATE queue N   # a transaction of N events queued, then serve
    python -m tests.ocpp_station_proc URL STATE serve     # the station only: deliver what the store holds

Prints one line per milestone ("started", "charging", "queued N", "drained") for the test to follow."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from edge.ev.iso2 import Iso2Car
from tests.ocpp_station_rig import StationRig


async def main(url: str, state: Path, mode: str, count: int) -> None:
    rig = StationRig(url, state)
    print("started", flush=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.station.run)
        if mode == "charge":
            print("charging", flush=True)
            await rig.charge(Iso2Car(soc=10, target_soc=99, capacity_wh=500_000.0), step=0.05)
        elif mode == "queue":
            tx = rig.station.evses[0].transactions
            assert tx is not None
            from edge.controller import CarSession, EnergyTransferStarted
            tx.on_event(EnergyTransferStarted(CarSession("00" * 8, "iso2")))
            for _ in range(count - 1):
                tx.triggered()
            print(f"queued {rig.station.store.queued()}", flush=True)
        while rig.station.store.queued():
            await trio.sleep(0.05)
        print("drained", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
