"""Built-in integer designs, exhaustively against independent scalar models, and the registry.

The models here are written from the designs' published descriptions with plain Python ints,
bit by bit (and Mitchell's in exact rational arithmetic on the logarithms), independently of
the vectorized generators in ``approxsim.multipliers.intdesigns``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from functools import cache

import numpy as np
import pytest

from approxsim.multipliers import MultiplierError, UnknownMultiplierError, get_multiplier
from approxsim.multipliers.intdesigns import LISTED_DESIGNS, parse_design_name
from approxsim.multipliers.integer import IntMultiplier
from approxsim.multipliers.registry import (
    get_int_multiplier,
    list_int_multipliers,
    register_int_multiplier,
)

Scalar = Callable[[int, int], int]


def leading_one(x: int, bits: int) -> int:
    """Position of the most significant set bit of ``x > 0``, scanning down from the top."""
    p = bits - 1
    while not (x >> p) & 1:
        p -= 1
    return p


def drum_model(k: int, bits: int) -> Scalar:
    def operand(x: int) -> int:
        if x < (1 << k):
            return x  # fits in k bits: nothing dropped, nothing forced
        shift = leading_one(x, bits) - k + 1
        kept = (x >> shift) | 1  # the lowest kept bit set to 1
        return kept << shift

    return lambda a, b: operand(a) * operand(b)


def bam_model(h: int, v: int, bits: int) -> Scalar:
    def product(a: int, b: int) -> int:
        total = 0
        for j in range(bits):  # one row of the array per bit of the second operand
            if j < h or not (b >> j) & 1:
                continue
            for i in range(bits):
                if (a >> i) & 1 and i + j >= v:
                    total += 1 << (i + j)
        return total

    return product


def mitchell_model(w: int, bits: int) -> Scalar:
    @cache
    def log2(x: int) -> Fraction:
        k = leading_one(x, bits)
        frac = Fraction(x - (1 << k), 1 << k)
        return k + Fraction(math.floor(frac * (1 << w)), 1 << w)  # w-bit fraction

    def product(a: int, b: int) -> int:
        if a == 0 or b == 0:
            return 0
        s = log2(a) + log2(b)
        k = math.floor(s)
        r = Fraction(1 << k) * (1 + (s - k))  # the piecewise-linear antilogarithm
        assert r.denominator == 1
        return int(r)

    return product


def core_model(family: str, params: tuple[int, ...], bits: int) -> Scalar:
    if family == "exact":
        return lambda a, b: a * b
    if family == "drum":
        return drum_model(params[0], bits)
    if family == "trunc":
        return bam_model(0, params[0], bits)
    if family == "bam":
        return bam_model(params[0], params[1], bits)
    assert family == "mitchell"
    return mitchell_model(params[0] if params else bits - 1, bits)


@cache
def model_table(name: str) -> np.ndarray:
    """The table of a design name from the scalar models: the expected value of every pair."""
    parsed = parse_design_name(name)
    assert parsed is not None
    family, params, bits, signed = parsed
    core = core_model(family, params, bits)
    n = 1 << bits
    lo = -(n >> 1) if signed else 0
    # The core only ever sees magnitudes (up to 2^(bits-1) when signed); evaluate each once.
    mags = range((n >> 1) + 1) if signed else range(n)
    cores = [[core(x, y) for y in mags] for x in mags]
    out = np.empty((n, n), dtype=np.int64)
    for i in range(n):
        a = lo + i
        for j in range(n):
            b = lo + j
            sign = -1 if (a < 0) != (b < 0) else 1
            out[i, j] = signed_product(sign * cores[abs(a)][abs(b)], bits, signed)
    return out


def signed_product(p: int, bits: int, signed: bool) -> int:
    """Saturate a sign-magnitude product to the 2·bits-bit two's complement range."""
    if not signed:
        return p
    top = 1 << (2 * bits - 1)
    return max(-top, min(top - 1, p))


@pytest.mark.parametrize("name", LISTED_DESIGNS)
def test_listed_design_matches_scalar_model_on_every_pair(name: str) -> None:
    m = get_int_multiplier(name)
    assert m.name == name and m.bits == 8 and m.signed == ("_s" in name or name == "int8")
    assert np.array_equal(m.table.numpy(), model_table(name)), name


def _small_names() -> list[str]:
    names = []
    for bits in (2, 3, 4, 5):
        for s in "us":
            names += [f"drum{k}_{s}{bits}" for k in range(2, bits)]
            names += [f"trunc{t}_{s}{bits}" for t in range(1, 2 * bits)]
            names += [f"mitchell{w}_{s}{bits}" for w in range(1, bits)] + [f"mitchell_{s}{bits}"]
            names += [
                f"bam_h{h}v{v}_{s}{bits}" for h in range(bits) for v in range(2 * bits) if h + v > 0
            ]
        names += [f"uint{bits}", f"int{bits}"]
    return names


def test_every_parameter_at_small_widths_matches_scalar_model() -> None:
    names = _small_names()
    assert len(names) > 200
    for name in names:
        assert np.array_equal(get_int_multiplier(name).table.numpy(), model_table(name)), name


def test_wider_designs_match_scalar_model_on_sampled_pairs() -> None:
    rng = np.random.default_rng(0)
    for name in ("drum6_u12", "drum2_s10", "trunc9_u10", "mitchell_s10", "bam_h3v10_u10"):
        m = get_int_multiplier(name)
        family, params, bits, signed = parse_design_name(name)  # type: ignore[misc]
        core = core_model(family, params, bits)
        a = rng.integers(m.min_value, m.max_value + 1, size=2000)
        b = rng.integers(m.min_value, m.max_value + 1, size=2000)
        got = m.table.numpy()[a - m.min_value, b - m.min_value]
        for x, y, g in zip(a.tolist(), b.tolist(), got.tolist(), strict=True):
            sign = -1 if (x < 0) != (y < 0) else 1
            assert g == signed_product(sign * core(abs(x), abs(y)), bits, signed), (name, x, y)
        if signed:  # the one pair that can saturate
            assert m.table.numpy()[0, 0] == signed_product(
                core(-m.min_value, -m.min_value), bits, True
            )


def test_signed_products_saturate_rather_than_wrap() -> None:
    m = get_int_multiplier("drum2_s8")
    # |-128| rounds up to 192 and 192² passes 32767: the product saturates, keeping its sign.
    assert int(m.m(-128, -128)) == 32767
    assert int(m.m(-128, 127)) < 0


def test_designs_have_the_expected_character() -> None:
    # Truncation, BAM and Mitchell never overestimate; DRUM keeps the leading k bits.
    for name in ("trunc8_u8", "bam_h3v8_u8", "mitchell_u8", "mitchell3_u8"):
        assert get_int_multiplier(name).error_grid().max() <= 0, name
    mae = [get_int_multiplier(f"drum{k}_u8").error_stats()["mae"] for k in (3, 4, 5, 6)]
    assert mae == sorted(mae, reverse=True)
    # Mitchell's worst case relative error is about 11.1% (at fractions of 1/2 each).
    assert get_int_multiplier("mitchell_u8").error_stats()["wcre_percent"] == pytest.approx(
        100 / 9, rel=0.01
    )
    # The listed set spans small to large errors.
    mae_pct = [get_int_multiplier(n).error_stats()["mae_percent"] for n in LISTED_DESIGNS]
    assert min(p for p in mae_pct if p > 0) < 0.05 and max(mae_pct) > 2


def test_design_provenance_and_describe() -> None:
    m = get_int_multiplier("bam_h2v6_s8")
    p = m.provenance
    assert p["builder"] == "builtin" and p["design"] == "bam" and p["parameters"] == [2, 6]
    assert "sign-magnitude" in p["description"]
    assert m.describe()["error_stats"]["mae_percent"] > 0


# ---------------------------------------------------------------------- the registry


def test_list_int_multipliers() -> None:
    names = list_int_multipliers()
    assert set(LISTED_DESIGNS) <= set(names) and "uint8" in names and "int8" in names
    assert list_int_multipliers("drum*_u8") == ["drum3_u8", "drum4_u8", "drum5_u8", "drum6_u8"]
    assert list_int_multipliers("nothing*") == []


def test_get_int_multiplier_caches_and_passes_instances() -> None:
    a = get_int_multiplier("drum4_u8")
    assert get_int_multiplier("drum4_u8") is a
    assert get_int_multiplier(a) is a
    assert get_int_multiplier("int8") == IntMultiplier.exact(8, True)
    assert get_int_multiplier("trunc5_u6") == get_int_multiplier("bam_h0v5_u6")


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("drum8_u8", MultiplierError, "k must be from 2 to 7"),
        ("drum1_u8", MultiplierError, "k must be"),
        ("trunc16_u8", MultiplierError, "t must be from 1 to 15"),
        ("mitchell8_s8", MultiplierError, "w must be from 1 to 7"),
        ("bam_h8v2_u8", MultiplierError, "h must be"),
        ("bam_h0v0_u8", MultiplierError, "exact multiplier"),
        ("drum4_u13", MultiplierError, "2 to 12 bits"),
        ("uint1", MultiplierError, "2 to 12 bits"),
        ("mitchell7", UnknownMultiplierError, "float multiplier; use get_multiplier"),
        ("nosuch", UnknownMultiplierError, "Built-in families: uint<b>"),
    ],
)
def test_get_int_multiplier_errors(name: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        get_int_multiplier(name)


def test_get_multiplier_points_integer_names_to_the_integer_registry() -> None:
    with pytest.raises(UnknownMultiplierError, match="integer multiplier"):
        get_multiplier("drum4_u8")
    with pytest.raises(MultiplierError, match="must be a string"):
        get_int_multiplier(3)  # type: ignore[arg-type]


def test_register_int_multiplier() -> None:
    calls = []

    def factory() -> IntMultiplier:
        calls.append(1)
        return IntMultiplier.from_python(lambda a, b: a * b & ~3, 4, False, name="test-reg-a")

    register_int_multiplier("test-reg-a", factory)
    assert "test-reg-a" in list_int_multipliers("test-reg-*")
    assert get_int_multiplier("test-reg-a") is get_int_multiplier("test-reg-a")
    assert calls == [1]

    @register_int_multiplier("test-reg-b")
    def bad() -> IntMultiplier:
        return "not a multiplier"  # type: ignore[return-value]

    with pytest.raises(MultiplierError, match="not an IntMultiplier"):
        get_int_multiplier("test-reg-b")
    with pytest.raises(MultiplierError, match="already registered or built in"):
        register_int_multiplier("test-reg-a", factory)
    with pytest.raises(MultiplierError, match="already registered or built in"):
        register_int_multiplier("drum4_u8", factory)
    with pytest.raises(MultiplierError, match="letters, digits"):
        register_int_multiplier("bad name", factory)
