"""The charging point's controller: power commands, setpoint scripts (with clear errors), revisions that
tell sessions something changed, and a reset between cars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edge.controller import ChargingController, PowerCommand, SetpointStep, load_setpoints
from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.v2g import sap
from edge.v2g.charger import ChargerConnection, EvseConfig, parse_protocols


@pytest.mark.parametrize(("kw", "message"), [
    ({"max_w": -1.0}, "min_w <= 0 <= max_w"), ({"max_w": 10.0, "min_w": 5.0}, "min_w <= 0 <= max_w"),
    ({"max_w": 10.0, "target_w": 11.0}, "outside"), ({"max_w": math.nan}, "number of watts"),
    ({"max_w": 10.0, "target_w": math.inf}, "outside"),
])
def test_power_commands_are_checked(kw: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PowerCommand(**kw)


def test_a_script_starts_with_energy_transfer_and_steps_through() -> None:
    steps = [SetpointStep(0, PowerCommand(max_w=10_000, target_w=10_000)),
             SetpointStep(5, PowerCommand(max_w=0, min_w=-5_000, target_w=-5_000))]
    c = ChargingController(limit=PowerCommand(max_w=22_000), script=steps)
    assert c.command(100.0).max_w == 22_000 and c.revision == 0  # no energy transfer yet: the standing limit
    c.energy_transfer_started(100.0)
    assert c.command(101.0).target_w == 10_000 and c.revision == 1
    assert c.command(104.9).target_w == 10_000 and c.revision == 1  # unchanged: no new revision
    assert c.command(105.0).target_w == -5_000 and c.revision == 2
    c.session_ended()
    assert c.command(200.0).max_w == 22_000 and c.stop_reason is None


def test_a_command_expires_back_to_the_limit() -> None:
    c = ChargingController(limit=PowerCommand(max_w=22_000))
    c.set_command(PowerCommand(max_w=5_000, valid_until=10.0))
    assert c.command(9.0).max_w == 5_000
    revision = c.revision
    assert c.command(10.0).max_w == 22_000 and c.revision == revision + 1


def test_setpoint_files(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"at": 0, "target_w": 7000}, {"at": 3, "target_w": -4000, "min_w": -6000}]))
    steps = load_setpoints(good)
    assert [s.at for s in steps] == [0, 3]
    assert steps[1].command == PowerCommand(max_w=0, min_w=-6000, target_w=-4000)
    for content, message in [("[]", "non-empty"), ("{", "Expecting"), ('[{"target_w": 1}]', "missing 'at'"),
                             ('[{"at": -1, "target_w": 1}]', "at must be"), ('[{"at": 0, "watts": 1}]', "unknown key"),
                             ('[{"at": 0, "target_w": 9, "max_w": 5}]', "outside"), ("[3]", "expected an object")]:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(ValueError, match=message):
            load_setpoints(bad)


def test_protocol_lists() -> None:
    assert parse_protocols("iso20-ac, din") == [sap.ISO20_AC, sap.DIN]
    for text in ("iso3", "", "din,din", "iso20-wpt"):
        with pytest.raises(ValueError):
            parse_protocols(text)


def test_iso20_ac_is_offered_only_by_a_board_with_ac() -> None:
    dc_only = SimulatedCharger(ac=None)
    assert sap.ISO20_AC not in ChargerConnection(dc_only).enabled_protocols()
    assert sap.ISO20_AC in ChargerConnection(bidirectional_charger()).enabled_protocols()


def test_paused_sessions_are_bounded_and_need_the_same_car() -> None:
    from edge.v2g.iso20.session import Iso20PausedSession, Iso20PausedSessions

    store = Iso20PausedSessions(limit=3)
    for i in range(5):
        store.store(Iso20PausedSession(bytes([i]) * 8, f"car{i}", "EIM", (2, 1)))
    assert len(store.sessions) == 3 and bytes([0]) * 8 not in store.sessions  # the oldest forgotten
    assert store.take(bytes([4]) * 8, "car3") is None  # another car cannot take it
    assert store.take(bytes([4]) * 8, "car4") is not None and bytes([4]) * 8 not in store.sessions


def test_session_randomness_comes_from_the_injected_source() -> None:
    """SessionID (never all zeros: that means "no session") and GenChallenge from ``random``."""
    from edge.v2g.din.session import DinSession
    from edge.v2g.iso2.session import Iso2Session
    from edge.v2g.iso20.session import Iso20Session

    draws = iter([bytes(8), b"\x07" * 8])
    assert Iso20Session(SimulatedCharger(), random=lambda n: next(draws)).session_id == b"\x07" * 8
    assert DinSession(SimulatedCharger(), random=lambda n: b"\x05" * n).session_id == b"\x05" * 8
    s = Iso2Session(SimulatedCharger(), random=lambda n: b"\x09" * n)
    assert s.session_id == b"\x09" * 8 and s.random(16) == b"\x09" * 16


def test_every_protocol_tells_the_controller_what_the_car_needs() -> None:
    from edge.ev.din import DinCar
    from edge.ev.iso2 import Iso2Car
    from edge.ev.iso20 import Iso20Car
    from tests.inmemory import run

    for car, protocol, service, mode in ((DinCar(soc=40, target_soc=40.1), "din", "DC", "scheduled"),
                                         (Iso2Car(soc=40, target_soc=40.1), "iso2", "DC", "scheduled"),
                                         (Iso2Car(mode="ac", soc=40, target_soc=40.1), "iso2", "AC", "scheduled"),
                                         (Iso20Car(service="dc_bpt", control="dynamic", soc=40, target_soc=40.1),
                                          "iso20-dc", "DC_BPT", "dynamic")):
        controller = ChargingController()
        events: list = []
        controller.listeners.append(events.append)
        run(car, ChargerConnection(bidirectional_charger(isolation_s=0.2),
                                   config=EvseConfig(controller=controller)))
        kinds = [type(e).__name__ for e in events]
        # authorised, needs, power flows, the end: in that order, each once (needs may be refined)
        assert kinds[0] == "Authorized" and kinds[-1] == "SessionEnded", kinds
        assert kinds.count("EnergyTransferStarted") == 1 and kinds.count("Authorized") == 1
        assert kinds.index("NeedsReported") < kinds.index("EnergyTransferStarted")
        assert events[-1].reason == "stopped_by_ev" and controller.needs is None  # forgotten for the next car
        cars = {e.car for e in events}
        assert len(cars) == 1 and next(iter(cars)).protocol == protocol and len(next(iter(cars)).session_id) == 16
        needs = next(e.needs for e in reversed(events) if type(e).__name__ == "NeedsReported")
        assert needs is not None and (needs.protocol, needs.service, needs.control_mode) == (protocol, service, mode)
        assert needs.max_charge_power and needs.max_charge_power > 0, needs
