"""API edges: simple-typed roots, error paths through inlined types, large messages."""

from __future__ import annotations

import pytest

import exi
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq
from exi.model.iso2_msgdatatypes import PhysicalValueType


def test_simple_typed_root_element_round_trips() -> None:
    data = exi.encode("iso2", b"abc", element="DigestValue")
    assert exi.decode("iso2", data) == b"abc"
    with pytest.raises(exi.EncodeError, match="DigestValue"):
        exi.encode("iso2", 5, element="DigestValue")


def test_error_path_names_elements_of_inlined_types() -> None:
    bad = supportedAppProtocolReq([AppProtocolType("x" * 200, 1, 0, 1, 1)])
    with pytest.raises(exi.EncodeError) as err:
        exi.encode("apphand", bad)
    assert err.value.path == ["supportedAppProtocolReq", "AppProtocol", "ProtocolNamespace"]
    assert "supportedAppProtocolReq/AppProtocol/ProtocolNamespace" in str(err.value)


def test_out_of_range_value_in_an_inlined_type_is_an_encode_error() -> None:
    import tests.vectors as v

    frame = next(x for x in v.load_vectors() if x["protocol"] == "iso2" and x["message"] == "CurrentDemandReq")
    msg = exi.decode("iso2", bytes.fromhex(frame["hex"]))
    msg.Body.CurrentDemandReq.EVTargetCurrent = PhysicalValueType(7, "A", 1)
    with pytest.raises(exi.EncodeError, match=r"EVTargetCurrent/Multiplier"):
        exi.encode("iso2", msg)


def test_certificate_sized_binary_crosses_reader_windows() -> None:
    """Binary values far larger than the reader's window decode intact."""
    blob = bytes(range(256)) * 40  # 10 kB
    data = exi.encode("iso2", blob, element="DigestValue")
    assert exi.decode("iso2", data) == blob
    with pytest.raises(exi.DecodeError, match=r"truncated|exceeds"):
        exi.decode("iso2", data[:5000])


def _iso2_message(**body: object) -> object:
    from exi.model import iso2_msgbody, iso2_msgdef, iso2_msgheader

    return iso2_msgdef.V2G_Message(iso2_msgheader.MessageHeaderType(SessionID=b"\x01" * 8),
                                   iso2_msgbody.BodyType(**body))


def test_a_body_with_two_messages_is_refused_by_the_choice_encoder() -> None:
    from exi.model import iso2_msgbody

    stop = iso2_msgbody.SessionStopReqType(ChargingSession="Terminate")
    welding = iso2_msgbody.WeldingDetectionReqType(DC_EVStatus=None)
    with pytest.raises(exi.EncodeError, match="content the schema does not allow") as err:
        exi.encode("iso2", _iso2_message(SessionStopReq=stop, AuthorizationReq=iso2_msgbody.AuthorizationReqType()))
    assert err.value.path[:2] == ["V2G_Message", "Body"]
    with pytest.raises(exi.EncodeError, match="content the schema does not allow"):
        exi.encode("iso2", _iso2_message(SessionStopReq=stop, WeldingDetectionReq=welding))  # the later one too
    empty = exi.decode("iso2", exi.encode("iso2", _iso2_message())).Body  # the schema allows an empty Body
    assert empty == iso2_msgbody.BodyType()
    data = exi.encode("iso2", _iso2_message(SessionStopReq=stop))  # the last alternatives still encode
    assert exi.decode("iso2", data).Body.SessionStopReq == stop


def test_body_alternatives_round_trip_through_the_choice_coders() -> None:
    """Messages of the -2 Body choice, each encoded alone and decoded: the chosen field comes back, every other
    field is None (the decoder sets them in one statement)."""
    import dataclasses

    from exi.model import iso2_msgbody

    names = [f.name for f in dataclasses.fields(iso2_msgbody.BodyType)]
    samples = {"AuthorizationReq": iso2_msgbody.AuthorizationReqType(),  # the first alternative
               "SessionSetupReq": iso2_msgbody.SessionSetupReqType(EVCCID=b"\x00\x01\x02\x03\x04\x05"),
               "SessionStopReq": iso2_msgbody.SessionStopReqType(ChargingSession="Pause")}
    for name, value in samples.items():
        decoded = exi.decode("iso2", exi.encode("iso2", _iso2_message(**{name: value}))).Body
        assert getattr(decoded, name) == value
        assert all(getattr(decoded, other) is None for other in names if other != name)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 16383, 16384, 2**21 - 1, 2**21, 2**35 + 5])
@pytest.mark.parametrize("tail", [b"", b"\x00", b"\xff", b"\xff\xff\xff"])
def test_reader_uint_at_and_before_the_window_end(value: int, tail: bytes) -> None:
    """Reader.uint (what generated code calls for long values and near a window's end) reads one or two
    octets from a 16-bit piece and longer ones octet by octet; the bytes after the value never matter."""
    from exi.runtime import Reader, Writer

    w = Writer()
    w.uint(value)
    data = w.getvalue() + tail
    r = Reader(data)
    assert r.uint() == value
    assert r.pos == 8 * (len(data) - len(tail))


def test_two_octet_unsigned_tables_agree_with_the_reader_and_writer() -> None:
    """The lookup tables generated code uses for unsigned integers give what the generic Writer.uint writes and
    Reader.uint reads: every two-octet prefix decodes to the value and length Reader.uint finds (one octet, two,
    or three with the third octet's 7 bits above the table's 14), and every two-octet value encodes as Writer.uint
    writes it."""
    from exi.runtime import UINT2_ENCODED, UINT_OCTETS2, Reader, Writer

    for prefix in range(1 << 16):
        value, bits = UINT_OCTETS2[prefix]
        if bits:
            r = Reader(prefix.to_bytes(2, "big") + b"\x00", 0)
            assert (value, bits) == (r.uint(), r.pos)
        else:
            for third in (0, 1, 64, 127):
                r = Reader(prefix.to_bytes(2, "big") + bytes([third]), 0)
                assert (value | third << 14, 24) == (r.uint(), r.pos)
    for m in range(128, 1 << 14):
        w = Writer()
        w.v = w.n = 0
        w.uint(m)
        assert (w.n, w.v) == (16, UINT2_ENCODED[m])
    for m in (1 << 14, 77777, (1 << 21) - 1):  # three octets: the encoder's table holds the low two groups
        w = Writer()
        w.v = w.n = 0
        w.uint(m)
        assert w.v >> 8 == UINT2_ENCODED[m & 16383] | 128
