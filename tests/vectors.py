"""Shared access to ../shared/vectors and a matcher for the values the vector sources state."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import fields, is_dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VECTORS_FILE = SHARED / "vectors" / "exi_vectors.jsonl"
SCHEMAS = SHARED / "schemas"

#: exi protocol -> the root XSD of its schema set (what its XML validates against)
XSD_ROOTS: dict[str, str] = {
    "apphand": "apphand/V2G_CI_AppProtocol.xsd",
    "din": "din/V2G_CI_MsgDef.xsd",
    "iso2": "iso2/V2G_CI_MsgDef.xsd",
    "iso20-common": "iso20/V2G_CI_CommonMessages.xsd",
    "iso20-dc": "iso20/V2G_CI_DC.xsd",
    "iso20-ac": "iso20/V2G_CI_AC.xsd",
    "iso20-acdp": "iso20/V2G_CI_ACDP.xsd",
    "iso20-wpt": "iso20/V2G_CI_WPT.xsd",
    "xmldsig": "iso20/xmldsig-core-schema.xsd",
}

FRAGMENT_LABELS = {"iso2-fragment": "iso2", "iso20-fragment": "iso20-common"}


@cache
def load_vectors() -> list[dict]:
    if not VECTORS_FILE.exists():
        raise FileNotFoundError(f"{VECTORS_FILE} is missing: the repo must be checked out with ../shared beside it")
    return [json.loads(line) for line in VECTORS_FILE.read_text().splitlines() if line.strip()]


def proto_of(vector: dict) -> tuple[str, bool]:
    """(codec protocol label, fragment?) for a vector's ``protocol`` field."""
    p = vector["protocol"]
    return (FRAGMENT_LABELS[p], True) if p in FRAGMENT_LABELS else (p, False)


def _norm(token: str) -> str:
    return token.replace("_", "").lower()


def nodes(obj: Any, path: tuple = ()) -> list[tuple[tuple[tuple[str, int | None], ...], Any]]:
    """Every element in a decoded message as (path of (normalised name, list index), value)."""
    out = [(path, obj)]
    if is_dataclass(obj):
        for f in fields(obj):
            v = getattr(obj, f.name)
            if v is None:
                continue
            if isinstance(v, list):
                out.append(((*path, (_norm(f.name), None)), v))
                for i, item in enumerate(v):
                    out.extend(nodes(item, (*path, (_norm(f.name), i))))
            else:
                out.extend(nodes(v, (*path, (_norm(f.name), None))))
    return out


_PART = re.compile(r"^([^\[]*)((?:\[\d+\])*)$")


def _parse_key(key: str) -> list[tuple[str, int | None]]:
    parts: list[tuple[str, int | None]] = []
    for raw in key.split("."):
        m = _PART.match(raw)
        if not m:
            return []
        name, idx = m.group(1), m.group(2)
        index = int(idx.strip("[]").split("][")[-1]) if idx else None
        if _norm(name) == "array" and parts:  # C style: x.array[i] is item i of x
            parts[-1] = (parts[-1][0], index)
            continue
        parts.append((_norm(name), index))
    return parts


def _matches(path, want) -> bool:
    if len(want) > len(path):
        return False
    for (name, idx), (wname, widx) in zip(path[-len(want):], want, strict=True):
        if name != wname or (widx is not None and idx is not None and idx != widx) or (
                widx is not None and idx is None and widx != 0):
            return False
    return True


def _equal(ours: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return True  # the source states only that the element is there
    if isinstance(ours, bytes):
        if not isinstance(expected, str):
            return False
        if expected.lower() == ours.hex():
            return True
        try:
            return base64.b64decode(expected, validate=True) == ours
        except (binascii.Error, ValueError):
            return expected.encode() == ours  # an ASCII SessionID logged as text
    if isinstance(ours, Enum):
        if isinstance(expected, bool):
            return False
        if isinstance(expected, int):  # a C enum index
            return list(type(ours)).index(ours) == expected
        return _norm(str(expected)) == _norm(ours.value)
    if isinstance(ours, bool):
        return expected in (ours, int(ours)) or (isinstance(expected, str) and expected.lower() == str(ours).lower())
    if isinstance(ours, int):
        if isinstance(expected, str):
            return expected.strip() == str(ours)
        return not isinstance(expected, bool) and expected == ours
    if isinstance(ours, str):
        return ours == expected
    return False


def check_expect(message: Any, expect: dict) -> tuple[list[str], list[str]]:
    """Compare stated values with a decoded message.

    Returns (mismatches, unresolved keys). A key resolves when some element of the message has a
    path ending in the key's names (case and underscores ignored); ``X_isUsed`` checks presence and
    ``X.arrayLen`` a list length. Keys in other conventions (e.g. ``rcode: ok``) stay unresolved.
    """
    all_nodes = nodes(message)
    mismatches: list[str] = []
    unresolved: list[str] = []
    for key, value in expect.items():
        want = _parse_key(key)
        if not want:
            unresolved.append(key)
            continue
        last = want[-1][0]
        if last.endswith("isused"):
            want[-1] = (last[: -len("isused")], want[-1][1])
            present = any(_matches(p, want) for p, _ in all_nodes)
            if not present and not any(_matches(p, want[:-1]) for p, _ in all_nodes) and len(want) > 1:
                unresolved.append(key)
            elif present != bool(value):
                mismatches.append(f"{key}: stated {value}, element {'present' if present else 'absent'}")
            continue
        if last == "arraylen":
            cands = [v for p, v in all_nodes if isinstance(v, list) and _matches(p, want[:-1])]
            if not cands:
                unresolved.append(key)
            elif not any(len(v) == value for v in cands):
                mismatches.append(f"{key}: stated {value}, lengths {[len(v) for v in cands]}")
            continue
        cands = [v for p, v in all_nodes if p and _matches(p, want) and not isinstance(v, list)]
        if cands and not isinstance(value, dict) and all(is_dataclass(c) for c in cands):
            if value == "":
                continue  # an empty element, logged as an empty string: present, as stated
            cands = []  # a scalar stated for a structure: another source's own notation
        if not cands:
            if value is None:
                continue  # stated absent, and it is
            unresolved.append(key)
        elif value is None:
            mismatches.append(f"{key}: stated absent, decoded {cands[0]!r}")
        elif not any(_equal(c, value) for c in cands):
            mismatches.append(f"{key}: stated {value!r}, decoded {[c for c in cands][:3]!r}")
    return mismatches, unresolved
