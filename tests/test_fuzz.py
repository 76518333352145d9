"""Mutation fuzzing of the decoder: for any input it returns a value or raises exi.DecodeError.

``EXI_FUZZ_N`` frames per protocol (default 100000: 4-6 s per protocol on the development machine,
45-60 us a frame including the re-encode check; the whole file takes ~40 s), a tenth of that for the
two fragment targets, which have a single seed each. ``EXI_FUZZ_SEED`` picks another deterministic sequence.
``bench/fuzz_exi.py`` runs longer campaigns.
"""

from __future__ import annotations

import os
import random
import time

import pytest

import exi
from exi.runtime import Writer
from tests import fuzzing

N = int(os.environ.get("EXI_FUZZ_N", "100000"))
SEED = int(os.environ.get("EXI_FUZZ_SEED", "0"))
FRAME_TIMEOUT = 10.0  # seconds: a frame this slow is a hang, reported with its bytes


@pytest.mark.slow
@pytest.mark.parametrize("label", list(fuzzing.TARGETS))
def test_mutated_frames(label: str) -> None:
    frames = N if label in fuzzing.PROTOCOLS else max(N // 10, 1)
    stats = fuzzing.run(label, frames, SEED, frame_timeout=FRAME_TIMEOUT)
    assert stats.frames == frames
    assert not stats.findings, "\n\n".join(str(f) for f in stats.findings)
    if frames >= 1000:  # the mutations must keep some frames decodable, or they test only the first bits
        assert stats.decoded > frames // 100, f"only {stats.decoded} of {frames} frames decoded"


def test_mutations_are_deterministic() -> None:
    pool = fuzzing.seeds("iso2")
    a = [fuzzing.mutate(random.Random(7), pool) for _ in range(3)]
    b = [fuzzing.mutate(random.Random(7), pool) for _ in range(3)]
    assert a == b


def _element(proto: str, name: str) -> int:
    module = exi._codec(proto).module
    return [e[1] for e in module.DOCUMENT].index(name)


def _hostile(proto: str, name: str, length: int) -> bytes:
    """A document of the simple-typed global element ``name`` whose value claims ``length``, then a
    few bytes: SE(name), CH, unsigned-integer length, 16 octets of data."""
    w = Writer()
    w.bits(_element(proto, name), exi._codec(proto).module.DOCUMENT_WIDTH)
    w.bits(0, 1)  # CH
    w.uint(length)
    return w.getvalue() + bytes(range(16))


def _fails_fast(proto: str, data: bytes, *, fragment: bool = False, within: float = 0.5) -> exi.DecodeError:
    t0 = time.perf_counter()
    with pytest.raises(exi.DecodeError) as info:
        exi.decode(proto, data, fragment=fragment)
    assert time.perf_counter() - t0 < within
    return info.value


@pytest.mark.parametrize("proto", ["din", "iso2", "iso20-common", "iso20-dc", "iso20-ac"])
@pytest.mark.parametrize("claim", [2**31, 2**63, 2**200])
def test_hostile_binary_length(proto: str, claim: int) -> None:
    err = _fails_fast(proto, _hostile(proto, "DigestValue", claim))
    assert "DigestValue" in err.path


@pytest.mark.parametrize("proto", ["din", "iso2", "iso20-common"])
def test_hostile_string_length(proto: str) -> None:
    _fails_fast(proto, _hostile(proto, "KeyName", 2**31 + 2))  # String: length + 2 (0, 1 are table hits)


def test_hostile_string_length_inside_a_message() -> None:
    w = Writer()
    w.bits(_element("apphand", "supportedAppProtocolReq"), 2)
    w.bits(0, 1)  # SE(AppProtocol)
    w.bits(0, 1)  # SE(ProtocolNamespace)
    w.bits(0, 1)  # CH
    w.uint(2**31 + 2)
    data = w.getvalue() + b"urn:iso:15118:2:2013:MsgDef"
    err = _fails_fast("apphand", data)
    assert err.path[0] == "supportedAppProtocolReq"
    assert err.path[-1] == "ProtocolNamespace"


def test_hostile_fragment_length() -> None:
    module = exi._codec("iso2").module
    w = Writer()
    w.bits([e[1] for e in module.FRAGMENT].index("DigestValue"), module.FRAGMENT_WIDTH)
    w.bits(0, 1)
    w.uint(2**31)
    _fails_fast("iso2", w.getvalue() + bytes(16), fragment=True)


def test_truncated_everywhere() -> None:
    """Every prefix of every seed decodes or raises DecodeError (most raise: truncated)."""
    for label in fuzzing.TARGETS:
        proto, fragment = fuzzing.TARGETS[label]
        for seed in fuzzing.seeds(label)[:20]:
            for cut in range(len(seed)):
                try:
                    exi.decode(proto, seed[:cut], fragment=fragment)
                except exi.DecodeError:
                    pass


def test_huge_unsigned_integer_small() -> None:
    """4 kB of continuation octets where a length is read: DecodeError."""
    w = Writer()
    w.bits(_element("iso2", "DigestValue"), exi._codec("iso2").module.DOCUMENT_WIDTH)
    w.bits(0, 1)
    _fails_fast("iso2", w.getvalue() + b"\xff" * 4096 + b"\x7f")


def test_huge_unsigned_integer_64k() -> None:
    """A 64 kB frame that is one long unsigned integer should fail as fast as any 64 kB frame."""
    w = Writer()
    w.bits(_element("iso2", "DigestValue"), exi._codec("iso2").module.DOCUMENT_WIDTH)
    w.bits(0, 1)
    _fails_fast("iso2", w.getvalue() + b"\xff" * 65_000 + b"\x7f", within=0.25)


def test_large_valid_message_decodes_in_linear_time() -> None:
    from exi.model import xmldsig as ds

    refs = [ds.ReferenceType(DigestMethod=ds.DigestMethodType(Algorithm="a"), DigestValue=b"x")] * 16000
    info = ds.SignedInfoType(CanonicalizationMethod=ds.CanonicalizationMethodType(Algorithm="c"),
                             SignatureMethod=ds.SignatureMethodType(Algorithm="s"), Reference=refs)
    t0 = time.perf_counter()
    data = exi.encode("xmldsig", info)
    t1 = time.perf_counter()
    assert exi.decode("xmldsig", data) == info
    t2 = time.perf_counter()
    # linear: ~0.3 s each (1000 References take 0.02 s); quadratic took seconds
    assert t1 - t0 < 1.5 and t2 - t1 < 1.5, (t1 - t0, t2 - t1)
