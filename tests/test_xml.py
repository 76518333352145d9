"""exi.to_xml / exi.from_xml on every shared vector: the XML is schema-valid and round-trips exactly."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

import exi
from tests.vectors import XSD_ROOTS as ROOT_SCHEMAS
from tests.vectors import proto_of

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # the repo is checked out with ../shared beside it
SCHEMAS = SHARED / "schemas"
VECTORS = SHARED / "vectors" / "exi_vectors.jsonl"



XSD = "http://www.w3.org/2001/XMLSchema"


def _load_vectors() -> list[dict[str, Any]]:
    # a missing file yields no cases here; test_shared_folder_present then fails loudly
    if not VECTORS.is_file():
        return []
    with VECTORS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


VECTOR_LIST = _load_vectors()


def test_shared_folder_present() -> None:
    """Fail (never skip) when ../shared is missing: otherwise the vector tests would silently vanish."""
    assert SCHEMAS.is_dir(), f"schemas folder {SCHEMAS} missing: check out ../shared beside the repo"
    assert VECTORS.is_file(), f"vectors file {VECTORS} missing: check out ../shared beside the repo"
    assert VECTOR_LIST, f"{VECTORS} holds no vectors"


def _schema_parser() -> etree.XMLParser:
    return etree.XMLParser(no_network=True, load_dtd=False)


@functools.cache
def _schema(relpath: str) -> etree.XMLSchema:
    path = SCHEMAS / relpath
    assert path.is_file(), f"schema {path} missing: check out ../shared beside the repo"
    return etree.XMLSchema(etree.parse(str(path), _schema_parser()))


@functools.cache
def _schema_files_by_namespace(folder: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted((SCHEMAS / folder).glob("*.xsd")):
        ns = etree.parse(str(path), _schema_parser()).getroot().get("targetNamespace")
        if ns is not None:
            out.setdefault(ns, path)
    return out


@functools.cache
def _local_element_schema(folder: str, ns: str, local: str, type_ns: str, type_name: str) -> etree.XMLSchema:
    """A wrapper schema that declares a local element globally, with its schema type.

    An EXI fragment may be rooted at a local element (e.g. -20 PnC_AReqAuthorizationMode), which no
    schema can validate as a document. Including the schema of the element's namespace and declaring
    the element globally with its own named type validates exactly the fragment's content.
    """
    home = _schema_files_by_namespace(folder)[ns]
    imports = ""
    if type_ns != ns:
        imports = f'<xs:import namespace="{type_ns}"/>'
    text = (f'<xs:schema xmlns:xs="{XSD}" targetNamespace="{ns}" xmlns:t="{type_ns}" '
            f'elementFormDefault="qualified">'
            f'<xs:include schemaLocation="{home.name}"/>{imports}'
            f'<xs:element name="{local}" type="t:{type_name}"/></xs:schema>')
    # a base URL of its own beside the home schema: the include resolves, and is not "itself"
    doc = etree.fromstring(text.encode(), _schema_parser(),
                        base_url=str(home.parent / "fragment-wrapper.xsd")).getroottree()
    return etree.XMLSchema(doc)


def _validator(proto: str, root: Any, fragment: bool) -> etree.XMLSchema:
    folder = ROOT_SCHEMAS[proto].split("/")[0]
    if not fragment:
        return _schema(ROOT_SCHEMAS[proto])
    ns, local = root.namespace, root.name
    doc_names = {(e[0], e[1]) for e in exi._codec(proto).module.DOCUMENT}
    if (ns, local) in doc_names:  # a global element: the schema set validates it directly
        return _schema(ROOT_SCHEMAS[proto])
    # a local element: its model class's docstring names its schema type, "{namespace}TypeName"
    doc = type(root.value).__doc__ or ""
    assert doc.startswith("{"), f"local fragment root {local} has an anonymous type: cannot validate"
    type_ns, type_name = doc[1:].split("}", 1)
    return _local_element_schema(folder, ns, local, type_ns, type_name.strip())


def _vector_id(v: dict[str, Any]) -> str:
    return str(v["id"])


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=_vector_id)
def test_vector_xml(vector: dict[str, Any]) -> None:
    proto, fragment = proto_of(vector)
    data = bytes.fromhex(vector["hex"])
    decoded = exi.decode(proto, data, fragment=fragment)
    xml = exi.to_xml(decoded, proto)

    # (a) schema-valid
    schema = _validator(proto, decoded, fragment)
    doc = etree.fromstring(xml.encode(), etree.XMLParser(no_network=True, load_dtd=False,
                                                         resolve_entities=False))
    if not schema.validate(doc):
        errors = "\n".join(f"line {e.line}: {e.message}" for e in schema.error_log)
        pytest.fail(f"XML does not validate against {ROOT_SCHEMAS[proto]}:\n{errors}\n{xml}")

    # (b) back to the same object
    parsed = exi.from_xml(proto, xml, fragment=fragment)
    assert parsed == decoded

    # (c) and to the same EXI as the decoded object
    assert exi.encode(proto, parsed, fragment=fragment) == exi.encode(proto, decoded, fragment=fragment)

    # the compact form parses the same
    assert exi.from_xml(proto, exi.to_xml(decoded, proto, pretty=False), fragment=fragment) == decoded


def test_to_xml_finds_protocol_itself() -> None:
    v = next((v for v in VECTOR_LIST if v["protocol"] == "iso20-dc"), None)
    assert v is not None, f"no iso20-dc vector in {VECTORS}"
    msg = exi.decode("iso20-dc", bytes.fromhex(v["hex"]))
    assert exi.to_xml(msg) == exi.to_xml(msg, "iso20-dc")


# ---------------------------------------------------------------------------------------------------
# negative cases

APPHAND = "urn:iso:15118:2:2010:AppProtocol"


def _apphand_req(protocol_fields: str) -> str:
    return (f'<a:supportedAppProtocolReq xmlns:a="{APPHAND}"><AppProtocol>{protocol_fields}'
            "</AppProtocol></a:supportedAppProtocolReq>")


GOOD_FIELDS = ("<ProtocolNamespace>urn:iso:15118:2:2013:MsgDef</ProtocolNamespace>"
               "<VersionNumberMajor>2</VersionNumberMajor><VersionNumberMinor>0</VersionNumberMinor>"
               "<SchemaID>1</SchemaID><Priority>1</Priority>")


def test_good_handwritten_xml() -> None:
    msg = exi.from_xml("apphand", _apphand_req(GOOD_FIELDS))
    assert msg.AppProtocol[0].VersionNumberMajor == 2
    assert exi.decode("apphand", exi.encode("apphand", msg)) == msg


def test_enum_becomes_member() -> None:
    xml = (f'<a:supportedAppProtocolRes xmlns:a="{APPHAND}">'
           "<ResponseCode>OK_SuccessfulNegotiation</ResponseCode><SchemaID>1</SchemaID>"
           "</a:supportedAppProtocolRes>")
    msg = exi.from_xml("apphand", xml)
    assert type(msg.ResponseCode).__name__ == "responseCodeType"


@pytest.mark.parametrize(
    ("xml", "match"),
    [
        pytest.param("<a:supportedAppProtocolReq", "malformed", id="malformed"),
        pytest.param(f'<a:Nope xmlns:a="{APPHAND}"/>', "not a global element", id="unknown-root"),
        pytest.param(_apphand_req(GOOD_FIELDS + "<Extra>1</Extra>"), "unknown element Extra",
                     id="unknown-element"),
        pytest.param(_apphand_req(GOOD_FIELDS.replace("<SchemaID>1", "<SchemaID x='1'>1")),
                     "unknown attribute x", id="unknown-attribute"),
        pytest.param(_apphand_req(GOOD_FIELDS.replace(">2<", ">two<")), "not an integer", id="bad-int"),
        pytest.param(_apphand_req(GOOD_FIELDS.replace(">2<", ">4294967296<")), "outside",
                     id="int-out-of-range"),
        pytest.param(_apphand_req(GOOD_FIELDS.replace("<Priority>1", "<Priority>21")), "outside",
                     id="nbit-out-of-range"),
        pytest.param(_apphand_req("text" + GOOD_FIELDS), "unexpected text", id="stray-text"),
        pytest.param(_apphand_req(GOOD_FIELDS + "<Priority>1</Priority>"), "more than once", id="duplicate"),
        pytest.param(
            _apphand_req(GOOD_FIELDS.replace("<SchemaID>1</SchemaID><Priority>1</Priority>",
                                             "<Priority>1</Priority><SchemaID>1</SchemaID>")),
            "out of order", id="out-of-order"),
        pytest.param(f'<a:supportedAppProtocolRes xmlns:a="{APPHAND}"><ResponseCode>Fine</ResponseCode>'
                     "</a:supportedAppProtocolRes>", "is not a responseCodeType", id="bad-enum"),
        pytest.param(f'<!DOCTYPE x [<!ENTITY e "x">]><a:supportedAppProtocolRes xmlns:a="{APPHAND}">'
                     "<ResponseCode>&e;</ResponseCode></a:supportedAppProtocolRes>", "DOCTYPE",
                     id="doctype"),
    ],
)
def test_bad_xml(xml: str, match: str) -> None:
    with pytest.raises(exi.XmlError, match=match):
        exi.from_xml("apphand", xml)


def test_error_names_path() -> None:
    with pytest.raises(exi.XmlError) as info:
        exi.from_xml("apphand", _apphand_req(GOOD_FIELDS.replace(">2<", ">x<")))
    assert "supportedAppProtocolReq/AppProtocol/VersionNumberMajor" in str(info.value)


def test_bad_base64_and_bool() -> None:
    header = ("<v2g:V2G_Message xmlns:v2g='urn:iso:15118:2:2013:MsgDef' "
              "xmlns:h='urn:iso:15118:2:2013:MsgHeader' xmlns:b='urn:iso:15118:2:2013:MsgBody'>"
              "<v2g:Header><h:SessionID>{sid}</h:SessionID></v2g:Header>"
              "<v2g:Body><b:SessionStopReq><b:ChargingSession>{cs}</b:ChargingSession></b:SessionStopReq>"
              "</v2g:Body></v2g:V2G_Message>")
    ok = exi.from_xml("iso2", header.format(sid="00112233", cs="Terminate"))
    assert ok.Header.SessionID == bytes.fromhex("00112233")
    with pytest.raises(exi.XmlError, match="not hex binary"):
        exi.from_xml("iso2", header.format(sid="0G", cs="Terminate"))
    with pytest.raises(exi.XmlError, match="ChargingSession"):
        exi.from_xml("iso2", header.format(sid="00", cs="Stop"))


def test_fragment_unknown_name() -> None:
    with pytest.raises(exi.XmlError, match="not an element"):
        exi.from_xml("iso2", "<x:Nope xmlns:x='urn:iso:15118:2:2013:MsgBody'/>", fragment=True)


def test_to_xml_rejects_non_message() -> None:
    with pytest.raises(exi.XmlError, match="not the type of a global element"):
        exi.to_xml(object(), "apphand")


# ---------------------------------------------------------------------------------------------------
# hand-written messages covering what the vectors lack: Id attributes (qualified in ISO 15118-2,
# unqualified in DIN), simple content with attributes, lists of certificates

ISO2_NS = ('xmlns:v2g="urn:iso:15118:2:2013:MsgDef" xmlns:h="urn:iso:15118:2:2013:MsgHeader" '
           'xmlns:b="urn:iso:15118:2:2013:MsgBody" xmlns:t="urn:iso:15118:2:2013:MsgDataTypes" '
           'xmlns:ds="http://www.w3.org/2000/09/xmldsig#"')

ISO2_SIGNED_AUTHORIZATION = f"""<v2g:V2G_Message {ISO2_NS}>
  <v2g:Header>
    <h:SessionID>0011223344556677</h:SessionID>
    <ds:Signature>
      <ds:SignedInfo>
        <ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/canonical-exi/"/>
        <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"/>
        <ds:Reference URI="#ID1">
          <ds:Transforms><ds:Transform Algorithm="http://www.w3.org/TR/canonical-exi/"/></ds:Transforms>
          <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
          <ds:DigestValue>AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=</ds:DigestValue>
        </ds:Reference>
      </ds:SignedInfo>
      <ds:SignatureValue>AAEC</ds:SignatureValue>
    </ds:Signature>
  </v2g:Header>
  <v2g:Body>
    <!-- comments are ignored -->
    <b:AuthorizationReq b:Id="ID1"><b:GenChallenge>AAECAwQFBgcICQoLDA0ODw==</b:GenChallenge></b:AuthorizationReq>
  </v2g:Body>
</v2g:V2G_Message>"""

ISO2_CERTIFICATE_UPDATE = f"""<v2g:V2G_Message {ISO2_NS}>
  <v2g:Header><h:SessionID>00</h:SessionID></v2g:Header>
  <v2g:Body>
    <b:CertificateUpdateRes>
      <b:ResponseCode>OK</b:ResponseCode>
      <b:SAProvisioningCertificateChain><t:Certificate>AAEC</t:Certificate></b:SAProvisioningCertificateChain>
      <b:ContractSignatureCertChain t:Id="chain">
        <t:Certificate>AAEC</t:Certificate>
        <t:SubCertificates><t:Certificate>AwQF</t:Certificate><t:Certificate>BgcI</t:Certificate></t:SubCertificates>
      </b:ContractSignatureCertChain>
      <b:ContractSignatureEncryptedPrivateKey t:Id="key">AAECAwQF</b:ContractSignatureEncryptedPrivateKey>
      <b:DHpublickey t:Id="dh">BAUG</b:DHpublickey>
      <b:eMAID t:Id="emaid">DEABCC123456789</b:eMAID>
      <b:RetryCounter>-3</b:RetryCounter>
    </b:CertificateUpdateRes>
  </v2g:Body>
</v2g:V2G_Message>"""

DIN_CONTRACT_AUTHENTICATION = """<v2g:V2G_Message xmlns:v2g="urn:din:70121:2012:MsgDef"
    xmlns:h="urn:din:70121:2012:MsgHeader" xmlns:b="urn:din:70121:2012:MsgBody">
  <v2g:Header><h:SessionID>0011223344556677</h:SessionID></v2g:Header>
  <v2g:Body>
    <b:ContractAuthenticationReq Id="ID1"><b:GenChallenge>challenge</b:GenChallenge></b:ContractAuthenticationReq>
  </v2g:Body>
</v2g:V2G_Message>"""


def _assert_valid(proto: str, xml: str) -> None:
    schema = _schema(ROOT_SCHEMAS[proto])
    if not schema.validate(etree.fromstring(xml.encode(), etree.XMLParser(no_network=True))):
        errors = "\n".join(f"line {e.line}: {e.message}" for e in schema.error_log)
        pytest.fail(f"XML does not validate against {ROOT_SCHEMAS[proto]}:\n{errors}\n{xml}")


@pytest.mark.parametrize(
    ("proto", "xml"),
    [
        pytest.param("iso2", ISO2_SIGNED_AUTHORIZATION, id="iso2-signed-authorization"),
        pytest.param("iso2", ISO2_CERTIFICATE_UPDATE, id="iso2-certificate-update"),
        pytest.param("din", DIN_CONTRACT_AUTHENTICATION, id="din-contract-authentication"),
    ],
)
def test_handwritten_round_trip(proto: str, xml: str) -> None:
    _assert_valid(proto, xml)  # the input itself is schema-valid
    msg = exi.from_xml(proto, xml)
    out = exi.to_xml(msg, proto)
    _assert_valid(proto, out)
    assert exi.from_xml(proto, out) == msg
    assert exi.decode(proto, exi.encode(proto, msg)) == msg


def test_iso2_id_is_qualified() -> None:
    out = exi.to_xml(exi.from_xml("iso2", ISO2_SIGNED_AUTHORIZATION), "iso2")
    root = etree.fromstring(out.encode())
    req = root.find(".//{urn:iso:15118:2:2013:MsgBody}AuthorizationReq")
    assert req is not None and req.get("{urn:iso:15118:2:2013:MsgBody}Id") == "ID1"
    # an unqualified Id is not the schema's attribute
    with pytest.raises(exi.XmlError, match="unknown attribute Id"):
        exi.from_xml("iso2", ISO2_SIGNED_AUTHORIZATION.replace('b:Id="ID1"', 'Id="ID1"'))


def test_several_global_elements_need_fragment() -> None:
    """ACDP_ConnectReq and ACDP_DisconnectReq share one type: the root cannot be guessed."""
    module = exi._codec("iso20-acdp").module
    ns, _name, cls, _dec, _enc = next(e for e in module.DOCUMENT if e[1] == "ACDP_DisconnectReq")
    with pytest.raises(exi.XmlError, match="several global elements"):
        exi.to_xml(cls(), "iso20-acdp")
    xml = exi.to_xml(exi.Fragment(ns, "ACDP_DisconnectReq", cls()), "iso20-acdp")
    assert "ACDP_DisconnectReq" in xml
