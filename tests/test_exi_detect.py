"""`edge exi decode` finds the protocol itself (V2GTP payload type, then the documents that round-trip), a wrong
`--proto` says what the bytes look like, and hex text is read leniently with plain errors."""

from __future__ import annotations

import io
import sys

import pytest

from edge.cli import main
from edge.exi_detect import HexError, check_payload_type, detect, parse_hex, split_v2gtp
from tests.vectors import load_vectors

VECTORS = [v for v in load_vectors() if not v["protocol"].endswith("fragment")]
PAYLOAD_TYPE = {"apphand": 0x8001, "din": 0x8001, "iso2": 0x8001, "iso20-common": 0x8002, "iso20-ac": 0x8003,
                "iso20-dc": 0x8004}


def framed(payload_type: int, payload: bytes) -> bytes:
    return bytes([1, 0xFE]) + payload_type.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload


def run(argv: list[str], capsys, stdin: str = "") -> tuple[int, str, str]:
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        rc = main(argv)
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_vector_is_recognised_without_a_header_and_with_one() -> None:
    wrong = [(v["id"], v["protocol"], detect(bytes.fromhex(v["hex"]))[:2]) for v in VECTORS
             if detect(bytes.fromhex(v["hex"]))[:1] != [v["protocol"]]]
    assert wrong == []
    for v in VECTORS:
        payload_type, payload = split_v2gtp(framed(PAYLOAD_TYPE[v["protocol"]], bytes.fromhex(v["hex"])))
        assert detect(payload, payload_type)[0] == v["protocol"], v["id"]


@pytest.mark.parametrize(("text", "says"), [
    ("80 9a 02", None), ("0x809a02", None), ("0x80 0x9a 0x02", None), ("809A02\n", None),
    ("809a0", "odd number of hex digits (5)"), ("80zz", "not hex: 'z' at digit 3"), ("  ", "no hex digits"),
])
def test_hex_text(text: str, says: str | None) -> None:
    if says is None:
        assert parse_hex(text) == b"\x80\x9a\x02"
    else:
        with pytest.raises(HexError, match=says.replace("(", r"\(").replace(")", r"\)")):
            parse_hex(text)


def test_decode_without_proto_says_what_it_found(capsys) -> None:
    din = next(v for v in VECTORS if v["protocol"] == "din" and v["message"] == "CurrentDemandReq")
    rc, out, err = run(["exi", "decode", din["hex"]], capsys)
    assert rc == 0 and "CurrentDemandReq" in out and "decoded as din" in err
    dc = next(v for v in VECTORS if v["protocol"] == "iso20-dc")
    rc, out, err = run(["exi", "decode", framed(0x8004, bytes.fromhex(dc["hex"])).hex()], capsys)
    assert rc == 0 and "decoded as iso20-dc" in err
    rc, out, _ = run(["exi", "decode", "--batch"], capsys, stdin=din["hex"] + "\n" + dc["hex"] + "\n")
    assert [line.split('"proto": ')[1].strip('"}') for line in out.splitlines()] == ["din", "iso20-dc"]


def test_a_wrong_proto_names_the_protocol_the_bytes_are(capsys) -> None:
    din = next(v for v in VECTORS if v["protocol"] == "din" and v["message"] == "CurrentDemandReq")
    rc, _, err = run(["exi", "decode", "--proto", "iso20-dc", din["hex"]], capsys)
    assert rc == 1 and "they decode as din: --proto din" in err and "Traceback" not in err
    rc, _, err = run(["exi", "decode", "--proto", "din", framed(0x8004, bytes.fromhex(din["hex"])).hex()], capsys)
    assert rc == 1 and "V2GTP payload type 0x8004 carries iso20-dc messages, not din" in err
    with pytest.raises(ValueError, match="0x8001 carries apphand, iso2, din messages, not iso20-ac"):
        check_payload_type("iso20-ac", 0x8001)
    rc, _, err = run(["exi", "decode", "809a0"], capsys)
    assert rc == 1 and "odd number of hex digits" in err
    rc, _, err = run(["exi", "encode"], capsys, stdin="<x/>")
    assert rc == 2 and "--proto is required" in err


def test_slac_roles_have_their_own_help_and_counts_are_whole_numbers(capsys) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["slac", "evse", "--help"])
    assert ended.value.code == 0
    evse_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["slac", "ev", "--help"])
    ev_help = capsys.readouterr().out
    assert "--atten-offset" in evse_help and "--atten-offset" not in ev_help and "--timer" in ev_help
    with pytest.raises(SystemExit) as ended:
        main(["slac", "evse", "--iface", "lo", "--timer", "C_EV_match_MNBC=2.5"])
    assert ended.value.code == 2 and "C_EV_match_MNBC is a count: a whole number, not 2.5" in capsys.readouterr().err
