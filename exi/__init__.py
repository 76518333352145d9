"""Pure-Python EXI codec for V2G: supportedAppProtocol, DIN SPEC 70121, ISO 15118-2 and ISO 15118-20.

    msg = exi.decode("iso2", payload)            # -> exi.model.iso2_msgdef.V2G_Message
    data = exi.encode("iso2", msg)
    frag = exi.decode("iso2", data, fragment=True)   # -> exi.Fragment(namespace, name, value)
    xml = exi.to_xml(msg); msg2 = exi.from_xml("iso2", xml)

The EXI options are the V2G ones: schema-informed, bit-packed, non-strict, one-byte header 0x80,
no cookie, no options in the stream. The encoder never emits string-table hits (as libcbv2g and
OpenV2G, so that every car's decoder can read us); the decoder accepts them (EXIficient emits them).

A fragment element whose qname has declarations of different types (ISO 15118-2 ``eMAID``) is coded
with EXI's relaxed element fragment grammar (see :mod:`exi.relaxed`); its value is a value of one of
those types: ``Fragment(ns, "eMAID", EMAIDType(Id="id4", value="DE..."))`` or ``Fragment(ns, "eMAID",
"DE...")``, and decoding gives back the first declared type that holds what was read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .runtime import DecodeError, Deviation, EncodeError, ExiError, Reader, UnknownEnumValue, Writer

__all__ = [
    "PROTOCOLS", "DecodeError", "Deviation", "EncodeError", "ExiError", "Fragment", "UnknownEnumValue", "XmlError",
    "decode", "encode", "from_xml", "load", "to_xml",
]

#: protocol label -> schema set (exi.codec.SET_MODULES names the module holding its grammars)
PROTOCOLS: dict[str, str] = {
    "apphand": "apphand",
    "din": "din",
    "iso2": "iso2",
    "iso20-common": "iso20_common",
    "iso20-ac": "iso20_ac",
    "iso20-dc": "iso20_dc",
    "iso20-acdp": "iso20_acdp",
    "iso20-wpt": "iso20_wpt",
    "xmldsig": "xmldsig",
}


class XmlError(ExiError):
    """XML given to :func:`from_xml` does not match the schema's structure."""


@dataclass(slots=True)
class Fragment:
    """One element encoded as an EXI fragment (what XML signatures digest)."""

    namespace: str
    name: str
    value: Any


class _Codec:
    """A loaded codec module plus the lookup tables the API needs, built once per protocol."""

    __slots__ = ("by_class", "doc", "doc_width", "fast", "frag", "frag_by_name", "frag_width", "module")

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.doc = module.DOCUMENT
        self.doc_width = module.DOCUMENT_WIDTH
        self.frag = module.FRAGMENT
        self.frag_width = module.FRAGMENT_WIDTH
        self.by_class: dict[type, list[int]] = {}
        for i, entry in enumerate(self.doc):
            if isinstance(entry[2], type):
                self.by_class.setdefault(entry[2], []).append(i)
        self.frag_by_name = {(e[0], e[1]): i for i, e in enumerate(self.frag)}
        # class -> (header and event code as one int, its width, encode function, element name):
        # the per-message path of encode() is one dict lookup
        self.fast = {cls: ((0x80 << self.doc_width) | ix[0], 8 + self.doc_width, self.doc[ix[0]][4],
                           self.doc[ix[0]][1])
                     for cls, ix in self.by_class.items() if len(ix) == 1}


_CODECS: dict[str, _Codec] = {}


def _codec(proto: str) -> _Codec:
    c = _CODECS.get(proto)
    if c is None:
        try:
            modname = PROTOCOLS[proto]
        except KeyError:
            raise ValueError(f"unknown protocol {proto!r}; one of {', '.join(PROTOCOLS)}") from None
        from .codec import SET_MODULES

        c = _CODECS[proto] = _Codec(importlib.import_module(f"exi.codec.{SET_MODULES[modname]}"))
    return c


def load(proto: str) -> None:
    """Import a protocol's codec now (it is otherwise imported on first use, which takes a while)."""
    _codec(proto)


def decode(proto: str, data: bytes, *, fragment: bool = False, strict: bool = False,
           deviations: list[Deviation] | None = None) -> Any:
    """Decode one EXI stream (no V2GTP header). Raises :class:`DecodeError` on any input the EXI bits cannot
    carry for the schema.

    Lenient by default, as real cars need: a value outside a length, range or enumeration facet that the bits
    still carry is decoded (an enumeration index past the schema's values as :class:`UnknownEnumValue`), and so
    are non-zero bytes after the end of the document; each such deviation is appended to ``deviations`` (path,
    facet, value, bit) when a list is given. ``strict=True``: every deviation is a DecodeError."""
    c = _CODECS.get(proto) or _codec(proto)
    if not data or data[0] != 0x80:
        _refuse_header(data)
    r = Reader(data, 8, None, strict)
    if fragment:
        table = c.frag
        width = c.frag_width
    else:
        table = c.doc
        width = c.doc_width
    try:
        code = r.bits(width)
        if code >= len(table):
            what = "SE(*)" if code == len(table) else ("ED" if fragment and code == len(table) + 1
                                                       else f"event code {code}")
            raise DecodeError(f"{what} at the top level is not supported", 0)
        entry = table[code]
        dec = entry[3]
        if dec is None:
            raise DecodeError(f"element {entry[1]} has no grammar in this codec", 0)
        try:
            # Reader.run, written out: a method call is ~1 % of decoding a small message
            value, _v, q = dec(r, r.v, r.end - r.pos)
            r.pos = r.end - q
        except ExiError as e:
            e.path.insert(0, entry[1])
            raise
        if fragment and r.base + r.pos <= r.total:
            at = r.pos
            end = r.bits(width)
            if end != len(table) + 1 and r.base + r.pos <= r.total:
                raise DecodeError("fragments with more than one element are not supported", at)
        if r.base + r.pos > r.total:  # reads went on in the zero bits that stand in past the end (Reader.slidep)
            raise DecodeError(f"truncated: the document needs {r.base + r.pos - r.total} bits more", r.total)
        if (r.base + r.pos + 7) >> 3 < len(data):  # bytes after the document: finish() decides
            r.finish()
    except ExiError:
        raise
    except (IndexError, KeyError, ValueError, TypeError, OverflowError, RecursionError,
            MemoryError) as e:  # a safety net: the contract is DecodeError and nothing else
        raise DecodeError(f"internal error {type(e).__name__}: {e}", r.pos) from e
    found = r.dev
    if found and deviations is not None:
        for deviation in found:  # the paths start at the document's element
            deviation.path = f"{entry[1]}/{deviation.path}" if deviation.path else entry[1]
        deviations.extend(found)
    if fragment:
        return Fragment(entry[0], entry[1], value)
    return value


def _refuse_header(data: bytes) -> None:
    if not data:
        raise DecodeError("empty input", 0)
    if data[:4] == b"$EXI":
        raise DecodeError("EXI cookie present: V2G streams carry none", 0)
    raise DecodeError(f"EXI header 0x{data[0]:02x} is not the V2G header 0x80 "
                      "(options in the stream or another version)", 0)


def encode(proto: str, message: Any, *, fragment: bool = False, element: str | None = None) -> bytes:
    """Encode a message object (or a :class:`Fragment` with ``fragment=True``) to EXI bytes."""
    c = _CODECS.get(proto) or _codec(proto)
    if not fragment and element is None:
        fast = c.fast.get(type(message))
        if fast is not None:
            w = Writer(fast[0], fast[1])
            try:
                fast[2](w, message)
            except ExiError as e:
                e.path.insert(0, fast[3])
                raise
            return w.getvalue()
    w = Writer()
    if fragment or isinstance(message, Fragment):
        if not isinstance(message, Fragment):
            raise EncodeError("fragment=True needs an exi.Fragment(namespace, name, value)")
        index = c.frag_by_name.get((message.namespace, message.name))
        if index is None:
            raise EncodeError(f"no element {{{message.namespace}}}{message.name} in the {proto} schemas")
        entry = c.frag[index]
        if entry[4] is None:
            raise EncodeError(f"{message.name}: no grammar in this codec")
        w.bits(index, c.frag_width)
        _run(entry, w, message.value)
        w.bits(len(c.frag) + 1, c.frag_width)  # ED
        return w.getvalue()
    indices = c.by_class.get(type(message))
    if element is not None:
        indices = [i for i, e in enumerate(c.doc)
                   if e[1] == element and (not isinstance(e[2], type) or isinstance(message, e[2]))]
    if not indices:
        raise EncodeError(f"{type(message).__name__} is not the type of a global element of {proto}")
    if len(indices) > 1:
        raise EncodeError(f"{type(message).__name__} is the type of several global elements "
                          f"({', '.join(c.doc[i][1] for i in indices)}): pass element=")
    w.bits(indices[0], c.doc_width)
    _run(c.doc[indices[0]], w, message)
    return w.getvalue()


def _run(entry: tuple, w: Writer, value: Any) -> None:
    try:
        entry[4](w, value)
    except ExiError as e:
        e.path.insert(0, entry[1])
        raise
    except (TypeError, ValueError, AttributeError) as e:  # a simple-typed root given a wrong value
        raise EncodeError(f"{entry[1]}: invalid value ({type(e).__name__}: {e})") from e


def to_xml(message: Any, proto: str | None = None, *, pretty: bool = True) -> str:
    from .xml import to_xml as _to_xml

    return _to_xml(message, proto, pretty=pretty)


def from_xml(proto: str, xml: str | bytes, *, fragment: bool = False) -> Any:
    from .xml import from_xml as _from_xml

    return _from_xml(proto, xml, fragment=fragment)
