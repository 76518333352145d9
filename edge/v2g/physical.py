"""PhysicalValue (multiplier, unit, short value) <-> float, shared by DIN and ISO 15118-2 (each has
its own generated PhysicalValueType class with the same three fields)."""

from __future__ import annotations

from typing import Any


def to_physical(cls: type, x: float, unit: str) -> Any:
    """``cls(Multiplier, Unit, Value)`` with the finest multiplier whose value fits a short."""
    for mult in (-1, 0, 1, 2, 3):
        v = round(x / 10**mult)
        if -32768 <= v <= 32767:
            return cls(mult, unit, v)
    raise ValueError(f"{x} {unit} does not fit a PhysicalValue")


def from_physical(p: Any) -> float:
    return 0.0 if p is None else p.Value * 10.0**p.Multiplier
