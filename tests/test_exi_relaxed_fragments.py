"""EXI 1.0 section 8.5.3, the relaxed element fragment grammar (exi/relaxed.py and its generated tables).

ISO 15118-2 declares ``{MsgBody}eMAID`` as ``EMAIDType`` (string + required Id) and as ``eMAIDType``
(string), so as a fragment root (the CPS signs it in CertificateInstallationRes) it is coded with the
relaxed grammar. The expected bytes below were checked against EXIficient (tests/interop/
test_interop_relaxed.py does it again live). A small schema of our own (SCHEMA_XSD) exercises what -2
does not: typed and untyped attributes, element content, relaxed children inside a relaxed element,
an ambiguity by {nillable} alone, and attribute/element counts that make the escape code decide the
widths (n+m+4 = 16 attribute-state productions, m+3 = 8 content-state productions).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import exi
from exi.codec import iso2_msgdatatypes as c_iso2_msgdatatypes
from exi.codec import iso2_msgdef as iso2
from exi.compile import codegen
from exi.compile.codegen import Generator
from exi.compile.xsd import SchemaSet
from exi.model.iso2_msgdatatypes import EMAIDType, PhysicalValueType
from exi.runtime import Writer

BODY = "urn:iso:15118:2:2013:MsgBody"
TYPES = "urn:iso:15118:2:2013:MsgDataTypes"

# iso2: n = 10 attribute qnames, m = 243 element qnames
EMAID_SE, ED = 236, 244  # 8-bit fragment-grammar codes
W0, W1 = 9, 8  # ElementFragment0: n+m+4 = 257 productions + escape; ElementFragment1: m+3 + escape
AT_ALGORITHM, AT_ID_TYPES, AT_WILDCARD = 0, 4, 10  # A_0 = Algorithm, A_4 = {MsgDataTypes}Id
SE_WILDCARD0, EE0, CH0, ESCAPE0 = 254, 255, 256, 257  # n+m+1 .. n+m+4
EE1, CH1 = 244, 245  # m+1, m+2

#: eMAID with Id, as EXIficient encodes <eMAID t:Id="id4">DEEDGC000000011</eMAID>
EMAID_WITH_ID = "80ec0202b4b21a40045111515111d0cc0c0c0c0c0c0c0c4c7d3d00"
#: eMAID as a plain string (the eMAIDType declaration), as EXIficient encodes it
EMAID_PLAIN = "80ec8008a222a2a223a1981818181818181898fa7a00"
#: the vector of EVerest/cbexigen issue #60: "correct (latest OpenV2G and SwitchEV)" for id4/DEABCC123ABC56,
#: and what libcbv2g (typed EMAIDType grammar: 1-bit AT, CH and EE codes) writes instead
ISSUE60_CONFORMANT = "80ec0202b4b21a40041111505090d0cc4c8cd05090cd4dbd3d00"
ISSUE60_LIBCBV2G = "80ec02b4b21a041111505090d0cc4c8cd05090cd4d9e80"


def emaid(value: Any) -> exi.Fragment:
    return exi.Fragment(BODY, "eMAID", value)


def stream(*events: tuple) -> bytes:
    """EXI bytes from (value, width) event codes and ("str", text) string literals."""
    w = Writer()
    for a, b in events:
        if a == "str":
            w.string(b)
        elif a == "uint":
            w.uint(b)
        else:
            w.bits(a, b)
    return w.getvalue()


# ------------------------------------------------------------------------------------------- -2 eMAID


@pytest.mark.parametrize(("value", "expected"), [
    (EMAIDType(Id="id4", value="DEEDGC000000011"), EMAID_WITH_ID),
    ("DEEDGC000000011", EMAID_PLAIN),
    (EMAIDType(Id="id4", value="DEABCC123ABC56"), ISSUE60_CONFORMANT),
])
def test_emaid_fragment_bytes_and_round_trip(value: Any, expected: str) -> None:
    data = exi.encode("iso2", emaid(value), fragment=True)
    assert data.hex() == expected
    assert exi.decode("iso2", data, fragment=True) == emaid(value)


def test_emaid_bits_follow_the_relaxed_grammar() -> None:
    """The layout spelled out: SE(eMAID), AT(A_4 = {MsgDataTypes}Id) typed String, CH untyped String in
    ElementFragment0 (9-bit codes), EE in ElementFragment1 (8-bit), ED."""
    expected = stream((EMAID_SE, 8), (AT_ID_TYPES, W0), ("str", "id4"), (CH0, W0), ("str", "DEEDGC000000011"),
                      (EE1, W1), (ED, 8))
    assert expected.hex() == EMAID_WITH_ID
    assert stream((EMAID_SE, 8), (CH0, W0), ("str", "DEEDGC000000011"), (EE1, W1), (ED, 8)).hex() == EMAID_PLAIN


def test_iso2_relaxed_grammar_tables() -> None:
    g = iso2._RELAXED
    assert (g.width0, g.width1) == (W0, W1)
    names = [(ns, local) for ns, local, *_ in g.attributes]
    assert names == [("", "Algorithm"), ("", "Encoding"), ("", "Id"), (BODY, "Id"), (TYPES, "Id"), ("", "MimeType"),
                     (TYPES, "Name"), ("", "Target"), ("", "Type"), ("", "URI")]
    assert all(dec is not None for *_, dec, _enc in g.attributes)  # every qname has one type: all typed
    entry = iso2.FRAGMENT[EMAID_SE]
    assert entry[:2] == (BODY, "eMAID") and entry[2][0] == "relaxed"
    # the only ambiguous qname in all our schema sets
    for name in exi.PROTOCOLS:
        exi.load(name)
        table = exi._CODECS[name].frag
        relaxed = [e[1] for e in table if isinstance(e[2], tuple) and e[2][0] == "relaxed"]
        assert relaxed == (["eMAID"] if name == "iso2" else []), name


def test_libcbv2g_bytes_differ_from_the_relaxed_grammar() -> None:
    """libcbv2g codes the fragment eMAID with the EMAIDType grammar; those bytes are not ours (nor
    EXIficient's), so a digest computed one way does not verify the other."""
    w = Writer()
    w.bits(EMAID_SE, 8)
    c_iso2_msgdatatypes._e_EMAIDType(w, EMAIDType(Id="id4", value="DEABCC123ABC56"))
    w.bits(ED, 8)
    assert w.getvalue().hex() == ISSUE60_LIBCBV2G
    assert exi.encode("iso2", emaid(EMAIDType(Id="id4", value="DEABCC123ABC56")), fragment=True).hex() != \
        ISSUE60_LIBCBV2G


@pytest.mark.parametrize("value", [
    EMAIDType(Id="a", value="DE8AA00000000Y"),
    EMAIDType(Id="id-" + "x" * 200, value="NLABC1234567890"),  # a long Id: 2-octet length
    EMAIDType(Id="é", value="DEEDGC00000001é"),  # non-ASCII code points
    "DE8AA00000000Y",
])
def test_emaid_round_trips(value: Any) -> None:
    data = exi.encode("iso2", emaid(value), fragment=True)
    assert exi.decode("iso2", data, fragment=True).value == value
    assert exi.encode("iso2", exi.decode("iso2", data, fragment=True), fragment=True) == data


@pytest.mark.parametrize(("value", "message"), [
    (EMAIDType(value="DEEDGC000000011"), "missing content: attribute Id"),
    (EMAIDType(Id="id4"), "missing content: text"),
    (EMAIDType(Id="id4", value="short"), r"length 5 outside \[14, 15\]"),
    (EMAIDType(Id=4, value="DEEDGC000000011"), "@Id"),
    ("short", r"length 5 outside \[14, 15\]"),
    (15, "declared types .EMAIDType, str., got int"),
    (PhysicalValueType(0, "A", 1), "got PhysicalValueType"),
])
def test_emaid_encode_errors_are_clear(value: Any, message: str) -> None:
    with pytest.raises(exi.EncodeError, match=message) as err:
        exi.encode("iso2", emaid(value), fragment=True)
    assert err.value.path[0] == "eMAID"


def test_emaid_decode_accepts_string_table_hits() -> None:
    """EXIficient (default options) writes a repeated value as a table hit: here the text equals the Id,
    a hit on the global value table (one entry: a 0-bit index)."""
    data = stream((EMAID_SE, 8), (AT_ID_TYPES, W0), ("str", "DEEDGC000000011"), (CH0, W0), ("uint", 1),
                  (EE1, W1), (ED, 8))
    value = exi.decode("iso2", data, fragment=True).value
    assert value == EMAIDType(Id="DEEDGC000000011", value="DEEDGC000000011")


def test_emaid_decode_joins_split_text() -> None:
    data = stream((EMAID_SE, 8), (CH0, W0), ("str", "DEEDGC"), (CH1, W1), ("str", "000000011"), (EE1, W1), (ED, 8))
    assert exi.decode("iso2", data, fragment=True).value == "DEEDGC000000011"


@pytest.mark.parametrize(("events", "message"), [
    ([(AT_WILDCARD, W0)], r"AT\(\*\) in a relaxed element fragment is not supported"),
    ([(ESCAPE0, W0)], "second-level event"),
    ([(SE_WILDCARD0, W0)], r"SE\(\*\)"),
    ([(300, W0)], "event code 300"),
    ([(CH0, W0), ("str", "DEEDGC000000011"), (EE1 + 2, W1)], "second-level event"),  # m+3: the escape
    ([(AT_ID_TYPES, W0), ("str", "a"), (AT_ID_TYPES, W0), ("str", "b")], "attribute Id given twice"),
    # an attribute no declared type has: EMAIDType has no Algorithm, a plain string no attribute
    ([(AT_ALGORITHM, W0), ("str", "x"), (CH0, W0), ("str", "DEEDGC000000011"), (EE1, W1), (ED, 8)],
     r"fits none of the declared types \(not EMAIDType: no attribute Algorithm; not simple str"),
    # the unqualified Id is xmldsig's, not EMAIDType's ({MsgDataTypes}Id)
    ([(2, W0), ("str", "id4"), (CH0, W0), ("str", "DEEDGC000000011"), (EE1, W1), (ED, 8)], "no attribute Id"),
    ([(EE0, W0), (ED, 8)], r"not EMAIDType: required attribute Id missing; not simple str: length 0"),
    # SE(F_125 = Multiplier) inside eMAID, coded with its own grammar: CH, 3-bit value, EE
    ([(CH0, W0), ("str", "DEEDGC00000001"), (125, W1), (0, 1), (3 + 2, 3), (0, 1), (EE1, W1), (ED, 8)],
     "not simple str: attributes or child elements given"),
])
def test_emaid_decode_errors(events: list[tuple], message: str) -> None:
    data = stream((EMAID_SE, 8), *events)
    with pytest.raises(exi.DecodeError, match=message) as err:
        exi.decode("iso2", data, fragment=True)
    assert err.value.path[:1] == ["eMAID"]


def test_emaid_truncated_is_a_decode_error() -> None:
    data = bytes.fromhex(EMAID_WITH_ID)
    for cut in range(2, len(data) - 1):
        with pytest.raises(exi.DecodeError):
            exi.decode("iso2", data[:cut], fragment=True)


def test_emaid_xml_bridge() -> None:
    with_id = emaid(EMAIDType(Id="id4", value="DEEDGC000000011"))
    xml = exi.to_xml(with_id, "iso2", pretty=False)
    assert f'xmlns:msgdatatypes="{TYPES}" msgdatatypes:Id="id4">DEEDGC000000011<' in xml
    assert exi.from_xml("iso2", xml, fragment=True) == with_id
    plain = emaid("DEEDGC000000011")
    xml = exi.to_xml(plain, "iso2", pretty=False)
    assert xml == f'<msgbody:eMAID xmlns:msgbody="{BODY}">DEEDGC000000011</msgbody:eMAID>'
    assert exi.from_xml("iso2", xml, fragment=True) == plain
    with pytest.raises(exi.XmlError, match="fits none of the declared types of eMAID"):
        exi.from_xml("iso2", f'<eMAID xmlns="{BODY}">short</eMAID>', fragment=True)


# ----------------------------------------------------------------------------------- our own schema

TEST_NS = "urn:edge:test:relaxed"
TEST_LABEL = "test-relaxed"
SCHEMA_XSD = f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="{TEST_NS}"
           targetNamespace="{TEST_NS}" elementFormDefault="qualified">
  <xs:attribute name="ref" type="xs:unsignedShort"/>
  <xs:simpleType name="codeType">
    <xs:restriction base="xs:string"><xs:maxLength value="8"/></xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="colourType">
    <xs:restriction base="xs:string">
      <xs:enumeration value="red"/><xs:enumeration value="green"/><xs:enumeration value="blue"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:complexType name="PairType">
    <xs:sequence>
      <xs:element name="item" type="xs:int" maxOccurs="3"/>
      <xs:element name="flag" type="xs:boolean" minOccurs="0"/>
    </xs:sequence>
    <xs:attribute name="a" type="xs:boolean"/>
    <xs:attribute name="b" type="xs:decimal"/>
    <xs:attribute name="c" type="xs:base64Binary"/>
    <xs:attribute name="code" type="xs:int"/>
    <xs:attribute name="d" type="t:colourType"/>
    <xs:attribute ref="t:ref"/>
  </xs:complexType>
  <xs:complexType name="LabelType">
    <xs:simpleContent>
      <xs:extension base="xs:string">
        <xs:attribute name="code" type="t:codeType" use="required"/>
        <xs:attribute name="lang" type="xs:language"/>
      </xs:extension>
    </xs:simpleContent>
  </xs:complexType>
  <xs:complexType name="ListType">
    <xs:sequence>
      <xs:element name="item" type="xs:string" maxOccurs="unbounded"/>
      <xs:element name="entry" type="t:PairType" minOccurs="0"/>
    </xs:sequence>
    <xs:attribute ref="t:ref"/>
  </xs:complexType>
  <xs:element name="Root">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="entry" type="t:PairType"/>
        <xs:element name="list" type="t:ListType"/>
        <xs:element name="flag" type="xs:boolean" nillable="true"/>
      </xs:sequence>
    </xs:complexType>
  </xs:element>
  <xs:element name="entry" type="t:LabelType"/>
  <xs:element name="flag" type="xs:boolean"/>
</xs:schema>
"""


@contextlib.contextmanager
def schema_codec(xsd: Path) -> Iterator[ModuleType]:
    """Compile ``xsd`` with our generator and make it protocol TEST_LABEL of the exi API for a while;
    yields the generated model module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(codegen.NS_MODULES, TEST_NS, "test_relaxed")
        gen = Generator()
        gen.add_set("test_relaxed", SchemaSet(xsd), "a test schema for the relaxed grammar")
        files = gen.generate(Path("out"))
        modules = {}
        for name, rel in (("exi.model.test_relaxed", "out/model/test_relaxed.py"),
                          ("exi.codec.test_relaxed", "out/codec/test_relaxed.py")):
            module = ModuleType(name)
            mp.setitem(sys.modules, name, module)  # before exec: dataclasses look their module up
            exec(compile(files[Path(rel)], rel, "exec"), module.__dict__)
            modules[name] = module
        mp.setitem(exi._CODECS, TEST_LABEL, exi._Codec(modules["exi.codec.test_relaxed"]))
        yield modules["exi.model.test_relaxed"]


@pytest.fixture(scope="module")
def schema_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    xsd = tmp_path_factory.mktemp("relaxed") / "relaxed.xsd"
    xsd.write_text(SCHEMA_XSD)
    with schema_codec(xsd) as model:
        yield model


def schema_values(m: ModuleType) -> list[tuple[str, Any]]:
    """(element, value) pairs covering the relaxed grammar on SCHEMA_XSD; shared with the interop test."""
    return [
        ("entry", m.LabelType(code="A1", value="hello")),
        ("entry", m.LabelType(code="A1", value="", lang="de")),  # empty text: no CH at all
        ("entry", m.PairType(item=[1, -2], code=7, ref=300, a=True, b=Decimal("1.5"), c=b"\x01\x02",
                             d=m.colourType.green)),
        ("entry", m.PairType(item=[4, 5, 6], flag=False)),  # relaxed children inside a relaxed element
        ("item", 5),
        ("item", "abc"),
        ("item", ""),
        ("flag", True),  # relaxed by {nillable} alone
        ("list", m.ListType(item=["a", "5"], entry=m.PairType(item=[9]), ref=1)),  # not relaxed: typed
    ]


#: our encodings of schema_values(), checked against EXIficient (xsd-fragment grammars)
SCHEMA_BYTES = [
    "8023044131783b432b63637b60",
    "80230441312823232bb0",
    "802084020a20201021819b91356012de0662c6f042d3266c",
    "802b7819a31bc0cd58de066cc4f0766616c736566c",
    "806f03356c",
    "806f056162636c",
    "806ec0",
    "804f06747275656c",
    "80800806c20066a7012980",
]


def test_schema_relaxed_grammar_tables(schema_model: ModuleType) -> None:
    codec = sys.modules["exi.codec.test_relaxed"]
    g = codec._RELAXED
    # n = 7 attribute qnames, m = 5 element qnames: 16 + escape -> 5 bits, 8 + escape -> 4 bits
    assert (g.width0, g.width1) == (5, 4)
    assert [a[1] for a in g.attributes] == ["a", "b", "c", "code", "d", "lang", "ref"]
    untyped = [a[1] for a in g.attributes if a[3] is None]
    assert untyped == ["code"]  # int in PairType, codeType in LabelType
    relaxed = [e[1] for e in codec.FRAGMENT if isinstance(e[2], tuple) and e[2][0] == "relaxed"]
    assert relaxed == ["entry", "flag", "item"]


def test_schema_values_bytes_and_round_trip(schema_model: ModuleType) -> None:
    for (name, value), expected in zip(schema_values(schema_model), SCHEMA_BYTES, strict=True):
        frag = exi.Fragment(TEST_NS, name, value)
        data = exi.encode(TEST_LABEL, frag, fragment=True)
        assert data.hex() == expected, name
        assert exi.decode(TEST_LABEL, data, fragment=True) == frag


def test_schema_ambiguous_text_decodes_as_the_first_declared_type(schema_model: ModuleType) -> None:
    """A top-level relaxed element has no field to say its type: "5" of xs:string comes back as the int
    5 (item is declared xs:int first). The bytes are the same either way."""
    as_text = exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "item", "5"), fragment=True)
    assert as_text == exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "item", 5), fragment=True)
    assert exi.decode(TEST_LABEL, as_text, fragment=True).value == 5


def test_schema_nested_relaxed_children_take_the_field_type(schema_model: ModuleType) -> None:
    pair = schema_model.PairType(item=[7], flag=True)
    data = exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "entry", pair), fragment=True)
    back = exi.decode(TEST_LABEL, data, fragment=True).value
    assert back == pair and type(back.item[0]) is int and back.flag is True


def test_schema_decode_rejects_what_no_type_holds(schema_model: ModuleType) -> None:
    n, m, w0, w1 = 7, 5, 5, 4
    entry, ed = 1, m + 1  # fragment grammar: 3 bits (5 elements, SE(*), ED)
    se0 = {"flag": n + 1 + 2, "item": n + 1 + 3}
    se1 = {"flag": 2, "item": 3}
    ch_item = [("str", "1"), (m + 1, w1)]  # an item child's content: CH (first code of its state 0), EE

    def item_child(first: bool) -> list[tuple]:
        return [(se0["item"], w0) if first else (se1["item"], w1), (n + m + 3, w0), *ch_item]

    flag_first = stream((entry, 3), (se0["flag"], w0), (n + m + 3, w0), ("str", "true"), (m + 1, w1),
                        *item_child(False), (m + 1, w1), (ed, 3))
    with pytest.raises(exi.DecodeError, match="not PairType: child elements not in schema order"):
        exi.decode(TEST_LABEL, flag_first, fragment=True)
    text_and_items = stream((entry, 3), (n + m + 3, w0), ("str", "x"), (se1["item"], w1), (n + m + 3, w0),
                            *ch_item, (m + 1, w1), (ed, 3))
    with pytest.raises(exi.DecodeError, match="not PairType: text 'x' in element-only content"):
        exi.decode(TEST_LABEL, text_and_items, fragment=True)


def test_schema_encode_errors(schema_model: ModuleType) -> None:
    m = schema_model
    with pytest.raises(exi.EncodeError, match="missing content: attribute code"):
        exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "entry", m.LabelType(value="x")), fragment=True)
    with pytest.raises(exi.EncodeError, match="missing content: item"):
        exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "entry", m.PairType()), fragment=True)
    with pytest.raises(exi.EncodeError, match=r"declared types \(int, str\), got float .* in entry/item"):
        exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "entry", m.PairType(item=[1.5])), fragment=True)
    with pytest.raises(exi.EncodeError, match="@code: invalid value"):
        exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "entry", m.LabelType(code="x" * 9, value="v")), fragment=True)
    with pytest.raises(exi.EncodeError, match=r"@d"):
        exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "entry", m.PairType(item=[1], d="purple")), fragment=True)
    with pytest.raises(exi.EncodeError, match="got ListType"):
        exi.encode(TEST_LABEL, exi.Fragment(TEST_NS, "entry", m.ListType(item=["a"])), fragment=True)


def test_schema_xml_bridge(schema_model: ModuleType) -> None:
    for name, value in schema_values(schema_model):
        frag = exi.Fragment(TEST_NS, name, value)
        back = exi.from_xml(TEST_LABEL, exi.to_xml(frag, TEST_LABEL), fragment=True)
        assert back == frag or (name, value, back.value) == ("item", "5", 5), name
