"""Independent reference models for the multiplier tests.

Written from DESIGN §2 and the issue's description of each design, in plain Python integer
arithmetic on raw float32 bits (``struct``). Nothing here imports ``approxsim``: these models
are what the package is checked against, so they must not share its code.

A *mantissa model* maps the 23-bit fractions ``fa, fb`` of two normal operands and the width M
to ``(inc, frac)``: the product's significand is ``1 + frac / 2^23`` and its exponent is
``ea + eb + inc`` (``inc`` is the normalization carry). The product rules of DESIGN §2 (sign
xor, flushing, overflow, underflow, NaN, inf) are applied around it by :func:`reference_bits`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

FRAC_BITS = 23
FRAC_ONE = 1 << FRAC_BITS
FRAC_MASK = FRAC_ONE - 1
SIGN = 0x8000_0000
INF_BITS = 0x7F80_0000
FLOAT_MAX_BITS = 0x7F7F_FFFF

MantissaModel = Callable[[int, int, int], tuple[int, int]]


# ----------------------------------------------------------------------------- bit helpers
def f2b(x: float) -> int:
    """float32 value -> its 32 raw bits (as an unsigned Python int)."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def b2f(u: int) -> float:
    """32 raw bits -> the float32 value (as a Python float)."""
    return struct.unpack("<f", struct.pack("<I", u & 0xFFFF_FFFF))[0]


def _top(frac: int, m: int) -> int:
    """The M-bit index an M-bit input port sees: the top M bits of a 23-bit fraction."""
    return frac >> (FRAC_BITS - m)


# ----------------------------------------------------------------------------- mantissa models
def trunc_mantissa(fa: int, fb: int, m: int) -> tuple[int, int]:
    """Exact product of the M-bit truncated significands (2M or 2M+1 fraction bits)."""
    p = ((1 << m) + _top(fa, m)) * ((1 << m) + _top(fb, m))  # value p / 2^(2m), in [1, 4)
    if p >= 1 << (2 * m + 1):
        return 1, (p - (1 << (2 * m + 1))) << (FRAC_BITS - 2 * m - 1)
    return 0, (p - (1 << (2 * m))) << (FRAC_BITS - 2 * m)


def mitchell_mantissa(fa: int, fb: int, m: int) -> tuple[int, int]:
    """Mitchell: s = xa + xb; 1 + s when s < 1, else 2 * s = 2 * (1 + (s - 1))."""
    s = _top(fa, m) + _top(fb, m)
    if s < 1 << m:
        return 0, s << (FRAC_BITS - m)
    return 1, (s - (1 << m)) << (FRAC_BITS - m)


MBM_CORRECTION = (1 << 19) + (1 << 17)  # 2^-4 + 2^-6 in 23-bit fixed point


def mbm_mantissa(fa: int, fb: int, m: int) -> tuple[int, int]:
    """MBM the way ApproxTrain's FPmultMBM_fast16 computes it, generalized to M bits."""
    shift = FRAC_BITS - m
    ka = (fa >> shift << shift) | (1 << shift)  # keep top M bits, force the lowest kept to 1
    kb = (fb >> shift << shift) | (1 << shift)
    s = ka + kb
    if s < FRAC_ONE:  # no carry
        sig = FRAC_ONE + s + MBM_CORRECTION  # hidden bit + corrected fraction
        inc = 0
        if sig >= 2 * FRAC_ONE:
            sig >>= 1
            inc = 1
        frac = sig - FRAC_ONE
    else:  # carry: the fraction is S mod 2^23, the correction halves
        inc = 1
        low = s - FRAC_ONE
        corrected = low + (MBM_CORRECTION >> 1)
        frac = low if corrected >= FRAC_ONE else corrected
    return inc, frac >> shift << shift  # result truncated to M fraction bits


def _narrow_product(fa: int, fb: int, m: int, nearest: bool) -> tuple[int, int]:
    """Product of M-bit significands, rounded (nearest-even) or truncated to M bits."""
    p = ((1 << m) + _top(fa, m)) * ((1 << m) + _top(fb, m))
    if p >= 1 << (2 * m + 1):
        inc, frac_bits = 1, 2 * m + 1
    else:
        inc, frac_bits = 0, 2 * m
    drop = frac_bits - m
    q = p >> drop  # significand with m fraction bits, in [2^m, 2^(m+1))
    rest = p & ((1 << drop) - 1)
    if nearest:
        half = 1 << (drop - 1)
        if rest > half or (rest == half and q & 1):
            q += 1
        if q == 1 << (m + 1):  # rounded up to 2.0: renormalize
            q >>= 1
            inc += 1
    return inc, (q - (1 << m)) << (FRAC_BITS - m)


def bf16_rounded_mantissa(fa: int, fb: int, m: int) -> tuple[int, int]:
    """A narrow-float unit: exact product rounded to nearest-even at M fraction bits."""
    return _narrow_product(fa, fb, m, nearest=True)


def bf16_truncated_mantissa(fa: int, fb: int, m: int) -> tuple[int, int]:
    """A narrow-float unit whose product is truncated to M fraction bits."""
    return _narrow_product(fa, fb, m, nearest=False)


FAMILIES: dict[str, MantissaModel] = {
    "trunc": trunc_mantissa,
    "mitchell": mitchell_mantissa,
    "mbm": mbm_mantissa,
}

#: name -> (mantissa model, M, input rounding)
FIXED: dict[str, tuple[MantissaModel, int, str]] = {
    "bf16": (bf16_rounded_mantissa, 7, "nearest"),
    "bf16_trunc": (bf16_truncated_mantissa, 7, "truncate"),
}


def spec(name: str) -> tuple[MantissaModel, int, str]:
    """(mantissa model, M, rounding) of a built-in multiplier name such as ``mbm7``."""
    if name in FIXED:
        return FIXED[name]
    for prefix, fn in FAMILIES.items():
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return fn, int(name[len(prefix) :]), "truncate"
    raise KeyError(name)


# ----------------------------------------------------------------------------- full products
def round_magnitude(mag: int, m: int) -> int:
    """Round a float32 magnitude to M fraction bits, ties to even (may carry into exponent)."""
    shift = FRAC_BITS - m
    q, rest = mag >> shift, mag & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    if rest > half or (rest == half and q & 1):
        q += 1
    return q << shift


def reference_bits(
    mantissa: MantissaModel, m: int, ua: int, ub: int, rounding: str = "truncate"
) -> int | None:
    """The product bits DESIGN §2 prescribes for operands ``ua, ub``; ``None`` means NaN."""
    sign = (ua ^ ub) & SIGN

    def classify(u: int) -> tuple[str, int, int]:
        mag = u & 0x7FFF_FFFF
        e, f = mag >> FRAC_BITS, mag & FRAC_MASK
        if e == 255:
            return ("nan" if f else "inf"), e, f
        if e == 0:
            return "zero", e, f  # zero or subnormal: flushed
        if rounding == "nearest":
            mag = round_magnitude(mag, m)
            e, f = mag >> FRAC_BITS, mag & FRAC_MASK
            if e == 255:
                return "inf", e, f
        return "normal", e, f

    ka, ea, fa = classify(ua)
    kb, eb, fb = classify(ub)
    kinds = {ka, kb}
    if "nan" in kinds or kinds == {"inf", "zero"}:
        return None
    if "inf" in kinds:
        return sign | INF_BITS
    if "zero" in kinds:
        return sign
    inc, frac = mantissa(fa, fb, m)
    assert 0 <= frac < FRAC_ONE, "mantissa model out of range"
    e = ea + eb - 127 + inc
    if e >= 255:
        return sign | INF_BITS
    if e <= 0:
        return sign
    return sign | (e << FRAC_BITS) | frac


def lut_entry_bits(mantissa: MantissaModel, m: int, i: int, j: int) -> int:
    """Bits of ``model(1.i, 1.j)`` with both exponents 0, i.e. the LUT entry ``[i, j]``."""
    ua = (127 << FRAC_BITS) | (i << (FRAC_BITS - m))
    ub = (127 << FRAC_BITS) | (j << (FRAC_BITS - m))
    out = reference_bits(mantissa, m, ua, ub)
    assert out is not None
    return out


def lut_bits_grid(mantissa: MantissaModel, m: int) -> np.ndarray:
    """The whole ``(2^M, 2^M)`` LUT as uint32 bit patterns, one scalar call per entry."""
    n = 1 << m
    flat = [lut_entry_bits(mantissa, m, i, j) for i in range(n) for j in range(n)]
    return np.array(flat, dtype=np.uint32).reshape(n, n)


def reference_products(
    name_or_spec: str | tuple[MantissaModel, int, str], a_bits: Iterable[int], b_bits: Iterable[int]
) -> list[int | None]:
    """Scalar reference products of bit-pattern sequences (``None`` = NaN)."""
    fn, m, rounding = spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    return [
        reference_bits(fn, m, int(x), int(y), rounding) for x, y in zip(a_bits, b_bits, strict=True)
    ]


# ----------------------------------------------------------------------------- ApproxTrain forms
def approxtrain_mitchell16(a: float, b: float) -> float:
    """ApproxTrain's Mitchell 16-bit model on float32 operands (normal, in range).

    The fractions are cut to their top 7 bits in place (bits 22..16), added; a carry out of the
    fraction bumps the exponent. There is no correction term.
    """
    ua, ub = f2b(a), f2b(b)
    s = (ua & 0x007F_0000) + (ub & 0x007F_0000)
    e = ((ua >> 23) & 0xFF) + ((ub >> 23) & 0xFF) - 127
    if s >= 0x0080_0000:
        s -= 0x0080_0000
        e += 1
    return b2f(((ua ^ ub) & SIGN) | (e << 23) | s)


def approxtrain_mbm16(a: float, b: float) -> float:
    """ApproxTrain's FPmultMBM_fast16 on float32 operands (normal, in range)."""
    ua, ub = f2b(a), f2b(b)
    fa = (ua & 0x007F_0000) | 0x0001_0000
    fb = (ub & 0x007F_0000) | 0x0001_0000
    s = fa + fb
    e = ((ua >> 23) & 0xFF) + ((ub >> 23) & 0xFF) - 127
    c = (1 << 19) + (1 << 17)
    if s < 0x0080_0000:
        mant = 0x0080_0000 + s + c
        if mant >= 0x0100_0000:
            mant >>= 1
            e += 1
        frac = mant & 0x007F_FFFF
    else:
        e += 1
        corrected = (s & 0x007F_FFFF) + (c >> 1)
        frac = (s & 0x007F_FFFF) if corrected >= 0x0080_0000 else corrected
    bits = ((ua ^ ub) & SIGN) | (e << 23) | frac
    return b2f(bits & 0xFFFF_0000)


# ----------------------------------------------------------------------------- vectorized twins
def np_mantissa(family: str, fa: np.ndarray, fb: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
    """Vectorized (int64) versions of the family models, for the 2^22-entry M=11 grid.

    Tests cross-check these against the scalar models above before relying on them.
    """
    fa = fa.astype(np.int64)
    fb = fb.astype(np.int64)
    shift = FRAC_BITS - m
    ia, ib = fa >> shift, fb >> shift
    if family == "trunc":
        p = ((1 << m) + ia) * ((1 << m) + ib)
        big = p >= (1 << (2 * m + 1))
        frac = np.where(
            big,
            (p - (1 << (2 * m + 1))) << (FRAC_BITS - 2 * m - 1),
            (p - (1 << (2 * m))) << (FRAC_BITS - 2 * m),
        )
        return big.astype(np.int64), frac
    if family == "mitchell":
        s = ia + ib
        big = s >= (1 << m)
        return big.astype(np.int64), np.where(big, s - (1 << m), s) << shift
    if family == "mbm":
        ka = (ia << shift) | (1 << shift)
        kb = (ib << shift) | (1 << shift)
        s = ka + kb
        carry = s >= FRAC_ONE
        sig = FRAC_ONE + s + MBM_CORRECTION
        norm = sig >= 2 * FRAC_ONE
        frac_nc = np.where(norm, sig >> 1, sig) - FRAC_ONE
        low = s - FRAC_ONE
        corrected = low + (MBM_CORRECTION >> 1)
        frac_c = np.where(corrected >= FRAC_ONE, low, corrected)
        inc = np.where(carry, 1, norm.astype(np.int64))
        frac = np.where(carry, frac_c, frac_nc)
        return inc, frac >> shift << shift
    raise KeyError(family)


def np_lut_bits(family: str, m: int) -> np.ndarray:
    """The LUT of a family as uint32 bits, computed with :func:`np_mantissa`."""
    n = 1 << m
    idx = np.arange(n, dtype=np.int64) << (FRAC_BITS - m)
    fa = np.repeat(idx, n)
    fb = np.tile(idx, n)
    inc, frac = np_mantissa(family, fa, fb, m)
    return (((127 + inc) << FRAC_BITS) | frac).astype(np.uint32).reshape(n, n)


def numpy_mitchell7(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mitchell at 7 bits on whole float32 operands (normal, in range), vectorized."""
    ua = a.view(np.uint32).astype(np.int64)
    ub = b.view(np.uint32).astype(np.int64)
    sign = (ua ^ ub) & 0x8000_0000
    e = ((ua >> 23) & 0xFF) + ((ub >> 23) & 0xFF) - 127
    s = ((ua >> 16) & 0x7F) + ((ub >> 16) & 0x7F)
    carry = s >= 128
    e = e + carry
    s = np.where(carry, s - 128, s)
    return (sign | (e << 23) | (s << 16)).astype(np.uint32).view(np.float32)


# ----------------------------------------------------------------------------- operand makers
def normal_bits(
    rng: np.random.Generator, count: int, exp_range: tuple[int, int] = (-60, 60)
) -> np.ndarray:
    """Random normal float32 bit patterns: random sign, exponent and all 23 fraction bits."""
    sign = rng.integers(0, 2, size=count, dtype=np.uint32) << np.uint32(31)
    expo = rng.integers(127 + exp_range[0], 127 + exp_range[1] + 1, size=count).astype(np.uint32)
    frac = rng.integers(0, FRAC_ONE, size=count, dtype=np.uint32)
    return sign | (expo << np.uint32(23)) | frac


def all_index_pairs(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Operand bits covering every (i, j) index pair once, with random low bits/exponent/sign."""
    n = 1 << m
    shift = FRAC_BITS - m
    idx = np.arange(n, dtype=np.uint32)
    ia = np.repeat(idx, n)
    ib = np.tile(idx, n)
    out = []
    for top in (ia, ib):
        base = normal_bits(rng, n * n)
        low = base & np.uint32((1 << shift) - 1)
        out.append((base & np.uint32(0xFF80_0000)) | (top << np.uint32(shift)) | low)
    return out[0], out[1]


def edge_bits(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs around every edge DESIGN §2 has rules for.

    Mixes uniformly random bit patterns (all exponents, so zeros, subnormals, inf and NaN
    appear), pairs whose exponent sum sits at the overflow and underflow boundaries, and
    explicit zeros, infinities and the largest finite float.
    """
    a = rng.integers(0, 1 << 32, size=count, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 1 << 32, size=count, dtype=np.uint64).astype(np.uint32)
    q = count // 4
    ea = rng.integers(1, 255, size=q).astype(np.int64)
    # Product exponent field = ea + eb - 127 (+ carry): aim at 0..1 and 254..255.
    target = rng.choice(np.array([-1, 0, 1, 2, 253, 254, 255, 256]), size=q)
    eb = np.clip(target + 127 - ea, 1, 254)
    frac_a = rng.integers(0, FRAC_ONE, size=q, dtype=np.int64)
    frac_b = rng.integers(0, FRAC_ONE, size=q, dtype=np.int64)
    a[:q] = ((ea << 23) | frac_a).astype(np.uint32)
    b[:q] = ((eb << 23) | frac_b).astype(np.uint32)
    specials = np.array(
        [
            0,
            SIGN,
            INF_BITS,
            INF_BITS | SIGN,
            0x7FC0_0000,
            0x0000_0001,
            0x007F_FFFF,
            FLOAT_MAX_BITS,
            FLOAT_MAX_BITS | SIGN,
            0x3F80_0000,
            0x7F7F_8000,
            0x7F7F_7FFF,
        ],
        dtype=np.uint32,
    )
    k = len(specials)
    a[q : q + k * k] = np.repeat(specials, k)
    b[q : q + k * k] = np.tile(specials, k)
    sign = rng.integers(0, 2, size=count, dtype=np.uint32) << np.uint32(31)
    a[:q] |= sign[:q]
    return a, b


# ----------------------------------------------------------------------------- comparisons
def as_bits(x: torch.Tensor) -> np.ndarray:
    """float32 tensor -> uint32 numpy array of its bit patterns."""
    assert x.dtype == torch.float32, x.dtype
    return x.contiguous().view(torch.int32).numpy().view(np.uint32)


def from_bits(bits: np.ndarray) -> torch.Tensor:
    """uint32 numpy bit patterns -> float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(bits, dtype=np.uint32).view(np.float32).copy())


def assert_same_bits(
    got: torch.Tensor,
    expected: Sequence[int | None] | np.ndarray,
    a_bits: np.ndarray | None = None,
    b_bits: np.ndarray | None = None,
) -> None:
    """Bit-exact comparison; ``None`` (or any NaN pattern) in ``expected`` means "a NaN"."""
    got_bits = as_bits(got).reshape(-1)
    if isinstance(expected, np.ndarray):
        exp = expected.astype(np.uint32).reshape(-1)
        want_nan = ((exp & 0x7F80_0000) == 0x7F80_0000) & ((exp & 0x007F_FFFF) != 0)
    else:
        want_nan = np.array([e is None for e in expected], dtype=bool)
        exp = np.array([0 if e is None else e for e in expected], dtype=np.uint32)
    got_nan = ((got_bits & 0x7F80_0000) == 0x7F80_0000) & ((got_bits & 0x007F_FFFF) != 0)
    bad = np.where(want_nan, ~got_nan, got_bits != exp)
    if bad.any():
        idx = np.flatnonzero(bad)[:8]
        lines = []
        for k in idx:
            ops = ""
            if a_bits is not None and b_bits is not None:
                ops = f"a=0x{int(a_bits.reshape(-1)[k]):08x} b=0x{int(b_bits.reshape(-1)[k]):08x} "
            want = "NaN" if want_nan[k] else f"0x{int(exp[k]):08x}"
            lines.append(f"  [{k}] {ops}got 0x{int(got_bits[k]):08x} want {want}")
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} products differ:\n" + "\n".join(lines)
        )
