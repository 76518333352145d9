"""Reference timings of EXIficient (Josev's EXICodec.jar) for the benchmark.

    from bench.exificient_ref import bench_exificient
    res = bench_exificient([("iso2", "8098..."), ("din", "809a...")])

or ``python bench/exificient_ref.py [--vectors PATH] [--per-proto N]``.

For each case the EXI is decoded to XML once (to get the encoder's input), then
timed inside the JVM (System.nanoTime around each EXIficient call, after a warm-up
pass over all cases, so no IPC in the numbers):

* ``decode_us``      EXI -> XML text (EXISource + identity Transformer), what the bridge does
* ``decode_sax_us``  EXI -> SAX events into a no-op handler (pure decoder)
* ``encode_us``      XML text -> EXI (SAX parse + EXIResult), no strict pre-check
* ``rt_decode_us`` / ``rt_encode_us``  the same through the bridge from Python
  (pipe + py4j round trip included), median of ``rt_iterations`` calls

All values are medians in microseconds.  Standard library only (project side).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.interop.exificient import ExificientPeer  # noqa: E402


def bench_exificient(
    cases: list[tuple[str, str]],
    *,
    warmup: int = 3000,
    iterations: int = 2000,
    rt_iterations: int = 200,
    mode: str = "default",
    peer: ExificientPeer | None = None,
) -> dict:
    """Median µs per decode/encode for each (proto, hex) case, plus overall medians.

    Returns ``{"cases": [{"proto", "bytes", "decode_us", "decode_sax_us", "encode_us",
    "rt_decode_us", "rt_encode_us"}, ...], "median": {same keys over all cases},
    "jvm_start_s": float, "mode": mode}``.  Pass ``rt_iterations=0`` to skip the
    round-trip timings.  ``peer`` reuses a running ExificientPeer.
    """
    own = peer is None
    if own:
        peer = ExificientPeer(mode=mode).start()
    try:
        out = []
        xmls = [peer.decode(proto, bytes.fromhex(hx), mode=mode) for proto, hx in cases]
        kinds = (("decode", "decode_us", 0), ("decode-sax", "decode_sax_us", 0), ("encode", "encode_us", 1))
        # JIT warm-up over every case and kind first: HotSpot keeps recompiling for
        # tens of thousands of calls, and a per-case warm-up favours later cases.
        for (proto, hx), xml in zip(cases, xmls, strict=True):
            for kind, _, which in kinds:
                peer.bench(kind, proto, (hx, xml)[which], warmup=0, iterations=warmup, mode=mode)
        for (proto, hx), xml in zip(cases, xmls, strict=True):
            data = bytes.fromhex(hx)
            row = {"proto": proto, "bytes": len(data)}
            for kind, key, which in kinds:
                r = peer.bench(kind, proto, (hx, xml)[which], warmup=min(warmup, 500), iterations=iterations, mode=mode)
                row[key] = r["median_ns"] / 1000.0
            if rt_iterations:
                dec, enc = [], []
                for _ in range(rt_iterations):
                    t0 = time.perf_counter_ns()
                    peer.decode(proto, data, mode=mode)
                    t1 = time.perf_counter_ns()
                    peer.encode(proto, xml, mode=mode, check=False)
                    t2 = time.perf_counter_ns()
                    dec.append(t1 - t0)
                    enc.append(t2 - t1)
                row["rt_decode_us"] = statistics.median(dec) / 1000.0
                row["rt_encode_us"] = statistics.median(enc) / 1000.0
            out.append(row)
        keys = [
            k
            for k in ("decode_us", "decode_sax_us", "encode_us", "rt_decode_us", "rt_encode_us")
            if out and k in out[0]
        ]
        med = {k: statistics.median(r[k] for r in out) for k in keys} if out else {}
        return {"cases": out, "median": med, "jvm_start_s": peer.jvm_start_s, "mode": mode}
    finally:
        if own:
            peer.close()


def _default_vectors() -> Path:
    for cand in (
        REPO_ROOT.parent / "shared" / "vectors" / "exi_vectors.jsonl",
    ):
        if cand.exists():
            return cand
    raise SystemExit("exi_vectors.jsonl not found; pass --vectors")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=Path, default=None)
    ap.add_argument("--per-proto", type=int, default=3, help="cases per protocol")
    ap.add_argument("--message", default=None, help="only vectors of this message name")
    ap.add_argument("--mode", default="default", choices=("default", "josev"))
    ap.add_argument("--iterations", type=int, default=2000)
    args = ap.parse_args(argv)
    vecs = [json.loads(l) for l in (args.vectors or _default_vectors()).read_text().splitlines() if l.strip()]
    cases, count = [], {}
    for v in vecs:
        if args.message and v["message"] != args.message:
            continue
        if count.get(v["protocol"], 0) < args.per_proto:
            count[v["protocol"]] = count.get(v["protocol"], 0) + 1
            cases.append((v["protocol"], v["hex"]))
    t0 = time.perf_counter()
    res = bench_exificient(cases, iterations=args.iterations, mode=args.mode)
    print(f"mode={res['mode']} jvm_start={res['jvm_start_s']}s  total {time.perf_counter() - t0:.1f}s")
    hdr = ("decode_us", "decode_sax_us", "encode_us", "rt_decode_us", "rt_encode_us")
    print(f"{'proto':16}{'bytes':>7}" + "".join(f"{h:>15}" for h in hdr))
    for r in res["cases"]:
        print(f"{r['proto']:16}{r['bytes']:>7}" + "".join(f"{r[h]:>15.1f}" for h in hdr))
    print(f"{'MEDIAN':16}{'':>7}" + "".join(f"{res['median'][h]:>15.1f}" for h in hdr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
