"""A station (edge/ocpp/station.py) in this process, its EVSE driven by an in-memory car session, and
``edge csms`` in a subprocess on loopback: the integration rig of the OCPP tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from edge.chargingpoint import ChargingPoint
from edge.controller import ChargingController
from edge.ev import request_payload_type
from edge.ev.base import SimulatedCar
from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.ocpp.bridge import hardware_meter
from edge.ocpp.station import EvseLink, OcppStation, StationSettings
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.v2gtp import ANSWER_LATER, V2gtpMessage


@dataclass
class StationRig:
    url: str
    state_dir: Path
    versions: tuple[str, ...] = ("ocpp2.1", "ocpp2.0.1")
    board: SimulatedCharger = field(default_factory=lambda: bidirectional_charger(isolation_s=0.2))
    controller: ChargingController = field(default_factory=ChargingController)
    overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.point = ChargingPoint(self.board, "evse1")
        self.config = EvseConfig(controller=self.controller, point=self.point)
        # fast retries and sampling for tests; the defaults are the specification's
        overrides = {"OCPPCommCtrlr/RetryBackOffWaitMinimum": "1", "OCPPCommCtrlr/RetryBackOffRandomRange": "0",
                     "SampledDataCtrlr/TxUpdatedInterval": "1", **self.overrides}
        self.station = OcppStation(StationSettings(self.url, "CS1", self.state_dir, self.versions),
                                   [EvseLink(1, self.controller, hardware_meter(self.board, lambda: self.point.mode),
                                             100_000.0)], overrides=overrides)
        self.station.random.seed(1)

    async def charge(self, car: SimulatedCar, *, step: float = 0.02, lose_after: int | None = None) -> list[Any]:
        """One car session on the EVSE, paced in real time so the station runs meanwhile; ``lose_after``
        requests: the car vanishes (connection lost) instead of stopping."""
        conn = self.connection = ChargerConnection(self.board, config=self.config)
        request, n, commands = car.start(), 0, []
        while request is not None:
            await trio.sleep(step)
            now = trio.current_time()
            message = V2gtpMessage(request_payload_type(car), request)
            response = conn.handle(message, now)
            while response is ANSWER_LATER:  # as the server does: the session's backend is deciding
                await trio.sleep(0.02)
                now = trio.current_time()
                response = conn.handle(message, now)
            assert response is not None, car.log[-1:]
            commands.append(self.controller.command(now))
            request = car.handle(response.payload, now + step / 2)
            n += 1
            if lose_after is not None and n >= lose_after:
                conn.connection_lost("car vanished (test)")
                return commands
            assert n < 5000, "the session does not end"
        conn.connection_lost("session over")
        return commands


def sent_by_station(log: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [r["frame"][3] for r in log if r.get("dir") == "in" and r.get("frame", [None])[0] == 2
            and r["frame"][2] == action]


def frames(log: list[dict[str, Any]]) -> list[list[Any]]:
    return [r["frame"] for r in log if "frame" in r]


def script(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"steps": steps, **extra}))
    return path
