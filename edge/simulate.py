"""``edge simulate``: the charger and the simulated car in one process over loopback (no SLAC, no
root), one session per scenario, a summary line each:

- DIN SPEC 70121 DC;
- ISO 15118-2 DC, external identification, with a schedule renegotiation;
- ISO 15118-2 AC, external identification, paused and resumed on a new connection;
- ISO 15118-2 DC Plug & Charge over TLS 1.2 with a fresh test PKI: contract chain checked, the signed
  AuthorizationReq and MeteringReceiptReq verified;
- ISO 15118-20 DC Plug & Charge over TLS 1.3 (P-521), the car presenting its OEM certificate;
- ISO 15118-20 DC_BPT in Dynamic control mode over TLS 1.3 on a bidirectional board, the charging
  point's controller running a setpoint script: charge, discharge into the grid, charge again;
- ISO 15118-20 AC_BPT in Dynamic control mode: charge, then discharge on command;
- ISO 15118-20 AC in Scheduled control mode over TCP;
- ISO 15118-2 DC with strangers on the link mid-charge (a connect+close, an idle connection, a second
  car asking for power): the charging car keeps its power and finishes;
- ISO 15118-2 DC with a car that freezes mid-charge: the communication watchdog ramps the current to
  0 and opens the contactors within its 1 s (+ ramp), while the session itself would wait 60 s.

- ISO 15118-20 DC_BPT dynamic where the CSMS decides (OCPP 2.1): its TxProfile with CentralSetpoint
  periods makes the car charge, then discharge into the grid, then charge.

Every scenario runs on one charging point with its power lease, watchdog and connection caps, as
``edge secc`` does, and with the OCPP station of ``edge secc --csms``: a test CSMS (``edge csms``, its
own process on loopback) receives every boot, status and transaction, and the summary says what it got.

The charger offers -20 DC and AC, -2 and DIN and one TLS port for -2 and -20 cars; the summary shows
the energy the charger's meter counted each way. A later issue adds SLAC."""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from edge.chargingpoint import ChargingPoint
from edge.controller import ChargingController, PowerCommand, SetpointStep
from edge.ev import drive
from edge.ev.base import SimulatedCar
from edge.ev.connect import open_v2g_stream
from edge.ev.din import DinCar
from edge.ev.faults import FreezingStream, second_car
from edge.ev.iso2 import ContractCredentials, Iso2Car
from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.ocpp.bridge import hardware_meter
from edge.ocpp.station import EvseLink, OcppStation, StationSettings
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.secc import guard_power
from edge.v2g.admission import ConnectionAdmission
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.server import serve_tcp


@dataclass
class Summary:
    scenario: str
    messages: int
    connections: int
    energy_wh: float
    duration_s: float
    soc: tuple[float, float]
    slowest: tuple[str, float, float]  # request, response time used (ms), budget (ms)
    clean_stop: bool
    notes: list[str] = field(default_factory=list)
    ok: bool = True  # the scenario ended as it should (a clean stop, or the watchdog cutting a frozen car)
    outcome: str = ""
    imported_wh: float = 0.0  # the charger's meter: delivered to the car
    exported_wh: float = 0.0  # the charger's meter: taken from the car (bidirectional power transfer)
    ocpp: str = ""  # what the CSMS received

    def text(self) -> str:
        name, used, budget = self.slowest
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        outcome = self.outcome or ("clean SessionStop" if self.clean_stop else "NO clean stop")
        energy = f"{self.energy_wh:.1f} Wh"
        if self.exported_wh:
            energy = f"meter {self.imported_wh:.1f} Wh imported / {self.exported_wh:.1f} Wh exported"
        return (f"{self.scenario}: {self.messages} messages on {self.connections} connection(s), "
                f"{energy} in {self.duration_s:.1f} s, SoC {self.soc[0]:.1f}% -> {self.soc[1]:.1f}%, "
                f"slowest response {name} {used:.2f} ms of {budget:.0f} ms, {outcome}{extra}"
                + (f"\n    CSMS: {self.ocpp}" if self.ocpp else ""))


@dataclass
class Scenario:
    name: str
    car: Callable[[Path], SimulatedCar]
    tls: bool = False
    client_tls: Callable[[Path], ssl.SSLContext] | None = None  # the car's TLS context; default: -2's
    config: Callable[[Path], EvseConfig] = lambda pki: EvseConfig()
    notes: Callable[[SimulatedCar, list[ChargerConnection]], list[str]] = lambda car, conns: []
    strangers: bool = False  # mid-charge: a connect+close, an idle connection, a second car asking for power
    freeze: bool = False  # mid-charge the car stops sending (TCP stays open): the watchdog must cut its power
    bidirectional: bool = False  # the board can export (BPT is offered)
    setpoints: tuple[SetpointStep, ...] = ()  # the controller's script, from the start of energy transfer
    csms_steps: tuple[dict, ...] = ()  # what the test CSMS does to this scenario's station (its script steps)


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
        return True
    return False


#: what a fault injection saw, and whether the charger behaved as it must
Verdict = list[tuple[str, bool]]


async def _strangers(port: int, car: SimulatedCar, hw: SimulatedCharger, verdict: Verdict) -> None:
    """What another machine on the charging link may do while ``car`` charges; appends what it saw and
    whether the charging car kept its power to ``verdict``."""
    if not await _until(lambda: car.in_charge_loop and hw.closed, 60):
        verdict.append(("the car never charged", False))
        return
    before = hw.energy_wh()
    await (await open_v2g_stream("::1", port)).aclose()  # connect + close
    idle = await open_v2g_stream("::1", port)  # a connection that never says anything
    refused = await second_car("::1", port, DinCar(soc=50, target_soc=60))
    await idle.aclose()
    await trio.sleep(0.3)
    kept = hw.closed and hw.energy_wh() > before
    verdict.append((f"a connect+close, an idle connection and a second car ({refused}) mid-charge: "
                    f"power {'kept' if kept else 'LOST'}", kept))


async def _freeze_mid_charge(stream: FreezingStream, car: SimulatedCar, hw: SimulatedCharger, point: ChargingPoint,
                             driving: trio.CancelScope, verdict: Verdict) -> None:
    """Freezes the car at full current, then measures how long the power took to go off."""
    if not await _until(lambda: car.in_charge_loop and hw.present()[1] > 100, 60):
        verdict.append(("the car never charged", False))
        return
    flowing = hw.present()[1]
    stream.freeze()
    off = await _until(lambda: not hw.closed, 10)
    after = trio.current_time() - stream.last_send
    limit = (point.timers.communication_watchdog or 0) + point.timers.ramp_down
    in_time = off and after <= limit + 0.2 and hw.present()[1] == 0
    verdict.append((f"car silent at {flowing:.0f} A: current 0 and contactors open {after:.2f} s after its last "
                    f"request ({'within' if in_time else 'NOT within'} the {limit:g} s watchdog + ramp)", in_time))
    driving.cancel()


@dataclass
class CsmsLink:
    """Where the scenarios' stations find the test CSMS, and where their state lives."""

    url: str
    state: Path
    count: int = 0


async def simulate(scenario: Scenario, pki: Path, csms: CsmsLink | None = None) -> Summary:
    """One scenario: the charger (ISO 15118-2 and DIN, simulated AC/DC hardware) and its car, over
    loopback; a car that pauses is reconnected after a short pause. With ``csms`` the charging point has
    its OCPP station too."""
    from edge.v2g.tls import client_context_from_pki, server_context_combined

    hw = (bidirectional_charger if scenario.bidirectional else SimulatedCharger)(voltage_tau=0.1, isolation_s=0.5)
    config = scenario.config(pki)
    if scenario.setpoints:
        config.controller = ChargingController(script=scenario.setpoints)
    point = config.charging_point(hw, name="sim")
    connections: list[ChargerConnection] = []
    verdict: Verdict = []

    def factory() -> ChargerConnection:
        connections.append(ChargerConnection(hw, config=config))
        return connections[-1]

    car = scenario.car(pki)
    server_tls = server_context_combined(pki) if scenario.tls else None
    client_tls = (scenario.client_tls or client_context_from_pki)(pki) if scenario.tls else None
    start_soc, start, count = car.soc, trio.current_time(), 0
    station = _station(scenario, csms, hw, point, config.controller) if csms else None
    if station is not None and isinstance(config.pnc, LocalPlugAndCharge):  # the CSMS authorizes contracts
        config.pnc = station.use_pnc(config.pnc)
    async with trio.open_nursery() as outer:  # the station outlives the charger's connections
        if station is not None:
            await outer.start(station.run)
            if not await _until(station.online, 10):
                verdict.append(("the CSMS did not accept the station", False))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard_power, point)
            port = await nursery.start(lambda task_status: serve_tcp(0, factory, host="::1", ssl_context=server_tls,
                                                                      admission=ConnectionAdmission(),
                                                                      task_status=task_status))
            if scenario.strangers:
                nursery.start_soon(_strangers, port, car, hw, verdict)
            with trio.fail_after(180):
                while True:
                    stream: trio.abc.Stream = await open_v2g_stream("::1", port, 0, client_tls)
                    with trio.CancelScope() as driving:
                        if scenario.freeze:
                            stream = FreezingStream(stream)
                            nursery.start_soon(_freeze_mid_charge, stream, car, hw, point, driving, verdict)
                        async with stream:
                            count += await drive(stream, car, loop_period=0.05, step=0.01)
                    if not getattr(car, "paused", False):
                        break
                    await trio.sleep(0.5)
                    car.resume()
            nursery.cancel_scope.cancel()  # the charger's connections end: their sessions too
        if station is not None:
            with trio.move_on_after(5):
                await station.drained()
        outer.cancel_scope.cancel()
    ocpp = ""
    if station is not None:
        ocpp = station.summary()
        station.close()
    used = [(n, max(ts), c.session.timers.budget(n)) for c in connections if c.session
            for n, ts in c.session.stats.items()]
    name, worst, budget = max(used, key=lambda x: x[1] / x[2])
    # a fault injection that never reported (the car ended first) is a failure, not a pass
    behaved = bool(verdict) and all(good for _, good in verdict)
    if scenario.freeze:
        ok = behaved and point.trips == 1
        outcome, count = "power cut by the watchdog" if ok else "WATCHDOG FAILED", len(car.log)
    else:
        ok, outcome = car.stopped_cleanly and (behaved or not scenario.strangers), ""
    return Summary(scenario.name, count, len(connections), car.energy_wh, trio.current_time() - start,
                   (start_soc, car.soc), (name, worst * 1e3, budget * 1e3), car.stopped_cleanly,
                   scenario.notes(car, connections) + [text for text, _ in verdict], ok, outcome,
                   hw.energy_wh(), hw.energy_exported_wh(), ocpp)


def _station(scenario: Scenario, csms: CsmsLink, hw: SimulatedCharger, point: ChargingPoint,
             controller: ChargingController) -> OcppStation:
    csms.count += 1
    name = f"sim{csms.count}"
    limits = hw.dc_limits()
    link = EvseLink(1, controller, hardware_meter(hw, lambda: point.mode), limits.max_power if limits else 22_000.0)
    return OcppStation(StationSettings(csms.url, name, csms.state / name),
                       [link], overrides={"SampledDataCtrlr/TxUpdatedInterval": "1",
                                          "OCPPCommCtrlr/RetryBackOffWaitMinimum": "1"})


def _pnc_config(pki: Path, receipt_interval: float | None = 1.0) -> EvseConfig:

    return EvseConfig(pnc=LocalPlugAndCharge.from_pki_folder(pki), receipt_interval=receipt_interval)


def _pnc_notes(car: SimulatedCar, conns: list[ChargerConnection]) -> list[str]:
    session = conns[-1].session
    return [f"contract {session.contract.emaid if session.contract else None} accepted",
            f"{session.receipts} signed metering receipt(s) verified", *_backend_decision(session.pnc)]


def _backend_decision(pnc: object) -> list[str]:
    """Who authorised the contract, when the CSMS was asked (C07)."""
    decisions = [d for d in getattr(pnc, "decisions", ()) if d.what.startswith("authorize")]
    return [f"Authorize: {decisions[-1].code} ({decisions[-1].why})"] if decisions else []


def _iso20_car(pki: Path) -> SimulatedCar:
    from edge.ev.iso20 import Iso20ContractCredentials, Iso20DcCar

    return Iso20DcCar(authorization="pnc", contract=Iso20ContractCredentials.from_pki(pki, "iso15118_20"),
                      soc=30.0, target_soc=32.0, capacity_wh=2_000.0)


def _iso20_client_tls(pki: Path) -> ssl.SSLContext:
    from edge.v2g.tls import client_context_iso20

    return client_context_iso20(pki, folder="iso15118_20")


def _iso20_notes(car: SimulatedCar, conns: list[ChargerConnection]) -> list[str]:
    conn = conns[-1]
    return [f"{conn.tls_version}, car certificate {'presented' if conn.vehicle_certificate else 'MISSING'}",
            f"authorization {getattr(car, 'authorization_used', None)}",
            *_backend_decision(conn.session.pnc if conn.session else None)]


def _bpt_car(service: str, transfer_s: float) -> Callable[[Path], SimulatedCar]:
    def make(pki: Path) -> SimulatedCar:
        from edge.ev.iso20 import Iso20Car

        return Iso20Car(service=service, control="dynamic", soc=50.0, target_soc=95.0, capacity_wh=2_000.0,
                        max_discharge_power=15_000.0, max_discharge_current=50.0, transfer_s=transfer_s)
    return make


def _bpt_notes(car: SimulatedCar, conns: list[ChargerConnection]) -> list[str]:
    session = conns[-1].session
    return [f"{getattr(car, 'service_used', None)} {getattr(car, 'control', '')}, the car saw "
            f"{car.energy_wh:.1f} Wh in / {getattr(car, 'energy_exported_wh', 0.0):.1f} Wh out",
            f"a setpoint script of {len(session.controller.script)} steps" if session and session.controller.script
            else "the CSMS's setpoints"]


def _setpoints(*steps: tuple[float, float]) -> tuple[SetpointStep, ...]:
    """(seconds from the start of energy transfer, target W) steps within +50/-20 kW."""
    return tuple(SetpointStep(at, PowerCommand(max_w=50_000, min_w=-20_000, target_w=w)) for at, w in steps)


def _iso20_ac_car(pki: Path) -> SimulatedCar:
    from edge.ev.iso20 import Iso20Car

    return Iso20Car(service="ac", soc=30.0, target_soc=30.5, capacity_wh=2_000.0)


SCENARIOS = [
    Scenario("DIN SPEC 70121 DC", lambda pki: DinCar(soc=30.0, target_soc=32.0, capacity_wh=2_000.0)),
    Scenario("ISO 15118-2 DC EIM (with a renegotiation)",
             lambda pki: Iso2Car(soc=30.0, target_soc=32.0, capacity_wh=2_000.0, renegotiate_at_soc=31.0),
             notes=lambda car, conns: [f"{conns[-1].session.renegotiations} renegotiation(s)"]),
    Scenario("ISO 15118-2 AC EIM (paused and resumed)",
             lambda pki: Iso2Car(mode="ac", soc=30.0, target_soc=31.0, capacity_wh=500.0, pause_at_soc=30.5),
             notes=lambda car, conns: ["resumed with OK_OldSessionJoined" if conns[-1].session.resumed
                                       else "NOT resumed"]),
    Scenario("ISO 15118-2 DC PnC over TLS (signed metering receipts)",
             lambda pki: Iso2Car(payment="pnc", contract=ContractCredentials.from_pki(pki), soc=30.0,
                                 target_soc=32.0, capacity_wh=2_000.0),
             tls=True, config=_pnc_config, notes=_pnc_notes),
    Scenario("ISO 15118-20 DC PnC over TLS 1.3", _iso20_car, tls=True, client_tls=_iso20_client_tls,
             config=lambda pki: _pnc_config(pki, receipt_interval=None), notes=_iso20_notes),
    Scenario("ISO 15118-20 DC_BPT dynamic over TLS 1.3: charge, discharge, charge", _bpt_car("dc_bpt", 6.0),
             tls=True, client_tls=_iso20_client_tls, bidirectional=True, notes=_bpt_notes,
             setpoints=_setpoints((0, 20_000), (2, -15_000), (4, 20_000))),
    Scenario("ISO 15118-20 AC_BPT dynamic: charge, then discharge", _bpt_car("ac_bpt", 4.0),
             bidirectional=True, notes=_bpt_notes, setpoints=_setpoints((0, 11_000), (2, -7_000))),
    Scenario("ISO 15118-20 AC scheduled", _iso20_ac_car),
    Scenario("ISO 15118-20 DC_BPT dynamic, the CSMS decides (OCPP 2.1 CentralSetpoint): charge, discharge, charge",
             _bpt_car("dc_bpt", 6.0), bidirectional=True, notes=_bpt_notes,
             csms_steps=({"after": "TransactionEvent:Started", "delay": 0.0, "action": "SetChargingProfile",
                          "payload": {"evseId": 1, "chargingProfile": {
                              "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                              "chargingProfileKind": "Relative", "chargingSchedule": [{
                                  "id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
                                      {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 20_000.0},
                                      {"startPeriod": 2, "operationMode": "CentralSetpoint", "setpoint": -15_000.0,
                                       "dischargeLimit": -15_000.0},
                                      {"startPeriod": 4, "operationMode": "CentralSetpoint",
                                       "setpoint": 20_000.0}]}]}}},)),
    Scenario("ISO 15118-2 DC with strangers on the link",
             lambda pki: Iso2Car(soc=30.0, target_soc=32.0, capacity_wh=2_000.0), strangers=True),
    Scenario("ISO 15118-2 DC, the car freezes mid-charge",
             lambda pki: Iso2Car(soc=30.0, target_soc=90.0, capacity_wh=2_000.0), freeze=True),
]


async def simulate_all(report: Callable[[Summary], None] = lambda s: None) -> list[Summary]:
    from edge.pki.testpki import create_test_pki

    summaries = []
    with tempfile.TemporaryDirectory(prefix="edge-pki-") as tmp:
        pki = Path(tmp) / "pki"
        create_test_pki(pki)
        steps = [dict(step, station=f"sim{n}") for n, scenario in enumerate(SCENARIOS, 1)
                 for step in scenario.csms_steps]
        async with run_test_csms(Path(tmp), steps) as url:
            csms = CsmsLink(url, Path(tmp) / "state")
            for scenario in SCENARIOS:
                summaries.append(await simulate(scenario, pki, csms))
                report(summaries[-1])
    return summaries


@contextlib.asynccontextmanager
async def run_test_csms(folder: Path, steps: list[dict]) -> AsyncIterator[str]:
    """``edge csms`` as its own process on loopback (any free port), with ``steps`` as its script; yields
    its URL. Its frame log stays in ``folder``."""
    script = folder / "csms-script.json"
    script.write_text(json.dumps({"steps": steps}))
    command = [sys.executable, "-m", "edge.cli", "csms", "--port", "0", "--script", str(script),
               "--log", str(folder / "csms.jsonl")]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(partial(trio.run_process, command, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, check=False))
        try:
            assert process.stdout is not None
            line = b""
            with trio.fail_after(20):
                while not line.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(1)
                    if not chunk:
                        raise RuntimeError("edge csms ended before listening")
                    line += chunk
            yield json.loads(line)["url"]
        finally:
            process.terminate()
            nursery.cancel_scope.deadline = trio.current_time() + 5


def main(as_json: bool = False) -> int:
    # the charger's warnings (a refused stranger, the watchdog) show under the scenario they belong to
    logging.basicConfig(level=logging.WARNING, format="  %(name)s: %(message)s",
                        stream=sys.stderr if as_json else sys.stdout)

    def report(summary: Summary) -> None:
        print(json.dumps(summary.__dict__) if as_json else summary.text(), flush=True)

    summaries = trio.run(simulate_all, report)
    return 0 if all(s.ok for s in summaries) else 1
