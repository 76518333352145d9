"""Run a simulated car against a charger connection in memory, with time as a number."""

from __future__ import annotations

from edge.ev.base import SimulatedCar
from edge.v2g.charger import ChargerConnection
from edge.v2g.v2gtp import PayloadType, V2gtpMessage

STEP = 0.1  # simulated seconds per exchange


def run(car: SimulatedCar, conn: ChargerConnection, now: float = 0.0) -> float:
    """One connection's worth of session; returns the simulated time at its end."""
    request = car.start()
    while request is not None:
        assert now < 3600, "the session does not end"
        now += STEP
        response = conn.handle(V2gtpMessage(PayloadType.EXI, request), now)
        assert response is not None, f"charger closed after {car.log[-1:]}"
        request = car.handle(response.payload, now + STEP / 2)
    return now
