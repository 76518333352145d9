"""Mutation fuzzing of the EXI decoder, shared by tests/test_fuzz.py and bench/fuzz_exi.py.

Seeds are the shared vectors of one protocol. Each frame is one seed with one to three mutations (bit
flips, byte changes, truncation, random tails, splices of two seeds, runs of 0xFF that make an unsigned
integer, usually a length, claim a huge value, range deletion/duplication). The contract checked: the
decoder returns a value or raises :class:`exi.DecodeError`, nothing else; and what it returns encodes
again and decodes to the same value (the decoder accepts nothing the encoder would refuse).
"""

from __future__ import annotations

import random
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import exi
from tests.vectors import load_vectors, proto_of

#: fuzz target label (a vector ``protocol`` label) -> (codec protocol, fragment?)
TARGETS: dict[str, tuple[str, bool]] = {
    label: proto_of({"protocol": label}) for label in
    ("apphand", "din", "iso2", "iso20-common", "iso20-dc", "iso20-ac", "iso2-fragment", "iso20-fragment")
}
#: the document targets (the brief's namespaces); the fragment ones have one seed each
PROTOCOLS = ("apphand", "din", "iso2", "iso20-common", "iso20-dc", "iso20-ac")


def seeds(label: str) -> list[bytes]:
    """The shared vectors of a target label, as bytes."""
    out = [bytes.fromhex(v["hex"]) for v in load_vectors() if v["protocol"] == label]
    if not out:
        raise LookupError(f"no shared vectors for {label}")
    return out


# --------------------------------------------------------------------------- mutations

Mutation = Callable[[bytearray, random.Random, list[bytes]], bytearray]


def _flip_bits(d: bytearray, rng: random.Random, _s: list[bytes]) -> bytearray:
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        if d:
            i = rng.randrange(len(d) * 8)
            d[i >> 3] ^= 0x80 >> (i & 7)
    return d


def _set_bytes(d: bytearray, rng: random.Random, _s: list[bytes]) -> bytearray:
    for _ in range(rng.choice((1, 1, 2, 4))):
        if d:
            d[rng.randrange(len(d))] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)))
    return d


def _truncate(d: bytearray, rng: random.Random, _s: list[bytes]) -> bytearray:
    return d[: rng.randrange(len(d) + 1)]


def _extend(d: bytearray, rng: random.Random, _s: list[bytes]) -> bytearray:
    return d + rng.randbytes(rng.choice((1, 2, 7, 64, 300)))


def _splice(d: bytearray, rng: random.Random, s: list[bytes]) -> bytearray:
    other = rng.choice(s)
    return d[: rng.randrange(len(d) + 1)] + other[rng.randrange(len(other) + 1):]


def _huge_uint(d: bytearray, rng: random.Random, _s: list[bytes]) -> bytearray:
    """0xFF continuation octets then a last octet: an EXI unsigned integer of up to ~2**(7k) at some offset
    (not octet-aligned in the bit stream, which is fine: it still turns whatever is read there huge)."""
    run = bytes([0xFF] * rng.choice((3, 4, 5, 9, 20, 200))) + bytes([rng.choice((0x07, 0x0F, 0x7F))])
    i = rng.randrange(len(d) + 1)
    return d[:i] + run + d[i:] if rng.random() < 0.5 else d[:i] + run + d[i + len(run):]


def _delete(d: bytearray, rng: random.Random, _s: list[bytes]) -> bytearray:
    if len(d) < 2:
        return d
    i = rng.randrange(1, len(d))
    return d[:i] + d[i + rng.randrange(1, 9):]


def _duplicate(d: bytearray, rng: random.Random, _s: list[bytes]) -> bytearray:
    if len(d) < 2:
        return d
    i = rng.randrange(1, len(d))
    j = min(len(d), i + rng.randrange(1, 33))
    return d[:j] + d[i:j] + d[j:]


MUTATIONS: tuple[Mutation, ...] = (
    _flip_bits, _flip_bits, _flip_bits, _set_bytes, _set_bytes, _truncate, _extend, _splice, _huge_uint,
    _delete, _duplicate,
)


def mutate(rng: random.Random, pool: list[bytes]) -> bytes:
    d = bytearray(rng.choice(pool))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        d = rng.choice(MUTATIONS)(d, rng, pool)
    if d and rng.random() < 0.95:
        d[0] = 0x80  # mostly keep the V2G header, or nearly every frame stops at the first byte
    return bytes(d)


# --------------------------------------------------------------------------- running


class FrameTimeout(BaseException):  # BaseException: the decoder's `except Exception` lets it by
    """One frame took longer than the run's ``frame_timeout``."""


@dataclass
class Finding:
    label: str
    kind: str  # "crash" (not a DecodeError), "reencode" (decoded value does not round-trip), "timeout"
    data: bytes
    error: str

    def __str__(self) -> str:
        return f"{self.kind} {self.label} {self.data.hex()}\n{self.error}"


@dataclass
class Stats:
    label: str
    frames: int = 0
    decoded: int = 0  # frames that decoded (the rest raised DecodeError or are findings)
    seconds: float = 0.0
    slowest: tuple[float, bytes] = (0.0, b"")
    findings: list[Finding] = field(default_factory=list)

    @property
    def per_frame_us(self) -> float:
        return 1e6 * self.seconds / max(self.frames, 1)


def _single_root(proto: str, value: object) -> bool:
    """Whether ``exi.encode`` can tell the element from the value (a class of one global element)."""
    return len(exi._codec(proto).by_class.get(type(value), ())) == 1


def check_frame(label: str, data: bytes) -> tuple[bool, Finding | None]:
    """Decode ``data``: (decoded?, a Finding for anything but a value or a DecodeError, or for a value
    that does not re-encode to something that decodes to the same value)."""
    proto, fragment = TARGETS[label]
    deviations: list[exi.Deviation] = []
    try:
        value = exi.decode(proto, data, fragment=fragment, deviations=deviations)
    except exi.DecodeError:
        return False, None
    except Exception:
        return False, Finding(label, "crash", data, traceback.format_exc())
    try:
        strict = exi.decode(proto, data, fragment=fragment, strict=True)
    except exi.DecodeError:
        strict = None
    except Exception:
        return True, Finding(label, "crash", data, traceback.format_exc())
    if (strict is None) != bool(deviations) or (strict is not None and strict != value):
        return True, Finding(label, "lenient", data, f"strict {strict!r}, lenient {value!r} with {deviations}")
    if not fragment and not _single_root(proto, value):
        return True, None  # a simple-typed root, or a type of several roots: encode() needs element=
    if deviations:  # a value outside the facets: decoded, recorded, and never encoded (we send no deviation)
        trailing_only = all(d.facet.startswith("trailing bytes") for d in deviations)
        try:
            exi.encode(proto, value, fragment=fragment)
        except exi.EncodeError:
            if not trailing_only:
                return True, None
        except Exception:
            return True, Finding(label, "crash", data, traceback.format_exc())
        if not trailing_only:
            return True, Finding(label, "lenient", data, f"{deviations} encoded again")
    try:
        again = exi.decode(proto, exi.encode(proto, value, fragment=fragment), fragment=fragment)
    except Exception:
        return True, Finding(label, "reencode", data, traceback.format_exc())
    if again != value:
        return True, Finding(label, "reencode", data, f"decoded {value!r}\nre-encoded and decoded {again!r}")
    return True, None


def _alarm(_signum: int, _frame: object) -> None:
    raise FrameTimeout


def run(label: str, frames: int, seed: int = 0, *, max_findings: int = 20,
        frame_timeout: float | None = None) -> Stats:
    """Fuzz ``frames`` mutated frames of target ``label`` with a deterministic ``random.Random``.

    ``frame_timeout`` (seconds, main thread on Unix only) turns a frame that takes longer into a
    "timeout" finding instead of a hang."""
    rng = random.Random(f"{label}:{seed}")
    pool = seeds(label)
    exi._codec(TARGETS[label][0])  # import the codec module before the clock starts
    stats = Stats(label)
    old_handler = signal.signal(signal.SIGALRM, _alarm) if frame_timeout else None
    start = time.perf_counter()
    try:
        for _ in range(frames):
            data = mutate(rng, pool)
            t0 = time.perf_counter()
            try:
                if frame_timeout:
                    signal.setitimer(signal.ITIMER_REAL, frame_timeout)
                decoded, finding = check_frame(label, data)
            except FrameTimeout:
                decoded, finding = False, Finding(label, "timeout", data, f"more than {frame_timeout} s")
            finally:
                if frame_timeout:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            dt = time.perf_counter() - t0
            if dt > stats.slowest[0]:
                stats.slowest = (dt, data)
            stats.frames += 1
            stats.decoded += decoded
            if finding is not None and len(stats.findings) < max_findings:
                stats.findings.append(finding)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGALRM, old_handler)
    stats.seconds = time.perf_counter() - start
    return stats
