"""Every captured frame in ../shared/vectors: decodes, states the values its source states, and
re-encodes to the same bytes (this encoder, like libcbv2g, never emits string-table hits)."""

from __future__ import annotations

import pytest

import exi
from tests.vectors import check_expect, load_vectors, proto_of

VECTORS = load_vectors()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_decodes_and_reencodes(vector: dict) -> None:
    proto, fragment = proto_of(vector)
    data = bytes.fromhex(vector["hex"])
    message = exi.decode(proto, data, fragment=fragment)
    value = message.value if fragment else message
    mismatches, _unresolved = check_expect(value, vector["expect"])
    assert not mismatches, mismatches
    out = exi.encode(proto, message, fragment=fragment)
    assert exi.decode(proto, out, fragment=fragment) == message
    if out != data:
        # Allowed: the other encoder's padding bits in the last byte, or trailing zero bytes it
        # appended (Tesla DIN). Everything up to the last byte must be identical.
        assert out[:-1] == data[: len(out) - 1], "re-encoding differs before the final padding"
        assert not any(data[len(out):]), "the source has non-zero bytes after the document"


def test_stated_values_are_mostly_checked() -> None:
    """The matcher must not silently resolve nothing: most stated values are compared."""
    total = resolved = 0
    for vector in VECTORS:
        proto, fragment = proto_of(vector)
        message = exi.decode(proto, bytes.fromhex(vector["hex"]), fragment=fragment)
        _, unresolved = check_expect(message.value if fragment else message, vector["expect"])
        total += len(vector["expect"])
        resolved += len(vector["expect"]) - len(unresolved)
    assert total > 2000
    assert resolved / total > 0.85, f"only {resolved} of {total} stated values could be compared"


def test_every_protocol_is_covered() -> None:
    labels = {proto_of(v) for v in VECTORS}
    for want in [("apphand", False), ("din", False), ("iso2", False), ("iso20-common", False),
                 ("iso20-dc", False), ("iso20-ac", False), ("iso2", True), ("iso20-common", True)]:
        assert want in labels


@pytest.mark.parametrize("vector", VECTORS[::7], ids=[v["id"] for v in VECTORS[::7]])
def test_truncated_frames_fail_cleanly(vector: dict) -> None:
    proto, fragment = proto_of(vector)
    data = bytes.fromhex(vector["hex"])
    for cut in range(len(data) - 1):
        with pytest.raises(exi.DecodeError):
            exi.decode(proto, data[:cut], fragment=fragment)


def test_known_values_spot_check() -> None:
    """A few values read by hand from the frames, independent of the matcher."""
    v = next(v for v in VECTORS if v["id"] == "apphand:supportedAppProtocolReq:0447ad373e")
    msg = exi.decode("apphand", bytes.fromhex(v["hex"]))
    (proto,) = msg.AppProtocol
    assert (proto.ProtocolNamespace, proto.VersionNumberMajor, proto.VersionNumberMinor) == (
        "urn:iso:15118:2:2013:MsgDef", 300, 128)
    frag = next(v for v in VECTORS if v["protocol"] == "iso2-fragment")
    f = exi.decode("iso2", bytes.fromhex(frag["hex"]), fragment=True)
    assert (f.name, f.value.GenChallenge) == ("AuthorizationReq", bytes(range(1, 17)))
