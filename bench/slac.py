"""SLAC timing over real raw sockets on veth pairs (needs root: it makes its own network namespace).

1. CM_SLAC_PARM.REQ in -> CM_SLAC_PARM.CNF out at the EVSE, measured at the car's socket, while
   another process keeps a CPU busy with EXI charge-loop work (another EVSE's session). Target:
   p99 <= 10 ms.
2. Full match duration (plug-in to CM_SLAC_MATCH.CNF at the car) through the emulated powerline,
   next to the minimum the spec's own timers allow.

    sudo .venv/bin/python bench/slac.py [--n 500]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # do not let bench/ shadow packages
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from slac import messages as m
from slac.emulator import PowerlineEmulator
from slac.ev import EvMatcher
from slac.evse import EvseMatcher
from slac.link import RawLink, run_emulator, run_ev, run_evse
from slac.timers import SlacTimers
from tests.netns import inside, veth_namespace


def _busy_exi(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    import exi
    from tests.vectors import load_vectors

    frames = [bytes.fromhex(v["hex"]) for v in load_vectors() if v["protocol"] == "iso2"][:20]
    while not stop.is_set():
        for f in frames:
            exi.encode("iso2", exi.decode("iso2", f))


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def parm_latency(links: dict[str, RawLink], n: int) -> list[float]:
    ev_link, evse_link = links["ev0"], links["evse1"]
    emulator = PowerlineEmulator({(ev_link.mac, evse_link.mac): 20})
    matcher = EvseMatcher(evse_link.mac, timers=SlacTimers().with_overrides(TT_EVSE_SLAC_init=600))
    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_emulator, emulator, {ev_link.mac: links["ev0-line"], evse_link.mac: links["evse1-line"]})
        nursery.start_soon(run_evse, evse_link, matcher)
        await trio.sleep(0.2)  # key set
        for _ in range(n):
            run_id = os.urandom(8)
            t0 = trio.current_time()
            await ev_link.send(m.encode_frame(m.BROADCAST, ev_link.mac, m.SlacParmReq(run_id=run_id)))
            while True:
                frame = m.decode_frame(await ev_link.recv())
                if isinstance(frame.message, m.SlacParmCnf) and frame.message.run_id == run_id:
                    break
            samples.append(trio.current_time() - t0)
            await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    return samples


async def match_durations(links: dict[str, RawLink], n: int) -> list[float]:
    ev_link, evse_link = links["ev0"], links["evse1"]
    out = []
    for _ in range(n):
        emulator = PowerlineEmulator({(ev_link.mac, evse_link.mac): 20})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_emulator, emulator,
                               {ev_link.mac: links["ev0-line"], evse_link.mac: links["evse1-line"]})
            t0 = trio.current_time()
            async with trio.open_nursery() as pair:
                pair.start_soon(run_evse, evse_link, EvseMatcher(evse_link.mac))
                await trio.sleep(0.01)
                await run_ev(ev_link, EvMatcher(ev_link.mac))
            out.append(trio.current_time() - t0)
            nursery.cancel_scope.cancel()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="PARM.REQ round trips (default 500)")
    ap.add_argument("--matches", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/slac.py needs root (network namespace, raw sockets)", file=sys.stderr)
        return 2
    pairs = [("ev0", "ev0-line"), ("evse1", "evse1-line")]
    stop = multiprocessing.Event()
    load = multiprocessing.Process(target=_busy_exi, args=(stop,), daemon=True)
    with veth_namespace(pairs) as ns:
        with inside(ns):
            links = {name: RawLink(name) for pair in pairs for name in pair}
        try:
            idle = trio.run(parm_latency, links, args.n // 5)
            load.start()
            loaded = trio.run(parm_latency, links, args.n)
            stop.set()
            load.join(5)
            matches = trio.run(match_durations, links, args.matches)
        finally:
            for link in links.values():
                link.close()
    t = SlacTimers()
    # a car that waits out its own windows (PARM.CNFs for TT_match_response, then every charger's
    # ATTEN_CHAR.IND for TT_EV_atten_results) cannot match faster than their sum
    from slac.ev import TT_EV_atten_results

    floor = t.TT_match_response + TT_EV_atten_results
    result = {
        "parm_cnf_ms_idle": {"p50": statistics.median(idle) * 1e3, "p99": _pct(idle, 0.99) * 1e3},
        "parm_cnf_ms_loaded": {"p50": statistics.median(loaded) * 1e3, "p99": _pct(loaded, 0.99) * 1e3,
                               "max": max(loaded) * 1e3, "n": len(loaded)},
        "match_s": {"median": statistics.median(matches), "max": max(matches), "n": len(matches)},
        "spec_floor_s": floor,
    }
    print("SLAC over veth pairs (real raw sockets, emulated powerline)")
    print(f"PARM.REQ -> PARM.CNF idle:   p50 {result['parm_cnf_ms_idle']['p50']:.2f} ms, "
          f"p99 {result['parm_cnf_ms_idle']['p99']:.2f} ms")
    lo = result["parm_cnf_ms_loaded"]
    print(f"PARM.REQ -> PARM.CNF loaded: p50 {lo['p50']:.2f} ms, p99 {lo['p99']:.2f} ms, max {lo['max']:.2f} ms "
          f"(n={lo['n']}, another process busy with EXI) [target p99 <= 10 ms: {'OK' if lo['p99'] <= 10 else 'OVER'}]")
    ma = result["match_s"]
    print(f"full match (plug-in to MATCH.CNF at the car): median {ma['median']:.3f} s, max {ma['max']:.3f} s "
          f"(n={ma['n']}); spec floor for a car waiting out TT_match_response + TT_EV_atten_results: {floor:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
