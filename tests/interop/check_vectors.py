"""Run the shared EXI vectors through EXIficient: decode, re-encode, compare.

    python -m tests.interop.check_vectors [--vectors PATH] [--mode default|josev] [-v]

For every vector: decode its hex with EXIficient (grammar chosen by ``protocol``),
then encode the decoded XML again (with the strict validity pre-check) and compare
with the original bytes.  Prints a table per protocol.  Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

try:
    from .exificient import ExificientError, ExificientPeer
except ImportError:
    from exificient import ExificientError, ExificientPeer

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def default_vectors() -> Path:
    for cand in (
        REPO_ROOT.parent / "shared" / "vectors" / "exi_vectors.jsonl",
        REPO_ROOT / "shared" / "vectors" / "exi_vectors.jsonl",
    ):
        if cand.exists():
            return cand
    raise SystemExit("exi_vectors.jsonl not found; pass --vectors")


def run(peer: ExificientPeer, vectors: list[dict], mode: str, verbose: bool = False) -> dict:
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for v in vectors:
        proto = v["protocol"]
        st = stats[proto]
        st["total"] += 1
        data = bytes.fromhex(v["hex"])
        try:
            xml = peer.decode(proto, data, mode=mode)
        except ExificientError as e:
            st["decode_error"] += 1
            failures.append((v["id"], "decode", str(e)[:300]))
            continue
        st["decoded"] += 1
        try:
            again = peer.encode(proto, xml, mode=mode)
        except ExificientError as e:
            st["encode_error"] += 1
            failures.append((v["id"], "encode", str(e)[:300]))
            continue
        if again == data:
            st["identical"] += 1
            continue
        # not byte-identical: does it at least carry the same content?
        try:
            same = peer.decode(proto, again, mode=mode) == xml
        except ExificientError:
            same = False
        st["same_content" if same else "different"] += 1
        failures.append(
            (v["id"], "differs" if not same else "re-encoded differently", f"{len(data)}B orig vs {len(again)}B")
        )
    if verbose:
        for f in failures:
            print(" | ".join(f))
    return {"stats": stats, "failures": failures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=Path, default=None)
    ap.add_argument("--mode", default="default", choices=("default", "josev"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    path = args.vectors or default_vectors()
    vectors = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    t0 = time.perf_counter()
    with ExificientPeer(mode=args.mode) as peer:
        res = run(peer, vectors, args.mode, args.verbose)
    cols = ("total", "decoded", "decode_error", "identical", "same_content", "different", "encode_error")
    print(f"mode={args.mode}  vectors={path}  ({time.perf_counter() - t0:.1f}s)")
    print(f"{'protocol':16}" + "".join(f"{c:>14}" for c in cols))
    tot = collections.Counter()
    for proto in sorted(res["stats"]):
        st = res["stats"][proto]
        tot.update(st)
        print(f"{proto:16}" + "".join(f"{st[c]:>14}" for c in cols))
    print(f"{'ALL':16}" + "".join(f"{tot[c]:>14}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
