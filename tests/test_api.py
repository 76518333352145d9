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
