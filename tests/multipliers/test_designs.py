"""Built-in multipliers against independent scalar models (mult_reference), bit for bit.

LUT tests compare every entry of ``m.lut`` over the mantissa grid; product tests call
``m(a, b)`` on tensors of full-precision operands, so the fraction bits below M, the
exponents and the signs are exercised too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mult_reference import (
    FAMILIES,
    all_index_pairs,
    approxtrain_mbm16,
    approxtrain_mitchell16,
    as_bits,
    assert_same_bits,
    b2f,
    edge_bits,
    f2b,
    from_bits,
    lut_bits_grid,
    normal_bits,
    np_lut_bits,
    np_mantissa,
    reference_products,
    spec,
)

import approxsim

FAMILY_NAMES = sorted(FAMILIES)


# ----------------------------------------------------------------------------- LUT grids
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_lut_matches_scalar_model_exhaustively(family: str, m: int) -> None:
    mult = approxsim.get_multiplier(f"{family}{m}")
    assert mult.mantissa_bits == m
    assert mult.rounding == "truncate"
    assert not mult.is_exact
    lut = mult.lut
    assert lut is not None
    assert lut.dtype == torch.float32
    assert tuple(lut.shape) == (1 << m, 1 << m)
    np.testing.assert_array_equal(as_bits(lut), lut_bits_grid(FAMILIES[family], m))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_vectorized_twin_agrees_with_scalar_model(family: str) -> None:
    """The numpy twin used for the 2^22-entry grid is itself checked against the scalar model."""
    rng = np.random.default_rng(11)
    scalar = FAMILIES[family]
    for m in (1, 5, 9, 11):
        fa = rng.integers(0, 1 << 23, size=3000)
        fb = rng.integers(0, 1 << 23, size=3000)
        inc, frac = np_mantissa(family, fa, fb, m)
        want = [scalar(int(x), int(y), m) for x, y in zip(fa, fb, strict=True)]
        assert [(int(i), int(f)) for i, f in zip(inc, frac, strict=True)] == want


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_lut_m11_exhaustive(family: str) -> None:
    mult = approxsim.get_multiplier(f"{family}11")
    got = as_bits(mult.lut)
    assert got.shape == (2048, 2048)
    np.testing.assert_array_equal(got, np_lut_bits(family, 11))


@pytest.mark.parametrize("m", [9, 10, 11])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_lut_wide_spot_checks_scalar(family: str, m: int) -> None:
    """Random entries of the wide grids straight from the scalar model."""
    rng = np.random.default_rng(m)
    lut = as_bits(approxsim.get_multiplier(f"{family}{m}").lut)
    n = 1 << m
    ii = rng.integers(0, n, size=2000)
    jj = rng.integers(0, n, size=2000)
    # The grid corners and the middle, where carries and corrections switch.
    ii = np.concatenate([ii, [0, 0, n - 1, n - 1, n // 2]])
    jj = np.concatenate([jj, [0, n - 1, 0, n - 1, n // 2]])
    ua = (127 << 23) | (ii << (23 - m))
    ub = (127 << 23) | (jj << (23 - m))
    want = np.array(reference_products(f"{family}{m}", ua, ub), dtype=np.uint32)
    np.testing.assert_array_equal(lut[ii, jj], want)


@pytest.mark.parametrize("name", ["bf16", "bf16_trunc"])
def test_bf16_luts_match_scalar_model(name: str) -> None:
    fn, m, rounding = spec(name)
    mult = approxsim.get_multiplier(name)
    assert mult.mantissa_bits == 7
    assert mult.rounding == rounding
    np.testing.assert_array_equal(as_bits(mult.lut), lut_bits_grid(fn, m))


def test_bf16_lut_matches_torch_bfloat16() -> None:
    n = 128
    ops = from_bits(np.uint32(127 << 23) | (np.arange(n, dtype=np.uint32) << np.uint32(16)))
    a = ops.repeat_interleave(n)
    b = ops.repeat(n)
    want = (a.bfloat16().float() * b.bfloat16().float()).bfloat16().float().reshape(n, n)
    np.testing.assert_array_equal(as_bits(approxsim.get_multiplier("bf16").lut), as_bits(want))


# ----------------------------------------------------------------------------- products
@pytest.mark.parametrize("m", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_products_every_index_pair(family: str, m: int) -> None:
    """Every (i, j) pair once, with random low bits, exponents and signs."""
    rng = np.random.default_rng(100 + m)
    a, b = all_index_pairs(rng, m)
    got = approxsim.get_multiplier(f"{family}{m}")(from_bits(a), from_bits(b))
    assert_same_bits(got, reference_products(f"{family}{m}", a, b), a, b)


@pytest.mark.parametrize("m", [8, 11])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_products_random_operands(family: str, m: int) -> None:
    rng = np.random.default_rng(200 + m)
    a = normal_bits(rng, 20000)
    b = normal_bits(rng, 20000)
    got = approxsim.get_multiplier(f"{family}{m}")(from_bits(a), from_bits(b))
    assert_same_bits(got, reference_products(f"{family}{m}", a, b), a, b)


@pytest.mark.parametrize(
    ("name", "model"), [("mitchell7", approxtrain_mitchell16), ("mbm7", approxtrain_mbm16)]
)
def test_m7_matches_approxtrain_16bit_model(name: str, model) -> None:
    """mitchell7/mbm7 vs the ApproxTrain-form scalar models on full float32 operands."""
    rng = np.random.default_rng(7)
    a_all, b_all = all_index_pairs(rng, 7)
    a = np.concatenate([a_all, normal_bits(rng, 8000)])
    b = np.concatenate([b_all, normal_bits(rng, 8000)])
    want = [f2b(model(b2f(int(x)), b2f(int(y)))) for x, y in zip(a, b, strict=True)]
    got = approxsim.get_multiplier(name)(from_bits(a), from_bits(b))
    assert_same_bits(got, want, a, b)


def test_approxtrain_mbm_model_needs_the_correction() -> None:
    """Guards the reference itself: MBM differs from Mitchell by the correction term."""
    one_and_half = 1.5
    assert approxtrain_mitchell16(one_and_half, one_and_half) == 2.0
    # S = 0.5 + 2^-7 twice -> carry; corrected = 2^-6 + 2^-5 + 2^-7: 2 * (1 + 7/128).
    assert approxtrain_mbm16(one_and_half, one_and_half) == 2.0 * (1 + 7 / 128)


def _bf16_operands(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b = all_index_pairs(rng, 7)
    extra_a = normal_bits(rng, 6000)
    extra_b = normal_bits(rng, 6000)
    # Exact ties (low 16 bits = 0x8000) and fractions that round up into the next binade.
    extra_a[:2000] = (extra_a[:2000] & np.uint32(0xFFFF_0000)) | np.uint32(0x8000)
    extra_b[1000:3000] = (extra_b[1000:3000] & np.uint32(0xFF80_0000)) | np.uint32(0x7FFF_FF)
    return np.concatenate([a, extra_a]), np.concatenate([b, extra_b])


def test_bf16_products_match_torch_bfloat16() -> None:
    rng = np.random.default_rng(16)
    a_bits, b_bits = _bf16_operands(rng)
    a, b = from_bits(a_bits), from_bits(b_bits)
    want = (a.bfloat16().float() * b.bfloat16().float()).bfloat16().float()
    got = approxsim.get_multiplier("bf16")(a, b)
    assert_same_bits(got, as_bits(want), a_bits, b_bits)
    assert_same_bits(got, reference_products("bf16", a_bits, b_bits), a_bits, b_bits)


def test_bf16_trunc_products_match_masked_float32() -> None:
    rng = np.random.default_rng(17)
    a_bits, b_bits = _bf16_operands(rng)
    mask = np.uint32(0xFFFF_0000)
    at, bt = from_bits(a_bits & mask), from_bits(b_bits & mask)
    want = as_bits(at * bt) & mask
    got = approxsim.get_multiplier("bf16_trunc")(from_bits(a_bits), from_bits(b_bits))
    assert_same_bits(got, want, a_bits, b_bits)
    assert_same_bits(got, reference_products("bf16_trunc", a_bits, b_bits), a_bits, b_bits)


def test_bf16_and_bf16_trunc_differ() -> None:
    """Rounding matters: the two bfloat16 units must not be the same table."""
    rn, tr = approxsim.get_multiplier("bf16"), approxsim.get_multiplier("bf16_trunc")
    assert rn.fingerprint != tr.fingerprint
    x = torch.tensor([1.0 + 3 * 2.0**-9])  # rounds up in bf16, truncates down
    assert rn(x, torch.ones(1)).item() == 1.0 + 2.0**-7
    assert tr(x, torch.ones(1)).item() == 1.0


def test_fp32_is_exact() -> None:
    mult = approxsim.get_multiplier("fp32")
    assert mult.is_exact
    assert mult.lut is None
    assert mult.mantissa_bits == 23
    rng = np.random.default_rng(32)
    a_bits, b_bits = edge_bits(rng, 20000)
    a, b = from_bits(a_bits), from_bits(b_bits)
    got = mult(a, b)
    assert got.dtype == torch.float32
    # Exact IEEE: subnormal products stay subnormal, nothing is flushed.
    assert_same_bits(got, as_bits(a * b), a_bits, b_bits)
    assert mult(torch.tensor(2.0**-70), torch.tensor(2.0**-70)).item() == 2.0**-140
