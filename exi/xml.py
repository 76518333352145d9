"""XML bridge: message objects <-> schema XML, for people reading messages and for tests.

Both directions are driven by the generated ``FIELDS`` tables, so the XML uses the schemas' own element
names, namespaces and order. Children are emitted in ``FIELDS`` order, which is schema order; the
model keeps one list per alternative of a repeating choice (xmldsig ``KeyInfo``, ``X509Data``), so
such children come out grouped by name, which the schemas allow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from lxml import etree

from . import PROTOCOLS, Fragment, UnknownEnumValue, XmlError, _codec
from .lexical import _error
from .lexical import lexical as _lex
from .lexical import parse as _parse
from .relaxed import Shape, simple_type_of

__all__ = ["from_xml", "to_xml"]

_XSI = "http://www.w3.org/2001/XMLSchema-instance"
# xsi location hints carry no content; anything else from xsi (type, nil) the model cannot hold
_IGNORED_ATTRS = frozenset({f"{{{_XSI}}}schemaLocation", f"{{{_XSI}}}noNamespaceSchemaLocation"})
_KNOWN_PREFIXES = {"http://www.w3.org/2000/09/xmldsig#": "ds"}

_XML_DECL_RE = re.compile(r"^\s*<\?xml[^>]*\?>")

Fields = dict[type, tuple]


def _qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}" if ns else local


# ---------------------------------------------------------------------------------------------------
# objects -> XML


def _items(value: Any, many: bool) -> Sequence[Any]:
    if many:
        return value or ()
    return () if value is None else (value,)


def _namespaces(value: Any, typ: Any, fields: Fields, out: dict[str, None]) -> None:
    """Collect the namespaces the tree will use, so all are declared once on the root."""
    if not isinstance(typ, type):
        return
    for attr, kind, ns, _local, many, ftype in fields.get(typ, ()):
        v = getattr(value, attr, None)
        if kind == "e":
            for item in _items(v, many):
                if ns:
                    out[ns] = None
                _namespaces(item, ftype, fields, out)
        elif kind == "a" and ns and v is not None:
            out[ns] = None


def _prefixes(namespaces: Sequence[str]) -> dict[str, str]:
    """prefix -> namespace, readable: xmldsig is 'ds', others the lower-cased last URN/URL segment."""
    nsmap: dict[str, str] = {}
    for ns in namespaces:
        base = _KNOWN_PREFIXES.get(ns)
        if base is None:
            segment = re.split(r"[:/#]", ns.rstrip(":/#"))[-1]
            base = re.sub(r"[^A-Za-z0-9_.-]", "", segment).lower()
            if not base or not (base[0].isalpha() or base[0] == "_") or base.startswith("xml"):
                base = "ns"
        prefix, n = base, 1
        while prefix in nsmap:
            n += 1
            prefix = f"{base}{n}"
        nsmap[prefix] = ns
    return nsmap


def _fill(el: etree._Element, value: Any, typ: Any, fields: Fields, path: list[str]) -> None:
    """Write ``value`` (of model class or simple type code ``typ``) as the content of ``el``."""
    if not isinstance(typ, type):
        _set_text(el, _lex_at(value, typ, path), path, typ)
        return
    if not isinstance(value, typ):
        raise _error(f"expected {typ.__name__}, got {type(value).__name__}", path)
    try:
        specs = fields[typ]
    except KeyError:
        raise _error(f"no FIELDS entry for {typ.__qualname__}", path) from None
    for attr, kind, ns, local, many, ftype in specs:
        v = getattr(value, attr)
        if kind == "a":
            if v is not None:
                at = [*path, "@" + local]
                _set_attr(el, _qname(ns, local), _lex_at(v, ftype, at), at, ftype)
        elif kind == "v":
            if v is not None:
                _set_text(el, _lex_at(v, ftype, path), path, ftype)
        else:
            for item in _items(v, many):
                child = etree.SubElement(el, _qname(ns, local))
                path.append(local)
                _fill(child, item, ftype, fields, path)
                path.pop()


def _set_text(el: etree._Element, text: str, path: Sequence[str], typ: tuple | None = None) -> None:
    if typ is not None and typ[0] == "str" and _NEEDS_ESCAPE.search(text):
        text = escape_xml_text(text)
        el.set(ESCAPED, "true")
    try:
        el.text = text
    except ValueError as e:  # lxml refuses control characters XML 1.0 cannot carry
        raise _error(f"{text!r} cannot be written in XML: {e}", path) from None


def _set_attr(el: etree._Element, name: str, text: str, path: Sequence[str], typ: tuple | None = None) -> None:
    if typ is not None and typ[0] == "str" and _NEEDS_ESCAPE.search(text):
        text = escape_xml_text(text)
        el.set(ESCAPED, "true")
    try:
        el.set(name, text)
    except ValueError as e:
        raise _error(f"{text!r} cannot be written in XML: {e}", path) from None


def _lex_at(value: Any, typ: tuple, path: Sequence[str]) -> str:
    if typ[0] == "enum" and isinstance(value, UnknownEnumValue):  # a lenient decode's out-of-range index
        return str(value)
    try:
        return _lex(value, typ)
    except (TypeError, ValueError) as e:
        raise _error(str(e), path) from None


# Characters XML 1.0 cannot carry (its Char production): C0 controls but tab, LF and CR; lone surrogates;
# U+FFFE and U+FFFF. Strings from cars may hold them (a NUL-padded VIN). An element with such a string (as its
# text or an attribute) gets edge:escaped="true" and its strings are written with those characters as \xHH or
# \uHHHH and a backslash as \\; from_xml undoes it, so from_xml(to_xml(m)) == m. Every other string is written
# as it is (other XML tools read our XML as plain schema XML).
ESCAPED = "{urn:edge:exi-xml}escaped"
_NEEDS_ESCAPE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff\\]")
_ESCAPE = re.compile(r"\\(\\|x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4})")


def _escape_one(match: re.Match[str]) -> str:
    c = match.group(0)
    if c == "\\":
        return "\\\\"
    code = ord(c)
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}"


def escape_xml_text(text: str) -> str:
    r"""``text`` with every character XML 1.0 cannot carry as ``\xHH``/``\uHHHH`` and a backslash doubled."""
    return _NOT_XML.sub(_escape_one, text)


def unescape_xml_text(text: str) -> str:
    """The inverse of :func:`escape_xml_text`; a backslash not starting one of its escapes is kept as it is."""
    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        return "\\" if body == "\\" else chr(int(body[1:], 16))

    return _ESCAPE.sub(one, text) if "\\" in text else text


def _parse_at(text: str, typ: tuple, path: Sequence[str], escaped: bool = False) -> Any:
    return _parse(unescape_xml_text(text) if escaped and typ[0] == "str" else text, typ, path)


_ROOTS: dict[type, list[tuple[str, str, ModuleType]]] = {}


def _document_roots(cls: type, protos: Sequence[str]) -> list[tuple[str, str, ModuleType]]:
    """Distinct (namespace, local name) of the global elements typed ``cls``, with a module for FIELDS."""
    found: dict[tuple[str, str], ModuleType] = {}
    for p in protos:
        module = _codec(p).module
        for ns, local, typ, _dec, _enc in module.DOCUMENT:
            if typ is cls:
                found.setdefault((ns, local), module)
    return [(ns, local, module) for (ns, local), module in found.items()]


def to_xml(message: Any, proto: str | None = None, *, pretty: bool = True) -> str:
    """Serialise a decoded message (or an :class:`exi.Fragment`) as schema XML."""
    protos = list(PROTOCOLS) if proto is None else [proto]
    if isinstance(message, Fragment):
        ns, local, value = message.namespace, message.name, message.value
        typ: Any = None
        module: ModuleType | None = None
        for p in protos:
            m = _codec(p).module
            if type(value) in m.FIELDS:  # a complex value names its own type
                typ, module = type(value), m
                break
            entry = next((e for e in m.FRAGMENT if e[0] == ns and e[1] == local and e[2]), None)
            if entry is not None and entry[2][0] == "relaxed":  # a simple value of one of its declared types
                code = simple_type_of(value, entry[2][1])
                if code is not None:
                    typ, module = code, m
                    break
            elif entry is not None and not isinstance(entry[2], type):
                typ, module = entry[2], m
                break
        if module is None:
            where = proto or "any protocol"
            raise _error(f"cannot find a type for fragment element {{{ns}}}{local} in {where}", [local])
    else:
        cls = type(message)
        if proto is None:
            roots = _ROOTS.get(cls)
            if roots is None:
                roots = _ROOTS[cls] = _document_roots(cls, protos)
        else:
            roots = _document_roots(cls, protos)
        if not roots:
            where = proto or "any protocol"
            raise XmlError(f"{cls.__qualname__} is not the type of a global element of {where}")
        if len(roots) > 1:
            names = ", ".join(f"{{{ns}}}{local}" for ns, local, _m in roots)
            raise XmlError(f"{cls.__qualname__} is the type of several global elements ({names}): "
                           "pass an exi.Fragment to choose one")
        ns, local, module = roots[0]
        value, typ = message, cls
    fields: Fields = module.FIELDS
    used: dict[str, None] = {ns: None} if ns else {}
    _namespaces(value, typ, fields, used)
    root = etree.Element(_qname(ns, local), nsmap=_prefixes(list(used)))
    _fill(root, value, typ, fields, [local])
    return etree.tostring(root, encoding="unicode", pretty_print=pretty)


# ---------------------------------------------------------------------------------------------------
# XML -> objects

# no DTD, no entities, no network: the input may come from anywhere
_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                       remove_comments=True, remove_pis=True, huge_tree=False)


def _parse_xml(xml: str | bytes) -> etree._Element:
    parser = etree.XMLParser(**_PARSER_OPTIONS)
    try:
        try:
            tree = etree.fromstring(xml, parser)
        except ValueError:
            # lxml refuses str input with an encoding declaration; the str is already decoded
            if not isinstance(xml, str):
                raise
            tree = etree.fromstring(_XML_DECL_RE.sub("", xml, count=1), parser)
    except etree.XMLSyntaxError as e:
        raise XmlError(f"malformed XML: {e}") from None
    if tree.getroottree().docinfo.doctype:
        raise XmlError("DOCTYPE declarations are not accepted")
    return tree


_GROUPS: dict[tuple[int, type], list[frozenset[str]]] = {}


def _interleaved(module: ModuleType, cls: type) -> list[frozenset[str]]:
    """Field sets whose elements may interleave: those under one repeating choice/sequence."""
    key = (id(module), cls)
    groups = _GROUPS.get(key)
    if groups is not None:
        return groups
    groups = []

    def names(node: tuple) -> Iterator[str]:
        if node[0] in ("el", "abstract"):
            yield node[1]
        elif node[0] in ("seq", "choice"):
            for child in node[3]:
                yield from names(child)

    def walk(node: tuple | None) -> None:
        if node is None or node[0] not in ("seq", "choice"):
            return
        if node[2] is None or node[2] > 1:
            group = frozenset(names(node))
            if len(group) > 1:
                groups.append(group)
        for child in node[3]:
            walk(child)

    walk(getattr(module, "CONTENT", {}).get(cls))
    _GROUPS[key] = groups
    return groups


def _text(el: etree._Element, path: Sequence[str]) -> str:
    """The text of a simple-content element; child elements are an error."""
    for child in el:
        raise _error(f"unexpected child element {etree.QName(child).localname}", path)
    return el.text or ""


def _read(el: etree._Element, typ: Any, module: ModuleType, path: list[str]) -> Any:
    """Build the value of ``el`` (model class or simple type code ``typ``)."""
    fields: Fields = module.FIELDS
    escaped = el.get(ESCAPED) == "true"
    if not isinstance(typ, type):
        for name in el.attrib:
            if name not in _IGNORED_ATTRS and name != ESCAPED:
                raise _error(f"unknown attribute {name}", path)
        return _parse_at(_text(el, path), typ, path, escaped)
    specs = fields[typ]
    by_attr = {_qname(spec[2], spec[3]): spec for spec in specs if spec[1] == "a"}
    by_elem = {(spec[2], spec[3]): (i, spec) for i, spec in enumerate(specs) if spec[1] == "e"}
    simple = next((spec for spec in specs if spec[1] == "v"), None)
    kwargs: dict[str, Any] = {}

    for name, text in el.attrib.items():
        spec = by_attr.get(name)
        if spec is None:
            if name in _IGNORED_ATTRS or name == ESCAPED:
                continue
            raise _error(f"unknown attribute {name}", path)
        kwargs[spec[0]] = _parse_at(text, spec[5], [*path, "@" + spec[3]], escaped)

    if simple is not None:
        kwargs[simple[0]] = _parse_at(_text(el, path), simple[5], path, escaped)
        return typ(**kwargs)

    if el.text and el.text.strip():
        raise _error(f"unexpected text {el.text.strip()!r}", path)
    last = -1
    groups: list[frozenset[str]] | None = None
    for child in el:
        qn = etree.QName(child)
        ns, local = qn.namespace or "", qn.localname
        hit = by_elem.get((ns, local))
        if hit is None:
            raise _error(f"unknown element {_qname(ns, local)}", path)
        index, (attr, _kind, _ns, _local, many, ftype) = hit
        path.append(local)
        if index < last:
            if groups is None:
                groups = _interleaved(module, typ)
            before = specs[last][0]
            if not any(attr in g and before in g for g in groups):
                raise _error(f"element {local} out of order (after {specs[last][3]})", path)
        if not many and attr in kwargs:
            raise _error(f"element {local} occurs more than once", path)
        value = _read(child, ftype, module, path)
        path.pop()
        if many:
            kwargs.setdefault(attr, []).append(value)
        else:
            kwargs[attr] = value
        last = max(last, index)
        if child.tail and child.tail.strip():
            raise _error(f"unexpected text {child.tail.strip()!r}", path)
    return typ(**kwargs)


def _read_relaxed(el: etree._Element, candidates: tuple, module: ModuleType, path: list[str]) -> Any:
    """An element with declarations of different types: the first declared type its XML is valid for."""
    errors = []
    for candidate in candidates:
        try:
            if not isinstance(candidate, Shape):
                return _read(el, candidate, module, path)
            value = _read(el, candidate.cls, module, path)
            # _read leaves required content to the encoder; here it is what tells the types apart
            missing = [spec[0] for spec in candidate.attributes + candidate.elements
                       if spec[3] and getattr(value, spec[0]) in (None, [])]
            if not missing:
                return value
            errors.append(f"not {candidate.cls.__name__}: {missing[0]} missing")
        except XmlError as e:
            errors.append(str(e))
    raise _error(f"fits none of the declared types of {path[-1]} ({'; '.join(errors)})", path)


_DOC_BY_NAME: dict[str, dict[tuple[str, str], tuple]] = {}


def from_xml(proto: str, xml: str | bytes, *, fragment: bool = False) -> Any:
    """Parse schema XML into a message object (or an :class:`exi.Fragment` with ``fragment=True``)."""
    codec = _codec(proto)
    root = _parse_xml(xml)
    qn = etree.QName(root)
    ns, local = qn.namespace or "", qn.localname
    if fragment:
        index = codec.frag_by_name.get((ns, local))
        entry = None if index is None else codec.frag[index]
    else:
        table = _DOC_BY_NAME.get(proto)
        if table is None:
            table = _DOC_BY_NAME[proto] = {(e[0], e[1]): e for e in codec.doc}
        entry = table.get((ns, local))
    if entry is None:
        what = "an element" if fragment else "a global element"
        raise _error(f"{_qname(ns, local)} is not {what} of the {proto} schemas", [local])
    if entry[2] is None:
        raise _error(f"{local} has no grammar in this codec", [local])
    if isinstance(entry[2], tuple) and entry[2][0] == "relaxed":
        value = _read_relaxed(root, entry[2][1], codec.module, [local])
    else:
        value = _read(root, entry[2], codec.module, [local])
    return Fragment(ns, local, value) if fragment else value
