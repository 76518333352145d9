"""edge/ocpp/bridge.py: a car's session becomes TransactionEvents in the durable queue, valid for the
official schemas of both OCPP versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.controller import ChargingController
from edge.ev.base import SessionFailed
from edge.ev.din import DinCar
from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20Car
from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.ocpp.adapter import validate
from edge.ocpp.bridge import EvseTransactions, MeterReading, end_interrupted_transactions
from edge.ocpp.store import StationStore
from edge.v2g.charger import ChargerConnection, EvseConfig
from tests.inmemory import run


def _wire(hardware: SimulatedCharger, controller: ChargingController, store: StationStore,
          clock: list[float], online: bool = True) -> EvseTransactions:
    def meter() -> MeterReading:
        v, i = hardware.present()
        return MeterReading(hardware.energy_wh(), hardware.energy_exported_wh(), v * i)

    tx = EvseTransactions(1, store, meter, online=lambda: online, clock=lambda: clock[0],
                          updated_interval=lambda: 2.0)
    controller.listeners.append(tx.on_event)
    return tx


def _events(store: StationStore) -> list[dict]:
    messages = store.next_messages(1000)
    for m in messages:
        for version in ("2.0.1", "2.1"):
            validate(version, m.action, "request", m.payload)
    return [m.payload for m in messages]


@pytest.mark.parametrize("car", [DinCar(soc=40, target_soc=45), Iso2Car(soc=40, target_soc=45),
                                 Iso20Car(service="dc_bpt", control="dynamic", soc=40, target_soc=45)],
                         ids=["din", "iso2", "iso20-dc-bpt"])
def test_a_session_is_one_transaction_with_meter_values(car, tmp_path: Path) -> None:
    hardware, controller, clock = bidirectional_charger(isolation_s=0.2), ChargingController(), [0.0]
    with StationStore(tmp_path / "s.db") as store:
        tx = _wire(hardware, controller, store, clock)

        def each(now: float) -> None:
            clock[0] = now
            tx.sample()

        run(car, ChargerConnection(hardware, config=EvseConfig(controller=controller)), each=each)
        events = _events(store)
    kinds = [e["eventType"] for e in events]
    assert kinds[0] == "Started" and kinds[-1] == "Ended" and set(kinds[1:-1]) == {"Updated"}
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
    assert events[0]["idToken"] == {"idToken": "", "type": "NoAuthorization"}
    assert events[-1]["transactionInfo"]["stoppedReason"] == "StoppedByEV"
    periodic = [e for e in events if e["triggerReason"] == "MeterValuePeriodic"]
    assert periodic, "no periodic meter values in a session of several seconds"

    def energy(e: dict) -> float:
        return next(s["value"] for s in e["meterValue"][0]["sampledValue"]
                    if s["measurand"] == "Energy.Active.Import.Register")

    assert energy(events[-1]) > energy(events[0])  # the car charged
    assert not any(e.get("offline") for e in events)


def test_a_lost_car_ends_the_transaction_and_offline_events_say_so(tmp_path: Path) -> None:
    hardware, controller, clock = bidirectional_charger(isolation_s=0.2), ChargingController(), [0.0]
    with StationStore(tmp_path / "s.db") as store:
        _wire(hardware, controller, store, clock, online=False)
        conn = ChargerConnection(hardware, config=EvseConfig(controller=controller))
        car = Iso2Car(soc=40, target_soc=90)
        request = car.start()
        from edge.ev import request_payload_type
        from edge.v2g.v2gtp import V2gtpMessage
        now = 0.0
        for _ in range(40):  # into the charge loop, then the car vanishes
            now += 0.1
            response = conn.handle(V2gtpMessage(request_payload_type(car), request), now)
            assert response is not None
            request = car.handle(response.payload, now)
        conn.connection_lost("TCP reset")
        events = _events(store)
    assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
    assert events[-1]["triggerReason"] == "EVCommunicationLost"
    assert all(e["offline"] is True for e in events)


def test_a_strangers_session_starts_no_transaction(tmp_path: Path) -> None:
    hardware, controller, clock = bidirectional_charger(isolation_s=0.2), ChargingController(), [0.0]
    config = EvseConfig(controller=controller)
    with StationStore(tmp_path / "s.db") as store:
        _wire(hardware, controller, store, clock)
        owner = ChargerConnection(hardware, config=config)
        stranger = ChargerConnection(hardware, config=config)
        from edge.ev import request_payload_type
        from edge.v2g.v2gtp import V2gtpMessage
        car, other = Iso2Car(soc=40, target_soc=90), Iso2Car(soc=40, target_soc=90)
        req, req2 = car.start(), other.start()
        now = 0.0
        for _ in range(40):
            now += 0.1
            res = owner.handle(V2gtpMessage(request_payload_type(car), req), now)
            assert res is not None
            req = car.handle(res.payload, now)
        for _ in range(40):  # the stranger goes as far as the charger lets it, then leaves
            now += 0.1
            res = stranger.handle(V2gtpMessage(request_payload_type(other), req2), now)
            if res is None:
                break
            try:
                req2 = other.handle(res.payload, now)
            except SessionFailed as e:  # refused power: the owner holds the lease
                assert "CableCheckRes failed" in str(e)
                break
            if req2 is None:
                break
        stranger.connection_lost("gone")
        kinds = [e["eventType"] for e in _events(store)]
        assert kinds.count("Started") == 1 and "Ended" not in kinds  # the owner still charges


def test_an_interrupted_transaction_is_ended_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    hardware, controller, clock = bidirectional_charger(isolation_s=0.2), ChargingController(), [0.0]
    with StationStore(path) as store:
        tx = _wire(hardware, controller, store, clock)
        conn = ChargerConnection(hardware, config=EvseConfig(controller=controller))
        car = DinCar(soc=40, target_soc=90)
        from edge.ev import request_payload_type
        from edge.v2g.v2gtp import V2gtpMessage
        request, now = car.start(), 0.0
        for _ in range(60):
            now += 0.1
            clock[0] = now
            tx.sample()
            res = conn.handle(V2gtpMessage(request_payload_type(car), request), now)
            assert res is not None
            request = car.handle(res.payload, now)
        tid = tx.open.transaction_id if tx.open else None
        assert tid is not None
    # the process died here; a new one starts
    with StationStore(path) as store:
        assert end_interrupted_transactions(store, offline=True) == [tid]
        events = _events(store)
        assert end_interrupted_transactions(store, offline=True) == []  # once
    last = events[-1]
    assert last["eventType"] == "Ended" and last["transactionInfo"]["stoppedReason"] == "PowerLoss"
    assert last["offline"] is True and last["seqNo"] == len(events) - 1


def test_a_paused_session_keeps_its_transaction_until_the_car_is_gone_too_long(tmp_path: Path) -> None:
    from edge.controller import CarSession, EnergyTransferStarted, SessionEnded

    clock = [0.0]
    with StationStore(tmp_path / "s.db") as store:
        tx = EvseTransactions(1, store, lambda: MeterReading(10.0, 0.0, 0.0), clock=lambda: clock[0],
                              updated_interval=lambda: 0.0, suspended_timeout=lambda: 30.0)
        car = CarSession("AB" * 8, "iso2")
        tx.on_event(EnergyTransferStarted(car))
        tx.on_event(SessionEnded("paused", car))
        clock[0] = 10.0
        tx.sample()
        tx.on_event(EnergyTransferStarted(car))  # resumed: same SessionID, same transaction
        tx.on_event(SessionEnded("paused", car))
        clock[0] = 50.0
        tx.sample()  # gone for 40 s > 30 s
        events = _events(store)
    assert [(e["eventType"], e["transactionInfo"]["chargingState"]) for e in events] == [
        ("Started", "Charging"), ("Updated", "SuspendedEV"), ("Updated", "Charging"), ("Updated", "SuspendedEV"),
        ("Ended", "SuspendedEV")]
    assert events[-1]["triggerReason"] == "EVConnectTimeout"
    assert events[-1]["transactionInfo"]["stoppedReason"] == "Timeout"
    assert tx.open is None
