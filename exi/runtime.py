"""Bit-level EXI primitives used by the generated codec modules.

The reader holds the whole body as one Python int and shifts out what it needs: for V2G message sizes
this beats any byte-by-byte scheme in CPython. The writer accumulates into an int the same way.
Every length read from the stream is checked against the bits that remain before anything is
allocated, so a hostile length field fails fast.
"""

from __future__ import annotations

from decimal import Decimal


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
    """The input is not a valid EXI stream for the schema (truncated, malformed, out of facets)."""


class EncodeError(ExiError):
    """The message cannot be encoded: missing or surplus content, values outside the schema facets."""


V2G_HEADER = 0x80  # distinguishing bits 10, no options, version 1, no cookie


class Reader:
    """Reads bit-packed EXI from ``data`` starting after the one-byte header."""

    __slots__ = ("end", "gvals", "lvals", "pos", "v")

    def __init__(self, data: bytes, start_bit: int = 8) -> None:
        self.v = int.from_bytes(data, "big")
        self.end = len(data) * 8
        self.pos = start_bit
        self.gvals: list[str] | None = None  # global value partition, created on first string
        self.lvals: dict[int, list[str]] = {}

    def bits(self, n: int) -> int:
        p = self.pos + n
        if p > self.end:
            raise DecodeError(f"truncated: need {n} bits, {self.end - self.pos} left", self.pos)
        self.pos = p
        return (self.v >> (self.end - p)) & ((1 << n) - 1)

    def uint(self) -> int:
        v = self.v
        end = self.end
        p = self.pos
        result = 0
        shift = 0
        while True:
            p += 8
            if p > end:
                raise DecodeError("truncated unsigned integer", self.pos)
            octet = (v >> (end - p)) & 0xFF
            result |= (octet & 0x7F) << shift
            if octet < 0x80:
                self.pos = p
                return result
            shift += 7

    def sint(self) -> int:
        if self.bits(1):
            return -self.uint() - 1
        return self.uint()

    def length(self, unit_bits: int) -> int:
        """A length prefix whose items take at least ``unit_bits`` each: bounded by what is left."""
        at = self.pos
        n = self.uint()
        if n * unit_bits > self.end - self.pos:
            raise DecodeError(f"length {n} exceeds the remaining input", at)
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
        if n * 8 > self.end - self.pos:
            raise DecodeError(f"string of {n} characters exceeds the remaining input", self.pos)
        start = self.pos
        raw = self.bits(8 * n).to_bytes(n, "big")
        if raw.isascii():  # every code point < 128: one octet each, the common case
            return raw.decode("ascii")
        self.pos = start
        out = []
        for _ in range(n):
            cp = self.uint()
            if cp > 0x10FFFF:
                raise DecodeError("invalid code point", self.pos)
            out.append(chr(cp))
        return "".join(out)

    def string(self, key: int) -> str:
        """A String value with the value partitions of ``key`` (an element or attribute qname id)."""
        at = self.pos
        n = self.uint()
        if n == 0:
            part = self.lvals.get(key)
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
            if self.gvals is None:
                self.gvals = [s]
            else:
                self.gvals.append(s)
            local = self.lvals.get(key)
            if local is None:
                self.lvals[key] = [s]
            else:
                local.append(s)
        return s

    def deviation(self, where: str, pos: int | None = None) -> DecodeError:
        return DecodeError(f"schema deviation (second-level event) not supported in {where}",
                           self.pos if pos is None else pos)

    def truncated(self, pos: int) -> DecodeError:
        return DecodeError(f"truncated: the input ends {pos - self.end} bits short", self.end)

    def finish(self) -> None:
        """After the last event: the padding to the byte boundary (whatever its bits: some -20 encoders
        leave non-zero ones, and decoders such as OpenV2G and EXIficient ignore it), then only whole
        zero bytes (Tesla's DIN firmware appends one to ContractAuthenticationReq)."""
        rest = (self.end - self.pos) // 8 * 8
        if rest and self.v & ((1 << rest) - 1):
            raise DecodeError(f"{(rest + 7) // 8} bytes of non-zero data after the end of the document",
                              self.pos)


class Writer:
    """Accumulates bit-packed EXI; :meth:`getvalue` pads to a byte boundary."""

    __slots__ = ("n", "v")

    def __init__(self) -> None:
        self.v = V2G_HEADER
        self.n = 8

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
        return (self.v << pad).to_bytes((self.n + pad) // 8, "big")


def _ctx(exc: BaseException, element: str, reader: Reader | None) -> ExiError:
    """Give an error raised inside a generated type function the element path where it happened."""
    if not isinstance(exc, ExiError):
        if reader is not None:
            exc = DecodeError(f"{type(exc).__name__}: {exc}", reader.pos)
        else:
            exc = EncodeError(f"invalid value ({type(exc).__name__}: {exc})")
    if element:
        exc.path.insert(0, element)
    return exc


def _leftover(obj: object) -> EncodeError:
    return EncodeError(f"{type(obj).__name__} has content the schema does not allow here: an element out of "
                       "order, more than one alternative of a choice, or more items than maxOccurs")
