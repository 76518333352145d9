"""Decoding what real cars send: a value outside a length, range or enumeration facet that the EXI bits carry is
decoded and recorded as a deviation (strict=True refuses it, encoding refuses it), trailing bytes likewise, and
strings with characters XML cannot carry survive to_xml/from_xml. At session level, a car with an out-of-range
PhasesInUse charges and one with a short GenChallenge gets FAILED_ChallengeInvalid, not a closed connection."""

from __future__ import annotations

from typing import Any

import pytest

import exi
from edge.hardware import SimulatedCharger
from edge.v2g.iso2.session import Iso2Session
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType
from tests import test_iso2_features

SID = bytes.fromhex("0102030405060708")


def _bits(data: bytes) -> str:
    return "".join(f"{byte:08b}" for byte in data)


def _bytes(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def replace_bits(data: bytes, old: str, new: str) -> bytes:
    """``data`` with the one bit run ``old`` replaced by ``new`` (values the strict encoder would not write)."""
    stream = _bits(data)
    assert stream.count(old) == 1, "the bit pattern must be unique"
    return _bytes(stream.replace(old, new))


def uint_bits(value: int) -> str:
    """An EXI unsigned integer: 7-bit groups, low first, high bit = more follows."""
    out = ""
    while True:
        group, value = value & 0x7F, value >> 7
        out += f"{(0x80 if value else 0) | group:08b}"
        if not value:
            return out


def power_delivery(phases: int) -> V2G_Message:
    entry = t.ProfileEntryType(0, t.PhysicalValueType(0, "W", 11000), phases)
    body = b.BodyType(PowerDeliveryReq=b.PowerDeliveryReqType("Start", 1, t.ChargingProfileType([entry])))
    return V2G_Message(MessageHeaderType(SID), body)


def seres_power_delivery() -> bytes:
    """A -2 PowerDeliveryReq with ChargingProfileEntryMaxNumberOfPhasesInUse = 4 (schema maximum 3; its 2-bit
    field holds 4), as a production car sends it."""
    one, two = exi.encode("iso2", power_delivery(1)), exi.encode("iso2", power_delivery(2))
    differ = int.from_bytes(one, "big") ^ int.from_bytes(two, "big")  # the field's low bit
    return (int.from_bytes(one, "big") | differ | (differ << 1)).to_bytes(len(one), "big")


def test_range_deviation_is_decoded_recorded_and_refused_when_strict() -> None:
    data = seres_power_delivery()
    found: list[exi.Deviation] = []
    msg = exi.decode("iso2", data, deviations=found)
    assert msg.Body.PowerDeliveryReq.ChargingProfile.ProfileEntry[0].ChargingProfileEntryMaxNumberOfPhasesInUse == 4
    assert len(found) == 1 and found[0].value == 4 and found[0].facet == "maxInclusive 3"
    assert found[0].path.endswith("ProfileEntryType/ChargingProfileEntryMaxNumberOfPhasesInUse")
    assert found[0].path.startswith("V2G_Message/")
    with pytest.raises(exi.DecodeError, match="breaks maxInclusive 3"):
        exi.decode("iso2", data, strict=True)
    with pytest.raises(exi.EncodeError):
        exi.encode("iso2", msg)  # we never send a deviation
    assert exi.decode("iso2", data) == msg  # without a list: lenient all the same


def test_length_deviation_short_gen_challenge() -> None:
    good = exi.encode("iso2", V2G_Message(MessageHeaderType(SID), b.BodyType(
        AuthorizationReq=b.AuthorizationReqType("ID1", b"\xaa" * 16))))
    short = replace_bits(good, uint_bits(16) + "10101010" * 16, uint_bits(4) + "10101010" * 4)
    found: list[exi.Deviation] = []
    msg = exi.decode("iso2", short, deviations=found)
    assert msg.Body.AuthorizationReq.GenChallenge == b"\xaa" * 4
    assert [(d.facet, d.value) for d in found] == [("length [16, 16]", b"\xaa" * 4)]
    with pytest.raises(exi.DecodeError, match="length"):
        exi.decode("iso2", short, strict=True)
    with pytest.raises(exi.EncodeError, match="GenChallenge"):
        exi.encode("iso2", msg)


def string_bits(text: str) -> str:
    """An EXI string value as a schema-informed codec writes a literal: uint(length + 2), then each code point."""
    return uint_bits(len(text) + 2) + "".join(uint_bits(ord(c)) for c in text)


def test_short_evse_id_from_a_charger() -> None:
    """-2 evseIDType is 7..37 characters; chargers send 5 ("DEABC"): a length deviation, decoded."""
    res = b.SessionSetupResType("OK", "DEABC12", None)
    good = exi.encode("iso2", V2G_Message(MessageHeaderType(SID), b.BodyType(SessionSetupRes=res)))
    short = replace_bits(good, string_bits("DEABC12"), string_bits("DEABC"))
    found: list[exi.Deviation] = []
    msg = exi.decode("iso2", short, deviations=found)
    assert msg.Body.SessionSetupRes.EVSEID == "DEABC"
    assert [(d.facet, d.value) for d in found] == [("length [7, 37]", "DEABC")]
    assert found[0].path.endswith("EVSEID")
    with pytest.raises(exi.DecodeError):
        exi.decode("iso2", short, strict=True)


def progress_index_3() -> bytes:
    """A -2 PowerDeliveryReq whose ChargeProgress (3 values in 2 bits) carries index 3."""
    data = exi.encode("iso2", power_delivery(1))
    stop = exi.encode("iso2", V2G_Message(MessageHeaderType(SID), b.BodyType(
        PowerDeliveryReq=b.PowerDeliveryReqType("Stop", 1, t.ChargingProfileType([t.ProfileEntryType(
            0, t.PhysicalValueType(0, "W", 11000), 1)])))))
    renegotiate = exi.encode("iso2", V2G_Message(MessageHeaderType(SID), b.BodyType(
        PowerDeliveryReq=b.PowerDeliveryReqType("Renegotiate", 1, t.ChargingProfileType([t.ProfileEntryType(
            0, t.PhysicalValueType(0, "W", 11000), 1)])))))
    # Start = 0, Stop = 1, Renegotiate = 2: or the bits of Stop and Renegotiate into Start for index 3
    x = int.from_bytes(data, "big") | (int.from_bytes(stop, "big") ^ int.from_bytes(data, "big")) | \
        (int.from_bytes(renegotiate, "big") ^ int.from_bytes(data, "big"))
    return x.to_bytes(len(data), "big")


def test_enumeration_index_past_the_values() -> None:
    """-2 chargeProgressType has 3 values in 2 bits: index 3 decodes as an UnknownEnumValue."""
    bad = progress_index_3()
    found: list[exi.Deviation] = []
    msg = exi.decode("iso2", bad, deviations=found)
    progress = msg.Body.PowerDeliveryReq.ChargeProgress
    assert isinstance(progress, exi.UnknownEnumValue) and int(progress) == 3
    assert progress not in ("Start", "Stop", "Renegotiate")
    assert found[0].facet == "enumeration (3 values)" and found[0].value == 3
    with pytest.raises(exi.DecodeError, match="enumeration index 3"):
        exi.decode("iso2", bad, strict=True)
    with pytest.raises(exi.EncodeError):
        exi.encode("iso2", msg)
    assert "(enumeration index 3)" in exi.to_xml(msg, "iso2")  # a trace can still show it


def test_trailing_bytes_are_recorded() -> None:
    data = exi.encode("iso2", power_delivery(1))
    found: list[exi.Deviation] = []
    assert exi.decode("iso2", data + b"\x00\x07", deviations=found) == power_delivery(1)
    assert found[0].facet.startswith("trailing bytes") and found[0].value == b"\x00\x07"
    with pytest.raises(exi.DecodeError, match="after the end of the document"):
        exi.decode("iso2", data + b"\x00\x07", strict=True)
    assert exi.decode("iso2", data + b"\x00", strict=True) == power_delivery(1)  # zero bytes: accepted as before


def test_nul_characters_survive_to_xml_and_back() -> None:
    """Strings with characters XML 1.0 cannot carry (a BMW iX sends NULs): escaped, reversibly."""
    for text in ("DE*ABC\x00\x00\x00", "back\\slash\\x41", "xx\x1byyy\ufffe"):
        res = b.SessionSetupResType("OK", text, None)
        msg = V2G_Message(MessageHeaderType(SID), b.BodyType(SessionSetupRes=res))
        data = exi.encode("iso2", msg)
        decoded = exi.decode("iso2", data, strict=True)
        assert decoded.Body.SessionSetupRes.EVSEID == text
        xml = exi.to_xml(decoded, "iso2")
        assert "\x00" not in xml
        assert exi.from_xml("iso2", xml) == decoded


# --- at session level ---------------------------------------------------------------------------------------

class RawCar(test_iso2_features.Car):
    """The features test's -2 car, able to send bytes its strict encoder would not write."""

    def send_raw(self, data: bytes, response: str, dt: float = 0.1) -> Any:
        self.now += dt
        _, out, self.ended = self.session.handle(0x8001, data, self.now)
        assert out is not None, "the session closed the connection"
        msg = exi.decode("iso2", out)
        return getattr(msg.Body, response)


def _with_session_id(data: bytes, sid: bytes) -> bytes:
    return replace_bits(data, uint_bits(8) + _bits(SID), uint_bits(8) + _bits(sid))


def test_car_with_four_phases_in_use_charges(caplog: pytest.LogCaptureFixture) -> None:
    hw = test_iso2_features.ac_charger()
    car = RawCar(Iso2Session(hw))
    car.setup()
    assert car.send("AuthorizationReq", b.AuthorizationReqType()).EVSEProcessing == "Finished"
    assert car.ac_parameters().ResponseCode == "OK"
    caplog.clear()
    res = car.send_raw(_with_session_id(seres_power_delivery(), car.sid), "PowerDeliveryRes")
    assert res.ResponseCode == "OK" and not car.ended and hw.closed  # the contactors closed: it charges
    assert "outside the schema (maxInclusive 3, value 4); accepted" in caplog.text
    assert car.session.pending_deviations  # for the trace
    assert car.send("ChargingStatusReq", b.ChargingStatusReqType(), dt=1.0).ResponseCode == "OK"
    assert hw.closed


def test_car_with_a_four_byte_gen_challenge_gets_challenge_invalid() -> None:
    from edge.pki.algorithms import KeyAlgorithm
    from tests.test_pnc_matrix import chain as contract_chain
    from tests.test_pnc_matrix import der, pnc_for

    good = contract_chain(KeyAlgorithm.P256_SHA256)
    pnc = pnc_for([good.root.cert], None)
    hw = SimulatedCharger()
    car = RawCar(Iso2Session(hw, pnc=pnc))
    car.setup("Contract")
    emaid = good.leaf.cert.subject.rfc4514_string().split("CN=")[1]
    res = car.send("PaymentDetailsReq", b.PaymentDetailsReqType(emaid, t.CertificateChainType(
        None, der(good.leaf.cert), t.SubCertificatesType([der(c) for c in good.sub_cas]))))
    assert res.ResponseCode == "OK"
    challenge = res.GenChallenge
    request = exi.encode("iso2", V2G_Message(MessageHeaderType(car.sid), b.BodyType(
        AuthorizationReq=b.AuthorizationReqType("ID1", challenge))))
    short = replace_bits(request, uint_bits(16) + _bits(challenge), uint_bits(4) + _bits(challenge[:4]))
    res = car.send_raw(short, "AuthorizationRes")
    assert res.ResponseCode == "FAILED_ChallengeInvalid" and car.ended and hw.target_i == 0


def test_car_with_an_unknown_enumeration_value_is_refused_without_power() -> None:
    """A value outside an enumeration reaches no handler (none can interpret it): FAILED, session over."""
    hw = test_iso2_features.ac_charger()
    car = RawCar(Iso2Session(hw))
    car.setup()
    assert car.send("AuthorizationReq", b.AuthorizationReqType()).EVSEProcessing == "Finished"
    assert car.ac_parameters().ResponseCode == "OK"
    res = car.send_raw(_with_session_id(progress_index_3(), car.sid), "PowerDeliveryRes")
    assert res.ResponseCode == "FAILED" and car.ended and not hw.closed and hw.target_i == 0
    assert any("enumeration index 3" in note for note in car.session.notes)


@pytest.mark.parametrize(("value", "breaks"), [
    (16383, False), (16384, False), (32767, False), (-16384, False), (-16385, False), (-32768, False),
    (32768, True), (-32769, True), (40000, True), (2**21 - 1, True), (2**21 + 5, True), (-(2**28), True)])
def test_short_range_is_checked_on_every_length_of_the_value(value: int, breaks: bool) -> None:
    """A PhysicalValue's Value (short): the decoder reads its magnitude on a different path per length (one
    octet, two by table lookup, three inline, four or more in the reader); the range is checked on each, on
    both sides of the bounds, and the encoder refuses what breaks it."""
    data = replace_bits(exi.encode("iso2", power_delivery(1)), "0" + uint_bits(11000),
                        ("1" + uint_bits(-value - 1)) if value < 0 else ("0" + uint_bits(value)))
    found: list[exi.Deviation] = []
    msg = exi.decode("iso2", data, deviations=found)
    assert msg.Body.PowerDeliveryReq.ChargingProfile.ProfileEntry[0].ChargingProfileEntryMaxPower.Value == value
    if not breaks:
        assert found == []
        assert exi.encode("iso2", msg) == data
        return
    assert [(d.facet, d.value) for d in found] == [("range [-32768, 32767]", value)]
    assert found[0].path.endswith("PhysicalValueType/Value")  # deviation paths name the type, then the field
    with pytest.raises(exi.DecodeError, match=r"breaks range \[-32768, 32767\]"):
        exi.decode("iso2", data, strict=True)
    with pytest.raises(exi.EncodeError, match="outside"):
        exi.encode("iso2", msg)


@pytest.mark.parametrize(("start", "breaks"), [(2**21 - 1, False), (2**21, False), (16777214, False),
                                               (16777215, True), (2**30, True)])
def test_unsigned_range_is_checked_past_the_octets_that_always_fit(start: int, breaks: bool) -> None:
    """RelativeTimeInterval.start (0..16777214): three octets inline (all fit), four in the reader (checked)."""
    entry = t.PMaxScheduleEntryType(RelativeTimeInterval=t.RelativeTimeIntervalType(start=77777),
                                    PMax=t.PhysicalValueType(0, "W", 11000))
    tuple_ = t.SAScheduleTupleType(1, t.PMaxScheduleType([entry]))
    body = b.BodyType(ChargeParameterDiscoveryRes=b.ChargeParameterDiscoveryResType(
        "OK", "Finished", SAScheduleList=t.SAScheduleListType([tuple_]),
        DC_EVSEChargeParameter=t.DC_EVSEChargeParameterType(
            t.DC_EVSEStatusType(0, "None", EVSEStatusCode="EVSE_Ready"),
            *(t.PhysicalValueType(0, u, 100) for u in ("A", "W", "V", "A", "V")),
            EVSEPeakCurrentRipple=t.PhysicalValueType(0, "A", 1))))
    data = replace_bits(exi.encode("iso2", V2G_Message(MessageHeaderType(SID), body)), uint_bits(77777),
                        uint_bits(start))
    found: list[exi.Deviation] = []
    msg = exi.decode("iso2", data, deviations=found)
    decoded = msg.Body.ChargeParameterDiscoveryRes.SAScheduleList.SAScheduleTuple[0]
    assert decoded.PMaxSchedule.PMaxScheduleEntry[0].RelativeTimeInterval.start == start
    if breaks:
        assert [(d.facet, d.value) for d in found] == [("range [0, 16777214]", start)]
        with pytest.raises(exi.DecodeError):
            exi.decode("iso2", data, strict=True)
    else:
        assert found == [] and exi.decode("iso2", data, strict=True) == msg


def _max_power_bits(multiplier_raw: int, unit_raw: int) -> str:
    """The PhysicalValue head of ChargingProfileEntryMaxPower: Multiplier (3 bits, +-3 offset), then EE, SE(Unit)
    and CH (one bit each), Unit (3 bits), then EE, SE(Value) and CH."""
    return f"{multiplier_raw:03b}000{unit_raw:03b}000"


@pytest.mark.parametrize("multiplier", range(-3, 4))
@pytest.mark.parametrize("unit", list(t.unitSymbolType))
def test_multiplier_and_unit_decode_by_one_lookup_for_every_valid_pair(multiplier: int, unit: str) -> None:
    """Adjacent small fields (a PhysicalValue's Multiplier and Unit) decode by one table lookup: every valid
    pair comes back as encoded, with no deviation."""
    entry = t.ProfileEntryType(0, t.PhysicalValueType(multiplier, unit, 11000), 1)
    msg = V2G_Message(MessageHeaderType(SID), b.BodyType(PowerDeliveryReq=b.PowerDeliveryReqType(
        "Start", 1, t.ChargingProfileType([entry]))))
    found: list[exi.Deviation] = []
    assert exi.decode("iso2", exi.encode("iso2", msg), deviations=found, strict=False) == msg
    assert found == []


@pytest.mark.parametrize(("multiplier_raw", "unit_raw", "facets"), [
    (7, 5, ["maxInclusive 3"]), (3, 7, ["enumeration (7 values)"]),
    (7, 7, ["maxInclusive 3", "enumeration (7 values)"])])
def test_multiplier_or_unit_past_the_facets_leave_the_lookup_and_are_recorded(
        multiplier_raw: int, unit_raw: int, facets: list[str]) -> None:
    """Where the lookup table has no entry (a Multiplier of 4, a Unit index past the seven units) the fields'
    own code decodes them: lenient records each deviation, strict refuses."""
    data = exi.encode("iso2", power_delivery(1))
    data = replace_bits(data, _max_power_bits(3, 5) + "0" + uint_bits(11000),  # 0 W
                        _max_power_bits(multiplier_raw, unit_raw) + "0" + uint_bits(11000))
    found: list[exi.Deviation] = []
    pv = exi.decode("iso2", data, deviations=found).Body.PowerDeliveryReq.ChargingProfile.ProfileEntry[0]
    pv = pv.ChargingProfileEntryMaxPower
    assert [d.facet for d in found] == facets
    assert pv.Multiplier == multiplier_raw - 3 and pv.Value == 11000
    assert pv.Unit == (t.unitSymbolType.W if unit_raw == 5 else exi.UnknownEnumValue(7))
    with pytest.raises(exi.DecodeError, match="breaks maxInclusive 3" if multiplier_raw == 7 else "enumeration index"):
        exi.decode("iso2", data, strict=True)


@pytest.mark.parametrize("flip", ["100", "010"])  # the EE of Value, the EE of ChargingProfileEntryMaxPower
def test_a_set_bit_among_the_end_codes_read_with_the_next_event_code_is_refused(flip: str) -> None:
    """The end-element codes after a value are read together with the next state's event code (one read of the
    window): a set bit among them is still a second-level event this codec refuses, whatever the mode."""
    data = exi.encode("iso2", power_delivery(1))
    tail = uint_bits(11000) + "000"
    assert _bits(data).count(tail) == 1
    bad = replace_bits(data, tail, uint_bits(11000) + flip)
    with pytest.raises(exi.DecodeError):
        exi.decode("iso2", bad)
    with pytest.raises(exi.DecodeError):
        exi.decode("iso2", bad, strict=True)
