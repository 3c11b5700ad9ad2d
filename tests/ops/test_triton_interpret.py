"""The Triton kernels (approxsim.ops._triton) against the LUT-product specification, on CPU.

``TRITON_INTERPRET=1`` makes triton build interpreted kernels that run on CPU tensors, so these
tests need triton but no GPU. Products must be bit-identical to
:func:`approxsim.multipliers.numformat.lut_product`; matmul sums may differ from the float64 sum of
the reference products by at most ``4 · eps32 · K · Σ|products|`` (DESIGN §2).

Triton fixes interpreted-or-compiled for the whole process when it is first imported (its own
``tl.standard`` functions are decorated then), so the variable is set here before triton is
imported. Where a CUDA device is present the module skips instead of setting it, so that it
cannot turn the real GPU tests of the same pytest run into interpreter runs; run it there on its
own with ``TRITON_INTERPRET=1 pytest tests/ops/test_triton_interpret.py``.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    if torch.cuda.is_available():
        pytest.skip(
            "a GPU is present: the compiled kernels are tested there; run this file alone with "
            "TRITON_INTERPRET=1 to test the interpreted ones",
            allow_module_level=True,
        )
    if "triton" in sys.modules:
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 could be set; run this file in its "
            "own pytest process",
            allow_module_level=True,
        )
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (see the docstring)

pytest.importorskip("triton")

import approxsim  # noqa: E402
from approxsim.multipliers.numformat import (  # noqa: E402
    ROUNDINGS,
    lut_product,
    special_operands,
)
from approxsim.ops._triton import triton_lut_bmm, triton_lut_mul  # noqa: E402

# The interpreter computes inf/NaN sums with numpy, which warns about them; they are expected.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|overflow) encountered:RuntimeWarning"
)

FAMILIES = ["bf16", "bf16_trunc", "mitchell7", "mbm7", "trunc3", "mitchell11"]
EPS32 = torch.finfo(torch.float32).eps
FLT_MAX = torch.finfo(torch.float32).max


#: Operands at every edge of DESIGN §2's rules (the number format's catalogue).
SPECIALS = special_operands()
SPECIAL_BITS = SPECIALS.view(torch.int32)


def _multiplier(name: str) -> tuple[torch.Tensor, int, int]:
    m = approxsim.get_multiplier(name)
    return m.lut_bits("cpu"), m.mantissa_bits, ROUNDINGS.index(m.rounding)


def _products(a: torch.Tensor, b: torch.Tensor, lut, m: int, rnd: int) -> torch.Tensor:
    """Reference products P[b, r, k, n] = a[b, r, k] ⊗ b[b, k, n]."""
    return lut_product(a[..., :, :, None], b[..., None, :, :], lut, m, ROUNDINGS[rnd])


def _assert_sums_close(out: torch.Tensor, prods: torch.Tensor) -> None:
    """Check ``out == Σ_k prods`` within ``4 · eps32 · K · Σ|prods|``, specials included.

    Where every product is finite, the float64 sum of the products is the target. Where some
    product is inf or NaN, the result must be that sum's NaN or signed infinity exactly, as
    long as the finite products cannot overflow a float32 partial sum themselves. Entries whose
    finite products alone could overflow depend on the summation order and are not checked.
    """
    k = prods.shape[-2]
    p64 = prods.double()
    finite = torch.isfinite(p64)
    all_finite = finite.all(dim=-2)
    finite_mass = torch.where(finite, p64.abs(), 0.0).sum(dim=-2)
    safe = finite_mass <= FLT_MAX / 2
    expected = p64.sum(dim=-2)
    bound = 4 * EPS32 * k * finite_mass
    out64 = out.double()

    close = all_finite & safe
    bad = close & ((out64 - expected).abs() > bound)
    assert not bad.any(), (
        f"{int(bad.sum())} sums off: got {out64[bad][:5].tolist()}, "
        f"expected {expected[bad][:5].tolist()} ± {bound[bad][:5].tolist()}"
    )
    special = ~all_finite & safe
    same = (out64 == expected) | (out64.isnan() & expected.isnan())
    bad = special & ~same
    assert not bad.any(), (
        f"{int(bad.sum())} special sums differ: got {out64[bad][:5].tolist()}, "
        f"expected {expected[bad][:5].tolist()}"
    )
    # Guard against a vacuous test: almost everything must have been checked.
    assert safe.float().mean() >= 0.8


# ---------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("rounding", [0, 1], ids=ROUNDINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_mul_bit_exact(family: str, rounding: int) -> None:
    lut, m, _ = _multiplier(family)
    gen = torch.Generator().manual_seed(1)
    s = len(SPECIAL_BITS)
    raw = torch.randint(-(2**31), 2**31, (2, 2048), generator=gen, dtype=torch.int64)
    rand_bits = raw.to(torch.int32).view(torch.float32)  # every class of float32
    normal = torch.randn(2, s, generator=gen)
    a = torch.cat([SPECIALS.repeat_interleave(s), rand_bits[0], SPECIALS, normal[0]]).contiguous()
    b = torch.cat([SPECIALS.repeat(s), rand_bits[1], normal[1], SPECIALS]).contiguous()

    got = triton_lut_mul(a, b, lut, m, rounding)
    want = lut_product(a, b, lut, m, ROUNDINGS[rounding])
    assert got.shape == a.shape and got.dtype == torch.float32
    mismatch = got.view(torch.int32) != want.view(torch.int32)
    assert not mismatch.any(), (
        f"{int(mismatch.sum())} products differ, first at a={a[mismatch][:3].tolist()}, "
        f"b={b[mismatch][:3].tolist()}: got {got[mismatch][:3].tolist()}, "
        f"want {want[mismatch][:3].tolist()}"
    )


def test_mul_shapes_and_empty() -> None:
    lut, m, rnd = _multiplier("mitchell7")
    a = torch.randn(3, 5, 7)
    b = torch.randn(3, 5, 7)
    got = triton_lut_mul(a, b, lut, m, rnd, block_size=64)
    want = lut_product(a, b, lut, m, ROUNDINGS[rnd])
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    empty = torch.empty(0, 4)
    assert triton_lut_mul(empty, empty, lut, m, rnd).shape == (0, 4)


# ---------------------------------------------------------------------------- matmul
SHAPES = [(1, 1, 1, 1), (1, 3, 5, 7), (1, 17, 33, 9), (2, 17, 33, 9)]  # (B, R, K, N)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("family", FAMILIES)
def test_bmm_matches_reference(family: str, shape: tuple[int, int, int, int]) -> None:
    lut, m, rnd = _multiplier(family)
    nb, r, k, n = shape
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(nb, r, k, generator=gen)
    b = torch.randn(nb, k, n, generator=gen)
    out = triton_lut_bmm(a, b, lut, m, rnd)
    assert out.shape == (nb, r, n) and out.dtype == torch.float32
    _assert_sums_close(out, _products(a, b, lut, m, rnd))


@pytest.mark.parametrize("family", FAMILIES)
def test_bmm_special_values(family: str) -> None:
    lut, m, rnd = _multiplier(family)
    gen = torch.Generator().manual_seed(3)
    nb, r, k, n = 2, 13, 24, 11
    a = torch.randn(nb, r, k, generator=gen)
    b = torch.randn(nb, k, n, generator=gen)
    for x in (a, b):
        flat = x.view(-1)
        where = torch.randperm(flat.numel(), generator=gen)[: flat.numel() // 30]
        pick = torch.randint(len(SPECIALS), (len(where),), generator=gen)
        flat[where] = SPECIALS[pick]
    out = triton_lut_bmm(a, b, lut, m, rnd, block_m=8, block_n=8, block_k=4)
    _assert_sums_close(out, _products(a, b, lut, m, rnd))


@pytest.mark.parametrize("family", FAMILIES)
def test_bmm_single_k_is_the_product(family: str) -> None:
    """With K = 1 every output is one product (plus the +0 the sum starts from): bit-exact."""
    lut, m, rnd = _multiplier(family)
    a = SPECIALS.reshape(1, -1, 1).contiguous()
    b = SPECIALS.reshape(1, 1, -1).contiguous()
    out = triton_lut_bmm(a, b, lut, m, rnd, block_m=16, block_n=16, block_k=8)
    want = _products(a, b, lut, m, rnd)[:, :, 0, :] + 0.0
    # NaN payloads: the spec returns one quiet NaN, and adding +0 keeps it.
    assert torch.equal(out.view(torch.int32), want.view(torch.int32))


def test_bmm_tiles_and_strides() -> None:
    """Several tiles per axis with ragged edges; non-contiguous operands give the same bits."""
    lut, m, rnd = _multiplier("bf16")
    gen = torch.Generator().manual_seed(4)
    nb, r, k, n = 2, 35, 21, 38
    a = torch.randn(nb, r, k, generator=gen)
    b = torch.randn(nb, k, n, generator=gen)
    blocks = dict(block_m=16, block_n=16, block_k=4)
    out = triton_lut_bmm(a, b, lut, m, rnd, **blocks)
    _assert_sums_close(out, _products(a, b, lut, m, rnd))

    a_t = a.transpose(1, 2).contiguous().transpose(1, 2)  # column-major rows
    b_t = b.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # batch stride not outermost
    assert not a_t.is_contiguous() and not b_t.is_contiguous()
    out_t = triton_lut_bmm(a_t, b_t, lut, m, rnd, **blocks)
    assert torch.equal(out_t.view(torch.int32), out.view(torch.int32))


@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (2, 0, 5, 4), (2, 3, 5, 0), (0, 3, 5, 4)], ids=str)
def test_bmm_empty(shape: tuple[int, int, int, int]) -> None:
    lut, m, rnd = _multiplier("mitchell7")
    nb, r, k, n = shape
    out = triton_lut_bmm(torch.randn(nb, r, k), torch.randn(nb, k, n), lut, m, rnd)
    assert out.shape == (nb, r, n) and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros(nb, r, n))


def test_rejects_bad_arguments() -> None:
    lut, m, rnd = _multiplier("mitchell7")
    a = torch.randn(1, 2, 3)
    b = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="do not match"):
        triton_lut_bmm(a, torch.randn(1, 4, 4), lut, m, rnd)
    with pytest.raises(ValueError, match="float32"):
        triton_lut_bmm(a.double(), b, lut, m, rnd)
    with pytest.raises(ValueError, match="entries"):
        triton_lut_bmm(a, b, lut[:-1], m, rnd)
    with pytest.raises(ValueError, match="rounding"):
        triton_lut_bmm(a, b, lut, m, 2)
    with pytest.raises(ValueError, match="power of two"):
        triton_lut_bmm(a, b, lut, m, rnd, block_k=3)
    with pytest.raises(ValueError, match="same shape"):
        triton_lut_mul(a, a[:, :1], lut, m, rnd)
