"""``edge simulate``: the whole mission in one command. The daemon as ``edge run`` builds it (from a
configuration file written for the run) with two simulated EVSEs, each with its trace directory and OCPP
station; simulated cars arrive and charge concurrently:

- EVSE 1 (DC, charge only): a DIN SPEC 70121 car over TCP, then an ISO 15118-2 Plug & Charge car over
  TLS 1.2 (contract checked, authorized by the CSMS, signed metering receipts);
- EVSE 2 (DC, bidirectional): an ISO 15118-20 DC_BPT car in Dynamic control mode over TLS 1.3 that
  charges, discharges into the grid, and charges again as the test CSMS decides (a TxDefaultProfile with
  OCPP 2.1 CentralSetpoint periods sent at boot; without the test CSMS, a local setpoint script).

OCPP goes to the test CSMS (``edge csms``, its own process on loopback) unless ``--csms URL`` names one or
``--no-csms`` leaves it out (then contracts are authorized locally). The cars reach the EVSEs over loopback
with the ports the daemon reports (no SDP, no SLAC: loopback has neither; the network-namespace tests
cover both). While it runs, one progress line per EVSE when its state changes; at the end, a summary per
session (energy in and out, slowest response against its budget, TransactionEvents the CSMS received) and
the trace paths, which ``edge trace show`` opens. Everything stays in the run's folder (``--out``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from edge.daemon import Daemon, DaemonEvse
from edge.netbench import Site

log = logging.getLogger("edge.mission")

STATION_ID = "edge-simulate"


@dataclass
class SessionPlan:
    evse: int
    name: str
    make_car: Callable[[Path], Any]  # pki folder -> edge.ev car
    tls: str | None = None  # None (TCP), "iso2" (TLS 1.2, -2 trust) or "iso20" (TLS 1.3, -20 trust)
    ev_args: tuple[str, ...] = ()  # the same car as `edge ev` options (network-namespace mode; "{pki}" filled in)


@dataclass
class SessionResult:
    evse: int
    name: str
    ok: bool
    outcome: str
    soc: tuple[float, float]
    imported_wh: float  # the charger's meter during the session
    exported_wh: float
    messages: int = 0
    slowest: str = ""
    transaction_events: int = 0
    trace: str = ""
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        energy = f"{self.imported_wh:.1f} Wh in"
        if self.exported_wh:
            energy += f" / {self.exported_wh:.1f} Wh out"
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        tx = f", {self.transaction_events} TransactionEvents to the CSMS" if self.transaction_events else ""
        return (f"EVSE {self.evse} {self.name}: {self.outcome}, {energy}, "
                f"SoC {self.soc[0]:.1f}% -> {self.soc[1]:.1f}%, "
                f"{self.messages} messages, slowest response {self.slowest}{tx}{extra}\n    trace: {self.trace}")


def _plans() -> list[SessionPlan]:
    from edge.ev.din import DinCar
    from edge.ev.iso2 import ContractCredentials, Iso2Car
    from edge.ev.iso20 import Iso20Car

    return [
        SessionPlan(1, "DIN SPEC 70121 DC", lambda pki: DinCar(soc=30.0, target_soc=31.0, capacity_wh=2_000.0),
                    ev_args=("--protocol", "din", "--capacity-kwh", "2", "--soc", "30", "--target-soc", "31")),
        SessionPlan(1, "ISO 15118-2 DC Plug & Charge over TLS 1.2",
                    lambda pki: Iso2Car(payment="pnc", contract=ContractCredentials.from_pki(pki), soc=30.0,
                                        target_soc=31.0, capacity_wh=2_000.0), tls="iso2",
                    ev_args=("--protocol", "iso2", "--payment", "pnc", "--tls", "--pki", "{pki}", "--capacity-kwh",
                             "2", "--soc", "30", "--target-soc", "31")),
        SessionPlan(2, "ISO 15118-20 DC_BPT dynamic over TLS 1.3: charge, discharge, charge",
                    lambda pki: Iso20Car(service="dc_bpt", control="dynamic", soc=50.0, target_soc=95.0,
                                         capacity_wh=2_000.0, max_discharge_power=15_000.0,
                                         max_discharge_current=50.0, transfer_s=6.0), tls="iso20",
                    ev_args=("--protocol", "iso20", "--service", "dc_bpt", "--control", "dynamic", "--tls", "--pki",
                             "{pki}", "--capacity-kwh", "2", "--soc", "50", "--target-soc", "95",
                             "--max-discharge-kw", "15", "--transfer-s", "6")),
    ]


#: EVSE 2's setpoints (seconds from the start of its transaction, target W): charge, discharge, charge
BPT_SETPOINTS = ((0.0, 20_000.0), (2.0, -15_000.0), (4.0, 20_000.0))


def csms_steps(station: str) -> list[dict[str, Any]]:
    """The test CSMS decides EVSE 2's power (OCPP 2.1): once the station booted, a TxDefaultProfile for EVSE 2
    with CentralSetpoint periods relative to each transaction's start."""
    periods = [{"startPeriod": int(at), "operationMode": "CentralSetpoint", "setpoint": watts,
                **({"dischargeLimit": watts} if watts < 0 else {})} for at, watts in BPT_SETPOINTS]
    return [{"after": "BootAccepted", "delay": 0.0, "action": "SetChargingProfile", "station": station,
             "payload": {"evseId": 2, "chargingProfile": {
                 "id": 7, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                 "chargingProfileKind": "Relative", "chargingSchedule": [{
                     "id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": periods}]}}}]


def mission_config(folder: Path, pki: Path, csms_url: str | None, site: Site | None = None) -> str:
    """The daemon's configuration for the mission (the same schema as /etc/edge/edge.toml): on loopback, or
    with ``site`` on its V2G and PLC interfaces (SLAC on)."""
    text = _loopback_config(folder, pki)
    if site is not None:
        for n in range(2):
            text = text.replace('interface = "lo"', f'interface = "{site.evse_interfaces[n]}"\n'
                                f'plc_interface = "{site.plc_interfaces[n]}"', 1)
    if csms_url is not None:
        text += f'\n[ocpp]\nurl = "{csms_url}"\nversions = ["ocpp2.1", "ocpp2.0.1"]\n'
    return text


def _loopback_config(folder: Path, pki: Path) -> str:
    return f"""# written by `edge simulate` (the mission's daemon, as `edge run --config` reads it)
[station]
id = "{STATION_ID}"
state_dir = "{folder / 'state'}"
control_socket = "{folder / 'control.sock'}"

[[evse]]
id = 1
interface = "lo"
protocols = ["iso2", "din"]
pnc = true
receipt_interval = 1.0
[evse.hardware]
bidirectional = false
[evse.tls]
enabled = true
pki = "{pki}"
keylog = true

[[evse]]
id = 2
interface = "lo"
protocols = ["iso20-dc"]
[evse.tls]
enabled = true
pki = "{pki}"
keylog = true

[trace]
dir = "{folder / 'traces'}"
tls_keylog = true  # a testbench: the traces carry the TLS bytes and keys (edge trace pcap decrypts them)
"""


class Progress:
    """One line per EVSE when its session or power flow changes, and every ``interval`` seconds while power
    flows."""

    def __init__(self, out: Callable[[str], None], interval: float = 3.0) -> None:
        self.out, self.interval = out, interval
        self.last: dict[int, tuple[tuple[str, str], float]] = {}
        self.current: dict[int, str] = {}

    def tick(self, evses: list[DaemonEvse], now: float) -> None:
        for evse in evses:
            voltage, current = evse.hardware.present()
            what = self.current.get(evse.evse_id, "idle")
            flow = "charging" if current > 0.5 else "discharging" if current < -0.5 else "no current"
            key = (what, flow)
            before = self.last.get(evse.evse_id)
            if before is not None and before[0] == key and (flow == "no current" or now - before[1] < self.interval):
                continue
            self.last[evse.evse_id] = (key, now)
            self.out(f"  EVSE {evse.evse_id}: {what}: {flow}, {voltage:.0f} V {current:.1f} A "
                     f"{voltage * current / 1000:.1f} kW, meter {evse.hardware.energy_wh():.1f} Wh in / "
                     f"{evse.hardware.energy_exported_wh():.1f} Wh out")


async def _drive_session(plan: SessionPlan, evse: DaemonEvse, pki: Path, progress: Progress) -> SessionResult:
    from edge.ev import drive
    from edge.ev.connect import open_v2g_stream
    from edge.v2g.tls import client_context_from_pki, client_context_iso20

    car = plan.make_car(pki)
    client_tls: ssl.SSLContext | None = None
    if plan.tls == "iso2":
        client_tls = client_context_from_pki(pki)
    elif plan.tls == "iso20":
        client_tls = client_context_iso20(pki, folder="iso15118_20")
    port = evse.ports[1] if client_tls is not None else evse.ports[0]
    assert port is not None, f"EVSE {evse.evse_id} does not listen for {plan.name}"
    imported, exported = evse.hardware.energy_wh(), evse.hardware.energy_exported_wh()
    start_soc = car.soc
    progress.current[evse.evse_id] = plan.name
    notes: list[str] = []
    outcome = "clean SessionStop"
    try:
        with trio.fail_after(120):
            stream = await open_v2g_stream("::1", port, 0, client_tls)
            async with stream:
                await drive(stream, car, loop_period=0.05, step=0.01)
    except (trio.TooSlowError, OSError, trio.BrokenResourceError) as e:
        outcome = f"FAILED: {type(e).__name__}: {e}"
    progress.current[evse.evse_id] = "idle"
    ok = car.stopped_cleanly and outcome == "clean SessionStop"
    if not car.stopped_cleanly and outcome.startswith("clean"):
        outcome = "NO clean stop"
    exported_by_car = getattr(car, "energy_exported_wh", 0.0)
    if exported_by_car:
        notes.append(f"the car saw {car.energy_wh:.1f} Wh in / {exported_by_car:.1f} Wh out")
    return SessionResult(plan.evse, plan.name, ok, outcome, (start_soc, car.soc),
                         evse.hardware.energy_wh() - imported, evse.hardware.energy_exported_wh() - exported,
                         notes=notes)


async def _car_in_namespace(plan: SessionPlan, evse: DaemonEvse, site: Site, pki: Path,
                            progress: Progress) -> SessionResult:
    """The car plugs in (CP B), runs SLAC (`edge slac ev`) and its session (`edge ev`) from its own namespace,
    and is unplugged (CP A) after."""
    board = evse.hardware
    car_ns = site.cars[evse.evse_id - 1]
    enter = ["nsenter", f"--net=/var/run/netns/{car_ns}", sys.executable, "-m", "edge.cli"]
    imported, exported = board.energy_wh(), board.energy_exported_wh()
    progress.current[evse.evse_id] = f"{plan.name} (SLAC)"
    board.cp_override = None  # type: ignore[attr-defined]  # plugged in: CP B, the EVSE starts SLAC
    notes: list[str] = []
    ok, outcome, soc = False, "", (0.0, 0.0)
    try:
        slac = await trio.run_process([*enter, "slac", "ev", "--iface", "evplc0"], capture_stdout=True,
                                      capture_stderr=True, check=False)
        match = json.loads(slac.stdout.decode().strip().splitlines()[-1]) if slac.stdout.strip() else {}
        if not match.get("matched"):
            outcome = f"SLAC FAILED: {match.get('reason') or slac.stderr.decode()[-200:]}"
        else:
            notes.append(f"SLAC matched in {match['duration_s']:.2f} s ({match['attenuation_db']:.0f} dB)")
            progress.current[evse.evse_id] = plan.name
            args = [a.replace("{pki}", str(pki)) for a in plan.ev_args]
            run = await trio.run_process([*enter, "ev", "--iface", "ev0", *args], capture_stdout=True,
                                         capture_stderr=True, check=False)
            summary = json.loads(run.stdout.decode().strip().splitlines()[-1]) if run.stdout.strip() else {}
            ok = bool(summary.get("ok"))
            outcome = "clean SessionStop" if ok else f"FAILED: {summary.get('error') or run.stderr.decode()[-300:]}"
            soc = (float(summary.get("soc_start", 0.0)), float(summary.get("soc_end", 0.0)))
            if summary.get("energy_exported_wh"):
                notes.append(f"the car saw {summary['energy_imported_wh']:.1f} Wh in / "
                             f"{summary['energy_exported_wh']:.1f} Wh out")
    finally:
        board.cp_override = "A"  # type: ignore[attr-defined]  # unplugged: SLAC leaves with a new key
        progress.current[evse.evse_id] = "idle"
    return SessionResult(plan.evse, plan.name, ok, outcome, soc, board.energy_wh() - imported,
                         board.energy_exported_wh() - exported, notes=notes)


async def _lane(plans: list[SessionPlan], evse: DaemonEvse, pki: Path, progress: Progress,
                results: list[SessionResult], site: Site | None = None) -> None:
    for plan in plans:
        if site is not None:
            results.append(await _car_in_namespace(plan, evse, site, pki, progress))
        else:
            results.append(await _drive_session(plan, evse, pki, progress))
        await trio.sleep(0.5)  # the next car plugs in


def _attach_traces(results: list[SessionResult], traces: Path) -> None:
    """Each session's trace (per EVSE, in order), its message count and slowest response."""
    from edge.trace import summarize_trace

    for evse_id in sorted({r.evse for r in results}):
        files = sorted(traces.glob(f"evse{evse_id}-*.cbor"))
        mine = [r for r in results if r.evse == evse_id]
        for result, path in zip(mine, files, strict=False):
            summary = summarize_trace(path)
            result.trace, result.messages = str(path), summary.messages
            if summary.slowest is not None:
                name, used, budget = summary.slowest
                result.slowest = f"{name} {used * 1e3:.2f} ms of {budget * 1e3:.0f} ms"


def _attach_transactions(results: list[SessionResult], csms_log: Path) -> None:
    """The TransactionEvents the CSMS received, per session (per EVSE, transactions in order)."""
    if not csms_log.exists():
        return
    per_tx: dict[str, int] = {}
    evse_of: dict[str, int] = {}
    order: list[str] = []
    authorize: dict[str, str] = {}  # message id -> eMAID
    answers: dict[str, str] = {}  # message id -> idTokenInfo.status
    for line in csms_log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        frame = entry.get("frame")
        if isinstance(frame, list) and len(frame) == 4 and frame[0] == 2 and frame[2] == "Authorize":
            authorize[frame[1]] = frame[3].get("idToken", {}).get("idToken", "?")
        elif isinstance(frame, list) and len(frame) == 3 and frame[0] == 3 and isinstance(frame[2], dict):
            answers[frame[1]] = frame[2].get("idTokenInfo", {}).get("status", "?")
        if not (isinstance(frame, list) and len(frame) == 4 and frame[0] == 2 and frame[2] == "TransactionEvent"):
            continue
        payload = frame[3]
        tx = payload.get("transactionInfo", {}).get("transactionId")
        if tx is None:
            continue
        if tx not in per_tx:
            order.append(tx)
            per_tx[tx] = 0
        per_tx[tx] += 1
        if "evse" in payload:
            evse_of[tx] = payload["evse"]["id"]
    for evse_id in sorted({r.evse for r in results}):
        mine = [r for r in results if r.evse == evse_id]
        for result, tx in zip(mine, [t for t in order if evse_of.get(t) == evse_id], strict=False):
            result.transaction_events = per_tx[tx]
    pnc = [r for r in results if "Plug & Charge" in r.name]
    for message_id, emaid in authorize.items():
        for result in pnc:
            result.notes.append(f"the CSMS authorized contract {emaid}: {answers.get(message_id, 'no answer')}")


@contextlib.asynccontextmanager
async def _csms(folder: Path, url: str | None, use_csms: bool) -> AsyncIterator[str | None]:
    if not use_csms:
        yield None
    elif url is not None:
        yield url
    else:
        from edge.simulate import run_test_csms

        async with run_test_csms(folder, csms_steps(STATION_ID)) as started:
            yield started


def _powerline(site: Site) -> tuple[Any, dict[bytes, Any]]:
    """The emulated powerline of the site: each car near its EVSE (20 dB) and hearing the other EVSE faintly
    (45 dB, crosstalk); its raw sockets are made in the line namespace."""
    from pyroute2 import NetNS

    from edge.netbench import inside
    from slac.emulator import PowerlineEmulator
    from slac.link import RawLink

    def mac(ns: str, ifname: str) -> bytes:
        with NetNS(ns) as ip:
            link = ip.get_links(ip.link_lookup(ifname=ifname)[0])[0]
            return bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))

    evses = [mac(site.charger, name) for name in site.plc_interfaces]
    cars = [mac(car, "evplc0") for car in site.cars]
    attenuation = {(car, evse): (20.0 if n == k else 45.0)
                   for n, car in enumerate(cars) for k, evse in enumerate(evses)}
    with inside(site.line):
        links = {**{evses[n]: RawLink(site.line_interfaces[name]) for n, name in enumerate(site.plc_interfaces)},
                 **{cars[n]: RawLink(site.line_interfaces[f"car{n}"]) for n in range(len(cars))}}
    return PowerlineEmulator(attenuation), links


async def run_mission(folder: Path, *, csms_url: str | None = None, use_csms: bool = True,
                      out: Callable[[str], None] = print, namespaces: bool = False) -> list[SessionResult]:
    """The mission; with ``namespaces`` (root) in a charging site of network namespaces with SLAC and SDP,
    the cars as `edge slac ev` and `edge ev` processes in their own namespaces."""
    from edge.netbench import charging_site, inside

    pki = folder / "pki"
    from edge.pki.testpki import create_test_pki

    create_test_pki(pki)
    with contextlib.ExitStack() as stack:
        site: Site | None = None
        powerline: tuple[Any, dict[bytes, Any]] | None = None
        if namespaces:
            site = stack.enter_context(charging_site(2))
            powerline = _powerline(site)
            for link in powerline[1].values():
                stack.callback(link.close)
            # from here on this process (the daemon, the test CSMS it starts) lives in the charger's namespace
            stack.enter_context(inside(site.charger))
        return await _mission(folder, pki, csms_url, use_csms, out, site, powerline)


async def _mission(folder: Path, pki: Path, csms_url: str | None, use_csms: bool, out: Callable[[str], None],
                   site: Site | None, powerline: tuple[Any, dict[bytes, Any]] | None) -> list[SessionResult]:
    from edge.config import load_config
    from edge.controller import PowerCommand, SetpointStep
    from edge.run import build_daemon
    from slac.link import run_emulator

    results: list[SessionResult] = []
    async with _csms(folder, csms_url, use_csms) as url:
        config_path = folder / "edge.toml"
        config_path.write_text(mission_config(folder, pki, url, site))
        daemon: Daemon = build_daemon(load_config(config_path, check_files=True))
        evse1, evse2 = daemon.evses
        if site is not None:
            for evse in daemon.evses:
                evse.hardware.cp_override = "A"  # type: ignore[attr-defined]  # no car yet
        decided_by = "the test CSMS's TxDefaultProfile (OCPP 2.1 CentralSetpoint)"
        if url is None or csms_url is not None:  # no test CSMS to decide: EVSE 2 follows a local setpoint script
            decided_by = "a local setpoint script"
            evse2.config.controller.script = tuple(
                SetpointStep(at, PowerCommand(max_w=50_000, min_w=-20_000, target_w=w)) for at, w in BPT_SETPOINTS)
        progress = Progress(out)
        out(f"edge simulate: the daemon with 2 EVSEs ({config_path}); OCPP: {url or 'none (local authorization)'}")
        out("  TLS key logs on (a testbench): the traces carry the session keys, `edge trace pcap` captures decrypt")
        if site is None:
            out("  cars connect over loopback: no SLAC, no SDP (as root, `edge simulate` runs both in network "
                "namespaces)")
        else:
            out(f"  network namespaces: charger {site.charger}, cars {', '.join(site.cars)}; SLAC through the "
                "powerline emulator, SDP, then TCP/TLS; each car is `edge slac ev` + `edge ev` in its namespace")
        plans = _plans()
        async with trio.open_nursery() as nursery:
            if powerline is not None:
                nursery.start_soon(run_emulator, *powerline)
            await nursery.start(daemon.run)
            if daemon.station is not None:
                with trio.move_on_after(10):
                    while not daemon.station.online():
                        await trio.sleep(0.05)

            async def show() -> None:
                while True:
                    progress.tick(daemon.evses, trio.current_time())
                    await trio.sleep(0.2)

            nursery.start_soon(show)
            async with trio.open_nursery() as lanes:
                for evse in (evse1, evse2):
                    lanes.start_soon(_lane, [p for p in plans if p.evse == evse.evse_id], evse, pki, progress,
                                     results, site)
            await daemon.stop("mission over")
            nursery.cancel_scope.cancel()
        if daemon.station is not None:
            daemon.station.close()
    for result in results:
        if result.evse == 2:
            result.notes.append(f"setpoints from {decided_by}")
    order = {p.name: n for n, p in enumerate(plans)}
    results.sort(key=lambda r: order[r.name])
    _attach_traces(results, folder / "traces")
    _attach_transactions(results, folder / "csms.jsonl")
    return results


def main(*, as_json: bool = False, csms_url: str | None = None, use_csms: bool = True, out_dir: Path | None = None,
         loopback: bool = False) -> int:
    logging.basicConfig(level=logging.WARNING, format="  %(name)s: %(message)s",
                        stream=sys.stderr if as_json else sys.stdout)
    # the mission turns the TLS key logs on (its traces decrypt in Wireshark) and says so once, below
    logging.getLogger("edge.tls").setLevel(logging.ERROR)
    folder = out_dir or Path(tempfile.mkdtemp(prefix="edge-simulate-"))
    folder.mkdir(parents=True, exist_ok=True)
    say: Callable[[str], None] = (lambda text: None) if as_json else (lambda text: print(text, flush=True))
    namespaces = os.geteuid() == 0 and not loopback and shutil.which("nsenter") is not None
    results = trio.run(lambda: run_mission(folder, csms_url=csms_url, use_csms=use_csms, out=say,
                                           namespaces=namespaces))
    if as_json:
        print(json.dumps({"folder": str(folder), "sessions": [asdict(r) for r in results]}))
    else:
        print()
        for result in results:
            print(result.text())
        print(f"\nconfiguration, traces, OCPP state and the CSMS's log: {folder}  "
              f"(edge trace list {folder / 'traces'})")
    return 0 if results and all(r.ok for r in results) else 1
