"""The daemon (edge/daemon.py) with two EVSEs in network namespaces, one car each, concurrently: a car
killed mid-charge does not disturb the other; an EVSE whose session code raises restarts while the other
charges on; a stop mid-charge switches every power path off first and ends the transactions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

from edge.controller import ChargingController
from edge.daemon import Daemon, DaemonEvse
from edge.hardware import SimulatedCharger
from edge.v2g.charger import EvseConfig
from tests.netns import charger_and_cars, inside, require_root

REPO = Path(__file__).resolve().parent.parent


def _evses(count: int) -> list[DaemonEvse]:
    out = []
    for n in range(count):
        board = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
        out.append(DaemonEvse(n + 1, f"secc{n}", board, EvseConfig(controller=ChargingController())))
    return out


async def _car(ns: str, *args: str) -> trio.Process:
    """``edge ev`` as its own process in a car's namespace (cars must not share a process: the namespace of
    a socket is the process's at the time it is made)."""
    argv = ["nsenter", f"--net=/var/run/netns/{ns}", sys.executable, "-m", "edge.cli", "ev", "--iface", "ev0",
            "--capacity-kwh", "2", *args]
    return await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)


async def _summary(process: trio.Process) -> dict:
    assert process.stdout is not None
    out = b""
    with trio.fail_after(90):
        while chunk := await process.stdout.receive_some(65536):
            out += chunk
        await process.wait()
    return json.loads(out.decode().strip().splitlines()[-1])


async def _until(predicate, timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_two_evses_charge_two_cars_at_once_and_one_car_dying_leaves_the_other() -> None:
    require_root()
    with charger_and_cars(2) as (charger, cars):
        evses = _evses(2)
        daemon = Daemon(evses)
        async with trio.open_nursery() as nursery:
            with inside(charger):
                await nursery.start(daemon.run)
            assert [e.state for e in evses] == ["listening", "listening"]
            steady = await _car(cars[0], "--protocol", "iso2", "--soc", "40", "--target-soc", "41")
            doomed = await _car(cars[1], "--protocol", "din", "--soc", "40", "--target-soc", "90")
            # both charge at once; then the DIN car's process dies mid-charge (no SessionStop, no FIN handshake
            # from a living car: the kernel closes its socket)
            await _until(lambda: all(e.hardware.closed and e.hardware.present()[1] > 10 for e in evses))
            doomed.kill()
            await doomed.wait()
            result = await _summary(steady)
            await _until(lambda: not evses[1].hardware.closed, 10)  # the dead car's power went off
            await daemon.stop("test over")
            nursery.cancel_scope.cancel()
    assert result["outcome"] == "completed" and result["soc"] >= 41, result
    assert evses[1].hardware.energy_wh() > 0  # the DIN car did charge before it died
    assert evses[0].restarts == 0 and evses[1].restarts == 0
    for evse in evses:  # everything off at the end
        assert not evse.hardware.closed and evse.hardware.target_i == 0


async def test_an_evse_whose_code_raises_restarts_while_the_other_charges(monkeypatch) -> None:
    require_root()
    import edge.secc

    real = edge.secc.run_secc
    calls: dict[str, int] = {}

    async def flaky(iface: str, *args, **kwargs):  # the second EVSE's first run crashes 1 s in
        calls[iface] = calls.get(iface, 0) + 1
        if iface == "secc1" and calls[iface] == 1:
            task_status = kwargs.pop("task_status")
            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: real(iface, *args, **kwargs, task_status=task_status))
                task_status.started((None, None))
                await trio.sleep(1.0)
                raise RuntimeError("a bug in this EVSE's code")
        await real(iface, *args, **kwargs)

    monkeypatch.setattr(edge.secc, "run_secc", flaky)
    with charger_and_cars(2) as (charger, cars):
        evses = _evses(2)
        daemon = Daemon(evses)
        # the whole daemon in the charger's namespace: a restarted EVSE makes its sockets again
        with inside(charger):
            async with trio.open_nursery() as nursery:
                await nursery.start(daemon.run)
                first = await _car(cars[0], "--protocol", "iso2", "--soc", "40", "--target-soc", "41.5")
                await _until(lambda: evses[1].restarts == 1 and evses[1].state == "listening", 20)
                second = await _car(cars[1], "--protocol", "iso2", "--soc", "40", "--target-soc", "40.3")
                results = [await _summary(first), await _summary(second)]  # the restarted EVSE serves again
                await daemon.stop("test over")
                nursery.cancel_scope.cancel()
    assert [r["outcome"] for r in results] == ["completed", "completed"], results
    assert evses[0].restarts == 0
    assert evses[1].restarts == 1 and evses[1].failures == ["RuntimeError: a bug in this EVSE's code"]


async def test_stop_mid_charge_switches_off_first_and_ends_the_transaction(tmp_path: Path) -> None:
    require_root()
    from edge.ocpp.bridge import hardware_meter
    from edge.ocpp.station import EvseLink, OcppStation, StationSettings
    from tests.ocpp_station_rig import sent_by_station
    from tests.test_ocpp_csms import CsmsProcess

    with charger_and_cars(1) as (charger, cars):
        csms = CsmsProcess(tmp_path, 0, [], netns=charger)  # the station and its CSMS share the namespace
        try:
            [evse] = _evses(1)
            station = OcppStation(StationSettings(csms.url, "CS1", tmp_path / "state"),
                                  [EvseLink(1, evse.config.controller,
                                            hardware_meter(evse.hardware, lambda: evse.point.mode), 100_000.0)],
                                  overrides={"SampledDataCtrlr/TxUpdatedInterval": "1"})
            daemon = Daemon([evse], station)
            with inside(charger):
                async with trio.open_nursery() as nursery:
                    await nursery.start(daemon.run)
                    await _until(station.online, 20)
                    car = await _car(cars[0], "--protocol", "iso2", "--soc", "10", "--target-soc", "90",
                                     "--capacity-kwh", "500")
                    await _until(lambda: evse.hardware.closed and evse.hardware.present()[1] > 10, 60)
                    await daemon.stop("SIGTERM received")
                    # off before anything else, and the OCPP queue had its time
                    assert not evse.hardware.closed and evse.hardware.target_i == 0
                    nursery.cancel_scope.cancel()
            car.kill()
            await car.wait()
            station.close()
            log = csms.log()
        finally:
            csms.stop()
    events = sent_by_station(log, "TransactionEvent")
    assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
    assert events[-1]["transactionInfo"]["stoppedReason"] == "Local"


async def test_the_cp_drives_slac_plug_in_matches_and_unplug_leaves_with_a_new_key(tmp_path: Path) -> None:
    """An EVSE with a PLC interface: nothing happens on the powerline until the car plugs in (CP B); then SLAC
    matches the car; when the car is unplugged (CP A) the EVSE's modem gets a key nobody else knows. The
    SLAC frames and the CP changes are in the session's trace."""
    require_root()
    from edge.trace import EvseTrace, TraceDirectory, read_trace
    from slac.emulator import PowerlineEmulator
    from slac.ev import EvMatcher
    from slac.evse import Matched
    from slac.link import RawLink, run_emulator, run_ev
    from tests.netns import link_local, veth_namespace

    pairs = [("ev-plc", "ev-plc-line"), ("evse-plc", "evse-plc-line"), ("secc0", "car0")]
    with veth_namespace(pairs) as ns:
        link_local(ns, "secc0")
        with inside(ns):
            links = {name: RawLink(name) for pair in pairs[:2] for name in pair}
        try:
            ev_mac, evse_mac = links["ev-plc"].mac, links["evse-plc"].mac
            emulator = PowerlineEmulator({(ev_mac, evse_mac): 21})
            board = SimulatedCharger()
            board.cp_override = "A"  # no car yet
            traces = TraceDirectory(tmp_path / "traces", clock=trio.current_time)
            config = EvseConfig(controller=ChargingController(), trace=EvseTrace(traces, "evse1", "secc0"))
            evse = DaemonEvse(1, "secc0", board, config, plc_interface="evse-plc")
            daemon = Daemon([evse])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_emulator, emulator, {ev_mac: links["ev-plc-line"],
                                                           evse_mac: links["evse-plc-line"]})
                with inside(ns):
                    await nursery.start(daemon.run)
                await trio.sleep(0.3)
                assert evse.slac == "waiting" and evse_mac not in emulator.keys  # no car: no key set, no frame
                board.cp_override = None  # plugged in: CP B
                await _until(lambda: evse_mac in emulator.keys, 5)
                with trio.fail_after(20):
                    result = await run_ev(links["ev-plc"], EvMatcher(ev_mac))
                assert isinstance(result, Matched) and result.peer_mac == evse_mac
                await _until(lambda: evse.slac == "matched", 5)
                assert emulator.keys[ev_mac] == emulator.keys[evse_mac]  # one logical network
                shared = emulator.keys[evse_mac]
                board.cp_override = "A"  # unplugged
                await _until(lambda: emulator.keys[evse_mac] != shared, 5)
                assert emulator.keys[ev_mac] == shared and evse.slac == "waiting"
                await daemon.stop("test over")
                nursery.cancel_scope.cancel()
        finally:
            for link in links.values():
                link.close()
    [trace] = traces.traces()
    records = list(read_trace(trace))
    states = [r.get("state") for r in records if r.kind == "state"]
    assert "CP B" in states and "CP A" in states
    assert sum(r.kind == "slac" for r in records) >= 6  # SET_KEY, PARM, sounds, ATTEN_CHAR, MATCH ...


def test_ocpp_frames_go_into_the_trace_of_the_evse_they_are_about(tmp_path: Path) -> None:
    from edge.daemon import OcppTraceRouter
    from edge.trace import EvseTrace, TraceDirectory, read_trace

    clock = [100.0]
    traces = TraceDirectory(tmp_path, clock=lambda: clock[0])
    evses = _evses(2)
    for evse in evses:
        evse.config.trace = EvseTrace(traces, f"evse{evse.evse_id}", evse.interface)
    router = OcppTraceRouter(evses, clock=lambda: clock[0])
    started = json.dumps([2, "m1", "TransactionEvent", {"eventType": "Started", "evse": {"id": 1},
                                                         "transactionInfo": {"transactionId": "tx-1"}}])
    router("tx", started)  # no session trace open on EVSE 1 yet: nothing written, nothing opened
    assert evses[0].config.trace.current is None
    evses[0].config.trace.writer(clock[0])  # a session begins
    router("tx", started)
    router("rx", json.dumps([3, "m1", {}]))  # its answer
    router("tx", json.dumps([2, "m2", "Heartbeat", {}]))  # the station's own
    router("rx", json.dumps([3, "m2", {"currentTime": "x"}]))
    ended = json.dumps([2, "m3", "TransactionEvent", {"eventType": "Ended",
                                                       "transactionInfo": {"transactionId": "tx-1"}}])
    router("tx", ended)  # no evse in it: known by its transaction
    router("rx", json.dumps([2, "c1", "SetChargingProfile", {"evseId": 2, "chargingProfile": {}}]))  # EVSE 2's
    for junk in ("not json", "[]", '[2, 5, "X", {}]', '{"a": 1}', '[2, "m4", "X", {"evseId": true}]'):
        router("rx", junk)
    evses[0].config.trace.end_session("done")
    [path] = traces.traces()
    texts = [r.get("text") for r in read_trace(path) if r.kind == "ocpp"]
    assert texts == [started, json.dumps([3, "m1", {}]), ended]
    # bounded memory whatever the CSMS sends
    for n in range(1000):
        router("rx", json.dumps([2, f"x{n}", "TransactionEvent", {"evseId": 1, "transactionId": f"t{n}"}]))
    assert len(router.calls) <= router.MEMORY and len(router.transactions) <= router.MEMORY


async def test_an_evse_crash_is_recorded_in_the_trace_of_its_session(tmp_path: Path, monkeypatch) -> None:
    import edge.secc
    from edge.trace import EvseTrace, TraceDirectory, read_trace

    traces = TraceDirectory(tmp_path, clock=trio.current_time)
    config = EvseConfig(controller=ChargingController(), trace=EvseTrace(traces, "evse1", "lo"))
    evse = DaemonEvse(1, "lo", SimulatedCharger(), config)
    real = edge.secc.run_secc

    async def crashing(iface: str, *args, **kwargs):
        if evse.restarts == 0:
            task_status = kwargs.pop("task_status")
            task_status.started((None, None))
            kwargs["config"].trace.writer(trio.current_time()).state("charging")  # a session going on
            raise RuntimeError("a bug in the session code")
        await real(iface, *args, **kwargs)

    monkeypatch.setattr(edge.secc, "run_secc", crashing)
    daemon = Daemon([evse])
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        await _until(lambda: evse.restarts == 1 and evse.state == "listening", 10)
        await daemon.stop("test over")
        nursery.cancel_scope.cancel()
    [path] = traces.traces()
    records = list(read_trace(path))
    failed = [r for r in records if r.kind == "state" and r.get("state") == "EVSE failed"]
    assert failed and "RuntimeError: a bug in the session code" in failed[0].get("note")
    assert "Traceback" in failed[0].get("note")
    assert records[-1].kind == "end" and records[-1].get("outcome").startswith("EVSE failed: RuntimeError")
