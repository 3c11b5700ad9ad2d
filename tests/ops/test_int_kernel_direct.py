"""The compiled integer kernel's direct way (one table lookup per product) against its row
gather and the reference.

:func:`approxsim.ops._int_cpu.int_plan` picks the direct kernel for few rows and the row
gather for many; both are forced on the same inputs on either side of where the choice
flips, for every V entry type (uint16, int16, int32 tables), both orientations, int32 and
int64 results, strided operands and every operand dtype. Integer sums are exact: every
comparison is bit for bit.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from approxsim.ops import _int_cpu
from approxsim.ops.reference import int_lut_bmm_ref

WAYS = list(itertools.product([False, True], [0, 1]))  # (swap, direct)


@pytest.fixture(autouse=True)
def _kernel() -> None:
    if _int_cpu.load_int_kernel() is None:
        pytest.skip("no compiled integer kernel on this machine")


def _table(bits: int, lo: int, hi: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (1 << bits, 1 << bits), generator=g, dtype=torch.int32)


def _values(shape: tuple[int, ...], bits: int, min_value: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(min_value, min_value + (1 << bits), shape, generator=g)
    return x.to(torch.int8 if min_value < 0 else torch.uint8) if bits <= 8 else x


# (table entry range, operand minimum): uint16, int16 and int32 V entries.
TABLES = [((0, 1 << 16), 0), ((-(1 << 15), 1 << 15), -128), ((-(1 << 20), 1 << 20), -128)]


def _flip_rows(k: int, n: int, rows: int) -> int:
    """The fewest rows for which the plan no longer picks the direct kernel."""
    r = 1
    while _int_cpu.int_plan(r, k, n, rows)[1]:
        r += 1
    return r


@pytest.mark.parametrize(("entries", "min_value"), TABLES)
def test_both_ways_equal_reference_across_the_choice(
    entries: tuple[int, int], min_value: int
) -> None:
    table = _table(8, *entries, seed=1)
    k, n = 70, 45
    flip = _flip_rows(k, n, 256)
    assert 1 < flip < 256  # the direct kernel serves few rows only
    for r in (1, flip - 1, flip, flip + 3):
        assert _int_cpu.int_plan(r, k, n, 256)[1] == (r < flip)
        a = _values((2, r, k), 8, min_value, 2 + r)
        b = _values((2, k, n), 8, min_value, 3 + r)
        for acc in (False, True):
            ref = int_lut_bmm_ref(a, b, table, min_value, acc)
            assert torch.equal(_int_cpu.int_lut_bmm_cpu(a, b, table, min_value, acc), ref)
            for way in WAYS:
                out = _int_cpu.int_lut_bmm_cpu(a, b, table, min_value, acc, force=way)
                assert torch.equal(out, ref), (r, way, acc)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 1, 70), (3, 2, 17, 9), (1, 5, 600, 64)])
def test_direct_odd_shapes(shape: tuple[int, ...]) -> None:
    """Single terms, padded column groups (9 columns: two groups of eight), several k tiles."""
    nb, r, k, n = shape
    table = _table(4, -100, 100, seed=4)
    a = _values((nb, r, k), 4, -8, 5)
    b = _values((nb, k, n), 4, -8, 6)
    ref = int_lut_bmm_ref(a, b, table, -8, False)
    for swap in (False, True):
        assert torch.equal(_int_cpu.int_lut_bmm_cpu(a, b, table, -8, False, force=(swap, 1)), ref)


def test_direct_strides_and_dtypes() -> None:
    table = _table(6, -5000, 5000, seed=7)
    for dtype in (torch.int16, torch.int32, torch.int64):
        a = _values((2, 9, 23), 6, -32, 8).to(dtype)
        b = _values((2, 23, 18), 6, -32, 9).to(dtype)
        ref = int_lut_bmm_ref(a, b, table, -32, False)
        at = a.transpose(1, 2).contiguous().transpose(1, 2)
        bt = b.transpose(1, 2).contiguous().transpose(1, 2)
        for x, y in ((a, b), (at, b), (a, bt), (at, bt)):
            for swap in (False, True):
                out = _int_cpu.int_lut_bmm_cpu(x, y, table, -32, False, force=(swap, 1))
                assert torch.equal(out, ref)


def test_direct_int64_sums_of_entries_near_2_30() -> None:
    g = torch.Generator().manual_seed(10)
    table = torch.randint(-(2**30), 2**30, (4, 4), generator=g, dtype=torch.int32)
    table[0, 0] = 2**31 - 1
    a = torch.randint(0, 4, (2, 6, 53), generator=g)
    b = torch.randint(0, 4, (2, 53, 70), generator=g)
    expect = table.long()[a[:, :, :, None], b[:, None, :, :]].sum(dim=2)
    for swap in (False, True):
        assert torch.equal(_int_cpu.int_lut_bmm_cpu(a, b, table, 0, True, force=(swap, 1)), expect)


def test_direct_refuses_out_of_range_values_and_large_tables() -> None:
    table = _table(4, -100, 100, seed=11)
    a = torch.zeros(1, 3, 5, dtype=torch.int64)
    b = torch.zeros(1, 5, 2, dtype=torch.int64)
    for swap in (False, True):
        bad = b.clone()
        bad[0, 2, 1] = 16
        with pytest.raises(ValueError, match=r"operand b holds values in \[0, 16\]"):
            _int_cpu.int_lut_bmm_cpu(a, bad, table, 0, False, force=(swap, 1))
    big = _table(9, -100, 100, seed=12)
    assert not _int_cpu.int_plan(1, 100, 100, 512)[1]  # 512 rows: never direct
    with pytest.raises(ValueError, match="no direct integer kernel"):
        _int_cpu.int_lut_bmm_cpu(a, b, big, 0, False, force=(False, 1))
