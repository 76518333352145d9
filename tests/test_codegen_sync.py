"""The committed generated modules must be exactly what the compiler makes from ../shared/schemas."""

from __future__ import annotations

from pathlib import Path

import exi
from exi.compile import generate
from tests.vectors import SCHEMAS

EXI_DIR = Path(exi.__file__).resolve().parent


def test_generated_modules_match_the_schemas() -> None:
    assert SCHEMAS.is_dir(), f"{SCHEMAS} is missing: check out the repo with ../shared beside it"
    files = generate(SCHEMAS)
    stale = [str(rel) for rel, text in files.items()
             if not (EXI_DIR / rel).exists() or (EXI_DIR / rel).read_text() != text]
    assert not stale, f"regenerate with `python -m exi.compile`: {stale}"
    committed = {p.relative_to(EXI_DIR) for d in ("model", "codec") for p in (EXI_DIR / d).glob("*.py")}
    assert committed == set(files), f"stray or missing generated modules: {committed ^ set(files)}"


def test_no_schema_is_committed() -> None:
    repo = EXI_DIR.parent
    assert not [p for p in repo.rglob("*.xsd") if ".venv" not in p.parts and ".cache" not in p.parts]
