"""Bit-level EXI primitives used by the generated codec modules.

The reader holds the whole body as one Python int and shifts out what it needs: for V2G message sizes
this beats any byte-by-byte scheme in CPython. The writer accumulates into an int the same way.
Every length read from the stream is checked against the bits that remain before anything is
allocated, so a hostile length field fails fast.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any


class ExiError(ValueError):
    """Base of the codec's errors."""

    def __init__(self, reason: str, bit: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bit = bit
        self.path: list[str] = []

    def __str__(self) -> str:
        where = "/".join(self.path)
        parts = [self.reason]
        if where:
            parts.append(f"in {where}")
        if self.bit is not None:
            parts.append(f"at bit {self.bit}")
        return " ".join(parts)


class DecodeError(ExiError):
    """The input is not a valid EXI stream for the schema (truncated, malformed; out of facets when strict)."""


class EncodeError(ExiError):
    """The message cannot be encoded: missing or surplus content, values outside the schema facets."""


V2G_HEADER = 0x80  # distinguishing bits 10, no options, version 1, no cookie


class Deviation:
    """A value that breaks a schema facet but that the EXI bits carried fine (a lenient decode keeps it): where
    (``path``: the message, the type and the element, "/"-joined), which facet, the value, the bit position."""

    __slots__ = ("bit", "facet", "path", "value")

    def __init__(self, path: str, facet: str, value: object, bit: int | None) -> None:
        self.path, self.facet, self.value, self.bit = path, facet, value, bit

    def __repr__(self) -> str:
        return f"Deviation({self.path!r}, {self.facet!r}, {self.value!r}, bit={self.bit})"

    def __str__(self) -> str:
        return f"{self.path}: {self.facet} (value {self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Deviation) and (self.path, self.facet, self.value, self.bit) == (
            other.path, other.facet, other.value, other.bit)

    def __hash__(self) -> int:
        return hash((self.path, self.facet, self.bit))


class UnknownEnumValue(int):
    """An enumeration index the EXI bits carried beyond the schema's values (lenient decoding only): it stands
    in the message where the enumeration member would, compares unequal to every member, and cannot be
    encoded. ``int`` is the index."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"UnknownEnumValue({int(self)})"

    def __str__(self) -> str:
        return f"(enumeration index {int(self)})"

    @property
    def value(self) -> str:  # enum members have .value; callers that print it get the same text
        return str(self)


#: Bytes the reader holds as one int at a time. Reads shift that int, so their cost is bounded by the
#: window, not by the input: decoding stays linear however large the input is.
WINDOW_BYTES = 96
#: An unsigned integer longer than this is hostile (V2G needs at most 10 octets, lengths 5).
MAX_UINT_OCTETS = 64


_UINT14 = tuple(range(1 << 14))  # one int object per value, shared by the tables' entries
_ONE_OCTET = tuple((v, 8) for v in range(128))
#: The first two octets of an EXI unsigned integer (7 bits each, low group first) -> (value, bits it takes): 8 for
#: one octet, 16 for two, 0 when both continue (the value of their 14 bits; the next octet holds the rest).
#: Generated decoders look an integer up here instead of shifting, masking and testing it (~2 MB in all).
UINT_OCTETS2: tuple[tuple[int, int], ...] = tuple(
    _ONE_OCTET[i >> 8] if i < 0x8000 else (_UINT14[((i >> 8) & 0x7F) | ((i & 0x7F) << 7)], 0 if i & 0x80 else 16)
    for i in range(1 << 16))
#: A value below 2**14 -> its two octets, the first with the continuation bit (generated encoders).
UINT2_ENCODED: tuple[int, ...] = tuple(((m & 0x7F) << 8) | 0x8000 | (m >> 7) for m in range(1 << 14))


class Reader:
    """Reads bit-packed EXI from ``data`` starting after the one-byte header.

    ``v`` holds a window of the input as an int; ``pos`` and ``end`` are bit positions within the
    window and ``base`` is the window's bit offset in the input. Generated code keeps ``v`` and
    ``q = end - pos`` (the bits left after its position) in locals, passes them from one type's decoder to the
    next (``value, V, q = _d_T(r, V, q)``), calls :meth:`slideq` when a read runs past the window (:meth:`slidep`
    for a read whose last bits are read ahead and may be given back), and stores ``pos = end - q`` before calling
    the reader's own methods.
    """

    __slots__ = ("base", "data", "dev", "end", "gvals", "lvals", "pos", "strict", "total", "v")

    def __init__(self, data: bytes, start_bit: int = 8, deviations: list[Deviation] | None = None,
                 strict: bool = False) -> None:
        self.data = data
        self.strict = strict  # a facet violation is a DecodeError; else it is recorded in dev
        self.dev = deviations  # created on the first deviation when None (nothing to allocate on the common path)
        self.total = total = len(data) << 3
        # the value partitions, global and local per qname: both created with the first string
        self.gvals: list[str] | None = None
        self.lvals: dict[int, list[str]] | None = None
        if total <= WINDOW_BYTES * 8:
            self.v = int.from_bytes(data, "big")
            self.end = total
            self.base = 0
            self.pos = start_bit
        else:
            self._load(start_bit, 0)

    def _load(self, start: int, need: int) -> None:
        """Move the window to absolute bit ``start`` so that ``need`` bits can be read."""
        if start + need > self.total:
            raise DecodeError(f"truncated: need {need} bits, {max(self.total - start, 0)} left", start)
        first = start >> 3
        size = max(WINDOW_BYTES, ((start & 7) + need + 7) >> 3)
        chunk = self.data[first:first + size]
        self.v = int.from_bytes(chunk, "big")
        self.end = len(chunk) * 8
        self.base = first * 8
        self.pos = start - self.base

    def slideq(self, q: int, n: int) -> tuple[int, int]:
        """Generated code keeps ``q``, the bits left in the window after its position, and read ``n`` bits
        past the window's end (``q`` < 0): move the window and return the new (v, q after the read)."""
        self._load(self.base + self.end - q - n, n)
        return self.v, self.end - self.pos - n

    def slidep(self, q: int, n: int) -> tuple[int, int]:
        """:meth:`slideq` for a read whose last bits are read ahead and given back (``q +=``) when the path
        taken does not use them (an event code read with the fixed reads after it, a loop's next event code
        after its last item): zero bits stand in for those past the input's end. A path that keeps such bits
        leaves the position past the end, which :func:`exi.decode` refuses (truncated)."""
        start = self.base + self.end - q - n
        if start + n <= self.total:
            return self.slideq(q, n)
        if start > self.total:
            raise DecodeError(f"truncated: need {n} bits, 0 left", self.total)
        first = start >> 3
        chunk = self.data[first:]
        pad = (start + n - self.total + 7) >> 3
        self.v = int.from_bytes(chunk, "big") << (pad << 3)
        self.end = (len(chunk) + pad) << 3
        self.base = first << 3
        self.pos = start - self.base
        return self.v, self.end - self.pos - n

    def run(self, decode: Callable[[Reader, int, int], tuple[Any, int, int]]) -> Any:
        """Call a generated element decoder (``value, V, q = decode(r, V, q)``) from the reader's position."""
        value, _v, q = decode(self, self.v, self.end - self.pos)
        self.pos = self.end - q
        return value

    def at(self, p: int) -> int:
        """The absolute bit position of window position ``p`` (for error messages)."""
        return self.base + p

    def bits(self, n: int) -> int:
        p = self.pos + n
        if p > self.end:
            self._load(self.base + self.pos, n)
            p = self.pos + n
        self.pos = p
        return (self.v >> (self.end - p)) & ((1 << n) - 1)

    def uint(self) -> int:
        p = self.pos
        end = self.end
        if p + 16 <= end:  # one or two octets (generated code calls here near a window's end)
            y = (self.v >> (end - p - 16)) & 0xFFFF
            if y < 0x8000:
                self.pos = p + 8
                return y >> 8
            if not y & 0x80:
                self.pos = p + 16
                return ((y >> 8) & 0x7F) | ((y & 0x7F) << 7)
        at = self.base + p
        v = self.v
        result = 0
        shift = 0
        while True:
            p += 8
            if p > end:  # slide the window (or fail: truncated)
                self._load(self.base + p - 8, 8)
                v, end, p = self.v, self.end, self.pos + 8
            octet = (v >> (end - p)) & 0xFF
            result |= (octet & 0x7F) << shift
            if octet < 0x80:
                self.pos = p
                return result
            shift += 7
            if shift >= 7 * MAX_UINT_OCTETS:
                raise DecodeError(f"unsigned integer longer than {MAX_UINT_OCTETS} octets", at)

    def sint(self) -> int:
        if self.bits(1):
            return -self.uint() - 1
        return self.uint()

    def remaining(self) -> int:
        return self.total - self.base - self.pos

    def length(self, unit_bits: int) -> int:
        """A length prefix whose items take at least ``unit_bits`` each: bounded by what is left."""
        at = self.base + self.pos
        n = self.uint()
        if n * unit_bits > self.remaining():
            raise DecodeError(f"a length of {n} exceeds the remaining input", at)
        return n

    def binary(self) -> bytes:
        n = self.length(8)
        if n == 0:
            return b""
        return self.bits(8 * n).to_bytes(n, "big")

    def boolean(self) -> bool:
        return self.bits(1) == 1

    def decimal(self) -> Decimal:
        neg = self.bits(1)
        integral = self.uint()
        frac = self.uint()
        text = f"{'-' if neg else ''}{integral}.{str(frac)[::-1]}"
        return Decimal(text)

    def float(self) -> float:
        mantissa = self.sint()
        exponent = self.sint()
        if exponent == -(1 << 14):
            if mantissa == 1:
                return float("inf")
            if mantissa == -1:
                return float("-inf")
            return float("nan")
        if not -(1 << 14) < exponent < (1 << 14):
            raise DecodeError("float exponent out of range", self.pos)
        if not -(1 << 63) <= mantissa < (1 << 63):
            raise DecodeError("float mantissa out of range", self.pos)
        return float(Decimal(mantissa).scaleb(exponent))

    def chars(self, n: int) -> str:
        """``n`` characters, each an Unsigned Integer code point."""
        if n == 0:
            return ""
        if n * 8 > self.remaining():
            raise DecodeError(f"a string of {n} characters exceeds the remaining input", self.base + self.pos)
        start = self.base + self.pos
        raw = self.bits(8 * n).to_bytes(n, "big")
        if raw.isascii():  # every code point < 128: one octet each, the common case
            return raw.decode("ascii")
        self._load(start, 0)
        out = []
        for _ in range(n):
            cp = self.uint()
            if cp > 0x10FFFF:
                raise DecodeError("invalid code point", self.base + self.pos)
            out.append(chr(cp))
        return "".join(out)

    def string(self, key: int) -> str:
        """A String value with the value partitions of ``key`` (an element or attribute qname id)."""
        at = self.pos
        n = self.uint()
        if n == 0:
            part = self.lvals.get(key) if self.lvals is not None else None
            if not part:
                raise DecodeError("local string-table hit with an empty local partition", at)
            i = self.bits((len(part) - 1).bit_length())
            if i >= len(part):
                raise DecodeError("local string-table index out of range", at)
            return part[i]
        if n == 1:
            part = self.gvals
            if not part:
                raise DecodeError("global string-table hit with an empty table", at)
            i = self.bits((len(part) - 1).bit_length())
            if i >= len(part):
                raise DecodeError("global string-table index out of range", at)
            return part[i]
        s = self.chars(n - 2)
        if s:
            if self.gvals is None or self.lvals is None:  # the first string
                self.gvals = [s]
                self.lvals = {key: [s]}
                return s
            self.gvals.append(s)
            local = self.lvals.get(key)
            if local is None:
                self.lvals[key] = [s]
            else:
                local.append(s)
        return s

    def facet(self, where: str, facet: str, value: object, pos: int) -> None:
        """A value outside a facet of its type: a DecodeError when strict, else recorded and kept."""
        if self.strict:
            raise DecodeError(f"value {value!r} breaks {facet}", pos)
        self._deviations().append(Deviation(where, facet, value, pos))

    def _deviations(self) -> list[Deviation]:
        if self.dev is None:
            self.dev = []
        return self.dev

    def enum_index(self, where: str, index: int, count: int, pos: int) -> UnknownEnumValue:
        """An enumeration index past the schema's ``count`` values: DecodeError when strict, else recorded."""
        if self.strict:
            raise DecodeError(f"enumeration index {index} out of range ({count} values)", pos)
        self._deviations().append(Deviation(where, f"enumeration ({count} values)", index, pos))
        return UnknownEnumValue(index)

    def deviation(self, where: str, pos: int | None = None) -> DecodeError:
        return DecodeError(f"schema deviation (second-level event) not supported in {where}",
                           self.base + (self.pos if pos is None else pos))

    def finish(self) -> None:
        """After the last event: the padding to the byte boundary (whatever its bits: some -20 encoders
        leave non-zero ones, and decoders such as OpenV2G and EXIficient ignore it), then only whole
        zero bytes (Tesla's DIN firmware appends one to ContractAuthenticationReq)."""
        after = (self.base + self.pos + 7) >> 3
        if any(self.data[after:]):
            if self.strict:
                raise DecodeError(f"{len(self.data) - after} bytes of non-zero data after the end of the document",
                                  self.base + self.pos)
            self._deviations().append(Deviation("", "trailing bytes after the end of the document",
                                                bytes(self.data[after:]), self.base + self.pos))


class Writer:
    """Accumulates bit-packed EXI; :meth:`getvalue` pads to a byte boundary.

    Pending bits live in the int ``v`` (``n`` of them); :meth:`flush` moves whole bytes out to
    ``buf`` so that appending stays cheap however long the message is.
    """

    __slots__ = ("buf", "n", "v")

    def __init__(self, v: int = V2G_HEADER, n: int = 8) -> None:
        self.v = v  # the header, or the header and a document's first event code (exi.encode)
        self.n = n
        self.buf = bytearray()

    def flush(self) -> None:
        rem = self.n & 7
        whole = self.n >> 3
        if whole:
            self.buf += (self.v >> rem).to_bytes(whole, "big")
            self.v &= (1 << rem) - 1
            self.n = rem

    def bits(self, value: int, n: int) -> None:
        self.v = (self.v << n) | value
        self.n += n

    def uint(self, value: int) -> None:
        if value < 0x80:
            if value < 0:
                raise EncodeError(f"negative value {value} for an unsigned integer")
            self.v = (self.v << 8) | value
            self.n += 8
            return
        acc = 0
        count = 0
        while True:
            low = value & 0x7F
            value >>= 7
            if value:
                acc = (acc << 8) | 0x80 | low
                count += 1
            else:
                acc = (acc << 8) | low
                count += 1
                break
        self.v = (self.v << (8 * count)) | acc
        self.n += 8 * count

    def sint(self, value: int) -> None:
        if value < 0:
            self.bits(1, 1)
            self.uint(-value - 1)
        else:
            self.bits(0, 1)
            self.uint(value)

    def binary(self, value: bytes) -> None:
        n = len(value)
        self.uint(n)
        if n:
            self.v = (self.v << (8 * n)) | int.from_bytes(value, "big")
            self.n += 8 * n

    def decimal(self, value: Decimal) -> None:
        value = Decimal(value)
        if not value.is_finite():
            raise EncodeError(f"decimal value {value} is not finite")
        sign, digits, exp = value.as_tuple()
        text = "".join(map(str, digits))
        if exp >= 0:
            integral, frac = int(text + "0" * exp), 0
        else:
            cut = len(text) + exp
            integral = int(text[:cut]) if cut > 0 else 0
            fdigits = text[cut:] if cut > 0 else "0" * (-cut) + text
            fdigits = fdigits.rstrip("0")
            frac = int(fdigits[::-1]) if fdigits else 0
        self.bits(1 if sign and (integral or frac) else 0, 1)
        self.uint(integral)
        self.uint(frac)

    def float(self, value: float) -> None:
        import math

        if math.isnan(value):
            self.sint(0)
            self.sint(-(1 << 14))
            return
        if math.isinf(value):
            self.sint(1 if value > 0 else -1)
            self.sint(-(1 << 14))
            return
        d = Decimal(repr(float(value))).normalize()
        sign, digits, exp = d.as_tuple()
        mant = int("".join(map(str, digits)) or "0")
        self.sint(-mant if sign else mant)
        self.sint(int(exp))

    def chars(self, s: str) -> None:
        if s.isascii():
            n = len(s)
            if n:
                self.v = (self.v << (8 * n)) | int.from_bytes(s.encode("ascii"), "big")
                self.n += 8 * n
            return
        for ch in s:
            self.uint(ord(ch))

    def string(self, s: str) -> None:
        """A String literal; this encoder never emits string-table hits (as libcbv2g/OpenV2G)."""
        self.uint(len(s) + 2)
        self.chars(s)

    def getvalue(self) -> bytes:
        pad = -self.n % 8
        tail = (self.v << pad).to_bytes((self.n + pad) // 8, "big")
        return bytes(self.buf) + tail if self.buf else tail


def _ctx(exc: BaseException, element: str, reader: Reader | None) -> ExiError:
    """Give an error raised inside a generated type function the element path where it happened."""
    if not isinstance(exc, ExiError):
        if reader is not None:
            exc = DecodeError(f"{type(exc).__name__}: {exc}", reader.base + reader.pos)
        else:
            exc = EncodeError(f"invalid value ({type(exc).__name__}: {exc})")
    if element:
        exc.path[0:0] = element.split("/")  # "Parent/Child" from a type inlined into its parent
    return exc


def _fields_table(span: int, fields: tuple[tuple, ...]) -> tuple[tuple | None, ...]:
    """For generated decoders: adjacent small fields read as one ``span``-bit piece, decoded by one lookup.
    ``fields``: (shift, width, 'bool', None) | (shift, width, 'nbit', minimum, maxInclusive) |
    (shift, width, 'enum', members). The entry for a piece is the tuple of the fields' values, or None where
    a value breaks its facet (an nbit past maxInclusive, an enumeration index past the members): the
    generated code then decodes those fields one by one, recording or refusing the deviation. The bits
    between the fields (event codes) are tested zero before the lookup and do not matter here."""
    table: list[tuple | None] = []
    for piece in range(1 << span):
        values: list[object] = []
        for shift, width, kind, *args in fields:
            raw = (piece >> shift) & ((1 << width) - 1)
            if kind == "bool":
                values.append(raw == 1)
            elif kind == "nbit":
                if raw + args[0] > args[1]:
                    break
                values.append(raw + args[0])
            elif raw < len(args[0]):
                values.append(args[0][raw])
            else:
                break
        else:
            table.append(tuple(values))
            continue
        table.append(None)
    return tuple(table)


def _leftover(obj: object) -> EncodeError:
    return EncodeError(f"{type(obj).__name__} has content the schema does not allow here: an element out of "
                       "order, more than one alternative of a choice, or more items than maxOccurs")
