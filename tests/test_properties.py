"""Property tests: random schema-valid messages survive encode -> decode, and their XML is XSD-valid.

The instances come from :mod:`tests.strategies` (driven by the generated FIELDS/CONTENT tables). Runs
are derandomized (the same examples every run, no example database) so CI is stable; set
``EXI_PROPERTY_RANDOM=1`` for a fresh random exploration and ``EXI_PROPERTY_EXAMPLES=n`` for more
examples per test (default 8 per global element, 6x that for the per-protocol tests).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from lxml import etree

import exi
from tests import strategies
from tests.vectors import XSD_ROOTS

EXAMPLES = int(os.environ.get("EXI_PROPERTY_EXAMPLES", "8"))
RANDOM = os.environ.get("EXI_PROPERTY_RANDOM") == "1"

SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared" / "schemas"
XMLDSIG = "http://www.w3.org/2000/09/xmldsig#"
ISO2_BODY = "urn:iso:15118:2:2013:MsgBody"
#: signable elements: (protocol, namespace, name) encoded as EXI fragments for signatures
SIGNABLE = [
    ("iso2", ISO2_BODY, "AuthorizationReq"),
    ("iso2", XMLDSIG, "SignedInfo"),
    ("iso2", ISO2_BODY, "ContractSignatureCertChain"),
    ("iso20-common", XMLDSIG, "SignedInfo"),
    ("xmldsig", XMLDSIG, "SignedInfo"),
]


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=not RANDOM,
        database=None,
        deadline=None,  # the first example of a protocol imports its codec module
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


ROOTS = [(p, r.name) for p in exi.PROTOCOLS for r in strategies.roots(p)]


def _encode(proto: str, name: str, message: Any) -> bytes:
    """Encode as the production code does (no element=, the one-lookup path) when the type says which
    element it is, and check that element= gives the same bytes."""
    data = exi.encode(proto, message, element=name)
    if len(exi._codec(proto).by_class.get(type(message), ())) == 1:
        assert exi.encode(proto, message) == data
    return data


@pytest.mark.parametrize(("proto", "name"), ROOTS, ids=[f"{p}-{n}" for p, n in ROOTS])
def test_document_round_trip(proto: str, name: str) -> None:
    @_settings(EXAMPLES)
    @given(strategies.document(proto, name))
    def check(message: Any) -> None:
        data = _encode(proto, name, message)
        assert exi.decode(proto, data) == message
        assert _encode(proto, name, exi.decode(proto, data)) == data

    check()


def test_every_protocol_has_documents() -> None:
    counts = {p: len(strategies.roots(p)) for p in exi.PROTOCOLS}
    assert all(counts.values()), counts
    # the roots that documents() leaves out are exactly the abstract or wildcard-only ones
    assert {r.name for r in strategies.roots("iso2")} >= {"V2G_Message", "AuthorizationReq", "SignedInfo"}
    assert "BodyElement" not in {r.name for r in strategies.roots("iso2")}
    assert "BodyElement" not in {r.name for r in strategies.roots("din")}  # abstract type, not element


@pytest.mark.parametrize(("proto", "namespace", "name"), SIGNABLE, ids=[f"{p}-{n}" for p, _, n in SIGNABLE])
def test_fragment_round_trip(proto: str, namespace: str, name: str) -> None:
    @_settings(6 * EXAMPLES)
    @given(strategies.fragment(proto, namespace, name))
    def check(frag: exi.Fragment) -> None:
        data = exi.encode(proto, frag, fragment=True)
        back = exi.decode(proto, data, fragment=True)
        assert back == frag
        assert exi.encode(proto, back, fragment=True) == data

    check()


@cache
def _schema(proto: str) -> etree.XMLSchema:
    path = SCHEMAS / XSD_ROOTS[proto]
    if not path.is_file():
        raise FileNotFoundError(f"XSD {path} is missing (expected the shared schemas next to the repo)")
    parser = etree.XMLParser(no_network=True, load_dtd=False, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(path), parser))


def _validate(proto: str, xml: str) -> None:
    schema = _schema(proto)
    parser = etree.XMLParser(no_network=True, load_dtd=False, resolve_entities=False, huge_tree=False)
    doc = etree.fromstring(xml.encode(), parser)
    if not schema.validate(doc):
        errors = "\n".join(f"  line {e.line}: {e.message}" for e in schema.error_log)
        raise AssertionError(f"XML not valid against {XSD_ROOTS[proto]}:\n{errors}\n{xml}")


@pytest.mark.parametrize("proto", list(exi.PROTOCOLS))
def test_xml_is_schema_valid(proto: str) -> None:
    from exi import to_xml  # the XML bridge (exi/xml.py)

    @_settings(6 * EXAMPLES)
    @given(strategies.rooted_documents(proto, strict_idrefs=True))
    def check(doc: tuple[strategies.Root, Any]) -> None:
        root, message = doc
        _validate(proto, to_xml(exi.Fragment(root.namespace, root.name, message), proto))

    check()


@pytest.mark.parametrize("proto", list(exi.PROTOCOLS))
def test_xml_round_trip(proto: str) -> None:
    from exi import from_xml, to_xml

    @_settings(6 * EXAMPLES)
    @given(strategies.rooted_documents(proto))
    def check(doc: tuple[strategies.Root, Any]) -> None:
        root, message = doc
        assert from_xml(proto, to_xml(exi.Fragment(root.namespace, root.name, message), proto)) == message

    check()


#: the signable elements that are global, so that their XML alone can be validated
SIGNABLE_GLOBAL = [s for s in SIGNABLE if (s[1], s[2]) in strategies.model(s[0]).schema.elements]


@pytest.mark.parametrize(("proto", "namespace", "name"), SIGNABLE_GLOBAL,
                         ids=[f"{p}-{n}" for p, _, n in SIGNABLE_GLOBAL])
def test_fragment_xml_is_schema_valid(proto: str, namespace: str, name: str) -> None:
    from exi import to_xml

    @_settings(2 * EXAMPLES)
    @given(strategies.fragment(proto, namespace, name))
    def check(frag: exi.Fragment) -> None:
        _validate(proto, to_xml(frag, proto))

    check()
