"""V2GTP framing, SDP and supportedAppProtocol negotiation (sans-IO cores)."""

from __future__ import annotations

import ipaddress
import random

import pytest

import exi
from edge.v2g import sap, sdp
from edge.v2g.v2gtp import PayloadType, V2gtpDecoder, V2gtpError, frame, parse_datagram
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq
from tests.vectors import load_vectors


def test_decoder_reassembles_split_and_joined_messages() -> None:
    msgs = [frame(PayloadType.EXI, bytes([i]) * (i * 37)) for i in range(1, 6)]
    stream = b"".join(msgs)
    rng = random.Random(1)
    dec = V2gtpDecoder()
    out = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 50)
        out += dec.feed(stream[pos:pos + step])
        pos += step
    assert [m.payload for m in out] == [bytes([i]) * (i * 37) for i in range(1, 6)] and dec.pending == 0


@pytest.mark.parametrize(("header", "why"), [
    (bytes([0x02, 0xFD, 0x80, 0x01, 0, 0, 0, 1]), "version"),
    (bytes([0x01, 0xFF, 0x80, 0x01, 0, 0, 0, 1]), "version"),
    (bytes([0x01, 0xFE, 0x12, 0x34, 0, 0, 0, 1]), "payload type"),
    (bytes([0x01, 0xFE, 0x80, 0x01, 0x7F, 0xFF, 0xFF, 0xFF]), "exceeds"),
])
def test_bad_headers_are_refused_before_buffering(header: bytes, why: str) -> None:
    with pytest.raises(V2gtpError, match=why):
        V2gtpDecoder().feed(header)


def test_sdp_answers_what_the_car_asked_for() -> None:
    server = sdp.SdpServer("fe80::1%eth1", tcp_port=61000, tls_port=64000)
    plain = sdp.SdpResponse.decode(server.handle(sdp.SdpRequest(sdp.SECURITY_NONE, 0).encode()))
    assert (plain.port, plain.security) == (61000, sdp.SECURITY_NONE)
    assert ipaddress.IPv6Address(plain.address) == ipaddress.IPv6Address("fe80::1")
    tls = sdp.SdpResponse.decode(server.handle(sdp.SdpRequest(sdp.SECURITY_TLS, 0).encode()))
    assert (tls.port, tls.security) == (64000, sdp.SECURITY_TLS)
    only_tls = sdp.SdpServer("fe80::1", tcp_port=None, tls_port=64000)
    assert sdp.SdpResponse.decode(only_tls.handle(sdp.SdpRequest(sdp.SECURITY_NONE, 0).encode())).port == 64000
    # Josev's request as seen on the wire, answered with 20 payload bytes
    answer = server.handle(bytes.fromhex("01fe900000000002" "1000"))
    assert len(answer) == 28 and parse_datagram(answer).payload_type == PayloadType.SDP_RESPONSE


@pytest.mark.parametrize("bad", [b"", b"\x01\xfe\x90\x00\x00\x00\x00\x02\x10", bytes.fromhex("01fe9000000000021001"),
                                 bytes.fromhex("01fe9000000000022000"), bytes.fromhex("01fe8001000000021000"),
                                 bytes.fromhex("01fe900000000003100000")])
def test_sdp_stays_silent_on_malformed_requests(bad: bytes) -> None:
    assert sdp.SdpServer("fe80::1", tcp_port=61000).handle(bad) is None


def _offer(*entries: tuple[str, int, int, int, int]) -> supportedAppProtocolReq:
    return supportedAppProtocolReq([AppProtocolType(*e) for e in entries])


def test_negotiation_picks_the_cars_priority_among_enabled() -> None:
    req = _offer(("urn:tesla:din:2018:MsgDef", 2, 0, 2, 1), ("urn:din:70121:2012:MsgDef", 2, 0, 1, 2))
    n = sap.negotiate(req, [sap.DIN, sap.ISO2])
    assert n.protocol is sap.DIN and n.response.SchemaID == 1
    assert n.response.ResponseCode == "OK_SuccessfulNegotiation"
    both = _offer(("urn:din:70121:2012:MsgDef", 2, 0, 1, 2), ("urn:iso:15118:2:2013:MsgDef", 2, 0, 7, 1))
    assert sap.negotiate(both, [sap.DIN, sap.ISO2]).protocol is sap.ISO2
    assert sap.negotiate(both, [sap.DIN]).response.SchemaID == 1
    minor = sap.negotiate(_offer(("urn:iso:15118:2:2013:MsgDef", 2, 1, 3, 1)), [sap.ISO2])
    assert minor.response.ResponseCode == "OK_SuccessfulNegotiationWithMinorDeviation"
    none = sap.negotiate(_offer(("urn:iso:15118:2:2010:MsgDef", 1, 0, 1, 1)), [sap.DIN, sap.ISO2])
    assert none.protocol is None and none.response.ResponseCode == "Failed_NoNegotiation"
    assert none.response.SchemaID is None
    # the response encodes
    exi.decode("apphand", exi.encode("apphand", none.response))


def test_negotiation_on_real_offers() -> None:
    chosen = {}
    for v in load_vectors():
        if v["protocol"] == "apphand" and v["message"] == "supportedAppProtocolReq":
            req = exi.decode("apphand", bytes.fromhex(v["hex"]))
            n = sap.negotiate(req, [sap.DIN, sap.ISO2])
            exi.encode("apphand", n.response)
            chosen[v["id"]] = n.protocol.name if n.protocol else None
    assert "iso2" in chosen.values() and "din" in chosen.values()
