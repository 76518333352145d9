"""XSD lexical forms of the model's simple values, both ways (no XML parser needed).

Used by the XML bridge (:mod:`exi.xml`) and by the relaxed element fragment grammar
(:mod:`exi.relaxed`), whose character content and untyped attributes are the values' lexical forms.
Simple types are given as the generated type codes (``FIELDS`` tables): ``('str', min, max)``,
``('int', lo, hi)``, ``('enum', EnumClass, base)``, ``('list', item code, min, max)``, ...
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from enum import Enum
from typing import Any

from . import XmlError

__all__ = ["lexical", "parse"]

# XSD lexical spaces: stricter than int()/float()/Decimal(), which take "1_0", "inf", "1e5" and so on
_INT_RE = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_DOUBLE_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_WS_RE = re.compile(r"\s+")


def _error(reason: str, path: Sequence[str]) -> XmlError:
    e = XmlError(reason)
    e.path = list(path)
    return e


def lexical(value: Any, typ: tuple) -> str:
    """The XSD lexical form of a simple value (raises TypeError/ValueError on a wrong Python type)."""
    kind = typ[0]
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"expected bool, got {type(value).__name__}")
        return "true" if value else "false"
    if kind in ("int", "uint", "nbit"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected int, got {type(value).__name__}")
        return str(value)
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"expected Decimal, got {type(value).__name__}")
        d = Decimal(value)
        if not d.is_finite():
            raise ValueError(f"{d} has no xs:decimal form")
        return format(d, "f")
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, float | int):
            raise TypeError(f"expected float, got {type(value).__name__}")
        f = float(value)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "INF" if f > 0 else "-INF"
        return repr(f)
    if kind in ("b64", "hex"):
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        return base64.b64encode(value).decode("ascii") if kind == "b64" else bytes(value).hex().upper()
    if kind == "enum":
        if not isinstance(value, str):
            raise TypeError(f"expected {typ[1].__name__} or str, got {type(value).__name__}")
        return value.value if isinstance(value, Enum) else value
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        return value
    if kind == "list":
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected list, got {type(value).__name__}")
        return " ".join(lexical(item, typ[1]) for item in value)
    raise TypeError(f"unknown simple type code {typ!r}")


def _length_ok(n: int, lo: int | None, hi: int | None) -> bool:
    return (lo is None or n >= lo) and (hi is None or n <= hi)


def parse(text: str, typ: tuple, path: Sequence[str]) -> Any:
    """Parse an XSD lexical form back to the model's value type, checking the FIELDS facets."""
    kind = typ[0]
    # every type but xs:string and its enumerations collapses whitespace
    s = text if kind in ("str", "enum") else text.strip()
    if kind == "bool":
        if s in ("true", "1"):
            return True
        if s in ("false", "0"):
            return False
        raise _error(f"{text!r} is not a boolean", path)
    if kind in ("int", "uint", "nbit"):
        if not _INT_RE.fullmatch(s):
            raise _error(f"{text!r} is not an integer", path)
        v = int(s)
        if not _length_ok(v, typ[1], typ[2]):
            raise _error(f"value {v} outside [{typ[1]}, {typ[2]}]", path)
        return v
    if kind == "decimal":
        if not _DECIMAL_RE.fullmatch(s):
            raise _error(f"{text!r} is not a decimal", path)
        return Decimal(s)
    if kind == "float":
        if s in ("INF", "+INF"):
            return math.inf
        if s == "-INF":
            return -math.inf
        if s == "NaN":
            return math.nan
        if not _DOUBLE_RE.fullmatch(s):
            raise _error(f"{text!r} is not a double", path)
        return float(s)
    if kind == "b64":
        try:
            v = base64.b64decode(_WS_RE.sub("", s), validate=True)
        except binascii.Error:
            raise _error(f"{text!r} is not base64", path) from None
    elif kind == "hex":
        s = _WS_RE.sub("", s)
        if not _HEX_RE.fullmatch(s):
            raise _error(f"{text!r} is not hex binary", path)
        v = bytes.fromhex(s)
    elif kind == "str":
        v = s
    elif kind == "enum":
        enum_cls = typ[1]
        for candidate in (s, s.strip()):
            try:
                return enum_cls(candidate)
            except ValueError:
                pass
        allowed = ", ".join(m.value for m in enum_cls)
        raise _error(f"{text!r} is not a {enum_cls.__name__} (one of {allowed})", path)
    elif kind == "list":
        v = [parse(item, typ[1], path) for item in s.split()]
    else:
        raise _error(f"unknown simple type code {typ!r}", path)
    # str, b64, hex and list carry (minlen, maxlen) at the end of the code
    if not _length_ok(len(v), typ[-2], typ[-1]):
        raise _error(f"length {len(v)} outside [{typ[-2]}, {typ[-1]}]", path)
    return v
