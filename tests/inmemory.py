"""Run a simulated car against a charger connection in memory, with time as a number."""

from __future__ import annotations

from collections.abc import Callable

from edge.ev import request_payload_type
from edge.ev.base import SimulatedCar
from edge.v2g.charger import ChargerConnection
from edge.v2g.v2gtp import V2gtpMessage

STEP = 0.1  # simulated seconds per exchange


def run(car: SimulatedCar, conn: ChargerConnection, now: float = 0.0,
        each: Callable[[float], None] | None = None) -> float:
    """One connection's worth of session, each request with the payload type the car gives it (the
    charger must answer with the same one); ``each(now)`` runs before every request. Returns the
    simulated time at its end."""
    request = car.start()
    while request is not None:
        assert now < 3600, "the session does not end"
        now += STEP
        if each is not None:
            each(now)
        payload_type = request_payload_type(car)
        response = conn.handle(V2gtpMessage(payload_type, request), now)
        assert response is not None, f"charger closed after {car.log[-1:]}"
        assert response.payload_type == payload_type, car.log[-1:]
        request = car.handle(response.payload, now + STEP / 2)
    return now
