"""DESIGN §2 edge rules, broadcasting and input dtypes of LUT multipliers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mult_reference import (
    FLOAT_MAX_BITS,
    as_bits,
    assert_same_bits,
    b2f,
    edge_bits,
    from_bits,
    reference_products,
    spec,
)

import approxsim
from approxsim.multipliers import numformat

LUT_MULTIPLIERS = ["mitchell7", "mbm7", "trunc3", "mitchell11", "bf16", "bf16_trunc"]

FMAX = b2f(FLOAT_MAX_BITS)
SUB_MIN = b2f(0x0000_0001)
SUB_MAX = b2f(0x007F_FFFF)
INF = math.inf
NAN = math.nan

# (a, b, expected): "+0", "-0", "+inf", "-inf", "nan"
RULES = [
    # zeros and subnormals give a zero whose sign is the xor of the operand signs
    (0.0, 3.0, "+0"),
    (-0.0, 3.0, "-0"),
    (0.0, -3.0, "-0"),
    (-0.0, -3.0, "+0"),
    (0.0, 0.0, "+0"),
    (-0.0, 0.0, "-0"),
    (SUB_MIN, 3.0, "+0"),
    (3.0, -SUB_MIN, "-0"),
    (-SUB_MAX, -(2.0**100), "+0"),
    (SUB_MAX, 2.0**120, "+0"),
    (-SUB_MAX, SUB_MAX, "-0"),
    # overflow: infinity with the product's sign
    (2.0**100, 2.0**100, "+inf"),
    (-(2.0**100), 2.0**100, "-inf"),
    (FMAX, -4.0, "-inf"),
    (FMAX, FMAX, "+inf"),
    # underflow: a signed zero, never a subnormal (IEEE would give 2^-127 here)
    (2.0**-100, 2.0**-100, "+0"),
    (-(2.0**-100), 2.0**-100, "-0"),
    (2.0**-64, 2.0**-63, "+0"),
    (-(2.0**-64), -(2.0**-63), "+0"),
    # NaN propagates
    (NAN, 1.0, "nan"),
    (1.0, NAN, "nan"),
    (NAN, 0.0, "nan"),
    (NAN, INF, "nan"),
    (-NAN, -2.5, "nan"),
    # infinity times a finite nonzero is infinity; times zero or a subnormal is NaN
    (INF, 2.0, "+inf"),
    (-INF, 2.0, "-inf"),
    (2.0, -INF, "-inf"),
    (INF, -INF, "-inf"),
    (-INF, -INF, "+inf"),
    (INF, 2.0**-120, "+inf"),
    (INF, 0.0, "nan"),
    (-0.0, INF, "nan"),
    (INF, SUB_MIN, "nan"),
    (-SUB_MAX, -INF, "nan"),
]


def _check(value: float, expected: str) -> None:
    if expected == "nan":
        assert math.isnan(value), value
        return
    sign = -1.0 if expected.startswith("-") else 1.0
    assert math.copysign(1.0, value) == sign, value
    if expected.endswith("inf"):
        assert math.isinf(value), value
    else:
        assert value == 0.0, value


@pytest.mark.parametrize("name", LUT_MULTIPLIERS)
@pytest.mark.parametrize(("a", "b", "expected"), RULES)
def test_edge_rule(name: str, a: float, b: float, expected: str) -> None:
    mult = approxsim.get_multiplier(name)
    out = mult(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))
    assert out.dtype == torch.float32
    _check(out.item(), expected)


@pytest.mark.parametrize("name", LUT_MULTIPLIERS)
def test_edges_match_reference_fuzz(name: str) -> None:
    """Random bit patterns of every class, and exponent sums at both range edges."""
    rng = np.random.default_rng(sum(map(ord, name)))
    a, b = edge_bits(rng, 24000)
    got = approxsim.get_multiplier(name)(from_bits(a), from_bits(b))
    assert_same_bits(got, reference_products(name, a, b), a, b)


@pytest.mark.parametrize("name", LUT_MULTIPLIERS)
def test_never_returns_a_subnormal(name: str) -> None:
    rng = np.random.default_rng(5)
    # Exponent sums around the bottom of the normal range.
    ea = rng.integers(1, 127, size=20000)
    eb = np.clip(127 - ea + rng.integers(-3, 4, size=20000), 1, 254)
    a = ((ea << 23) | rng.integers(0, 1 << 23, size=20000)).astype(np.uint32)
    b = ((eb << 23) | rng.integers(0, 1 << 23, size=20000)).astype(np.uint32)
    out = as_bits(approxsim.get_multiplier(name)(from_bits(a), from_bits(b)))
    subnormal = ((out & 0x7F80_0000) == 0) & ((out & 0x007F_FFFF) != 0)
    assert not subnormal.any()
    # Both outcomes occur, so the boundary really was crossed.
    assert ((out & 0x7F80_0000) == 0).any()
    assert ((out & 0x7F80_0000) != 0).any()


def test_bf16_input_rounding_to_infinity_acts_as_infinity() -> None:
    bf16 = approxsim.get_multiplier("bf16")
    fmax = torch.tensor([FMAX, -FMAX, FMAX])
    other = torch.tensor([0.5, 0.5, 0.0])
    out = bf16(fmax, other)
    assert out[0].item() == INF
    assert out[1].item() == -INF
    assert math.isnan(out[2].item())  # rounded to inf, times zero
    # Same as torch's bfloat16 conversion for the finite operand pairs.
    want = (fmax[:2].bfloat16().float() * other[:2].bfloat16().float()).bfloat16().float()
    assert_same_bits(out[:2], as_bits(want))
    # Just below the rounding midpoint stays finite; truncating units never round up.
    below = torch.tensor([b2f(0x7F7F_7FFF)])
    assert bf16(below, torch.tensor([0.5])).item() == b2f(0x7EFF_0000)
    for name in ("bf16_trunc", "mitchell7", "mbm7"):
        assert math.isfinite(approxsim.get_multiplier(name)(fmax[:1], other[:1]).item())


@pytest.mark.parametrize("name", ["mitchell7", "bf16"])
def test_broadcasting(name: str) -> None:
    mult = approxsim.get_multiplier(name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 1, 4, generator=gen)
    b = torch.randn(5, 1, generator=gen)
    out = mult(a, b)
    assert out.shape == (3, 5, 4)
    ea, eb = torch.broadcast_tensors(a, b)
    a_bits = as_bits(ea.contiguous())
    b_bits = as_bits(eb.contiguous())
    assert_same_bits(out, reference_products(name, a_bits.ravel(), b_bits.ravel()))
    # Python scalars and 0-d tensors broadcast too.
    assert mult(1.5, 1.5).shape == ()
    assert mult(1.5, 1.5).item() == mult(torch.tensor([1.5]), torch.tensor([1.5])).item()
    assert mult(a, 2.0).shape == a.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ["mitchell7", "mbm7", "bf16"])
def test_other_float_dtypes_are_converted_to_float32(name: str, dtype: torch.dtype) -> None:
    mult = approxsim.get_multiplier(name)
    gen = torch.Generator().manual_seed(1)
    a = (torch.randn(1000, generator=gen, dtype=torch.float64) * 7).to(dtype)
    b = (torch.randn(1000, generator=gen, dtype=torch.float64) * 7).to(dtype)
    out = mult(a, b)
    assert out.dtype == torch.float32
    a32, b32 = a.to(torch.float32), b.to(torch.float32)
    assert_same_bits(out, reference_products(name, as_bits(a32), as_bits(b32)))


@pytest.mark.parametrize(
    "bad",
    [
        torch.ones(3, dtype=torch.complex64),
        torch.ones(3, dtype=torch.complex128),
        torch.ones(3, dtype=torch.bool),
    ],
    ids=["complex64", "complex128", "bool"],
)
@pytest.mark.parametrize("name", ["mitchell7", "fp32"])
def test_wrong_dtype_raises(name: str, bad: torch.Tensor) -> None:
    mult = approxsim.get_multiplier(name)
    with pytest.raises(approxsim.MultiplierError, match="dtype"):
        mult(bad, torch.ones(3))
    with pytest.raises(approxsim.MultiplierError, match="dtype"):
        mult(torch.ones(3), bad)


def test_operands_on_different_devices_raise() -> None:
    mult = approxsim.get_multiplier("mitchell7")
    with pytest.raises(approxsim.MultiplierError, match="device"):
        mult(torch.ones(2, device="meta"), torch.ones(2))


@pytest.mark.parametrize("rounding", numformat.ROUNDINGS)
@pytest.mark.parametrize("name", LUT_MULTIPLIERS)
def test_number_format_catalogue_matches_the_independent_model(name: str, rounding: str) -> None:
    """The public number format, on every pair of its own special operands (the ones every
    kernel's parity test uses), against the independent scalar model, in both rounding modes."""
    fn, m, _ = spec(name)
    mult = approxsim.get_multiplier(name)
    ops = numformat.special_operands()
    a = ops.repeat_interleave(len(ops))
    b = ops.repeat(len(ops))
    got = numformat.lut_product(a, b, mult.lut_bits(), m, rounding)
    assert_same_bits(got, reference_products((fn, m, rounding), as_bits(a), as_bits(b)))


def test_number_format_flushes_subnormals_before_rounding() -> None:
    """A subnormal that `nearest` rounding would carry into exponent 1 still acts as zero."""
    bits = torch.tensor(
        [numformat.as_int32(numformat.SPECIAL_OPERANDS[k]) for k in (
            "subnormal near normal", "-largest subnormal", "smallest normal, nearest carries",
            "largest normal, nearest carries to inf",
        )],
        dtype=torch.int32,
    )  # fmt: skip
    exp_field, _, is_zero, is_inf, _ = numformat.operand_index(bits, 7, "nearest")
    assert is_zero.tolist() == [True, True, False, False]
    assert is_inf.tolist() == [False, False, False, True]
    assert exp_field[2].item() == 2  # the carry into the exponent
    with pytest.raises(ValueError, match="rounding"):
        numformat.operand_index(bits, 7, "stochastic")
