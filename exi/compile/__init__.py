"""Schema compiler: XSD sets -> EXI grammars -> generated Python model and codec modules."""

from __future__ import annotations

from pathlib import Path

from .codegen import Generator
from .sets import SCHEMA_SETS
from .xsd import SchemaSet


def generate(schemas_dir: Path) -> dict[Path, str]:
    """Return {path relative to the exi package: source} for every generated module."""
    gen = Generator()
    for label, (root, desc) in SCHEMA_SETS.items():
        gen.add_set(label, SchemaSet(Path(schemas_dir) / root), desc)
    return {p.relative_to(Path("out")): src for p, src in gen.generate(Path("out")).items()}
