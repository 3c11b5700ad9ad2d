"""Every kernel gives the number format's product, bit for bit, on every special operand.

Kernels: the torch reference, the compiled C++ CPU kernel, the Numba CPU kernel (both chosen
through ``APPROXSIM_CPU_KERNEL``, as a user would) and Triton (compiled on a CUDA device,
else under ``TRITON_INTERPRET=1`` on CPU; skipped without triton). Operands: every pair of
:data:`approxsim.multipliers.numformat.SPECIAL_OPERANDS` (zeros, subnormals, subnormals that
``nearest`` rounding would carry into the normal range, carries into the exponent, the
smallest and largest normals, infinities, NaNs), with both rounding modes.

Each output is one product: a sum of that product and exact zeros, which float32 sums to
``+0 + product`` whatever the order (so a zero product compares as +0 here; the signs of zero
products are checked by the elementwise kernels). The CPU kernels leave a whole batch to the
reference when it holds an inf/NaN or its exponents could leave the normal range, so every pair
gets a batch of its own there: everything a kernel can compute itself, it does. The reference
and Triton have no such fallback and take all pairs in one outer product.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import pytest
import torch

import approxsim
from approxsim.multipliers import Multiplier
from approxsim.multipliers.numformat import (
    ROUNDINGS,
    SPECIAL_OPERANDS,
    lut_product,
    special_operands,
)
from approxsim.ops.reference import lut_bmm_ref, lut_mul_ref

# Triton decides interpreted-or-compiled when it is first imported: set the variable before
# that happens, unless a GPU is there to run the compiled kernels (see
# test_triton_interpret.py, which does the same).
if (
    os.environ.get("TRITON_INTERPRET") != "1"
    and not torch.cuda.is_available()
    and "triton" not in sys.modules
):
    os.environ["TRITON_INTERPRET"] = "1"

#: (design, M) of the multipliers checked; each runs with both rounding modes.
DESIGNS = ["mitchell7", "mbm3", "mitchell11"]
#: The length of the reduction in the one-hot layout (vector decode plus a scalar tail).
ONE_HOT_K = 37

pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|overflow) encountered:RuntimeWarning"
)


def _multiplier(design: str, rounding: str) -> Multiplier:
    """``design`` with the given input rounding (the built-ins truncate)."""
    m = approxsim.get_multiplier(design)
    if m.rounding == rounding:
        return m
    lut = m.lut
    assert lut is not None
    return Multiplier.from_lut(lut, name=f"{design}_{rounding}", rounding=rounding)


def _expected(m: Multiplier, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``+0 + a ⊗ b`` for each pair (a one-product float32 sum), from the number format."""
    prod = lut_product(a, b, m.lut_bits(), m.mantissa_bits, m.rounding)
    return torch.zeros((), dtype=torch.float32) + prod


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Every (a, b) pair of special operands, as two flat float32 tensors."""
    ops = special_operands()
    a = ops.repeat_interleave(len(ops))
    b = ops.repeat(len(ops))
    return a, b


def _layout(a: torch.Tensor, b: torch.Tensor, one_hot: bool) -> tuple[torch.Tensor, ...]:
    """Batches of one pair each: ``(P, 1, 1) × (P, 1, 1)``, or with ``one_hot`` a
    ``(P, 3, K) × (P, K, 5)`` matmul whose only nonzero operands are ``A[p, 1, k_p] = a_p``
    and ``B[p, k_p, 2] = b_p`` (so the kernels' tiling, vector decode and row gather run)."""
    p = len(a)
    if not one_hot:
        return a.view(p, 1, 1), b.view(p, 1, 1)
    k = (torch.arange(p) * 7) % ONE_HOT_K
    big_a = torch.zeros(p, 3, ONE_HOT_K)
    big_b = torch.zeros(p, ONE_HOT_K, 5)
    big_a[torch.arange(p), 1, k] = a
    big_b[torch.arange(p), k, 2] = b
    return big_a, big_b


def _outer(one_hot: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch whose outputs are the products of every pair (row-major as :func:`_pairs`):
    ``(1, S, 1) × (1, 1, S)``, or with ``one_hot`` the same operands at one k of a
    ``(1, S, K) × (1, K, S)`` matmul that is zero elsewhere."""
    ops = special_operands()
    s = len(ops)
    if not one_hot:
        return ops.view(1, s, 1), ops.view(1, 1, s)
    a = torch.zeros(1, s, ONE_HOT_K)
    b = torch.zeros(1, ONE_HOT_K, s)
    a[0, :, ONE_HOT_K - 5] = ops
    b[0, ONE_HOT_K - 5, :] = ops
    return a, b


def _pick(out: torch.Tensor, one_hot: bool) -> torch.Tensor:
    """The outputs holding the pairs' products, flat."""
    return out[:, 1, 2] if one_hot else out.reshape(-1)


def _cpu_kernel(choice: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., torch.Tensor]:
    """``approxsim.matmul`` with the CPU kernel chosen as a user does."""
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", choice)
    if choice == "native":
        from approxsim.ops import _cpu_native

        try:
            _cpu_native.load()
        except _cpu_native.KernelBuildError as exc:
            pytest.skip(f"no compiled kernel on this machine: {exc}")
    return lambda a, b, m: approxsim.matmul(a, b, m)


def _reference(a: torch.Tensor, b: torch.Tensor, m: Multiplier) -> torch.Tensor:
    return lut_bmm_ref(a, b, m.lut_bits(), m.mantissa_bits, ROUNDINGS.index(m.rounding))


def _triton() -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """Triton's matmul and elementwise launchers, on CUDA when there is a GPU (else on CPU
    under the interpreter); skips when triton cannot run here."""
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set")
    pytest.importorskip("triton")
    from approxsim.ops._triton import triton_lut_bmm, triton_lut_mul

    dev = "cuda" if torch.cuda.is_available() else "cpu"

    def bmm(a: torch.Tensor, b: torch.Tensor, m: Multiplier) -> torch.Tensor:
        rnd = ROUNDINGS.index(m.rounding)
        return triton_lut_bmm(a.to(dev), b.to(dev), m.lut_bits(dev), m.mantissa_bits, rnd).cpu()

    def mul(a: torch.Tensor, b: torch.Tensor, m: Multiplier) -> torch.Tensor:
        rnd = ROUNDINGS.index(m.rounding)
        return triton_lut_mul(a.to(dev), b.to(dev), m.lut_bits(dev), m.mantissa_bits, rnd).cpu()

    return bmm, mul


def _assert_same_bits(got: torch.Tensor, want: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """Bit-exact comparison with a readable report of the pairs that differ."""
    names = {v: k for k, v in SPECIAL_OPERANDS.items()}

    def name(x: torch.Tensor) -> str:
        u = int(x.view(torch.int32)) & 0xFFFFFFFF
        return names.get(u, f"0x{u:08X}")

    differ = (got.view(torch.int32) != want.view(torch.int32)).nonzero().flatten()
    lines = [
        f"{name(a[i])} ⊗ {name(b[i])}: got {float(got[i])!r} "
        f"(0x{int(got[i].view(torch.int32)) & 0xFFFFFFFF:08X}), want {float(want[i])!r}"
        for i in differ[:8].tolist()
    ]
    assert not len(differ), f"{len(differ)} of {len(got)} products differ:\n" + "\n".join(lines)


KERNELS = ["reference", "native", "numba", "triton"]


@pytest.mark.parametrize("one_hot", [False, True], ids=["k1", "one_hot"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_matmul_products_match_the_number_format(
    kernel: str, design: str, rounding: str, one_hot: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _multiplier(design, rounding)
    a, b = _pairs()
    if kernel == "reference":
        run = _reference
    elif kernel == "triton":
        run = _triton()[0]
    else:
        run = _cpu_kernel(kernel, monkeypatch)
    if kernel in ("reference", "triton"):
        # No fallback to decide per batch: one outer product holds every pair.
        got = run(*_outer(one_hot), m).reshape(-1)
    else:
        got = _pick(run(*_layout(a, b, one_hot), m), one_hot)
    _assert_same_bits(got, _expected(m, a, b), a, b)


@pytest.mark.parametrize("one_hot", [False, True], ids=["k1", "one_hot"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("design", ["mitchell7", "mitchell11"])
@pytest.mark.parametrize(
    "force", [(False, False), (False, True), (True, False), (True, True)],
    ids=["gather", "direct", "swapped_gather", "swapped_direct"],
)  # fmt: skip
def test_every_native_strategy_matches_the_number_format(
    force: tuple[bool, bool], design: str, rounding: str, one_hot: bool
) -> None:
    """The compiled kernel's four ways to run a product (each decodes operands its own way:
    scalar or sixteen at a time, as A or, swapped, as B), forced instead of planned."""
    from approxsim.ops import _cpu_native
    from approxsim.ops._ranges import unsafe_batches

    try:
        lib = _cpu_native.load()
    except _cpu_native.KernelBuildError as exc:
        pytest.skip(f"no compiled kernel on this machine: {exc}")
    if lib is None:
        pytest.skip("APPROXSIM_CPU_KERNEL=numba is set")
    m = _multiplier(design, rounding)
    a, b = _pairs()
    big_a, big_b = _layout(a, b, one_hot)
    lut, rnd = m.lut_bits(), ROUNDINGS.index(m.rounding)
    out, ranges = _cpu_native.lut_bmm_native(
        lib, big_a, big_b, lut, m.mantissa_bits, rnd, force=force
    )
    for i in unsafe_batches(ranges, lut, v_over_a=True):  # as the CPU dispatcher does
        out[i : i + 1] = lut_bmm_ref(big_a[i : i + 1], big_b[i : i + 1], lut, m.mantissa_bits, rnd)
    _assert_same_bits(_pick(out, one_hot), _expected(m, a, b), a, b)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("kernel", ["reference", "triton"])
def test_elementwise_products_match_the_number_format(
    kernel: str, design: str, rounding: str
) -> None:
    """The elementwise kernels return each product itself: signed zeros are checked too."""
    m = _multiplier(design, rounding)
    a, b = _pairs()
    if kernel == "triton":
        got = _triton()[1](a, b, m)
    else:
        got = lut_mul_ref(a, b, m.lut_bits(), m.mantissa_bits, ROUNDINGS.index(m.rounding))
    want = lut_product(a, b, m.lut_bits(), m.mantissa_bits, m.rounding)
    _assert_same_bits(got, want, a, b)


def test_issue_example_flushes_the_subnormal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The case of the report: a subnormal A near the normal range, `nearest` rounding, the
    Numba kernel. The operand is flushed, so every product with it is zero."""
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "numba")
    m = _multiplier("mitchell7", "nearest")
    a = torch.zeros(4, 6)
    a[0, 0] = torch.tensor(SPECIAL_OPERANDS["subnormal near normal"], dtype=torch.int32).view(
        torch.float32
    )
    b = torch.ones(6, 3)
    assert approxsim.matmul(a, b, m)[0, 0].item() == 0.0
