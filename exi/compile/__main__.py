"""``python -m exi.compile --schemas DIR --out exi/``: regenerate the model and codec modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m exi.compile", description=__doc__)
    ap.add_argument("--schemas", type=Path, default=Path("../shared/schemas"),
                    help="folder holding apphand/, din/, iso2/, iso20/ (default: ../shared/schemas)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="the exi package folder to write model/ and codec/ into")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the committed modules differ from a fresh generation")
    args = ap.parse_args(argv)
    files = generate(args.schemas)
    stale = []
    for rel, text in sorted(files.items()):
        path = args.out / rel
        old = path.read_text() if path.exists() else None
        if old != text:
            stale.append(rel)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check:
        for rel in stale:
            print(f"out of date: {rel}", file=sys.stderr)
        return 1 if stale else 0
    print(f"{len(files)} modules, {len(stale)} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
