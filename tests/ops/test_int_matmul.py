"""The integer table matmul: reference, compiled CPU kernel, ``approxsim.matmul`` dispatch.

Integer sums are exact, so every comparison is bit for bit: the reference against
``torch.matmul`` of int64 values for exact multipliers, the CPU kernel against the reference
for approximate tables, on shapes that reach each column tile width, several k tiles, the
swapped orientation, strided operands and every operand dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import approxsim
from approxsim.multipliers import MultiplierError
from approxsim.multipliers.integer import IntMultiplier, product_range
from approxsim.ops import _int_cpu
from approxsim.ops.intmatmul import int_accumulator_is_int64, int_lut_bmm, int_matmul
from approxsim.ops.reference import int_lut_bmm_ref


def _approximate(bits: int, signed: bool, seed: int = 0) -> IntMultiplier:
    """The exact table with random low bits flipped, kept inside the product range."""
    exact = IntMultiplier.exact(bits, signed)
    rng = np.random.default_rng(seed)
    table = exact.table.numpy().astype(np.int64)
    table = table ^ rng.integers(0, 8, size=table.shape)
    lo, hi = product_range(bits, signed)
    return IntMultiplier("approx", bits, signed, np.clip(table, lo, hi).astype(np.int32))


def _values(m: Any, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    hi = m.min_value + (1 << m.bits)
    return torch.randint(m.min_value, hi, shape, generator=g, dtype=torch.int64).to(dtype)


def _narrow(m: Any) -> torch.dtype:
    if m.bits <= 8:
        return torch.int8 if m.signed else torch.uint8
    return torch.int16


def _kernel() -> None:
    if _int_cpu.load_int_kernel() is None:
        pytest.skip("no compiled integer kernel on this machine")


class _Mock:
    """A duck-typed integer multiplier whose table is not bounded by its bits (as no
    IntMultiplier's is): large entries reach the int64 accumulator with small shapes."""

    def __init__(self, table: torch.Tensor, bits: int, signed: bool) -> None:
        self.table = table
        self.bits = bits
        self.signed = signed
        self.min_value = -(1 << (bits - 1)) if signed else 0
        self.name = "mock"


@pytest.mark.parametrize(("bits", "signed"), [(2, False), (3, True), (8, False), (8, True)])
def test_reference_is_exact_matmul_for_the_exact_multiplier(bits: int, signed: bool) -> None:
    m = IntMultiplier.exact(bits, signed)
    a = _values(m, (2, 9, 33), torch.int64, 1)
    b = _values(m, (2, 33, 7), torch.int64, 2)
    out = int_lut_bmm_ref(a, b, m.table, m.min_value, False)
    assert out.dtype == torch.int32
    assert torch.equal(out.long(), a @ b)


# (batches, R, K, N): every column tile width (8/16/32/64 and several 64-tiles), k tiles,
# the swapped orientation (few rows, many columns), single rows and columns.
SHAPES = [(1, 37, 50, 5), (2, 19, 300, 16), (1, 70, 129, 33), (1, 65, 40, 150), (3, 2, 17, 90),
          (1, 1, 7, 1), (2, 130, 3, 64)]  # fmt: skip


@pytest.mark.parametrize(("bits", "signed"), [(2, True), (4, False), (8, False), (8, True)])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_kernel_equals_reference(bits: int, signed: bool, shape: tuple[int, ...]) -> None:
    _kernel()
    m = _approximate(bits, signed)
    nb, r, k, n = shape
    a = _values(m, (nb, r, k), _narrow(m), 3)
    b = _values(m, (nb, k, n), _narrow(m), 4)
    ref = int_lut_bmm_ref(a, b, m.table, m.min_value, False)
    assert torch.equal(_int_cpu.int_lut_bmm_cpu(a, b, m.table, m.min_value, False), ref)
    out64 = _int_cpu.int_lut_bmm_cpu(a, b, m.table, m.min_value, True)
    assert out64.dtype == torch.int64 and torch.equal(out64, ref.long())


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_cpu_kernel_reads_every_dtype_and_stride(dtype: torch.dtype) -> None:
    _kernel()
    m = _approximate(6, True, seed=5)
    a = _values(m, (2, 40, 23), dtype, 6)
    b = _values(m, (2, 23, 18), dtype, 7)
    ref = int_lut_bmm_ref(a, b, m.table, m.min_value, False)
    at = a.transpose(1, 2).contiguous().transpose(1, 2)  # column-major A
    bt = b.transpose(1, 2).contiguous().transpose(1, 2)
    for x, y in ((a, b), (at, b), (a, bt), (at, bt)):
        assert torch.equal(_int_cpu.int_lut_bmm_cpu(x, y, m.table, m.min_value, False), ref)


@pytest.mark.parametrize("signed", [False, True])
def test_edge_operands_min_and_max(signed: bool) -> None:
    """All pairs of the extreme values, where exact products are largest."""
    m = _approximate(8, signed, seed=9)
    edges = torch.tensor([m.min_value, m.min_value + 1, 0, m.max_value - 1, m.max_value])
    a = edges.repeat(7)[None, :, None].expand(1, 35, 40).contiguous()
    b = edges.repeat(8)[None, None, :].expand(1, 40, 40).contiguous()
    ref = int_lut_bmm_ref(a, b, m.table, m.min_value, False)
    expect = m.table.long()[a[0, :, 0] - m.min_value][:, b[0, 0] - m.min_value] * 40
    assert torch.equal(ref[0].long(), expect)
    if _int_cpu.load_int_kernel() is not None:
        assert torch.equal(_int_cpu.int_lut_bmm_cpu(a, b, m.table, m.min_value, False), ref)


def test_int64_accumulator_when_int32_could_overflow() -> None:
    """Entries near 2^30 make int32 overflow after two terms: the k tiles shrink, the partial
    sums go into int64, and an int32 request is refused rather than wrapped."""
    g = torch.Generator().manual_seed(0)
    table = torch.randint(-(2**30), 2**30, (4, 4), generator=g, dtype=torch.int32)
    table[0, 0] = 2**31 - 1
    m = _Mock(table, bits=2, signed=False)
    a = torch.randint(0, 4, (2, 6, 53), generator=g)
    b = torch.randint(0, 4, (2, 53, 70), generator=g)
    expect = table.long()[a[:, :, :, None], b[:, None, :, :]].sum(dim=2)
    assert torch.equal(int_lut_bmm_ref(a, b, table, 0, True), expect)
    out = int_matmul(a, b, m)
    assert out.dtype == torch.int64 and torch.equal(out, expect)
    if _int_cpu.load_int_kernel() is not None:
        assert torch.equal(_int_cpu.int_lut_bmm_cpu(a, b, table, 0, True), expect)
    with pytest.raises(ValueError, match="acc_int64=True"):
        int_lut_bmm(a, b, table, 0, False)


def test_accumulator_rule_follows_the_bits() -> None:
    assert not int_accumulator_is_int64(8, 2**15 - 1)
    assert int_accumulator_is_int64(8, 2**15)
    assert int_accumulator_is_int64(12, 128) and not int_accumulator_is_int64(12, 127)
    m = IntMultiplier.exact(8, False)
    a = torch.full((1, 2**15), 255, dtype=torch.uint8)
    b = torch.full((2**15, 1), 255, dtype=torch.uint8)
    out = approxsim.matmul(a, b, m)
    assert out.dtype == torch.int64 and int(out) == 255 * 255 * 2**15


@pytest.mark.parametrize(
    ("sa", "sb"),
    [((2, 3, 5, 7), (7, 4)), ((7,), (7,)), ((3, 1, 4, 5), (2, 5, 6)), ((5,), (2, 5, 3)),
     ((4, 6), (6,))],
)  # fmt: skip
def test_matmul_dispatch_broadcasts_like_torch(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    m = IntMultiplier.exact(8, True)
    a = _values(m, sa, torch.int8, 10)
    b = _values(m, sb, torch.int8, 11)
    out = approxsim.matmul(a, b, m)
    assert out.dtype == torch.int32
    assert torch.equal(out.long(), torch.matmul(a.long(), b.long()))


def test_matmul_with_an_approximate_table_uses_it() -> None:
    m = _approximate(8, False, seed=3)
    a = _values(m, (4, 9), torch.uint8, 12)
    b = _values(m, (9, 5), torch.uint8, 13)
    expect = m.table.long()[a.long()[:, :, None], b.long()[None, :, :]].sum(dim=1)
    assert torch.equal(approxsim.matmul(a, b, m).long(), expect)
    assert not torch.equal(expect, a.long() @ b.long())  # never silently exact


def test_errors() -> None:
    m = IntMultiplier.exact(4, True)
    a = torch.zeros(3, 5, dtype=torch.int64)
    b = torch.zeros(5, 2, dtype=torch.int64)
    with pytest.raises(TypeError, match="integer operand values in \\[-8, 7\\]"):
        approxsim.matmul(a.float(), b, m)
    with pytest.raises(TypeError, match="torch.bool"):
        approxsim.matmul(a, b.bool(), m)
    with pytest.raises(ValueError, match=r"operand a holds values in \[0, 8\]"):
        approxsim.matmul(a + torch.eye(3, 5, dtype=torch.int64) * 8, b, m)
    with pytest.raises(ValueError, match=r"operand b holds values in \[-9, 0\]"):
        approxsim.matmul(a, b - 9 * torch.eye(5, 2, dtype=torch.int64), m)
    with pytest.raises(ValueError, match="operand a"):
        int_lut_bmm_ref((a + 100)[None], b[None], m.table, m.min_value, False)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        approxsim.matmul(a, b.t(), m)
    with pytest.raises(MultiplierError, match="integer multiplier"):
        approxsim.matmul(a, b, m, grad_input="fp32")
    with pytest.raises(MultiplierError, match="integer multiplier"):
        approxsim.PassMultipliers(m)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype torch.int64"):
        approxsim.matmul(a, b, "mitchell7")


def test_opcheck() -> None:
    m = _approximate(5, True, seed=2)
    a = _values(m, (2, 6, 9), torch.int8, 14)
    b = _values(m, (2, 9, 4), torch.int8, 15)
    for acc in (False, True):
        torch.library.opcheck(int_lut_bmm, (a, b, m.table, m.min_value, acc))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_compile_fullgraph() -> None:
    m = _approximate(8, False, seed=4)
    table = m.table

    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return int_lut_bmm(x, y, table, 0, False) + 1

    a = _values(m, (1, 8, 12), torch.uint8, 16)
    b = _values(m, (1, 12, 3), torch.uint8, 17)
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    assert torch.equal(compiled(a, b), f(a, b))
    assert torch.equal(
        torch.compile(lambda x, y: approxsim.matmul(x, y, m), fullgraph=True, backend="eager")(
            a[0], b[0]
        ),
        approxsim.matmul(a[0], b[0], m),
    )


def test_vmap_joins_the_batch_dimension() -> None:
    m = _approximate(4, False, seed=6)
    a = _values(m, (3, 2, 5, 7), torch.uint8, 18)
    b = _values(m, (2, 7, 4), torch.uint8, 19)
    out = torch.vmap(lambda x: int_lut_bmm(x, b, m.table, 0, False))(a)
    ref = torch.stack([int_lut_bmm_ref(x, b, m.table, 0, False) for x in a])
    assert torch.equal(out, ref)


def test_without_the_compiled_kernel_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """``APPROXSIM_CPU_KERNEL=numba`` (or no compiler): the Numba integer kernel computes the
    same result (tests/ops/test_int_numba.py tests it in depth)."""
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "numba")
    assert _int_cpu.load_int_kernel() is None
    m = _approximate(8, True, seed=7)
    a = _values(m, (1, 20, 30), torch.int8, 20)
    b = _values(m, (1, 30, 9), torch.int8, 21)
    out = _int_cpu.int_lut_bmm_cpu(a, b, m.table, m.min_value, False)
    assert torch.equal(out, int_lut_bmm_ref(a, b, m.table, m.min_value, False))


def test_mul_with_an_integer_multiplier_is_its_products() -> None:
    m = _approximate(8, False, seed=8)
    a = _values(m, (3, 4), torch.uint8, 22)
    b = _values(m, (4,), torch.uint8, 23)
    assert torch.equal(approxsim.mul(a, b, m), m.m(a, b))
