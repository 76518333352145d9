"""Hypothesis strategies for random, schema-valid instances of the generated EXI model classes.

Everything is driven by the tables each generated codec module carries (``FIELDS`` for the fields and
their facets, ``CONTENT`` for the content models). The tables do not say which attributes are required
or which strings are ``xs:ID``/``xs:IDREF``/``xs:anyURI``, and an instance is only XSD-valid when those
are right too, so that part comes from the schema component model the compiler itself uses
(:class:`exi.compile.xsd.SchemaSet`, read only).

    instance(proto, cls)   # strategy of valid instances of one model class (as the content of an element)
    document(proto, name)  # strategy of valid messages of one global element
    documents(proto)       # any valid message of the protocol
    rooted_documents(proto)  # (Root, message): the same, with the element each message is for
    fragment(proto, namespace, name)  # exi.Fragment values of one element
    roots(proto)           # the global elements documents() draws from: [Root(namespace, name, cls)]

Shape: a ``seq`` with min/max repeats its children, a ``choice`` picks one alternative per occurrence,
an element reached k times gets k values in order (only ``many`` fields ever get more than one).
Repeats are capped at 3 past the minimum, except that bounded maxOccurs up to 24 are sometimes hit
exactly (the generated decoders switch state when a counted loop reaches maxOccurs). Abstract
elements and types, and required wildcards (the model cannot carry wildcard content) are never
generated; alternatives that would need them are avoided. Recursion is bounded by a depth budget
computed from the minimal depth each class needs, size by a cap on the number of complex elements after
which only required content is added.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import reject
from hypothesis import strategies as st

import exi
from exi.compile.sets import SCHEMA_SETS
from exi.compile.xsd import ComplexType, ElementDecl, ModelGroup, Particle, SchemaSet, SimpleType

SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared" / "schemas"

INF = 1 << 30  # "cannot be built"
REPEAT_CAP = 3  # occurrences generated beyond minOccurs for unbounded or large maxOccurs
EXACT_MAX = 24  # bounded maxOccurs up to this are sometimes generated exactly
EXTRA_DEPTH = 12  # nesting allowed beyond the minimum a root needs (the V2G schemas are not recursive,
#                   and their deepest structures are 9 levels: this lets every optional part occur)
MAX_ELEMENTS = 150  # past this many complex elements in one instance, only required content is added

INT64 = (-(1 << 63), (1 << 63) - 1)
BIG = 10**30  # unbounded xs:integer: occasionally far beyond 64 bits (EXI Integer is unbounded)

Draw = Callable[[st.SearchStrategy[Any]], Any]
Node = tuple[Any, ...]


class Root(NamedTuple):
    namespace: str
    name: str
    cls: type


@dataclass(frozen=True, slots=True)
class Lexical:
    """What the tables leave out about one field: its XML Schema built-in base and whether it is required."""

    builtin: str
    required: bool


# --------------------------------------------------------------------------- per-protocol model


class Model:
    """The tables of one protocol plus what the strategies derive from them."""

    def __init__(self, proto: str) -> None:
        codec = exi._codec(proto)
        self.proto = proto
        self.module = codec.module
        self.fields: dict[type, tuple[tuple[Any, ...], ...]] = self.module.FIELDS
        self.content: dict[type, Node | None] = self.module.CONTENT
        self.fields_by_name: dict[type, dict[str, tuple[Any, ...]]] = {
            cls: {f[0]: f for f in fs} for cls, fs in self.fields.items()
        }
        schema_file = SCHEMAS / SCHEMA_SETS[exi.PROTOCOLS[proto]][0]
        if not schema_file.is_file():
            raise FileNotFoundError(f"schema {schema_file} is missing: the strategies need the XSDs")
        self.schema = SchemaSet(schema_file)
        #: class -> field name -> lexical info (attributes, simple content, simple-typed elements)
        self.lexical: dict[type, dict[str, Lexical]] = {}
        self.abstract: set[type] = set()
        self._seen: set[type] = set()
        self._need: dict[int, int] = {}  # id(content node) -> need(), nodes live as long as the module
        self._single: dict[int, bool] = {}
        for cls in self.fields:  # named types: the class docstring is "{namespace}name"
            ns, _, local = (cls.__doc__ or "").strip().lstrip("{").partition("}")
            if (ns, local) in self.schema.ctypes:
                self._map_class(cls, self.schema.ctypes[(ns, local)])
        for ns, local, cls, _dec, _enc in self.module.FRAGMENT:  # anonymous types, from their elements
            if isinstance(cls, type) and (ns, local) in self.schema.elements:
                decl = self.schema.elements[(ns, local)]
                if isinstance(decl.type, ComplexType):
                    self._map_class(cls, decl.type)
        self.mindepth = self._min_depths()
        self.roots: list[Root] = []
        for ns, local, cls, _dec, _enc in self.module.DOCUMENT:
            if not isinstance(cls, type):
                continue
            decl = self.schema.elements[(ns, local)]
            if decl.abstract or self.mindepth.get(cls, INF) >= INF:
                continue
            self.roots.append(Root(ns, local, cls))

    # -- lexical info from the schema, walking model classes and complex types in parallel
    def _map_class(self, cls: type, ct: ComplexType) -> None:
        if cls in self._seen:
            return
        self._seen.add(cls)
        if ct.abstract:
            self.abstract.add(cls)
        info: dict[str, Lexical] = {}
        decls = {d.qname: d for d in _element_decls(ct.particle)}
        for name, kind, ns, local, _many, ftype in self.fields.get(cls, ()):
            if kind == "a":
                use = next((a for a in ct.attributes if a.qname == (ns, local)), None)
                if use is not None:
                    info[name] = Lexical(_builtin(use.type), use.required)
            elif kind == "v":
                if ct.simple is not None:
                    info[name] = Lexical(_builtin(ct.simple), True)
            else:
                decl = decls.get((ns, local))
                if decl is None:
                    continue
                if isinstance(decl.type, SimpleType):
                    info[name] = Lexical(_builtin(decl.type), True)
                elif isinstance(decl.type, ComplexType) and isinstance(ftype, type):
                    self._map_class(ftype, decl.type)
        self.lexical[cls] = info

    # -- the minimal nesting depth each class needs (INF: cannot be built at all)
    def _min_depths(self) -> dict[type, int]:
        depth: dict[type, int] = dict.fromkeys(self.fields, INF)
        changed = True
        while changed:
            changed = False
            for cls in self.fields:
                if cls in self.abstract:
                    continue
                node = self.content.get(cls)
                d = 1 + (self.cost(node, cls, depth) if node is not None else 0)
                if d < depth[cls]:
                    depth[cls] = d
                    changed = True
        return depth

    def need(self, node: Node, cls: type, depth: dict[type, int] | None = None) -> int:
        """The class depth one occurrence of ``node`` needs (INF if it can never be generated)."""
        if depth is None:
            key = id(node)
            v = self._need.get(key)
            if v is None:
                v = self._need[key] = self.need(node, cls, self.mindepth)
            return v
        kind = node[0]
        if kind == "el":
            ftype = self.fields_by_name[cls][node[1]][5]
            return depth.get(ftype, INF) if isinstance(ftype, type) else 0
        if kind in ("abstract", "any"):
            return INF
        if kind == "seq":
            return max((self.cost(n, cls, depth) for n in node[3]), default=0)
        return min((self.cost(n, cls, depth) for n in node[3]), default=INF)  # choice

    def cost(self, node: Node, cls: type, depth: dict[type, int] | None = None) -> int:
        """The class depth ``node`` needs with its minOccurs (0 if it may be left out)."""
        return 0 if occurs(node)[0] == 0 else self.need(node, cls, depth)

    def single_only(self, cls: type, node: Node) -> bool:
        """Whether ``node`` contains an element whose field holds a single value (so it may occur once)."""
        v = self._single.get(id(node))
        if v is None:
            if node[0] == "el":
                v = not self.fields_by_name[cls][node[1]][4]
            elif node[0] in ("seq", "choice"):
                v = any(self.single_only(cls, n) for n in node[3])
            else:
                v = False
            self._single[id(node)] = v
        return v

    def reachable(self, cls: type) -> set[type]:
        """The classes that can occur inside an instance of ``cls`` (``cls`` included)."""
        out: set[type] = set()
        todo = [cls]
        while todo:
            c = todo.pop()
            if c in out or self.mindepth.get(c, INF) >= INF:
                continue
            out.add(c)
            todo.extend(f[5] for f in self.fields[c] if isinstance(f[5], type))
        return out

    def idrefs_satisfiable(self, cls: type) -> bool:
        """False when ``cls`` may need a required IDREF but no xs:ID attribute can occur in it."""
        lex = [li for c in self.reachable(cls) for li in self.lexical.get(c, {}).values()]
        return any(li.builtin == "ID" for li in lex) or not any(li.builtin == "IDREF" for li in lex)


def occurs(node: Node) -> tuple[int, int | None]:
    """(minOccurs, maxOccurs) of a CONTENT node; ('el'|'abstract', field, min, max) carry a field name first."""
    return (node[2], node[3]) if node[0] in ("el", "abstract") else (node[1], node[2])


def _builtin(t: SimpleType) -> str:
    if t.rep == "enum" and t.enum_base is not None:
        return t.enum_base.builtin
    return t.builtin


def _element_decls(p: Particle | None) -> Iterator[ElementDecl]:
    if p is None:
        return
    term = p.term
    if isinstance(term, ElementDecl):
        yield from term.substitutables() if term.is_global else (term,)
    elif isinstance(term, ModelGroup):
        for sub in term.particles:
            yield from _element_decls(sub)


@functools.cache
def model(proto: str) -> Model:
    return Model(proto)


def roots(proto: str) -> list[Root]:
    """The global elements of complex, non-abstract type that can be instantiated."""
    return model(proto).roots


# --------------------------------------------------------------------------- simple values

_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# XML 1.0 Char restricted to the BMP: tab, LF, CR, #x20-#xD7FF, #xE000-#xFFFD
_XML_BMP = st.characters(min_codepoint=0x09, max_codepoint=0xFFFD, exclude_categories=("Cs",),
                         exclude_characters="".join(chr(c) for c in range(0x20) if c not in (9, 10, 13)))
_NON_ASCII = st.characters(min_codepoint=0xA0, max_codepoint=0xFFFD, exclude_categories=("Cs",))
# anyURI as libxml2 checks it: no '%' (would need two hex digits), '[' or ']', one '#' at most, and a
# ':' only after a scheme; the random part is a relative reference, sometimes after a real-looking prefix
_URI_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/?@!$&()*+,;=")
_URI_PREFIXES = (
    "", "", "#", "urn:iso:15118:2:2013:", "urn:iso:std:iso:15118:-20:", "http://www.w3.org/2001/04/xmldsig-more#",
    "http://www.w3.org/TR/canonical-exi/", "https://example.com:8443/p?q=1#",
)
_NC_START = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_éΩ")
_NC_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-éΩ")


def _size(draw: Draw, lo: int | None, hi: int | None, *, typical: int, far: int) -> int:
    """A length in [lo, hi]: mostly up to ``typical``, sometimes exactly ``hi`` or up to ``far``."""
    lo = lo or 0
    top = far if hi is None else min(hi, far)
    mode = draw(st.integers(0, 9))
    if mode == 0 and hi is not None and hi <= far:
        return hi
    if mode == 1:
        return draw(st.integers(lo, max(lo, top)))
    return draw(st.integers(lo, max(lo, min(top, typical))))


def _text(draw: Draw, lo: int | None, hi: int | None, builtin: str) -> str:
    if builtin in ("ID", "IDREF", "NCName"):
        n = _size(draw, max(lo or 1, 1), hi, typical=12, far=40)
        return draw(_NC_START) + draw(st.text(_NC_CHARS, min_size=n - 1, max_size=n - 1))
    if builtin == "anyURI":
        n = _size(draw, lo, hi, typical=30, far=100)
        prefix = draw(st.sampled_from([p for p in _URI_PREFIXES if len(p) <= n]))
        rest = n - len(prefix)
        return prefix + draw(st.text(_URI_CHARS, min_size=rest, max_size=rest))
    n = _size(draw, lo, hi, typical=16, far=300)
    alphabet = draw(st.sampled_from((_ASCII, _ASCII, _ASCII, _XML_BMP, _NON_ASCII)))
    return draw(st.text(alphabet, min_size=n, max_size=n))


def _integer(draw: Draw, lo: int | None, hi: int | None) -> int:
    unbounded = lo is None or hi is None
    lo = INT64[0] if lo is None else lo
    hi = INT64[1] if hi is None else hi
    edges = sorted({lo, hi, min(max(0, lo), hi), min(lo + 1, hi), max(hi - 1, lo)})
    mode = draw(st.integers(0, 9))
    if mode <= 1:
        return draw(st.sampled_from(edges))
    if mode == 2 and unbounded:
        return draw(st.integers(-BIG if lo == INT64[0] else lo, BIG if hi == INT64[1] else hi))
    if mode <= 5 and hi - lo > 1000:  # small magnitudes are the common case on the wire
        return draw(st.integers(max(lo, -1000), min(hi, 1000)))
    return draw(st.integers(lo, hi))


def simple_value(draw: Draw, code: tuple[Any, ...], builtin: str = "string") -> Any:
    """One value of a simple type code from the FIELDS tables."""
    kind = code[0]
    if kind == "bool":
        return draw(st.booleans())
    if kind in ("int", "uint", "nbit"):
        return _integer(draw, code[1], code[2])
    if kind == "decimal":
        digits = draw(st.integers(-(10**15), 10**15))
        return Decimal(digits).scaleb(-draw(st.integers(0, 8)))
    if kind == "float":
        return draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    if kind in ("b64", "hex"):
        n = _size(draw, code[1], code[2], typical=32, far=1200)
        return draw(st.binary(min_size=n, max_size=n))
    if kind == "str":
        return _text(draw, code[1], code[2], builtin)
    if kind == "enum":
        return draw(st.sampled_from(list(code[1])))
    if kind == "list":
        n = _size(draw, code[2], code[3], typical=4, far=8)
        return [simple_value(draw, code[1], "NCName" if builtin in ("NMTOKENS", "IDREFS") else "string")
                for _ in range(n)]
    raise ValueError(f"unknown simple type code {code!r}")


# --------------------------------------------------------------------------- complex values


class _Builder:
    """Builds one instance tree; remembers the ID/IDREF attributes to fix up afterwards."""

    def __init__(self, m: Model, draw: Draw) -> None:
        self.m = m
        self.draw = draw
        self.ids: list[tuple[object, str]] = []
        self.idrefs: list[tuple[object, str, bool]] = []
        self.room = MAX_ELEMENTS  # complex elements still to be built freely

    def build(self, cls: type, budget: int) -> object:
        m = self.m
        self.room -= 1
        values: dict[str, Any] = {}
        lexical = m.lexical.get(cls, {})
        for name, kind, _ns, _local, many, ftype in m.fields[cls]:
            if many:
                values[name] = []
            if kind == "e":
                continue
            lex = lexical.get(name, Lexical("string", kind == "v"))
            if kind == "a" and not lex.required and self.draw(st.integers(0, 4)) == 0:
                continue  # an optional attribute left out
            values[name] = simple_value(self.draw, ftype, lex.builtin)
        node = m.content.get(cls)
        if node is not None:
            self.node(cls, node, budget - 1, values)
        obj = cls(**values)
        for name, kind, *_ in m.fields[cls]:
            if kind == "a" and values.get(name) is not None:
                builtin = lexical[name].builtin if name in lexical else "string"
                if builtin == "ID":
                    self.ids.append((obj, name))
                elif builtin == "IDREF":
                    self.idrefs.append((obj, name, lexical[name].required))
        return obj

    def count(self, cls: type, node: Node, budget: int) -> int:
        lo, hi = occurs(node)
        if self.m.need(node, cls) > budget:
            return lo  # cannot afford another occurrence; lo is 0 here (the caller checked cost)
        if self.room <= 0:
            return lo  # big enough: required content only
        if self.m.single_only(cls, node) and node[0] != "el":
            hi = lo if lo >= 1 else 1  # a group holding a single-valued field occurs once at most
        if hi is not None and hi <= max(lo, 1) + REPEAT_CAP:
            return self.draw(st.integers(lo, hi))
        mode = self.draw(st.integers(0, 9))
        if hi is not None and hi <= EXACT_MAX and mode == 0:
            return self.draw(st.sampled_from((hi - 1, hi)) if hi - 1 >= lo else st.just(hi))
        return self.draw(st.integers(lo, lo + REPEAT_CAP if lo else REPEAT_CAP))

    def node(self, cls: type, node: Node, budget: int, values: dict[str, Any]) -> None:
        kind = node[0]
        m = self.m
        if kind in ("abstract", "any"):
            return  # never generated (see need()); optional wildcards stay empty
        n = self.count(cls, node, budget)
        if kind == "el":
            name = node[1]
            f = m.fields_by_name[cls][name]
            ftype = f[5]
            for _ in range(n):
                if isinstance(ftype, type):
                    v = self.build(ftype, budget)
                else:
                    lex = m.lexical.get(cls, {}).get(name)
                    v = simple_value(self.draw, ftype, lex.builtin if lex else "string")
                if f[4]:
                    values[name].append(v)
                else:
                    assert name not in values, f"{cls.__name__}.{name} is single-valued but occurs twice"
                    values[name] = v
            return
        for _ in range(n):
            if kind == "seq":
                for child in node[3]:
                    self.node(cls, child, budget, values)
            else:
                options = [c for c in node[3] if m.cost(c, cls) <= budget]
                if not options:
                    return
                self.node(cls, self.draw(st.sampled_from(options)), budget, values)

    def fix_ids(self, strict_idrefs: bool) -> None:
        """Make xs:ID values unique in the instance and point every xs:IDREF at one of them.

        A required IDREF (DIN has some) in an instance without any ID keeps its NCName: the EXI stream
        is valid, only the XSD identity check would fail. ``strict_idrefs`` rejects such draws instead."""
        seen: set[str] = set()
        for obj, name in self.ids:
            v = getattr(obj, name)
            if v in seen:
                i = 1
                while f"{v}{i}" in seen:
                    i += 1
                v = f"{v}{i}"
                setattr(obj, name, v)
            seen.add(v)
        targets = sorted(seen)
        for obj, name, required in self.idrefs:
            if targets:
                setattr(obj, name, self.draw(st.sampled_from(targets)))
            elif not required:
                setattr(obj, name, None)
            elif strict_idrefs:
                reject()


@st.composite
def _instance(draw: Draw, proto: str, cls: type, budget: int, strict_idrefs: bool) -> object:
    b = _Builder(model(proto), draw)
    obj = b.build(cls, budget)
    b.fix_ids(strict_idrefs)
    return obj


def instance(proto: str, cls: type, *, extra_depth: int = EXTRA_DEPTH,
             strict_idrefs: bool = False) -> st.SearchStrategy[object]:
    """Valid instances of ``cls`` (as the type of an element of protocol ``proto``).

    ``extra_depth``: nesting allowed beyond the minimum ``cls`` needs. ``strict_idrefs``: see
    :meth:`_Builder.fix_ids` (needed for XSD validation, only satisfiable when an ID can occur)."""
    m = model(proto)
    need = m.mindepth.get(cls, INF)
    if need >= INF:
        raise ValueError(f"{cls.__name__} cannot be instantiated (abstract, or needs wildcard content)")
    if strict_idrefs and not m.idrefs_satisfiable(cls):
        raise ValueError(f"{cls.__name__} has a required IDREF but no ID can occur in it")
    return _instance(proto, cls, need + extra_depth, strict_idrefs)


def document(proto: str, name: str, *, strict_idrefs: bool = False) -> st.SearchStrategy[object]:
    """Valid messages of the global element ``name`` of ``proto``."""
    for r in roots(proto):
        if r.name == name:
            return instance(proto, r.cls, strict_idrefs=strict_idrefs)
    raise ValueError(f"{proto} has no instantiable global element {name}")


def documents(proto: str, *, strict_idrefs: bool = False) -> st.SearchStrategy[object]:
    """Valid messages of any instantiable global element of complex type of ``proto``.

    With ``strict_idrefs`` the roots whose required IDREFs can never resolve are left out."""
    m = model(proto)
    return st.one_of([instance(proto, r.cls, strict_idrefs=strict_idrefs) for r in m.roots
                      if not strict_idrefs or m.idrefs_satisfiable(r.cls)])


def rooted_documents(proto: str, *, strict_idrefs: bool = False) -> st.SearchStrategy[tuple[Root, object]]:
    """Like :func:`documents`, with the global element each message is for (some types have several)."""
    m = model(proto)
    return st.one_of([instance(proto, r.cls, strict_idrefs=strict_idrefs).map(lambda v, r=r: (r, v))
                      for r in m.roots if not strict_idrefs or m.idrefs_satisfiable(r.cls)])


def fragment(proto: str, namespace: str, name: str) -> st.SearchStrategy[exi.Fragment]:
    """Valid :class:`exi.Fragment` values of the element ``{namespace}name``."""
    for ns, local, cls, _dec, _enc in model(proto).module.FRAGMENT:
        if (ns, local) == (namespace, name) and isinstance(cls, type):
            return instance(proto, cls).map(lambda v, ns=ns, local=local: exi.Fragment(ns, local, v))
    raise ValueError(f"{proto} has no element {{{namespace}}}{name} of complex type")
