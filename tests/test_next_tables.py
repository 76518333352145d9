"""Every state a session reaches is a key of its protocol's NEXT table (or the session is over): a
handler returning a state the table does not know would fail the car's next request. Driven by every
simulated car we have, in memory: DIN; -2 DC and AC, EIM and PnC, renegotiation, pause; -20 DC EIM and
PnC, renegotiation, pause; -20 DC_BPT dynamic, AC scheduled with a renegotiation, AC_BPT dynamic paused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edge.ev.base import SimulatedCar
from edge.ev.din import DinCar
from edge.ev.iso2 import ContractCredentials, Iso2Car
from edge.ev.iso20 import Iso20Car, Iso20ContractCredentials, Iso20DcCar
from edge.hardware import bidirectional_charger
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.v2g.charger import ChargerConnection, EvseConfig
from tests.inmemory import run

CARS: dict[str, Callable[[Path], SimulatedCar]] = {
    "din": lambda pki: DinCar(soc=40, target_soc=40.3),
    "iso2 dc eim renegotiation": lambda pki: Iso2Car(soc=40, target_soc=40.4, renegotiate_at_soc=40.2),
    "iso2 ac eim pause": lambda pki: Iso2Car(mode="ac", soc=40, target_soc=40.1, pause_at_soc=40.05),
    "iso2 dc pnc": lambda pki: Iso2Car(payment="pnc", contract=ContractCredentials.from_pki(pki), soc=40,
                                       target_soc=40.3),
    "iso20 dc eim renegotiation": lambda pki: Iso20DcCar(soc=40, target_soc=40.4, renegotiate_at_soc=40.2),
    "iso20 dc eim pause": lambda pki: Iso20DcCar(soc=40, target_soc=40.4, pause_at_soc=40.2),
    "iso20 dc pnc": lambda pki: Iso20DcCar(authorization="pnc", contract=Iso20ContractCredentials.from_pki(pki),
                                           soc=40, target_soc=40.3),
    "iso20 dc_bpt dynamic": lambda pki: Iso20Car(service="dc_bpt", control="dynamic", soc=40, target_soc=40.3),
    "iso20 ac scheduled renegotiation": lambda pki: Iso20Car(service="ac", soc=40, target_soc=40.3,
                                                             renegotiate_at_soc=40.1),
    "iso20 ac_bpt dynamic pause": lambda pki: Iso20Car(service="ac_bpt", control="dynamic", soc=40, target_soc=40.2,
                                                       pause_at_soc=40.1),
}


@pytest.mark.parametrize("name", sorted(CARS))
def test_every_state_reached_is_in_the_table(name: str, pki: Path) -> None:
    car = CARS[name](pki)
    config = EvseConfig(pnc=LocalPlugAndCharge.from_pki_folder(pki), pnc_without_tls=True, receipt_interval=0.5)
    hw = bidirectional_charger(isolation_s=0.2)
    seen: set[str] = set()
    connections = 0
    while True:
        conn = ChargerConnection(hw, config=config)
        connections += 1

        def check(now: float, conn: ChargerConnection = conn) -> None:
            session = conn.session
            if session is not None and not session.done:
                assert session.state in session.NEXT, f"{session.state!r} is not in {type(session).__name__}.NEXT"
                seen.add(session.state)

        run(car, conn, each=check)
        conn.connection_lost("closed by the car")
        if not getattr(car, "paused", False):
            break
        car.resume()
    assert car.stopped_cleanly and connections == (2 if "pause" in name else 1)
    assert len(seen) >= 8  # the walk went through the protocol, not just its start
