"""Load an XSD set (with lxml) into a small resolved component model.

Only what EXI grammar construction needs is modelled: element and attribute declarations, complex
types with their {content type} and attribute uses, simple types reduced to their EXI datatype
representation with the facets we enforce, substitution groups and wildcards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

XS = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XML_NS = "http://www.w3.org/XML/1998/namespace"

QName = tuple[str, str]  # (namespace uri, local name)


class SchemaError(Exception):
    """The schema uses something the compiler does not support, or is inconsistent."""


def qname_key(q: QName) -> tuple[str, str]:
    """EXI sorts qnames by local name first, then by namespace URI."""
    return (q[1], q[0])


# --------------------------------------------------------------------------- simple types


@dataclass(eq=False)
class SimpleType:
    """A simple type reduced to its EXI representation.

    ``rep`` is one of: ``bool``, ``int`` (signed Integer), ``uint`` (Unsigned Integer), ``nbit``
    (bounded range <= 4096), ``decimal``, ``float``, ``b64``, ``hex`` (both EXI Binary), ``str``
    (EXI String, value tables), ``enum`` (n-bit index), ``list``.
    """

    name: QName | None
    builtin: str  # local name of the nearest XML Schema built-in ancestor
    rep: str = "str"
    enum: list[str] | None = None
    min_value: int | None = None
    max_value: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    item: SimpleType | None = None
    enum_class: str | None = None  # python class name, set by the code generator
    enum_base: SimpleType | None = None  # the type the enumeration restricts (lexical form)

    def nbits(self) -> int:
        assert self.min_value is not None and self.max_value is not None
        return (self.max_value - self.min_value).bit_length()


_INT_BOUNDS: dict[str, tuple[int | None, int | None]] = {
    "integer": (None, None),
    "nonPositiveInteger": (None, 0),
    "negativeInteger": (None, -1),
    "long": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-128, 127),
    "nonNegativeInteger": (0, None),
    "unsignedLong": (0, 2**64 - 1),
    "unsignedInt": (0, 2**32 - 1),
    "unsignedShort": (0, 2**16 - 1),
    "unsignedByte": (0, 255),
    "positiveInteger": (1, None),
}
_STRINGISH = {
    "string", "normalizedString", "token", "language", "Name", "NCName", "NMTOKEN", "ID", "IDREF",
    "ENTITY", "anyURI", "QName", "NOTATION", "duration", "anySimpleType",
}
_DATETIME = {"dateTime", "time", "date", "gYearMonth", "gYear", "gMonthDay", "gDay", "gMonth"}
_LISTS = {"NMTOKENS": "NMTOKEN", "IDREFS": "IDREF", "ENTITIES": "ENTITY"}


def _builtin_simple(local: str) -> SimpleType:
    if local == "boolean":
        return SimpleType((XS, local), local, "bool")
    if local in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[local]
        st = SimpleType((XS, local), local, "int", min_value=lo, max_value=hi)
        _choose_int_rep(st)
        return st
    if local == "decimal":
        return SimpleType((XS, local), local, "decimal")
    if local in ("float", "double"):
        return SimpleType((XS, local), local, "float")
    if local == "base64Binary":
        return SimpleType((XS, local), local, "b64")
    if local == "hexBinary":
        return SimpleType((XS, local), local, "hex")
    if local in _STRINGISH:
        return SimpleType((XS, local), local, "str")
    if local in _LISTS:
        return SimpleType((XS, local), local, "list", item=_builtin_simple(_LISTS[local]))
    if local in _DATETIME:
        raise SchemaError(f"xs:{local} (EXI DateTime) is not supported by this compiler")
    raise SchemaError(f"unknown built-in simple type xs:{local}")


def _choose_int_rep(st: SimpleType) -> None:
    lo, hi = st.min_value, st.max_value
    if lo is not None and hi is not None and hi - lo < 4096:
        st.rep = "nbit"
    elif lo is not None and lo >= 0:
        st.rep = "uint"
    else:
        st.rep = "int"


# --------------------------------------------------------------------------- structures


@dataclass(eq=False)
class Wildcard:
    """``xs:any`` / ``xs:anyAttribute``: ``namespaces`` is None for ##any and ##other (EXI: SE(*))."""

    namespaces: tuple[str, ...] | None


@dataclass(eq=False)
class Particle:
    min: int
    max: int | None  # None = unbounded
    term: ElementDecl | ModelGroup | Wildcard


@dataclass(eq=False)
class ModelGroup:
    kind: str  # sequence | choice | all
    particles: list[Particle]


@dataclass(eq=False)
class AttributeUse:
    qname: QName
    type: SimpleType
    required: bool


@dataclass(eq=False)
class ComplexType:
    name: QName | None
    namespace: str  # target namespace of the schema document defining it
    abstract: bool = False
    content: str = "empty"  # empty | simple | element | mixed
    simple: SimpleType | None = None
    particle: Particle | None = None
    attributes: list[AttributeUse] = field(default_factory=list)
    attr_wildcard: Wildcard | None = None
    base: ComplexType | None = None
    context: str = ""  # for anonymous types: the element path that defines it
    py_name: str = ""  # set by the code generator
    resolved: bool = False


@dataclass(eq=False)
class ElementDecl:
    qname: QName
    type: ComplexType | SimpleType | None = None
    is_global: bool = False
    abstract: bool = False
    nillable: bool = False
    head: ElementDecl | None = None
    # direct substitution-group members (filled for heads)
    members: list[ElementDecl] = field(default_factory=list)

    def substitutables(self) -> list[ElementDecl]:
        """This element and its transitive substitution-group members, sorted by qname.

        Abstract elements stay in: EXIficient, OpenV2G and libcbv2g grammars all keep an SE production
        for an abstract head (e.g. ISO 15118-2 BodyElement, SASchedules), so the event codes count it."""
        out: list[ElementDecl] = []
        seen: set[int] = set()

        def walk(e: ElementDecl) -> None:
            if id(e) in seen:
                return
            seen.add(id(e))
            out.append(e)
            for m in e.members:
                walk(m)

        walk(self)
        out.sort(key=lambda e: qname_key(e.qname))
        return out


# --------------------------------------------------------------------------- loader


@dataclass
class _Doc:
    path: Path
    root: etree._Element
    tns: str
    element_qualified: bool
    attribute_qualified: bool


class SchemaSet:
    """All components reachable from one root XSD file (imports followed locally only)."""

    def __init__(self, root_file: Path) -> None:
        self.docs: list[_Doc] = []
        self._raw_elements: dict[QName, tuple[_Doc, etree._Element]] = {}
        self._raw_ctypes: dict[QName, tuple[_Doc, etree._Element]] = {}
        self._raw_stypes: dict[QName, tuple[_Doc, etree._Element]] = {}
        self._raw_groups: dict[QName, tuple[_Doc, etree._Element]] = {}
        self._raw_agroups: dict[QName, tuple[_Doc, etree._Element]] = {}
        self._raw_attrs: dict[QName, tuple[_Doc, etree._Element]] = {}
        self.elements: dict[QName, ElementDecl] = {}  # global element declarations
        self.ctypes: dict[QName, ComplexType] = {}
        self.stypes: dict[QName, SimpleType] = {}
        self.all_elements: list[ElementDecl] = []  # every declaration, global and local
        self.all_ctypes: list[ComplexType] = []  # every complex type, named and anonymous
        # attribute declaration (document, path of its node) -> its type: a declaration used several
        # times (a global attribute by ref, a local one in a reused attribute group) has ONE type, as
        # in XML Schema; the relaxed fragment grammar (EXI 8.5.3) compares attribute types by identity
        self._attr_types: dict[tuple[int, str], SimpleType] = {}
        self._load(Path(root_file))
        for q in sorted(self._raw_elements, key=qname_key):
            self.global_element(q)
        for q in sorted(self._raw_ctypes, key=qname_key):
            self.complex_type(q)
        for e in list(self.elements.values()):
            if e.head is not None and e not in e.head.members:
                e.head.members.append(e)

    # -- loading
    def _load(self, path: Path) -> None:
        path = path.resolve()
        if any(d.path == path for d in self.docs):
            return
        parser = etree.XMLParser(no_network=True, load_dtd=False, resolve_entities=False,
                                 remove_comments=True)
        root = etree.parse(str(path), parser).getroot()
        doc = _Doc(path, root, root.get("targetNamespace", ""),
                   root.get("elementFormDefault") == "qualified",
                   root.get("attributeFormDefault") == "qualified")
        self.docs.append(doc)
        for child in root:
            if not isinstance(child.tag, str):
                continue
            tag = etree.QName(child).localname
            if tag in ("import", "include"):
                loc = child.get("schemaLocation")
                if loc:
                    if "://" in loc:
                        raise SchemaError(f"{path.name}: refusing remote schemaLocation {loc}")
                    self._load(path.parent / loc)
                continue
            name = child.get("name")
            if name is None:
                continue
            q = (doc.tns, name)
            table = {
                "element": self._raw_elements, "complexType": self._raw_ctypes,
                "simpleType": self._raw_stypes, "group": self._raw_groups,
                "attributeGroup": self._raw_agroups, "attribute": self._raw_attrs,
            }.get(tag)
            if table is not None:
                table[q] = (doc, child)

    @property
    def namespaces(self) -> list[str]:
        return sorted({d.tns for d in self.docs})

    def doc_of(self, node: etree._Element) -> _Doc:
        root = node.getroottree().getroot()
        for d in self.docs:
            if d.root is root:
                return d
        raise SchemaError("node from an unknown document")

    @staticmethod
    def _resolve_qname(node: etree._Element, value: str) -> QName:
        prefix, _, local = value.rpartition(":")
        ns = node.nsmap.get(prefix or None)
        if ns is None:
            if prefix:
                raise SchemaError(f"unknown prefix {prefix!r} in {value!r}")
            ns = ""
        return (ns, local)

    # -- simple types
    def simple_type(self, q: QName) -> SimpleType:
        if q[0] == XS:
            if q[1] not in self.stypes_builtin:
                self.stypes_builtin[q[1]] = _builtin_simple(q[1])
            return self.stypes_builtin[q[1]]
        if q in self.stypes:
            return self.stypes[q]
        if q not in self._raw_stypes:
            raise SchemaError(f"unknown simple type {q}")
        _doc, node = self._raw_stypes[q]
        st = self._simple_from_node(node, q)
        self.stypes[q] = st
        return st

    stypes_builtin: dict[str, SimpleType] = {}

    def _simple_from_node(self, node: etree._Element, name: QName | None) -> SimpleType:
        children = [c for c in node if isinstance(c.tag, str) and etree.QName(c).localname != "annotation"]
        if len(children) != 1:
            raise SchemaError(f"simpleType {name}: expected one of restriction/list/union")
        c = children[0]
        kind = etree.QName(c).localname
        if kind == "restriction":
            base_q = c.get("base")
            if base_q:
                base = self.simple_type(self._resolve_qname(c, base_q))
            else:
                inner = c.find(f"{{{XS}}}simpleType")
                if inner is None:
                    raise SchemaError(f"simpleType {name}: restriction without base")
                base = self._simple_from_node(inner, None)
            return self._restrict(base, c, name)
        if kind == "list":
            item_q = c.get("itemType")
            if item_q:
                item = self.simple_type(self._resolve_qname(c, item_q))
            else:
                item = self._simple_from_node(c.find(f"{{{XS}}}simpleType"), None)
            return SimpleType(name, "list", "list", item=item)
        if kind == "union":
            return SimpleType(name, "string", "str")
        raise SchemaError(f"simpleType {name}: unsupported {kind}")

    def _restrict(self, base: SimpleType, node: etree._Element, name: QName | None) -> SimpleType:
        st = SimpleType(name, base.builtin, base.rep, list(base.enum) if base.enum else None,
                        base.min_value, base.max_value, base.min_length, base.max_length, base.item,
                        enum_base=base.enum_base)
        if st.rep == "nbit":
            st.rep = "int"
        enum: list[str] = []
        for f in node:
            if not isinstance(f.tag, str):
                continue
            facet = etree.QName(f).localname
            v = f.get("value")
            if facet == "enumeration":
                enum.append(v)
            elif facet in ("minInclusive", "minExclusive", "maxInclusive", "maxExclusive"):
                if base.rep not in ("int", "uint", "nbit"):
                    continue  # range facets on decimals/floats are checked nowhere; EXI ignores them
                iv = int(v) + (1 if facet == "minExclusive" else -1 if facet == "maxExclusive" else 0)
                if facet.startswith("min"):
                    st.min_value = iv if st.min_value is None else max(st.min_value, iv)
                else:
                    st.max_value = iv if st.max_value is None else min(st.max_value, iv)
            elif facet == "length":
                st.min_length = st.max_length = int(v)
            elif facet == "minLength":
                st.min_length = int(v)
            elif facet == "maxLength":
                st.max_length = int(v)
            elif facet == "pattern":
                raise SchemaError(f"{name}: pattern facets (restricted character sets) unsupported")
            elif facet in ("totalDigits", "fractionDigits", "whiteSpace", "annotation"):
                pass
            else:
                raise SchemaError(f"{name}: unsupported facet {facet}")
        if st.rep in ("int", "uint"):
            _choose_int_rep(st)
        if enum:
            if st.rep == "list":
                raise SchemaError(f"{name}: enumerated list types unsupported")
            st.enum_base = SimpleType(None, base.builtin, st.rep, None, st.min_value, st.max_value,
                                      st.min_length, st.max_length, st.item)
            st.enum = enum
            st.rep = "enum"
        return st

    # -- attributes
    def _attributes(self, node: etree._Element, doc: _Doc) -> tuple[list[AttributeUse], Wildcard | None]:
        uses: list[AttributeUse] = []
        wildcard: Wildcard | None = None
        for c in node:
            if not isinstance(c.tag, str):
                continue
            tag = etree.QName(c).localname
            if tag == "attribute":
                if c.get("use") == "prohibited":
                    continue
                if c.get("ref"):
                    q = self._resolve_qname(c, c.get("ref"))
                    _adoc, anode = self._raw_attrs[q] if q in self._raw_attrs else (None, None)
                    if anode is None:
                        if q[0] == XML_NS:
                            uses.append(AttributeUse(q, self.simple_type((XS, "string")), c.get("use") == "required"))
                            continue
                        raise SchemaError(f"unknown attribute {q}")
                    st = self._attr_type(anode)
                else:
                    form = c.get("form")
                    qualified = form == "qualified" if form else doc.attribute_qualified
                    q = (doc.tns if qualified else "", c.get("name"))
                    st = self._attr_type(c)
                uses.append(AttributeUse(q, st, c.get("use") == "required"))
            elif tag == "attributeGroup":
                q = self._resolve_qname(c, c.get("ref"))
                gdoc, gnode = self._raw_agroups[q]
                sub, w = self._attributes(gnode, gdoc)
                uses.extend(sub)
                wildcard = wildcard or w
            elif tag == "anyAttribute":
                wildcard = _wildcard(c, doc)
        return uses, wildcard

    def _attr_type(self, node: etree._Element) -> SimpleType:
        tree = node.getroottree()
        key = (id(tree.getroot()), tree.getpath(node))
        st = self._attr_types.get(key)
        if st is None:
            st = self._attr_types[key] = self._attr_type_of(node)
        return st

    def _attr_type_of(self, node: etree._Element) -> SimpleType:
        if node.get("type"):
            return self.simple_type(self._resolve_qname(node, node.get("type")))
        inner = node.find(f"{{{XS}}}simpleType")
        if inner is not None:
            return self._simple_from_node(inner, None)
        return self.simple_type((XS, "anySimpleType"))

    def attribute_declarations(self) -> list[tuple[QName, SimpleType]]:
        """(qname, type) of every attribute declaration: the attribute uses of every complex type and
        the global attributes (used or not), one entry per declaration, in no particular order."""
        seen: set[int] = set()
        out: list[tuple[QName, SimpleType]] = []
        for ct in self.all_ctypes:
            for a in ct.attributes:
                if id(a) not in seen:  # an inherited use is the base type's object: one declaration
                    seen.add(id(a))
                    out.append((a.qname, a.type))
        for q, (_doc, node) in self._raw_attrs.items():
            out.append((q, self._attr_type(node)))
        return out

    # -- elements
    def global_element(self, q: QName) -> ElementDecl:
        if q in self.elements:
            return self.elements[q]
        if q not in self._raw_elements:
            raise SchemaError(f"unknown element {q}")
        doc, node = self._raw_elements[q]
        decl = ElementDecl(q, is_global=True, abstract=node.get("abstract") == "true",
                           nillable=node.get("nillable") == "true")
        self.elements[q] = decl
        self.all_elements.append(decl)
        if node.get("substitutionGroup"):
            decl.head = self.global_element(self._resolve_qname(node, node.get("substitutionGroup")))
        decl.type = self._element_type(node, doc, decl, q[1])
        return decl

    def _element_type(self, node: etree._Element, doc: _Doc, decl: ElementDecl,
                      context: str) -> ComplexType | SimpleType:
        if node.get("type"):
            tq = self._resolve_qname(node, node.get("type"))
            if tq[0] == XS and tq[1] == "anyType":
                return self.any_type()
            if tq in self._raw_ctypes:
                return self.complex_type(tq)
            return self.simple_type(tq)
        ct = node.find(f"{{{XS}}}complexType")
        if ct is not None:
            t = ComplexType(None, doc.tns, context=context)
            self.all_ctypes.append(t)
            self._fill_complex(t, ct, doc)
            return t
        st = node.find(f"{{{XS}}}simpleType")
        if st is not None:
            return self._simple_from_node(st, None)
        if decl.head is not None:
            assert decl.head.type is not None
            return decl.head.type
        return self.any_type()

    _any_type: ComplexType | None = None

    def any_type(self) -> ComplexType:
        if self._any_type is None:
            t = ComplexType((XS, "anyType"), XS, content="mixed", resolved=True)
            t.particle = Particle(1, 1, ModelGroup("sequence", [Particle(0, None, Wildcard(None))]))
            t.attr_wildcard = Wildcard(None)
            self._any_type = t
        return self._any_type

    # -- complex types
    def complex_type(self, q: QName) -> ComplexType:
        if q in self.ctypes:
            t = self.ctypes[q]
            if not t.resolved:
                raise SchemaError(f"circular derivation at {q}")
            return t
        doc, node = self._raw_ctypes[q]
        t = ComplexType(q, doc.tns, abstract=node.get("abstract") == "true")
        self.ctypes[q] = t
        self.all_ctypes.append(t)
        self._fill_complex(t, node, doc)
        return t

    def _fill_complex(self, t: ComplexType, node: etree._Element, doc: _Doc) -> None:
        mixed = node.get("mixed") == "true"
        body = [c for c in node if isinstance(c.tag, str) and etree.QName(c).localname != "annotation"]
        ctx = t.context or (t.name[1] if t.name else "")
        if body and etree.QName(body[0]).localname == "simpleContent":
            self._fill_simple_content(t, body[0], doc)
        elif body and etree.QName(body[0]).localname == "complexContent":
            cc = body[0]
            mixed = mixed or cc.get("mixed") == "true"
            der = next(c for c in cc if isinstance(c.tag, str) and etree.QName(c).localname != "annotation")
            dkind = etree.QName(der).localname
            bq = self._resolve_qname(der, der.get("base"))
            base = self.any_type() if bq == (XS, "anyType") else self.complex_type(bq)
            t.base = base
            own = self._particle_of(der, doc, ctx)
            attrs, wild = self._attributes(der, doc)
            if dkind == "extension":
                if base.content == "simple":
                    raise SchemaError(f"{t.name}: complexContent extension of simple content")
                parts = [p for p in (base.particle, own) if p is not None]
                if len(parts) == 2:
                    t.particle = Particle(1, 1, ModelGroup("sequence", parts))
                elif parts:
                    t.particle = parts[0]
                t.attributes = _merge_attributes(base.attributes, attrs)
                t.attr_wildcard = wild or base.attr_wildcard
                mixed = mixed or base.content == "mixed"
            else:
                t.particle = own
                t.attributes = _merge_attributes(base.attributes, attrs, restrict=True)
                t.attr_wildcard = wild
        else:
            t.particle = self._particle_of(node, doc, ctx)
            t.attributes, t.attr_wildcard = self._attributes(node, doc)
        if t.content != "simple":
            t.content = "mixed" if mixed else ("element" if t.particle is not None else "empty")
        t.attributes.sort(key=lambda a: qname_key(a.qname))
        t.resolved = True

    def _fill_simple_content(self, t: ComplexType, sc: etree._Element, doc: _Doc) -> None:
        der = next(c for c in sc if isinstance(c.tag, str) and etree.QName(c).localname != "annotation")
        bq = self._resolve_qname(der, der.get("base"))
        attrs, wild = self._attributes(der, doc)
        if bq in self._raw_ctypes:
            base = self.complex_type(bq)
            t.base = base
            st = base.simple
            if etree.QName(der).localname == "restriction":
                st = self._restrict(st, der, None)
            t.simple = st
            t.attributes = _merge_attributes(base.attributes, attrs)
            t.attr_wildcard = wild or base.attr_wildcard
        else:
            t.simple = self.simple_type(bq)
            t.attributes, t.attr_wildcard = attrs, wild
        t.content = "simple"

    def _particle_of(self, node: etree._Element, doc: _Doc, ctx: str) -> Particle | None:
        for c in node:
            if not isinstance(c.tag, str):
                continue
            if etree.QName(c).localname in ("sequence", "choice", "all", "group"):
                return self._particle(c, doc, ctx)
        return None

    def _particle(self, node: etree._Element, doc: _Doc, ctx: str) -> Particle:
        mn = int(node.get("minOccurs", "1"))
        mx_s = node.get("maxOccurs", "1")
        mx = None if mx_s == "unbounded" else int(mx_s)
        tag = etree.QName(node).localname
        if tag == "element":
            if node.get("ref"):
                return Particle(mn, mx, self.global_element(self._resolve_qname(node, node.get("ref"))))
            form = node.get("form")
            qualified = form == "qualified" if form else doc.element_qualified
            q = (doc.tns if qualified else "", node.get("name"))
            decl = ElementDecl(q, nillable=node.get("nillable") == "true")
            self.all_elements.append(decl)
            decl.type = self._element_type(node, doc, decl, f"{ctx}.{q[1]}")
            return Particle(mn, mx, decl)
        if tag in ("sequence", "choice", "all"):
            parts = [self._particle(c, doc, ctx) for c in node
                     if isinstance(c.tag, str) and etree.QName(c).localname != "annotation"]
            return Particle(mn, mx, ModelGroup(tag, parts))
        if tag == "group":
            q = self._resolve_qname(node, node.get("ref"))
            gdoc, gnode = self._raw_groups[q]
            inner = self._particle_of(gnode, gdoc, ctx)
            assert inner is not None
            return Particle(mn, mx, inner.term)
        if tag == "any":
            return Particle(mn, mx, _wildcard(node, doc))
        raise SchemaError(f"unsupported particle {tag}")


def _wildcard(node: etree._Element, doc: _Doc) -> Wildcard:
    ns = node.get("namespace", "##any")
    if ns in ("##any", "##other"):
        return Wildcard(None)
    out = []
    for tok in ns.split():
        out.append({"##targetNamespace": doc.tns, "##local": ""}.get(tok, tok))
    return Wildcard(tuple(out))


def _merge_attributes(base: list[AttributeUse], own: list[AttributeUse],
                      restrict: bool = False) -> list[AttributeUse]:
    by_q = {a.qname: a for a in base}
    for a in own:
        by_q[a.qname] = a
    return list(by_q.values())
