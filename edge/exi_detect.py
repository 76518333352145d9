"""Which protocol some EXI bytes are (``edge exi decode`` without ``--proto``, and its error messages): hex text
read leniently (spaces, newlines, ``0x``), a V2GTP header's payload type narrowing the candidates, and a
candidate kept only when the bytes decode as it and re-encode to the same bytes (a short message can decode
as the wrong schema: the round trip rules that out)."""

from __future__ import annotations

import re

import exi

#: V2GTP payload type -> the documents it carries (ISO 15118-2 Table 10, ISO 15118-20 Table 15, DIN 70121)
PAYLOAD_PROTOCOLS: dict[int, tuple[str, ...]] = {
    0x8001: ("apphand", "iso2", "din"), 0x8002: ("iso20-common",), 0x8003: ("iso20-ac",), 0x8004: ("iso20-dc",),
    0x8005: ("iso20-acdp",), 0x8006: ("iso20-wpt",),
}
#: without a header, tried in this order (the most common first; the first that round-trips wins)
ORDER = ("apphand", "iso2", "din", "iso20-common", "iso20-dc", "iso20-ac", "iso20-acdp", "iso20-wpt")


class HexError(ValueError):
    """Text that is not hex bytes."""


def parse_hex(text: str) -> bytes:
    """Hex digits with optional whitespace and ``0x`` prefixes (one for the whole, or one per byte group)."""
    cleaned = re.sub(r"0[xX]", "", "".join(text.split()))
    if not cleaned:
        raise HexError("no hex digits")
    bad = re.search(r"[^0-9a-fA-F]", cleaned)
    if bad is not None:
        raise HexError(f"not hex: {bad.group()!r} at digit {bad.start() + 1}")
    if len(cleaned) % 2:
        raise HexError(f"odd number of hex digits ({len(cleaned)}): a byte is two digits")
    return bytes.fromhex(cleaned)


def split_v2gtp(data: bytes) -> tuple[int | None, bytes]:
    """(payload type, payload) when ``data`` starts with a V2GTP header, else (None, data); ValueError when the
    header's length disagrees with the bytes that follow."""
    if len(data) >= 8 and data[0] == 0x01 and data[1] == 0xFE:
        length = int.from_bytes(data[4:8], "big")
        if length != len(data) - 8:
            raise ValueError(f"V2GTP header says {length} payload bytes, {len(data) - 8} follow")
        return int.from_bytes(data[2:4], "big"), data[8:]
    return None, data


def candidates(payload_type: int | None) -> tuple[str, ...]:
    if payload_type is None:
        return ORDER
    if payload_type not in PAYLOAD_PROTOCOLS:
        raise ValueError(f"V2GTP payload type {payload_type:#06x} carries no EXI document")
    return PAYLOAD_PROTOCOLS[payload_type]


def round_trips(protocol: str, payload: bytes) -> bool:
    try:
        return exi.encode(protocol, exi.decode(protocol, payload, strict=True)) == payload
    except Exception:
        return False


def deviations_of(protocol: str, payload: bytes) -> int | None:
    """How many facet deviations a lenient decode as ``protocol`` records (None: it does not decode at all)."""
    found: list[exi.Deviation] = []
    try:
        exi.decode(protocol, payload, deviations=found)
    except Exception:
        return None
    return len(found)


def decodes(protocol: str, payload: bytes) -> bool:
    return deviations_of(protocol, payload) == 0


def detect(payload: bytes, payload_type: int | None = None) -> list[str]:
    """The protocols these bytes are, best first: those that round-trip; if none does (an encoder that writes
    another valid form), those that decode, strict ones first, then by how few facet deviations they need."""
    tried = candidates(payload_type)
    exact = [p for p in tried if round_trips(p, payload)]
    if exact:
        return exact
    # then those that decode without a deviation, then those that need the fewest (a car's out-of-facet value)
    counts = {p: n for p in tried if (n := deviations_of(p, payload)) is not None}
    return sorted(counts, key=lambda p: (counts[p], tried.index(p)))


def check_payload_type(protocol: str, payload_type: int | None) -> None:
    """ValueError when a V2GTP header's payload type cannot carry ``protocol``'s documents."""
    if payload_type is None or protocol == "xmldsig":
        return
    allowed = candidates(payload_type)
    if protocol not in allowed:
        raise ValueError(f"V2GTP payload type {payload_type:#06x} carries {', '.join(allowed)} messages, not "
                         f"{protocol}")
