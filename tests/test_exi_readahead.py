"""The generated decoders read an event code together with the fixed bits after it and give back what the path
taken does not use (exi.compile: read-ahead). What could go wrong: a branch that takes the wrong bits of the
read-ahead, a read-ahead past the input's end at a counted loop's last item, a truncated document decoded from the
zero bits that stand in past the end. Each message here is built to take every branch both ways; the encoder
(unchanged by the read-ahead, checked against EXIficient in tests/interop) writes it."""

from __future__ import annotations

import pytest

import exi
from exi.model import apphand as ah
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType
from exi.runtime import DecodeError, Reader
from tests.vectors import load_vectors, proto_of


def _pv(multiplier: int, unit: str, value: int) -> t.PhysicalValueType:
    return t.PhysicalValueType(Multiplier=multiplier, Unit=unit, Value=value)


def _entry(start: int, duration: int | None, pmax: int) -> t.PMaxScheduleEntryType:
    return t.PMaxScheduleEntryType(RelativeTimeInterval=t.RelativeTimeIntervalType(start=start, duration=duration),
                                   PMax=_pv(3, "W", pmax))


def _cpd_res(entries: list[t.PMaxScheduleEntryType], tariff: t.SalesTariffType | None) -> V2G_Message:
    tuple_ = t.SAScheduleTupleType(SAScheduleTupleID=1, PMaxSchedule=t.PMaxScheduleType(PMaxScheduleEntry=entries),
                                   SalesTariff=tariff)
    body = b.ChargeParameterDiscoveryResType(
        ResponseCode="OK", EVSEProcessing="Finished",
        SAScheduleList=t.SAScheduleListType(SAScheduleTuple=[tuple_]),
        DC_EVSEChargeParameter=t.DC_EVSEChargeParameterType(
            DC_EVSEStatus=t.DC_EVSEStatusType(EVSENotification="None", NotificationMaxDelay=0,
                                              EVSEStatusCode="EVSE_Ready"),
            EVSEMaximumCurrentLimit=_pv(0, "A", 400), EVSEMaximumPowerLimit=_pv(3, "W", 150),
            EVSEMaximumVoltageLimit=_pv(0, "V", 920), EVSEMinimumCurrentLimit=_pv(0, "A", 0),
            EVSEMinimumVoltageLimit=_pv(0, "V", 150), EVSEPeakCurrentRipple=_pv(0, "A", 1)))
    return V2G_Message(Header=MessageHeaderType(SessionID=bytes(range(8))),
                       Body=b.BodyType(ChargeParameterDiscoveryRes=body))


def _round_trip(proto: str, message: object) -> bytes:
    data = exi.encode(proto, message)
    assert exi.decode(proto, data) == message
    return data


@pytest.mark.parametrize("starts", [
    [0], [127], [128], [16383], [16384], [86400], [2097151], [2097152], [16777214],  # 1 to 4 octets
    [0, 1, 2], list(range(0, 86400, 3600)),
])
def test_schedule_entries_with_and_without_duration(starts: list[int]) -> None:
    """Every entry's duration is present or absent in turn (the read-ahead after start serves the absent one and is
    given back for the present one), with start values of each integer length."""
    for first_has_duration in (False, True):
        entries = [_entry(s, (60 * (i + 1)) if (i % 2 == 0) == first_has_duration else None, -5 + i)
                   for i, s in enumerate(starts)]
        _round_trip("iso2", _cpd_res(entries, None))


def test_sales_tariff_every_optional_both_ways() -> None:
    """SalesTariffEntry with and without EPriceLevel, ConsumptionCost with one to three Costs, each with and without
    amountMultiplier; a tariff with and without Id, description and NumEPriceLevels."""
    costs = [t.CostType(costKind=kind, amount=amount, amountMultiplier=mult)
             for kind, amount, mult in (("relativePricePercentage", 7, None), ("RenewableGenerationPercentage", 200, 3),
                                        ("CarbonDioxideEmission", 4294967295, -3))]
    for n_costs in (1, 2, 3):
        for level in (None, 0, 255):
            entries = [t.SalesTariffEntryType(
                RelativeTimeInterval=t.RelativeTimeIntervalType(start=600 * i, duration=None if i else 600),
                EPriceLevel=level if i % 2 else None,
                ConsumptionCost=[t.ConsumptionCostType(startValue=_pv(0, "Wh", 100 * k), Cost=costs[:n_costs])
                                 for k in range(i % 4)])
                for i in range(5)]
            for tariff_id, description, levels in (("T1", "green", 4), (None, None, None)):
                tariff = t.SalesTariffType(Id=tariff_id, SalesTariffID=9, SalesTariffDescription=description,
                                           NumEPriceLevels=levels, SalesTariffEntry=entries)
                _round_trip("iso2", _cpd_res([_entry(0, 86400, 50)], tariff))


def _app_protocols(n: int) -> ah.supportedAppProtocolReq:
    return ah.supportedAppProtocolReq(AppProtocol=[
        ah.AppProtocolType(ProtocolNamespace="urn:iso:15118:2:2013:MsgDef", VersionNumberMajor=2,
                           VersionNumberMinor=i, SchemaID=i, Priority=1 + i % 20) for i in range(n)])


@pytest.mark.parametrize("count", [1, 19, 20])
def test_counted_loop_full_at_the_end_of_the_document(count: int) -> None:
    """AppProtocol repeats at most 20 times and ends the document: after the 20th item the read-ahead of the next
    event code runs past the input's end (zero bits stand in and are given back). Every shorter input is refused:
    none decodes from those zero bits."""
    data = _round_trip("apphand", _app_protocols(count))
    for cut in range(1, len(data)):
        with pytest.raises(DecodeError):
            exi.decode("apphand", data[:cut])


def test_cpd_prefixes_are_refused() -> None:
    entries = [_entry(3600 * i, 3600 if i == 23 else None, 11 * i) for i in range(24)]
    data = _round_trip("iso2", _cpd_res(entries, None))
    for cut in range(1, len(data)):
        with pytest.raises(DecodeError):
            exi.decode("iso2", data[:cut])


def test_slidep_pads_zero_bits_and_refuses_a_read_from_past_the_end() -> None:
    r = Reader(b"\x80\xab", 8)
    q = r.end - r.pos - 12  # 12 bits wanted, 8 left
    v, q = r.slidep(q, 12)
    assert (v >> q) & 0xFFF == 0xAB0  # the 8 real bits, then zeros
    assert r.base + r.end - q > r.total  # the position is past the end: exi.decode refuses such a document
    r = Reader(b"\x80\xab", 8)
    with pytest.raises(DecodeError, match="truncated"):  # a read that starts past the end is not padded
        r.slidep(-4 - 12, 12)  # q after the read: it would start 4 bits past the end


def test_decode_refuses_a_document_that_kept_padding_bits() -> None:
    """One byte short of a valid document whose last reads then fall past the input's end: whatever the zero bits
    that stand in there would mean, exi.decode refuses it as truncated."""
    data = _round_trip("apphand", _app_protocols(20))
    with pytest.raises(DecodeError, match="truncated"):
        exi.decode("apphand", data[:-1])


FRAGMENTS = [v for v in load_vectors() if proto_of(v)[1]]


@pytest.mark.parametrize("vector", FRAGMENTS, ids=[v["id"] for v in FRAGMENTS])
def test_fragment_prefixes_are_refused(vector: dict) -> None:
    """Fragments (the signed parts of -2 and -20 messages) go through the same read-ahead and then read their own
    end code: every input shorter than the fragment is refused."""
    proto, _ = proto_of(vector)
    data = bytes.fromhex(vector["hex"])
    value = exi.decode(proto, data, fragment=True)
    size = len(exi.encode(proto, value, fragment=True))
    assert size <= len(data)
    for cut in range(1, size):
        with pytest.raises(DecodeError):
            exi.decode(proto, data[:cut], fragment=True)
