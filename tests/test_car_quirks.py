"""Car quirk profiles matched when a car connects (MAC OUI, offered namespace), the MAC read from an EUI-64
link-local address, and a -20 BPT car whose profile makes the charger read its discharge limits as negative."""

from __future__ import annotations

import logging

import pytest

from edge.v2g.power import SignConvention
from edge.v2g.quirks import CarQuirkProfile, CarQuirks, mac_from_link_local, peer_host

NEGATIVE = SignConvention(negative_discharge_limits=True)
ISO20_DC = "urn:iso:std:iso:15118:-20:DC"


@pytest.mark.parametrize(("address", "mac"), [
    ("fe80::11:22ff:fe33:4455", "02:11:22:33:44:55"),  # the U/L bit flipped back
    ("fe80::0211:22ff:fe33:4455%secc0", "00:11:22:33:44:55"),
    ("fe80::1", None),  # not an EUI-64 identifier
    ("fe80::a1b2:c3d4:e5f6:789", None),  # a privacy address
    ("2001:db8::211:22ff:fe33:4455", None),  # not link-local
    ("not an address", None),
])
def test_the_mac_behind_an_eui64_link_local_address(address: str, mac: str | None) -> None:
    found = mac_from_link_local(address)
    assert (found.hex(":") if found is not None else None) == mac


def test_peer_host_strips_brackets_and_port() -> None:
    assert peer_host("[fe80::1%secc0]:50123") == "fe80::1%secc0"
    assert peer_host("[::1]:1") == "::1" and peer_host(None) == "" and peer_host("10.0.0.1:80") == "10.0.0.1"


def test_profiles_match_by_oui_or_offered_namespace_first_match_wins() -> None:
    quirks = CarQuirks((CarQuirkProfile("by-oui", "mac_oui", "00:11:22", NEGATIVE),
                        CarQuirkProfile("by-namespace", "sap_namespace", ISO20_DC,
                                        SignConvention(inverted_targets=True))))
    mac = bytes.fromhex("001122334455")
    assert quirks.at_connection(mac, [ISO20_DC]).name == "by-oui"
    assert quirks.at_connection(bytes.fromhex("0a1122334455"), [ISO20_DC]).name == "by-namespace"
    assert quirks.at_connection(None, ["urn:din:70121:2012:MsgDef"]) is None
    assert quirks.at_connection(bytes.fromhex("001122"), []) is None  # three bytes are not a MAC
    lower = CarQuirks((CarQuirkProfile("lower", "mac_oui", "aa:bb:cc", NEGATIVE),))
    assert lower.at_connection(bytes.fromhex("aabbcc000000"), []) is not None  # OUI case does not matter


def _connect(quirks: CarQuirks, peer: str, car_mac: bytes | None = None):
    from edge.ev.iso20 import Iso20Car
    from edge.hardware import bidirectional_charger
    from edge.v2g.charger import ChargerConnection, EvseConfig
    from edge.v2g.v2gtp import PayloadType, V2gtpMessage

    conn = ChargerConnection(bidirectional_charger(), config=EvseConfig(quirks=quirks, car_mac=car_mac))
    conn.set_peer(peer)
    car = Iso20Car(service="dc_bpt", control="dynamic")
    response = conn.handle(V2gtpMessage(PayloadType.EXI, car.start()), 0.0)
    assert response is not None and conn.session is not None
    return conn.session


def test_a_connection_matched_by_namespace_or_oui_gets_the_profiles_signs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    by_namespace = CarQuirks((CarQuirkProfile("bpt-cars", "sap_namespace", ISO20_DC, NEGATIVE),))
    session = _connect(by_namespace, "[fe80::1%secc0]:50000")
    assert session.signs == NEGATIVE
    assert any("quirk profile 'bpt-cars' (sap_namespace urn:iso:std:iso:15118:-20:DC)" in n for n in session.notes)
    assert "quirk profile 'bpt-cars' applied (matched by sap_namespace" in caplog.text
    by_oui = CarQuirks((CarQuirkProfile("oui-cars", "mac_oui", "00:11:22", NEGATIVE),))
    assert _connect(by_oui, "[fe80::211:22ff:fe33:4455%secc0]:50000").signs == NEGATIVE  # its EUI-64 address
    assert _connect(by_oui, "[fe80::1%secc0]:50000", car_mac=bytes.fromhex("001122aabbcc")).signs == NEGATIVE  # SLAC
    stranger = _connect(by_oui, "[fe80::1%secc0]:50000", car_mac=bytes.fromhex("0a1122aabbcc"))
    assert stranger.signs == SignConvention() and not any("quirk" in n for n in stranger.notes)
