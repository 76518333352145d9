"""EXI schema-informed grammars (W3C EXI 1.0, section 8.5.4) built from the XSD component model.

Each complex type's proto-grammar is built as a small NFA (attribute uses, then content), then
normalised the way the spec does it: epsilon productions are removed and productions with the same
terminal are merged (a subset construction). Event codes follow 8.5.4.3: AT(qname) sorted by local
name then URI, AT(*), SE(qname) in schema order, SE(uri:*), SE(*), EE, CH.

Non-strict mode (the V2G default) adds second-level productions to every element state, so the first
level of each state always reserves one extra code for the escape; that is reflected in ``width``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .xsd import (
    AttributeUse,
    ComplexType,
    ElementDecl,
    ModelGroup,
    Particle,
    SchemaError,
    SimpleType,
    Wildcard,
    qname_key,
)


@dataclass(frozen=True)
class Event:
    """A terminal symbol. ``kind``: AT, ATW (AT(*)), SE, SEW (SE(*) / SE(uri:*)), EE, CH, CHM (mixed text)."""

    kind: str
    qname: tuple[str, str] | None = None
    uri: str | None = None  # for SEW with a namespace list

    def key(self) -> tuple:
        return (self.kind, self.qname, self.uri)


@dataclass(eq=False)
class _N:
    prods: list[tuple[Event | None, _N, object]] = field(default_factory=list)  # (event|eps, target, payload)
    final: bool = False


@dataclass(eq=False)
class Production:
    event: Event
    target: State | None  # None for EE
    payload: object = None  # ElementDecl for SE, AttributeUse for AT, SimpleType for CH, Wildcard for SEW
    code: int = 0


@dataclass(eq=False)
class State:
    index: int
    prods: list[Production] = field(default_factory=list)
    start_tag: bool = False  # a StartTagContent state (attributes may still follow)

    @property
    def width(self) -> int:
        # +1: the escape to second-level events that non-strict grammars always have
        return len(self.prods).bit_length()

    def find(self, kind: str) -> Production | None:
        for p in self.prods:
            if p.event.kind == kind:
                return p
        return None


@dataclass(eq=False)
class TypeGrammar:
    ctype: ComplexType
    states: list[State]


_SORT_RANK = {"AT": 0, "ATW": 1, "SE": 2, "SEW": 3, "EE": 5, "CH": 6, "CHM": 6}


def _order(prods: list[Production]) -> list[Production]:
    def rank(ip: tuple[int, Production]) -> tuple:
        i, p = ip
        ev = p.event
        if ev.kind == "AT":
            return (0, qname_key(ev.qname), 0)
        if ev.kind == "SEW":
            return (4 if ev.uri is None else 3, ("", ""), i)
        return (_SORT_RANK[ev.kind], ("", ""), i)

    out = [p for _, p in sorted(enumerate(prods), key=rank)]
    for i, p in enumerate(out):
        p.code = i
    return out


class _Builder:
    def __init__(self) -> None:
        self.nodes = 0

    def node(self) -> _N:
        self.nodes += 1
        if self.nodes > 200_000:
            raise SchemaError("grammar too large")
        return _N()

    def particle(self, p: Particle) -> tuple[_N, _N]:
        entry = self.node()
        cur = entry
        for _ in range(p.min):
            a, b = self.term(p.term)
            cur.prods.append((None, a, None))
            cur = b
        if p.max is None:
            loop = self.node()
            cur.prods.append((None, loop, None))
            a, b = self.term(p.term)
            loop.prods.append((None, a, None))
            b.prods.append((None, loop, None))
            exit_ = self.node()
            loop.prods.append((None, exit_, None))
            return entry, exit_
        exit_ = self.node()
        for _ in range(p.max - p.min):
            a, b = self.term(p.term)
            cur.prods.append((None, a, None))
            cur.prods.append((None, exit_, None))
            cur = b
        cur.prods.append((None, exit_, None))
        return entry, exit_

    def term(self, t: ElementDecl | ModelGroup | Wildcard) -> tuple[_N, _N]:
        a, b = self.node(), self.node()
        if isinstance(t, ElementDecl):
            members = t.substitutables()
            if not members:
                raise SchemaError(f"abstract element {t.qname} without substitutes")
            for m in members:
                a.prods.append((Event("SE", m.qname), b, m))
        elif isinstance(t, Wildcard):
            if t.namespaces is None:
                a.prods.append((Event("SEW"), b, t))
            else:
                for uri in t.namespaces:
                    a.prods.append((Event("SEW", uri=uri), b, t))
        elif t.kind == "sequence":
            cur = a
            for p in t.particles:
                x, y = self.particle(p)
                cur.prods.append((None, x, None))
                cur = y
            cur.prods.append((None, b, None))
        elif t.kind == "choice":
            if not t.particles:
                a.prods.append((None, b, None))
            for p in t.particles:
                x, y = self.particle(p)
                a.prods.append((None, x, None))
                y.prods.append((None, b, None))
        else:
            raise SchemaError("xs:all model groups are not supported")
        return a, b


def _closure(nodes: list[_N]) -> list[_N]:
    out: list[_N] = []
    seen: set[int] = set()

    def visit(n: _N) -> None:
        if id(n) in seen:
            return
        seen.add(id(n))
        out.append(n)
        for ev, tgt, _ in n.prods:
            if ev is None:
                visit(tgt)

    for n in nodes:
        visit(n)
    return out


def _determinise(start: _N, start_tag_nodes: set[int]) -> list[State]:
    states: list[State] = []
    by_key: dict[frozenset[int], State] = {}
    pending: list[tuple[State, list[_N]]] = []

    def get(nodes: list[_N]) -> State:
        clo = _closure(nodes)
        key = frozenset(id(n) for n in clo)
        st = by_key.get(key)
        if st is None:
            st = State(len(states), start_tag=any(id(n) in start_tag_nodes for n in clo))
            states.append(st)
            by_key[key] = st
            pending.append((st, clo))
        return st

    get([start])
    while pending:
        st, clo = pending.pop(0)
        grouped: dict[tuple, tuple[Event, list[_N], object]] = {}
        final = False
        for n in clo:
            final = final or n.final
            for ev, tgt, payload in n.prods:
                if ev is None:
                    continue
                k = ev.key()
                if k in grouped:
                    if grouped[k][2] is not payload and isinstance(payload, ElementDecl) and \
                            grouped[k][2].type is not payload.type:
                        raise SchemaError(f"two declarations of {ev.qname} with different types in one state")
                    grouped[k][1].append(tgt)
                else:
                    grouped[k] = (ev, [tgt], payload)
        prods = [Production(ev, get(tgts), payload) for ev, tgts, payload in grouped.values()]
        if final:
            prods.append(Production(Event("EE"), None))
        st.prods = _order(prods)
    return states


def type_grammar(t: ComplexType) -> TypeGrammar:
    b = _Builder()
    start = b.node()
    cur = start
    start_tag: set[int] = {id(start)}
    for a in t.attributes:
        nxt = b.node()
        cur.prods.append((Event("AT", a.qname), nxt, a))
        if not a.required:
            cur.prods.append((None, nxt, None))
        cur = nxt
        start_tag.add(id(cur))
    if t.attr_wildcard is not None:
        cur.prods.append((Event("ATW"), cur, t.attr_wildcard))
    end = b.node()
    end.final = True
    if t.content == "simple":
        mid = b.node()
        cur.prods.append((Event("CH"), mid, t.simple))
        mid.prods.append((None, end, None))
    elif t.particle is not None:
        x, y = b.particle(t.particle)
        if t.content == "mixed":
            _add_mixed(x, y)
        cur.prods.append((None, x, None))
        y.prods.append((None, end, None))
    else:
        cur.prods.append((None, end, None))
    return TypeGrammar(t, _determinise(start, start_tag))


def _add_mixed(entry: _N, exit_: _N) -> None:
    seen: set[int] = set()
    stack = [entry]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        targets = [tgt for _, tgt, _ in n.prods]
        n.prods.append((Event("CHM"), n, None))
        if n is exit_:
            continue
        stack.extend(targets)


@dataclass(eq=False)
class TopGrammar:
    """Document (DocContent) or fragment (FragmentContent) grammar: SE per element, SE(*), [ED]."""

    elements: list[ElementDecl]  # in event-code order
    fragment: bool

    @property
    def width(self) -> int:
        n = len(self.elements) + 1 + (1 if self.fragment else 0)  # + SE(*) [+ ED]
        return (n - 1).bit_length()


def document_grammar(global_elements: list[ElementDecl]) -> TopGrammar:
    return TopGrammar(sorted(global_elements, key=lambda e: qname_key(e.qname)), False)


def fragment_grammar(all_elements: list[ElementDecl]) -> tuple[TopGrammar, set[tuple[str, str]]]:
    """All element declarations, one per qname; returns also the qnames whose declarations disagree
    on type or {nillable} (EXI 8.5.2: their content uses the relaxed element fragment grammar).

    Types are compared by identity: a named type is one object, and an anonymous type is never the
    same as another declaration's (EXI compares type *names*; anonymous types have none)."""
    by_q: dict[tuple[str, str], ElementDecl] = {}
    relaxed: set[tuple[str, str]] = set()
    for e in all_elements:
        prev = by_q.get(e.qname)
        if prev is None:
            by_q[e.qname] = e
        elif prev.type is not e.type or prev.nillable != e.nillable:
            relaxed.add(e.qname)
    return TopGrammar(sorted(by_q.values(), key=lambda e: qname_key(e.qname)), True), relaxed


@dataclass(eq=False)
class RelaxedGrammar:
    """EXI 1.0 section 8.5.3, the schema-informed element fragment grammar (one per schema set):

    ElementFragment0: AT(A_0..A_n-1) [typed] -> 0, AT(*) -> 0, SE(F_0..F_m-1) -> 1, SE(*) -> 1, EE,
    CH [untyped] -> 1; codes 0 .. n+m+3 in that order.
    ElementFragment1: SE(F_0..F_m-1) -> 1, SE(*) -> 1, EE, CH [untyped] -> 1; codes 0 .. m+2 (no AT
    once content has started).
    ElementFragmentTypeEmpty (the xsi:nil="true" form) has the same attribute codes and EE.

    A_i are the qnames of every attribute declaration of the schema set, sorted by local name then
    URI, each once; the type is kept when all declarations of that qname share it, else the value is
    an untyped String (``None`` here). F_j are the fragment grammar's elements (the same sorted list).
    Non-strict (the V2G option) adds second-level productions to both states (xsi:type, xsi:nil,
    undeclared attributes, ...), so each state reserves one more first-level code for the escape:
    that is in the widths."""

    attributes: list[tuple[tuple[str, str], SimpleType | None]]
    elements: int  # m, the number of element qnames

    @property
    def width0(self) -> int:
        return (len(self.attributes) + self.elements + 4).bit_length()

    @property
    def width1(self) -> int:
        return (self.elements + 3).bit_length()


def relaxed_grammar(attribute_declarations: list[tuple[tuple[str, str], SimpleType]],
                    elements: int) -> RelaxedGrammar:
    by_q: dict[tuple[str, str], SimpleType | None] = {}
    for q, t in attribute_declarations:
        if q not in by_q:
            by_q[q] = t
        elif by_q[q] is not t:
            by_q[q] = None  # declarations disagree: untyped
    return RelaxedGrammar(sorted(by_q.items(), key=lambda qt: qname_key(qt[0])), elements)


__all__ = [
    "AttributeUse", "Event", "Production", "RelaxedGrammar", "SimpleType", "State", "TopGrammar",
    "TypeGrammar", "document_grammar", "fragment_grammar", "relaxed_grammar", "type_grammar",
]
