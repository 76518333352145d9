"""EXI 1.0 section 8.5.3, the relaxed ("schema-informed element fragment") grammar, at run time.

In an EXI *fragment* (what V2G XML signatures digest) an element whose qname is declared more than
once with different types (ISO 15118-2 ``{MsgBody}eMAID``: ``EMAIDType`` in CertificateInstallationRes
and CertificateUpdateRes, ``eMAIDType`` in PaymentDetailsReq and CertificateUpdateReq) has no single
type grammar: its content is coded with one schema-wide grammar (section 8.5.2)::

    ElementFragment0: AT(A_0..A_n-1) [schema-typed] ElementFragment0   codes 0 .. n-1
                      AT(*) ElementFragment0                           n
                      SE(F_0..F_m-1) ElementFragment1                  n+1 .. n+m
                      SE(*) ElementFragment1                           n+m+1
                      EE                                               n+m+2
                      CH [untyped] ElementFragment1                    n+m+3
    ElementFragment1: SE(F_0..F_m-1), SE(*), EE, CH [untyped]          0 .. m+2

A_i: every attribute qname of the schema set (sorted, typed when all its declarations share a type);
F_j: every element qname (the fragment grammar's list), each child coded with its own grammar, or with
this one again when it is ambiguous too. Non-strict: one more code per state for the escape to the
second level (xsi:type, xsi:nil, undeclared attributes), which this codec does not support.

The Python value of such an element is a value of one of its declared types, so that encoding the
field of a decoded message just works: ``exi.Fragment(ns, "eMAID", EMAIDType(Id="id4", value=...))``
or ``exi.Fragment(ns, "eMAID", "DEEDGC000000011")``. The encoder codes the value's own fields as relaxed
events (attributes sorted, as EXIficient does; character content as its XSD lexical form; children in
schema order; an empty text as no CH at all). The decoder collects the events, then returns the first
declared type, in schema declaration order, that holds them exactly: all attributes and children are
its fields, required ones present, text valid for its simple content, children in schema order. For
-2 eMAID: with an ``Id`` the value is an ``EMAIDType`` (Id is required there), without it a ``str``.
Content that fits none of the declared types is a DecodeError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import XmlError
from .lexical import lexical, parse
from .runtime import DecodeError, EncodeError, ExiError, Reader, Writer

__all__ = ["Grammar", "Shape", "simple_type_of"]

#: (namespace, local name, qname id, typed decoder or None, typed encoder or None): None = untyped
Attribute = tuple[str, str, int, Any, Any]


@dataclass(frozen=True, slots=True)
class Shape:
    """How one declared complex type of a relaxed element maps to relaxed events (generated)."""

    cls: type
    attributes: tuple[tuple[str, str, str, bool, tuple], ...]  # (field, namespace, local, required, type code)
    value: tuple[str, tuple] | None  # (field, type code) of simple content
    # (field, index j of F_j, many, required, declared type: class or type code), in schema order
    elements: tuple[tuple[str, int, bool, bool, Any], ...]
    mixed: bool = False  # mixed content: text is allowed and, as everywhere in this codec, not kept


@dataclass(slots=True)
class _Content:
    """What was read of one relaxed element, before it is given a type."""

    attrs: dict[int, Any]  # attribute index i -> value (typed, or the text of an untyped one)
    children: list[tuple[int, Any]]  # (j, value; a _Content when F_j is relaxed too)
    text: str
    at: int  # bit position, for errors


class _Mismatch(Exception):
    """Decoded content does not fit one candidate type (internal: the next candidate is tried)."""


class Grammar:
    """The relaxed grammar of one schema set: its attribute list and the widths of both states.
    ``relaxed``: FRAGMENT index j -> qname id, for the F_j that use this grammar themselves."""

    __slots__ = ("attributes", "index", "relaxed", "width0", "width1")

    def __init__(self, attributes: tuple[Attribute, ...], width0: int, width1: int,
                 relaxed: dict[int, int]) -> None:
        self.attributes = attributes
        self.index = {(a[0], a[1]): i for i, a in enumerate(attributes)}
        self.width0 = width0
        self.width1 = width1
        self.relaxed = relaxed

    # ------------------------------------------------------------------ decode
    def decode(self, r: Reader, elements: tuple, key: int, candidates: tuple) -> Any:
        """Read the content of a relaxed element (after its SE) and return it as a candidate type's value.
        ``elements`` is the module's FRAGMENT table (F_j and their coders), ``key`` the element's qname id."""
        content = self._read(r, elements, key)
        try:
            return self._fit(candidates, content, elements)
        except _Mismatch as e:
            raise DecodeError(f"the content fits none of the declared types ({e})", content.at) from None

    def _read(self, r: Reader, elements: tuple, key: int) -> _Content:
        n, m = len(self.attributes), len(elements)
        content = _Content({}, [], "", r.base + r.pos)
        text: list[str] = []
        at = r.pos
        code = r.bits(self.width0)
        while code < n:  # ElementFragment0 loops on attributes
            if code in content.attrs:
                raise DecodeError(f"attribute {self.attributes[code][1]} given twice", r.base + at)
            content.attrs[code] = self._decode_attribute(r, code)
            at = r.pos
            code = r.bits(self.width0)
        if code == n + m + 2:  # EE
            return content
        if code == n + m + 3:
            text.append(r.string(key))
        elif n < code <= n + m:
            content.children.append(self._decode_child(r, elements, code - n - 1))
        else:
            raise _unsupported(r, at, {n: "AT(*)", n + m + 1: "SE(*)", n + m + 4: _ESCAPE}.get(code, code))
        while True:  # ElementFragment1: no attributes any more
            at = r.pos
            code = r.bits(self.width1)
            if code < m:
                content.children.append(self._decode_child(r, elements, code))
            elif code == m + 2:
                text.append(r.string(key))
            elif code == m + 1:
                content.text = "".join(text)
                return content
            else:
                raise _unsupported(r, at, {m: "SE(*)", m + 3: _ESCAPE}.get(code, code))

    def _decode_attribute(self, r: Reader, i: int) -> Any:
        _ns, local, qid, dec, _enc = self.attributes[i]
        try:
            return dec(r) if dec is not None else r.string(qid)
        except ExiError as e:
            e.path.insert(0, "@" + local)
            raise

    def _decode_child(self, r: Reader, elements: tuple, j: int) -> tuple[int, Any]:
        entry = elements[j]
        try:
            if j in self.relaxed:  # typed later, by the parent's field (its declared type is known there)
                return j, self._read(r, elements, self.relaxed[j])
            if entry[3] is None:
                raise DecodeError(f"element {entry[1]} has no grammar in this codec", r.base + r.pos)
            return j, r.run(entry[3])
        except ExiError as e:
            e.path.insert(0, entry[1])
            raise

    def _fit(self, candidates: tuple, content: _Content, elements: tuple) -> Any:
        """The value of the first candidate type that holds ``content`` exactly."""
        reasons = []
        for candidate in candidates:
            try:
                if isinstance(candidate, Shape):
                    return self._build(candidate, content, elements)
                if content.attrs or content.children:
                    raise _Mismatch("attributes or child elements given")
                return _parse_text(content.text, candidate)
            except _Mismatch as e:
                label = candidate.cls.__name__ if isinstance(candidate, Shape) else f"simple {candidate[0]}"
                reasons.append(f"not {label}: {e}")
        raise _Mismatch("; ".join(reasons))

    def _build(self, shape: Shape, content: _Content, elements: tuple) -> Any:
        kwargs: dict[str, Any] = {}
        by_qname = {(ns, local): (field, code) for field, ns, local, _required, code in shape.attributes}
        for i, value in content.attrs.items():
            ns, local, _qid, dec, _enc = self.attributes[i]
            spec = by_qname.get((ns, local))
            if spec is None:
                raise _Mismatch(f"no attribute {_qname(ns, local)}")
            kwargs[spec[0]] = value if dec is not None else _parse_text(value, spec[1])
        missing = [local for field, _ns, local, required, _code in shape.attributes if required and field not in kwargs]
        if missing:
            raise _Mismatch(f"required attribute {missing[0]} missing")
        if shape.value is not None:
            if content.children:
                raise _Mismatch("child elements in simple content")
            kwargs[shape.value[0]] = _parse_text(content.text, shape.value[1])
            return shape.cls(**kwargs)
        if content.text.strip() and not shape.mixed:
            raise _Mismatch(f"text {content.text.strip()[:20]!r} in element-only content")
        by_index = {spec[1]: spec for spec in shape.elements}
        for j, value in content.children:
            spec = by_index.get(j)
            if spec is None:
                raise _Mismatch(f"no child element {elements[j][1]}")
            field, _j, many, _required, declared = spec
            if isinstance(value, _Content):  # a relaxed child: the field says which of its types it is
                value = self._fit(tuple(c for c in elements[j][2][1] if _is_type(c, declared)), value, elements)
            if many:
                kwargs.setdefault(field, []).append(value)
            elif field in kwargs:
                raise _Mismatch(f"element {elements[j][1]} given twice")
            else:
                kwargs[field] = value
        # the encoder writes children in schema order: anything else would not come back the same
        order: list[int] = []
        for field, j, many, _required, _declared in shape.elements:
            if field in kwargs:
                order.extend([j] * (len(kwargs[field]) if many else 1))
        if order != [j for j, _value in content.children]:
            raise _Mismatch("child elements not in schema order")
        missing = [elements[spec[1]][1] for spec in shape.elements if spec[3] and spec[0] not in kwargs]
        if missing:
            raise _Mismatch(f"required element {missing[0]} missing")
        return shape.cls(**kwargs)

    # ------------------------------------------------------------------ encode
    def encode(self, w: Writer, value: Any, elements: tuple, key: int, candidates: tuple) -> None:
        """Write the content of a relaxed element (after its SE) from a value of one of its declared types."""
        for candidate in candidates:
            if isinstance(candidate, Shape) and isinstance(value, candidate.cls):
                self._encode_shape(w, value, candidate, elements)
                return
        problems = []
        for candidate in candidates:
            if isinstance(candidate, Shape):
                continue
            try:
                text = lexical(value, candidate)
                _parse_text(text, candidate)  # the declared facets (lengths, ranges, enumerations)
            except (TypeError, ValueError, _Mismatch) as e:
                problems.append(str(e))
                continue
            self._encode_text(w, text, len(elements), key)
            return
        types = [c.cls.__name__ if isinstance(c, Shape) else c[0] for c in candidates]
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise EncodeError(f"expected a value of one of the declared types ({', '.join(types)}), "
                          f"got {type(value).__name__}{detail}")

    def _encode_text(self, w: Writer, text: str, m: int, key: int) -> None:
        n = len(self.attributes)
        if text:  # an empty text is no CH event at all (as a SAX-fed encoder sees it)
            w.bits(n + m + 3, self.width0)
            w.string(text)
            w.bits(m + 1, self.width1)
        else:
            w.bits(n + m + 2, self.width0)

    def _encode_shape(self, w: Writer, value: Any, shape: Shape, elements: tuple) -> None:
        n, m = len(self.attributes), len(elements)
        present = []
        for field, ns, local, required, code in shape.attributes:
            v = getattr(value, field)
            if v is None:
                if required:
                    raise EncodeError(f"missing content: attribute {local}")
                continue
            present.append((self.index[(ns, local)], v, code))
        for i, v, code in sorted(present, key=lambda item: item[0]):  # A_i order, as EXIficient sorts
            w.bits(i, self.width0)
            self._encode_attribute(w, i, v, code)
        started = False
        if shape.value is not None:
            field, code = shape.value
            v = getattr(value, field)
            if v is None:
                raise EncodeError("missing content: text")
            text = _lexical_checked(v, code, "text")
            if text:
                w.bits(n + m + 3, self.width0)
                w.string(text)
                started = True
        for field, j, many, required, _declared in shape.elements:
            v = getattr(value, field)
            items = (v or ()) if many else (() if v is None else (v,))
            if required and not items:
                raise EncodeError(f"missing content: {elements[j][1]}")
            for item in items:
                if started:
                    w.bits(j, self.width1)
                else:
                    w.bits(n + 1 + j, self.width0)
                    started = True
                self._encode_child(w, elements, j, item)
        if started:
            w.bits(m + 1, self.width1)
        else:
            w.bits(n + m + 2, self.width0)

    def _encode_attribute(self, w: Writer, i: int, v: Any, code: tuple) -> None:
        _ns, local, _qid, _dec, enc = self.attributes[i]
        try:
            if enc is not None:
                enc(w, v)
            else:
                w.string(_lexical_checked(v, code, "@" + local))
        except ExiError as e:
            e.path.insert(0, "@" + local)
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise EncodeError(f"@{local}: invalid value ({type(e).__name__}: {e})") from e

    @staticmethod
    def _encode_child(w: Writer, elements: tuple, j: int, item: Any) -> None:
        entry = elements[j]
        if entry[4] is None:
            raise EncodeError(f"element {entry[1]} has no grammar in this codec")
        try:
            entry[4](w, item)
        except ExiError as e:
            e.path.insert(0, entry[1])
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise EncodeError(f"{entry[1]}: invalid value ({type(e).__name__}: {e})") from e


_ESCAPE = "a second-level event (xsi:type, xsi:nil, an undeclared attribute, ...)"


def _unsupported(r: Reader, at: int, what: str | int) -> DecodeError:
    if isinstance(what, int):
        what = f"event code {what}"
    return DecodeError(f"{what} in a relaxed element fragment is not supported", r.base + at)


def simple_type_of(value: Any, candidates: tuple) -> tuple | None:
    """The first declared simple type (code) of a relaxed element that ``value`` is valid for, if any."""
    for candidate in candidates:
        if isinstance(candidate, Shape):
            continue
        try:
            _parse_text(lexical(value, candidate), candidate)
        except (TypeError, ValueError, _Mismatch):
            continue
        return candidate
    return None


def _is_type(candidate: Any, declared: Any) -> bool:
    return candidate.cls is declared if isinstance(candidate, Shape) else candidate == declared


def _qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}" if ns else local


def _parse_text(text: str, code: tuple) -> Any:
    try:
        return parse(text, code, ())
    except XmlError as e:
        raise _Mismatch(e.reason) from None


def _lexical_checked(value: Any, code: tuple, where: str) -> str:
    """The lexical form of a model value, checked against the declared facets."""
    try:
        text = lexical(value, code)
        parse(text, code, ())
    except (TypeError, ValueError) as e:  # XmlError is a ValueError
        raise EncodeError(f"{where}: invalid value ({e})") from None
    return text
