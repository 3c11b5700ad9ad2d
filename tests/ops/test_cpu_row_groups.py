"""The compiled kernel's few-column variants give the bits of the one-row, full-tile code.

The row gather takes several rows per step for tiles of at most 16 columns, and the direct
kernel takes several rows per step and computes only the real columns of an 8-wide tile. Each
output must still be the same float operations in the same order as before: a row computed
alone (a one-row problem, which runs the one-row code) and the same row computed inside a group
give the same bits, and the narrow direct tile gives the bits of an 8-wide one. Operands mix
normal values with zeros, subnormals (which decode to zero), values that round up into the next
exponent, infinities and NaNs (which the kernel decodes to zero and reports), across row
blocks, partial groups, k tiles and k chunks.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import approxsim
from approxsim.ops import _cpu_native

#: Rows: two full blocks of 16 (column-major A) plus a partial one, groups of 2 and 4 with
#: a remainder.
ROWS = 37
#: Rows checked alone against the grouped result (first, inside groups, the last ones).
PICKED = [0, 1, 2, 3, 5, 16, 17, 30, 34, 35, 36]


def operands(shape: tuple[int, ...], seed: int, specials: bool) -> torch.Tensor:
    """Random normal values, with zeros, subnormals, round-up carries and (with
    ``specials``) infinities and NaNs sprinkled in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 3
    pick = torch.rand(*shape, generator=g)
    x[pick < 0.05] = 0.0
    x[(pick >= 0.05) & (pick < 0.1)] = 1e-40  # subnormal
    x[(pick >= 0.1) & (pick < 0.15)] = -1.9999999  # rounds up to -2 with nearest rounding
    if specials:
        x[(pick >= 0.15) & (pick < 0.17)] = float("inf")
        x[(pick >= 0.17) & (pick < 0.18)] = float("nan")
    return x


def native(lib: Any, a: torch.Tensor, b: torch.Tensor, **kw: Any) -> torch.Tensor:
    m = approxsim.get_multiplier("mitchell7")
    return _cpu_native.lut_bmm_native(lib, a, b, m.lut_bits(), 7, kw.pop("rounding", 0), **kw)[0]


def same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    return torch.equal(x.contiguous().view(torch.int32), y.contiguous().view(torch.int32))


@pytest.mark.parametrize("n", [3, 6, 8, 13, 16])  # 8- and 16-wide tiles, full and partial
@pytest.mark.parametrize("a_layout", ["rows", "columns"])
@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize(("k", "k_tile"), [(45, 45), (45, 7), (45, 16)])
@pytest.mark.parametrize("rounding", [0, 1])
def test_gather_rows_in_groups_match_rows_alone(
    lib: Any, n: int, a_layout: str, column_major: bool, k: int, k_tile: int, rounding: int
) -> None:
    a = operands((1, ROWS, k), n * 31 + k_tile, specials=True)
    if a_layout == "columns":  # a convolution's patches: rows contiguous
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    b = operands((1, k, n), n + k_tile, specials=True)
    kw = {"k_tile": k_tile, "force": (False, False), "rounding": rounding}
    whole = native(lib, a, b, column_major=column_major, **kw)
    for r in PICKED:
        alone = native(lib, a[:, r : r + 1], b, column_major=column_major, **kw)
        assert same_bits(whole[:, r : r + 1], alone), f"row {r}"
    # Shifted by one row, every row sits elsewhere in its group (or in the remainder).
    assert same_bits(whole[:, 1:], native(lib, a[:, 1:], b, column_major=column_major, **kw))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("a_layout", ["rows", "strided"])
@pytest.mark.parametrize("k_tile", [None, 9])
@pytest.mark.parametrize("rounding", [0, 1])
def test_direct_narrow_tile_matches_the_full_tile(
    lib: Any, n: int, a_layout: str, k_tile: int | None, rounding: int
) -> None:
    a = operands((2, ROWS, 70), n, specials=True)
    if a_layout == "strided":  # a weight gradient's Aᵀ read in place
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    wide = operands((2, 70, 8), n + 100, specials=True)
    kw = {"k_tile": k_tile, "force": (False, True), "rounding": rounding}
    full = native(lib, a, wide, **kw)  # all eight columns: the one-row code on AVX2
    narrow = native(lib, a, wide[:, :, :n].contiguous(), **kw)
    assert same_bits(narrow, full[:, :, :n])
    for r in PICKED:
        alone = native(lib, a[:, r : r + 1], wide[:, :, :n].contiguous(), **kw)
        assert same_bits(narrow[:, r : r + 1], alone), f"row {r}"


@pytest.mark.parametrize(("force", "n"), [((False, True), 6), ((False, False), 16)])
def test_k_chunks_of_few_column_problems(
    lib: Any, monkeypatch: pytest.MonkeyPatch, force: tuple[bool, bool], n: int
) -> None:
    """A weight gradient's long reduction cut into k chunks (LeNet-5's shapes, small): the
    grouped rows and narrow tiles give the bits of rows computed alone."""
    monkeypatch.setattr(_cpu_native, "K_CHUNK", 50)
    a = operands((1, 11, 333), n, specials=False)
    b = operands((1, 333, n), n + 1, specials=False)
    whole = native(lib, a, b, force=force)
    for r in range(11):
        assert same_bits(whole[:, r : r + 1], native(lib, a[:, r : r + 1], b, force=force))
    if force[1]:
        wide = torch.cat([b, operands((1, 333, 8 - n), 5, specials=False)], dim=2)
        assert same_bits(whole, native(lib, a, wide, force=force)[:, :, :n])
