"""Longer mutation-fuzzing campaigns of the EXI decoder than the test suite runs.

    python bench/fuzz_exi.py                       # 10**6 frames per target, seed 0
    python bench/fuzz_exi.py -n 200000 --seed 3 iso2 din
    python bench/fuzz_exi.py --seconds 600         # time-boxed: as many frames as fit, per target

Prints frames/s per target and every finding (a non-DecodeError exception, a decoded value that does
not re-encode to itself, or a frame slower than --frame-timeout) with the frame as hex, so that it can
be replayed with ``exi.decode(proto, bytes.fromhex(...))``. Exit status 1 if anything was found.
The mutations and checks live in tests/fuzzing.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests import fuzzing  # noqa: E402

CHUNK = 10_000  # frames per run() call in time-boxed mode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", default=list(fuzzing.TARGETS),
                    help=f"vector labels (default: all of {', '.join(fuzzing.TARGETS)})")
    ap.add_argument("-n", "--frames", type=int, default=1_000_000, help="frames per target")
    ap.add_argument("--seconds", type=float, default=None, help="time box per target instead of -n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frame-timeout", type=float, default=10.0, help="seconds before a frame counts as hung")
    ap.add_argument("--max-findings", type=int, default=20, help="findings kept per target")
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in fuzzing.TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; choose from {list(fuzzing.TARGETS)}")

    found = 0
    for label in args.targets:
        if args.seconds is None:
            stats = fuzzing.run(label, args.frames, args.seed, max_findings=args.max_findings,
                                frame_timeout=args.frame_timeout)
        else:
            stats = fuzzing.Stats(label)
            deadline = time.monotonic() + args.seconds
            chunk = 0
            while time.monotonic() < deadline:
                part = fuzzing.run(label, CHUNK, args.seed * 1_000_003 + chunk, max_findings=args.max_findings,
                                   frame_timeout=args.frame_timeout)
                chunk += 1
                stats.frames += part.frames
                stats.decoded += part.decoded
                stats.seconds += part.seconds
                stats.slowest = max(stats.slowest, part.slowest, key=lambda s: s[0])
                stats.findings.extend(part.findings[: args.max_findings - len(stats.findings)])
        found += len(stats.findings)
        print(f"{label:15} {stats.frames:>9} frames {stats.frames / max(stats.seconds, 1e-9):>8.0f} frames/s "
              f"{stats.per_frame_us:>6.0f} us/frame  decoded {100 * stats.decoded / max(stats.frames, 1):4.1f}%  "
              f"slowest {1000 * stats.slowest[0]:.1f} ms ({len(stats.slowest[1])} bytes)  "
              f"findings {len(stats.findings)}", flush=True)
        if stats.slowest[0] > 0.05:
            print(f"  slowest frame: {stats.slowest[1].hex()}", flush=True)
        for f in stats.findings:
            print(f"  {f}".replace("\n", "\n    "), flush=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
