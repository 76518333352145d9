"""Self-tests of the EXIficient bridge (not of our codec): it must decode/encode real
V2G EXI, report errors without dying, and keep one JVM across calls."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .exificient import ExificientError, ExificientPeer
from .exificient_setup import is_ready

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
VECTORS = next(
    (
        p
        for p in (
            REPO_ROOT.parent / "shared" / "vectors" / "exi_vectors.jsonl",
            REPO_ROOT / "shared" / "vectors" / "exi_vectors.jsonl",
        )
        if p.exists()
    ),
    None,
)

ISO2 = "urn:iso:15118:2:2013:"
CDR_HEX = "809802279213b1e4b1205dd0d1002501061e40201081444001061104e4020400022102888000"
CDR_XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<V2G_Message xmlns="{ISO2}MsgDef">
  <Header><SessionID xmlns="{ISO2}MsgHeader">9E484EC792C48177</SessionID></Header>
  <Body>
    <CurrentDemandReq xmlns="{ISO2}MsgBody" xmlns:t="{ISO2}MsgDataTypes">
      <DC_EVStatus><t:EVReady>true</t:EVReady><t:EVErrorCode>NO_ERROR</t:EVErrorCode>
        <t:EVRESSSOC>74</t:EVRESSSOC></DC_EVStatus>
      <EVTargetCurrent><t:Multiplier>-1</t:Multiplier><t:Unit>A</t:Unit><t:Value>242</t:Value></EVTargetCurrent>
      <EVMaximumVoltageLimit><t:Multiplier>-1</t:Multiplier><t:Unit>V</t:Unit><t:Value>4130</t:Value></EVMaximumVoltageLimit>
      <EVMaximumCurrentLimit><t:Multiplier>-1</t:Multiplier><t:Unit>A</t:Unit><t:Value>5000</t:Value></EVMaximumCurrentLimit>
      <ChargingComplete>false</ChargingComplete>
      <RemainingTimeToFullSoC><t:Multiplier>1</t:Multiplier><t:Unit>s</t:Unit><t:Value>0</t:Value></RemainingTimeToFullSoC>
      <EVTargetVoltage><t:Multiplier>-1</t:Multiplier><t:Unit>V</t:Unit><t:Value>4130</t:Value></EVTargetVoltage>
    </CurrentDemandReq>
  </Body>
</V2G_Message>
"""
APPHAND_HEX = "8000ebab9371d34b9b79d189a98989c1d191d191818999d26b9b3a232b30ac02100020040040"
APPHAND_XML = (
    '<supportedAppProtocolReq xmlns="urn:iso:15118:2:2010:AppProtocol">'
    '<AppProtocol xmlns=""><ProtocolNamespace>urn:iso:15118:2:2013:MsgDef</ProtocolNamespace>'
    "<VersionNumberMajor>300</VersionNumberMajor><VersionNumberMinor>128</VersionNumberMinor>"
    "<SchemaID>1</SchemaID><Priority>1</Priority></AppProtocol></supportedAppProtocolReq>"
)
CT20 = "urn:iso:std:iso:15118:-20:CommonTypes"
HEADER20 = f'<Header xmlns="{CT20}"><SessionID>0102030405060708</SessionID><TimeStamp>1700000000</TimeStamp></Header>'
ACDP_XML = (
    '<ACDP_VehiclePositioningReq xmlns="urn:iso:std:iso:15118:-20:ACDP">'
    f"{HEADER20}<EVMobilityStatus>true</EVMobilityStatus>"
    "<EVPositioningSupport>false</EVPositioningSupport></ACDP_VehiclePositioningReq>"
)
WPT_XML = (
    '<WPT_FinePositioningReq xmlns="urn:iso:std:iso:15118:-20:WPT">'
    f"{HEADER20}<EVProcessing>Ongoing</EVProcessing>"
    "<EVResultCode>EVResultSuccess</EVResultCode></WPT_FinePositioningReq>"
)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _vectors():
    if VECTORS is None:
        pytest.skip("shared/vectors/exi_vectors.jsonl not found")
    return [json.loads(line) for line in VECTORS.read_text().splitlines() if line.strip()]


def test_setup_is_idempotent(exificient):
    assert is_ready(exificient.cache_dir)
    assert exificient.jvm_start_s is not None and exificient.jvm_start_s < 30


def test_info_reports_both_option_sets(exificient):
    info = exificient.server_info()
    assert {"apphand", "din", "iso2", "iso20-common", "iso20-ac", "iso20-dc", "iso20-acdp", "iso20-wpt"} <= set(
        info["protocols"]
    )
    assert "valueMaxLength=-1" in info["factory"]["default"]
    assert "valueMaxLength=0" in info["factory"]["josev"]
    assert "BIT_PACKED" in info["factory"]["default"]
    assert info["max_heap_bytes"] <= 300 * 1024 * 1024


def test_decode_current_demand_req(exificient):
    xml = exificient.decode("iso2", bytes.fromhex(CDR_HEX))
    root = ET.fromstring(xml)
    assert root.tag == f"{{{ISO2}MsgDef}}V2G_Message"
    sid = root.find(f"{{{ISO2}MsgDef}}Header/{{{ISO2}MsgHeader}}SessionID")
    assert sid is not None and sid.text == "9E484EC792C48177"
    cdr = root.find(f"{{{ISO2}MsgDef}}Body/{{{ISO2}MsgBody}}CurrentDemandReq")
    soc = cdr.find(f"{{{ISO2}MsgBody}}DC_EVStatus/{{{ISO2}MsgDataTypes}}EVRESSSOC")
    assert soc.text == "74"


def test_encode_hand_written_xml_matches_vector(exificient):
    assert exificient.encode("iso2", CDR_XML).hex() == CDR_HEX
    assert exificient.encode("apphand", APPHAND_XML).hex() == APPHAND_HEX
    for mode in ("default", "josev"):
        assert exificient.encode("iso2", CDR_XML, mode=mode).hex() == CDR_HEX


@pytest.mark.parametrize("proto,xml", [("iso20-acdp", ACDP_XML), ("iso20-wpt", WPT_XML)])
def test_acdp_wpt_round_trip(exificient, proto, xml):
    data = exificient.encode(proto, xml)
    assert data[0] == 0x80
    back = ET.fromstring(exificient.decode(proto, data))
    assert _local(back.tag) == _local(ET.fromstring(xml).tag)
    assert exificient.encode(proto, ET.tostring(back, encoding="unicode")) == data


def test_all_vectors_decode_and_reencode_to_same_content(exificient):
    vecs = _vectors()
    identical = 0
    for v in vecs:
        data = bytes.fromhex(v["hex"])
        xml = exificient.decode(v["protocol"], data)
        again = exificient.encode(v["protocol"], xml, mode="josev")
        if again == data:
            identical += 1
        else:  # differences are encoder choices only: content must survive
            assert exificient.decode(v["protocol"], again) == xml, v["id"]
    assert identical >= 0.9 * len(vecs)


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda p: p.decode("nope", b"\x80"), "unknown proto"),
        (lambda p: p.decode("iso2", b"\x80\x98"), "EOF"),
        (lambda p: p.encode("iso2", "<V2G_Message"), "malformed XML"),
        (lambda p: p.encode("iso2", CDR_XML.replace("NO_ERROR", "NO_ERR")), "not schema-valid"),
        (
            lambda p: p.encode(
                "iso2",
                CDR_XML.replace("<t:Unit>A", "<Unit>A").replace(
                    "</t:Unit></EVTargetCurrent>", "</Unit></EVTargetCurrent>", 1
                ),
            ),
            "not schema-valid",
        ),
        (lambda p: p.encode("apphand", APPHAND_XML.replace(' xmlns=""', "")), "not schema-valid"),
        (lambda p: p.encode("iso2", CDR_XML, mode="bogus"), "mode"),
    ],
)
def test_errors_are_reported_and_peer_survives(exificient, call, msg):
    if msg == "mode":
        with pytest.raises((ExificientError, ValueError)):
            call(exificient)
    else:
        with pytest.raises(ExificientError, match=msg):
            call(exificient)
    assert exificient.encode("iso2", CDR_XML).hex() == CDR_HEX


def test_unchecked_encode_accepts_deviations(exificient):
    bad = APPHAND_XML.replace(' xmlns=""', "")  # AppProtocol wrongly in the AppProtocol ns
    data = exificient.encode("apphand", bad, check=False)
    assert data.hex() != APPHAND_HEX  # encoded via non-strict deviation productions


def test_josev_mode_cannot_decode_string_table_hits(exificient):
    vec = next((v for v in _vectors() if v["protocol"] == "iso20-common" and v["message"] == "ServiceDetailRes"), None)
    if vec is None:
        pytest.skip("no ServiceDetailRes vector")
    xml = exificient.decode("iso20-common", bytes.fromhex(vec["hex"]))
    with_hits = exificient.encode("iso20-common", xml, mode="default")
    no_hits = exificient.encode("iso20-common", xml, mode="josev")
    assert len(with_hits) < len(no_hits)
    assert exificient.decode("iso20-common", with_hits) == xml
    with pytest.raises(ExificientError):
        exificient.decode("iso20-common", with_hits, mode="josev")


def test_josev_json_api(exificient):
    js = exificient.decode_josev_json("urn:iso:15118:2:2013:MsgDef", bytes.fromhex(CDR_HEX))
    obj = json.loads(js)
    assert obj["V2G_Message"]["Header"]["SessionID"] == "9E484EC792C48177"
    assert exificient.encode_josev_json("urn:iso:15118:2:2013:MsgDef", js).hex() == CDR_HEX


def test_restart_after_server_death(exificient):
    with ExificientPeer(cache_dir=exificient.cache_dir) as peer:
        assert peer.encode("iso2", CDR_XML).hex() == CDR_HEX
        peer._proc.kill()
        peer._proc.wait()
        assert peer.encode("iso2", CDR_XML).hex() == CDR_HEX  # restarted transparently


def test_timeout_kills_and_next_call_restarts(exificient):
    with ExificientPeer(cache_dir=exificient.cache_dir, timeout=0.0005) as peer:
        with pytest.raises(ExificientError, match="no answer within"):
            peer.decode("iso2", bytes.fromhex(CDR_HEX))
        assert not peer.running
        peer.timeout = 30.0
        assert peer.encode("iso2", CDR_XML).hex() == CDR_HEX
