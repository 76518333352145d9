"""The daemon as users run it (``edge run --config``): memory, start-up, and what a trace costs per message.
Every number comes with a reference measured in the same run.

1. **Start to ready.** ``edge run`` with two simulated EVSEs on loopback (TLS with a test PKI on both,
   traces on, no CSMS), started ``--starts`` times as systemd starts it (NOTIFY_SOCKET set); timed from
   the spawn to the READY=1 datagram (every EVSE listening, the codecs it offers loaded). Reference: the
   same interpreter running ``import trio`` and exiting (spawn to exit). Bytecode is compiled first
   (``compileall`` of edge, exi and slac, as the README's install does): PYTHONDONTWRITEBYTECODE, which
   this machine sets, would otherwise make every start compile the generated codecs again.
2. **Memory.** The daemon's VmRSS after ready with both EVSEs idle, then VmHWM (peak) after two cars (-2 DC
   and -20 DC_BPT dynamic, driven from this process over loopback to the ports the daemon reports on its
   control socket) have charged at once; the cars' sessions are checked (clean stop, energy counted).
   Reference: VmRSS of the same interpreter after ``import trio`` (a bare trio process).
3. **Trace overhead per charge-loop message.** In-process: a -2 DC session driven to its charge loop,
   then CurrentDemandReq -> Res through ``ChargerConnection.handle``, alternately on a charging point
   with a trace (records written to a file in a temporary folder, as the daemon writes them) and one
   without; per message the median of ``--messages`` rounds each. The difference is the overhead (the two
   records, rx and tx, with the response time and its budget). Reference: the handle time without trace.

Targets: ready <= 1.5 s, RSS with two EVSEs <= 80 MB, trace overhead <= 50 us per message.

    .venv/bin/python bench/daemon.py                 # 5 starts, 5,000 messages, ~40 s
    .venv/bin/python bench/daemon.py --quick         # 2 starts, 500 messages
    .venv/bin/python bench/daemon.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _config(folder: Path, pki: Path) -> Path:
    config = folder / "edge.toml"
    config.write_text(f"""[station]
id = "bench"
state_dir = "{folder / 'state'}"
control_socket = "{folder / 'control.sock'}"

[[evse]]
id = 1
interface = "lo"
protocols = ["iso2", "din"]
[evse.tls]
enabled = true
pki = "{pki}"

[[evse]]
id = 2
interface = "lo"
protocols = ["iso20-dc", "iso2"]
[evse.tls]
enabled = true
pki = "{pki}"
""")
    return config


def _vm(pid: int, key: str) -> float:
    """VmRSS / VmHWM of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _spawn_until_ready(config: Path, folder: Path) -> tuple[subprocess.Popen, float]:
    notify_path = folder / "notify"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            datagram = notify.recv(4096).decode()
            if "READY=1" in datagram.splitlines():
                return process, time.perf_counter() - start
    finally:
        notify.close()


def _stop(process: subprocess.Popen) -> int:
    process.terminate()
    return process.wait(timeout=30)


def start_to_ready(config: Path, folder: Path, starts: int) -> dict[str, float]:
    ready = []
    for _ in range(starts):
        process, took = _spawn_until_ready(config, folder)
        ready.append(took)
        code = _stop(process)
        if code != 0:
            raise RuntimeError(f"edge run exited {code} on SIGTERM")
    reference = []
    for _ in range(starts):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import trio"], check=True)
        reference.append(time.perf_counter() - t0)
    return {"ready_s": statistics.median(ready), "ready_max_s": max(ready),
            "python_import_trio_s": statistics.median(reference)}


async def _charge_two_cars(control: Path, pki: Path) -> list[dict[str, float | bool]]:
    from edge.control import query
    from edge.ev import drive
    from edge.ev.connect import open_v2g_stream
    from edge.ev.iso2 import Iso2Car
    from edge.ev.iso20 import Iso20Car
    from edge.v2g.tls import client_context_from_pki, client_context_iso20

    status = await query(control)  # the daemon's ports, as `edge status` reads them
    ports = {e["id"]: e["ports"] for e in status["evses"]}
    cars = [(Iso2Car(soc=30.0, target_soc=31.0, capacity_wh=3_000.0), ports[1][1], client_context_from_pki(pki)),
            (Iso20Car(service="dc_bpt", control="dynamic", soc=50.0, target_soc=95.0, capacity_wh=3_000.0,
                      max_discharge_power=15_000.0, max_discharge_current=50.0, transfer_s=5.0), ports[2][1],
             client_context_iso20(pki, folder="iso15118_20"))]
    results: list[dict[str, float | bool]] = []

    async def one(car, port: int, tls) -> None:
        stream = await open_v2g_stream("::1", port, 0, tls)
        async with stream:
            await drive(stream, car, loop_period=0.05, step=0.01)
        results.append({"clean": car.stopped_cleanly, "energy_wh": car.energy_wh})

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for car, port, tls in cars:
                nursery.start_soon(one, car, port, tls)
    return results


def memory(config: Path, folder: Path, pki: Path) -> dict[str, float]:
    process, _ = _spawn_until_ready(config, folder)
    try:
        time.sleep(1.0)
        idle = _vm(process.pid, "VmRSS")
        sessions = trio.run(_charge_two_cars, folder / "control.sock", pki)
        if len(sessions) != 2 or not all(s["clean"] and s["energy_wh"] > 0 for s in sessions):
            raise RuntimeError(f"the cars did not charge cleanly: {sessions}")
        peak = _vm(process.pid, "VmHWM")
        after = _vm(process.pid, "VmRSS")
    finally:
        _stop(process)
    bare = subprocess.run([sys.executable, "-c", "import trio\nfrom pathlib import Path\n"
                           "print(next(l for l in Path('/proc/self/status').read_text().splitlines() "
                           "if l.startswith('VmRSS:')).split()[1])"], check=True, capture_output=True, text=True)
    return {"rss_idle_mb": idle, "rss_peak_charging_mb": peak, "rss_after_mb": after,
            "bare_trio_rss_mb": int(bare.stdout) / 1024}


def trace_overhead(messages: int, folder: Path) -> dict[str, float]:
    from edge.controller import ChargingController
    from edge.ev.iso2 import Iso2Car
    from edge.hardware import SimulatedCharger
    from edge.trace import EvseTrace, TraceDirectory
    from edge.v2g.charger import ChargerConnection, EvseConfig
    from edge.v2g.v2gtp import PayloadType, V2gtpMessage

    clock = [0.0]
    traces = TraceDirectory(folder / "traces", clock=lambda: clock[0])

    def to_loop(traced: bool) -> tuple[ChargerConnection, Iso2Car, bytes]:
        config = EvseConfig(controller=ChargingController())
        if traced:
            config.trace = EvseTrace(traces, "evse1", "lo")
        conn = ChargerConnection(SimulatedCharger(voltage_tau=0.01, isolation_s=0.0), config=config)
        car = Iso2Car(soc=10.0, target_soc=99.0, capacity_wh=10_000_000.0)
        request = car.start()
        while not car.in_charge_loop:
            clock[0] += 0.05
            response = conn.handle(V2gtpMessage(PayloadType.EXI, request), clock[0])
            assert response is not None
            request = car.handle(response.payload, clock[0])
        return conn, car, request

    slots = {False: to_loop(False), True: to_loop(True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for n in range(2 * messages):
        traced = n % 2 == 1
        conn, car, request = slots[traced]
        clock[0] += 0.025
        message = V2gtpMessage(PayloadType.EXI, request)
        t0 = time.perf_counter()
        response = conn.handle(message, clock[0])
        times[traced].append(time.perf_counter() - t0)
        assert response is not None
        slots[traced] = (conn, car, car.handle(response.payload, clock[0]))
    with_trace, without = statistics.median(times[True]), statistics.median(times[False])
    written = sum(p.stat().st_size for p in (folder / "traces").glob("*.cbor"))
    return {"handle_us": without * 1e6, "handle_traced_us": with_trace * 1e6,
            "trace_overhead_us": (with_trace - without) * 1e6, "trace_bytes_per_message": written / messages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="2 starts, 500 messages")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers here")
    args = ap.parse_args()
    if args.quick:
        args.starts, args.messages = 2, 500
    from edge.pki.testpki import create_test_pki

    compiled = subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "edge", "exi", "slac"], cwd=REPO)
    numbers: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edge-bench-daemon-") as tmp:
        folder = Path(tmp)
        create_test_pki(folder / "pki")
        config = _config(folder, folder / "pki")
        numbers.update(start_to_ready(config, folder, args.starts))
        numbers.update(memory(config, folder, folder / "pki"))
        numbers.update(trace_overhead(args.messages, folder))
    print(f"bytecode compiled first (compileall exit {compiled.returncode})")
    print(f"start to READY=1, 2 EVSEs with TLS:  {numbers['ready_s']:.3f} s median, {numbers['ready_max_s']:.3f} s max "
          f"(target <= 1.5 s); reference `python -c 'import trio'` {numbers['python_import_trio_s']:.3f} s "
          f"(x{numbers['ready_s'] / numbers['python_import_trio_s']:.1f})")
    print(f"RSS, 2 EVSEs idle:                    {numbers['rss_idle_mb']:.1f} MB (target <= 80 MB); "
          f"reference bare trio process {numbers['bare_trio_rss_mb']:.1f} MB")
    print(f"RSS peak, two cars charging at once:  {numbers['rss_peak_charging_mb']:.1f} MB; "
          f"after: {numbers['rss_after_mb']:.1f} MB")
    print(f"trace overhead per charge-loop message: {numbers['trace_overhead_us']:.1f} us (target <= 50 us) on "
          f"{numbers['handle_us']:.1f} us for CurrentDemandReq -> Res without a trace "
          f"(x{numbers['handle_traced_us'] / numbers['handle_us']:.2f}); "
          f"{numbers['trace_bytes_per_message']:.0f} bytes written per message")
    if args.json is not None:
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
