"""The two CPU kernels (compiled C++ and Numba) against the multiplier's own products.

Shapes are chosen to reach every code path of the compiled kernel: each column tile width
(8/16/32/64) with full and partial tiles, several k tiles (including a k tile shorter than a
vector), the vectorized and the scalar decoder (contiguous and strided A), rounding to nearest,
M = 11, broadcast (stride-0) operands, and each way of splitting the work across threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_matmul import assert_sum_close, products

import approxsim
from approxsim.multipliers.numformat import ROUNDINGS
from approxsim.ops import _cpu_layout, _cpu_native
from approxsim.ops._cpu import lut_bmm_cpu

KERNELS = ["native", "numba"]


@pytest.fixture(autouse=True)
def split_small_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split even these small problems across threads, as large ones are."""
    monkeypatch.setattr(_cpu_native, "ONE_THREAD_NS", 0)


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", request.param)
    if request.param == "native":
        try:
            _cpu_native.load()
        except _cpu_native.KernelBuildError as exc:
            pytest.skip(f"no compiled kernel on this machine: {exc}")
    return str(request.param)


def run(a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
    m = approxsim.get_multiplier(name)
    return lut_bmm_cpu(a, b, m.lut_bits(), m.mantissa_bits, ROUNDINGS.index(m.rounding))


SHAPES = [
    (1, 5, 3, 2),  # N < 8: one padded 8-wide tile; K shorter than a vector
    (2, 9, 37, 16),  # 16-wide tile, vector decode plus a scalar tail
    (1, 33, 64, 29),  # partial 32-wide tile
    (1, 70, 40, 64),  # one full 64-wide tile, rows split across threads
    (3, 4, 50, 150),  # three 64-wide tiles, the last partial; column tiles split
    (1, 64, 600, 8),  # several k tiles
    (2, 47, 300, 40),  # the direct kernel (few rows), two k tiles
    (1, 8, 120, 300),  # few rows, many columns: operands swapped
]


@pytest.mark.parametrize("name", ["mitchell7", "bf16", "mbm7", "mitchell11"])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_products(kernel: str, name: str, shape: tuple[int, ...]) -> None:
    nb, r, k, n = shape
    g = torch.Generator().manual_seed(r * 7 + k * 3 + n)
    a = torch.randn(nb, r, k, generator=g) * 4
    b = torch.randn(nb, k, n, generator=g) / 3
    got = run(a, b, name)
    assert_sum_close(got, products(a, b, name))


def test_strided_and_broadcast_operands(kernel: str) -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.randn(2, 40, 60, generator=g).transpose(1, 2)  # (2, 60, 40), K stride != 1
    b = torch.randn(1, 80, 40, generator=g).transpose(1, 2).expand(2, 40, 80)  # stride-0 batch
    assert a.stride(2) != 1 and b.stride(0) == 0
    got = run(a, b, "mbm7")
    assert_sum_close(got, products(a, b, "mbm7"))


def test_batches_split_across_threads(kernel: str) -> None:
    g = torch.Generator().manual_seed(6)
    a = torch.randn(5, 3, 20, generator=g)
    b = torch.randn(5, 20, 6, generator=g)
    got = run(a, b, "mitchell7")
    assert_sum_close(got, products(a, b, "mitchell7"))


def test_one_thread_gives_the_same_sums(kernel: str) -> None:
    g = torch.Generator().manual_seed(7)
    a = torch.randn(1, 50, 90, generator=g)
    b = torch.randn(1, 90, 70, generator=g)
    many = run(a, b, "mitchell7")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run(a, b, "mitchell7")
    finally:
        torch.set_num_threads(threads)
    # Each output is summed by one worker in a fixed order, whatever the split.
    assert torch.equal(one, many)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("k_tile", [1, 3, 16, 17])
def test_native_k_tiles_and_strategies(k_tile: int, direct: bool, swap: bool) -> None:
    lib = _cpu_native.load()
    if lib is None:
        pytest.skip("no compiled kernel on this machine")
    g = torch.Generator().manual_seed(k_tile)
    a = torch.randn(2, 19, 45, generator=g)
    b = torch.randn(2, 45, 21, generator=g)
    m = approxsim.get_multiplier("bf16")
    out, ranges = _cpu_native.lut_bmm_native(
        lib, a, b, m.lut_bits(), 7, 1, k_tile=k_tile, force=(swap, direct)
    )
    assert_sum_close(out, products(a, b, "bf16"))
    assert ranges.shape == (2, 6) and not bool(ranges[:, [2, 5]].any())


def test_ranges_report_specials_and_exponents() -> None:
    lib = _cpu_native.load()
    if lib is None:
        pytest.skip("no compiled kernel on this machine")
    a = torch.tensor([[[2.0**-3, 0.0, 1e-40, 2.0**5]], [[float("nan"), 1.0, 1.0, 1.0]]])
    b = torch.ones(2, 4, 3)
    b[1, 2, 1] = float("-inf")
    m = approxsim.get_multiplier("mitchell7")
    for force in [(False, False), (True, False), (False, True), (True, True)]:
        _, ranges = _cpu_native.lut_bmm_native(lib, a, b, m.lut_bits(), 7, 0, force=force)
        assert ranges[0].tolist() == [127 - 3, 127 + 5, 0, 127, 127, 0]
        assert ranges[1, 2] == 1 and ranges[1, 5] == 1


def test_missing_compiler_falls_back_to_numba(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "approxsim-no-such-compiler")
    monkeypatch.setattr(_cpu_native, "_WARNED", [])
    _cpu_native._load_library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="Numba kernel"):
            assert _cpu_native.load() is None
        a, b = torch.randn(1, 4, 5), torch.randn(1, 5, 3)
        assert_sum_close(run(a, b, "mitchell7"), products(a, b, "mitchell7"))
        monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "native")
        with pytest.raises(_cpu_native.KernelBuildError, match="no C\\+\\+ compiler"):
            _cpu_native.load()
    finally:
        _cpu_native._load_library.cache_clear()


def test_bad_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "fortran")
    with pytest.raises(ValueError, match="APPROXSIM_CPU_KERNEL"):
        _cpu_native.load()


def test_plan_ranks_the_strategies() -> None:
    # Many rows: row gather over B as given; few rows, many columns: swapped; tiny: direct.
    assert _cpu_native.plan(32768, 576, 64, 7)[:2] == (False, False)
    assert _cpu_native.plan(32, 784, 300, 7)[:2] == (True, False)
    assert _cpu_native.plan(4, 30, 5, 7)[1] is True
    swap, direct, k_tile, n_tile = _cpu_native.plan(3200, 150, 16, 7)
    assert (swap, direct, n_tile) == (False, False, 16) and 1 <= k_tile <= 150


@pytest.mark.parametrize("n", [6, 100, 200])  # one, two and four column tiles
def test_native_direct_reads_strided_a(n: int) -> None:
    lib = _cpu_native.load()
    if lib is None:
        pytest.skip("no compiled kernel on this machine")
    g = torch.Generator().manual_seed(n)
    a = torch.randn(1, 300, 7, generator=g).transpose(1, 2)  # (1, 7, 300), K stride 7
    b = torch.randn(1, 300, n, generator=g)
    m = approxsim.get_multiplier("mbm7")
    out, _ = _cpu_native.lut_bmm_native(lib, a, b, m.lut_bits(), 7, 0, force=(False, True))
    assert_sum_close(out, products(a, b, "mbm7"))


def test_unsafe_batches_python_and_numpy_forms_agree() -> None:
    from approxsim.ops._ranges import unsafe_batches

    g = torch.Generator().manual_seed(11)
    lut = approxsim.get_multiplier("mitchell7").lut_bits()
    lo = torch.randint(0, 256, (40, 2), generator=g)
    width = torch.randint(0, 40, (40, 2), generator=g)
    special = (torch.rand(40, 2, generator=g) < 0.1).long()
    ranges = torch.stack(
        [lo[:, 0], lo[:, 0] + width[:, 0] - 5, special[:, 0],
         lo[:, 1], lo[:, 1] + width[:, 1] - 5, special[:, 1]],
        dim=1,
    ).to(torch.int32)  # fmt: skip
    for v_over_a in (False, True):
        whole = unsafe_batches(ranges, lut, v_over_a=v_over_a)  # numpy form
        one_by_one = [
            i for i in range(40) if unsafe_batches(ranges[i : i + 1], lut, v_over_a=v_over_a)
        ]
        assert whole == one_by_one and 0 < len(whole) < 40


@pytest.mark.parametrize("shape", [(1, 5, 3), (2, 37, 150), (1, 300, 19), (3, 16, 32)])
def test_transposed_copy(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape)
    got = _cpu_layout.transposed_copy(x)
    assert got.is_contiguous() and torch.equal(got, x.transpose(-2, -1))
    strided = torch.randn(shape[0], shape[2], shape[1]).transpose(1, 2)  # falls back to torch
    assert torch.equal(_cpu_layout.transposed_copy(strided), strided.transpose(-2, -1))


@pytest.mark.parametrize("special", [float("inf"), float("nan"), 3e38, 1e-39])
def test_column_major_a_matches_row_major(kernel: str, special: float) -> None:
    g = torch.Generator().manual_seed(9)
    a = torch.randn(1, 700, 300, generator=g).transpose(1, 2)  # (1, 300, 700): rows contiguous
    a[0, 290, 333] = special  # in the partial last block of 16 rows
    b = torch.randn(1, 700, 24, generator=g)
    assert a.stride(1) == 1 and _cpu_native.plan(300, 700, 24, 7)[:2] == (False, False)
    got = run(a, b, "mitchell7")
    torch.testing.assert_close(got, run(a.contiguous(), b, "mitchell7"), equal_nan=True)
    assert_sum_close(got, products(a, b, "mitchell7"))


@pytest.mark.parametrize("a_layout", ["rows", "columns"])
@pytest.mark.parametrize(("swap", "direct"), [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("k_tile", [5, 64])
def test_native_column_major_output(a_layout: str, swap: bool, direct: bool, k_tile: int) -> None:
    # The gradient of a column-major operand is written column-major (blocks of 8 rows through
    # a register transpose, the rest scalar): the same values, bit for bit, as row-major.
    lib = _cpu_native.load()
    if lib is None:
        pytest.skip("no compiled kernel on this machine")
    g = torch.Generator().manual_seed(k_tile)
    a = torch.randn(2, 45, 61, generator=g)  # 45 rows: five blocks of 8 and a partial one
    if a_layout == "columns":
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    b = torch.randn(2, 61, 83, generator=g)  # 83 columns: a partial tile
    m = approxsim.get_multiplier("mitchell7")
    args = (lib, a, b, m.lut_bits(), 7, 0)
    rows, _ = _cpu_native.lut_bmm_native(*args, k_tile=k_tile, force=(swap, direct))
    cols, _ = _cpu_native.lut_bmm_native(
        *args, k_tile=k_tile, force=(swap, direct), column_major=True
    )
    assert cols.transpose(1, 2).is_contiguous() and not cols.is_contiguous()
    assert torch.equal(cols, rows)
    assert_sum_close(cols, products(a, b, "mitchell7"))


@pytest.mark.parametrize(("swap", "direct"), [(False, False), (True, False), (False, True)])
def test_native_k_chunks(monkeypatch: pytest.MonkeyPatch, swap: bool, direct: bool) -> None:
    """Long reductions with few output pieces run as k chunks summed in chunk order: the
    same sums on one thread and on two, products through the LUT, specials reported."""
    lib = _cpu_native.load()
    if lib is None:
        pytest.skip("no compiled kernel on this machine")
    monkeypatch.setattr(_cpu_native, "K_CHUNK", 50)
    g = torch.Generator().manual_seed(12)
    a = torch.randn(1, 21, 333, generator=g)  # 7 chunks of about 48
    b = torch.randn(1, 333, 6, generator=g)
    b[0, 300, 2] = float("inf")
    m = approxsim.get_multiplier("mbm7")
    _, _, chunks, *_ = _cpu_native._schedule(1, 21, 333, 6, 7, 2, (swap, direct), None, 0, 50)[2:]
    assert len(chunks) == 7
    outs = []
    for threads in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda t=threads: t)
        out, ranges = _cpu_native.lut_bmm_native(
            lib, a, b, m.lut_bits(), 7, 0, force=(swap, direct)
        )
        assert ranges[0, 5] == 1  # B's inf was seen
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    b[0, 300, 2] = 1.0
    out, ranges = _cpu_native.lut_bmm_native(lib, a, b, m.lut_bits(), 7, 0, force=(swap, direct))
    assert ranges[0, 5] == 0
    assert_sum_close(out, products(a, b, "mbm7"))


def test_k_chunks_keep_partial_outputs_bounded() -> None:
    if _cpu_native.load() is None:
        pytest.skip("no compiled kernel on this machine")
    chunks = _cpu_native._schedule(1, 25, 100352, 6, 7, 2, None, None, 0, 4096)[4]
    assert len(chunks) == 25 and chunks[0] == (0, 4015)
    # A million rows of 64 columns in two chunks would need 512 MiB of partial outputs.
    assert _cpu_native._schedule(1, 1_000_000, 8192, 64, 7, 2, None, None, 0, 4096)[4] == ()


def test_kernel_cache_key_covers_the_shared_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both compiled kernels include _simd.h: editing it must rebuild them, not reuse a stale .so.
    from approxsim.ops import _cpu_native

    header = tmp_path / "_simd.h"
    header.write_text("// one\n")
    monkeypatch.setattr(_cpu_native, "HEADERS", (header,))
    before = _cpu_native.kernel_key(_cpu_native.SOURCE, "g++ 12")
    header.write_text("// two\n")
    assert _cpu_native.kernel_key(_cpu_native.SOURCE, "g++ 12") != before


@pytest.mark.parametrize(
    ("rows", "direct", "copied"),
    [(18, False, True), (32, False, False), (32, True, True)],  # misaligned, aligned, direct
)
def test_long_column_major_a_copied_to_rows_keeps_every_bit(
    monkeypatch: pytest.MonkeyPatch, rows: int, direct: bool, copied: bool
) -> None:
    """A column-major A over a long reduction is copied to rows where that reads faster (the
    direct kernel, columns off cache lines), read in place otherwise: the same bits."""
    lib = _cpu_native.load()
    if lib is None:
        pytest.skip("no compiled kernel on this machine")
    k = _cpu_native.COPY_MIN_K + 52
    g = torch.Generator().manual_seed(rows)
    a = torch.randn(1, k, rows, generator=g).transpose(1, 2)  # (1, rows, k), column-major
    b = torch.randn(1, k, 16, generator=g)
    calls: list[int] = []
    copy = _cpu_layout.transposed_copy
    monkeypatch.setattr(_cpu_layout, "transposed_copy", lambda x: calls.append(1) or copy(x))
    m = approxsim.get_multiplier("mitchell7")
    args = (m.lut_bits(), 7, 0)
    got, _ = _cpu_native.lut_bmm_native(lib, a, b, *args, force=(False, direct))
    assert bool(calls) is copied
    want, _ = _cpu_native.lut_bmm_native(lib, a.contiguous(), b, *args, force=(False, direct))
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert_sum_close(got, products(a, b, "mitchell7"))


def test_uneven_column_tiles_split_rows_with_the_same_bits() -> None:
    """Three 64-column tiles on two threads split by rows (each thread builds every tile's
    small V); four split by tiles; either way the sums are one thread's."""
    lib = _cpu_native.load()
    if lib is None:
        pytest.skip("no compiled kernel on this machine")

    def parts(r: int, k: int, n: int) -> tuple[tuple[int, ...], ...]:
        return _cpu_native._schedule(1, r, k, n, 7, 2, None, None, 0, _cpu_native.K_CHUNK)[5]

    assert parts(2000, 16, 150) == ((0, 1, 0, 1000, 0, 3), (0, 1, 1000, 2000, 0, 3))
    assert parts(2000, 16, 256) == ((0, 1, 0, 2000, 0, 2), (0, 1, 0, 2000, 2, 4))
    # Few rows: building every tile's V twice costs more than the uneven split.
    assert parts(300, 16, 150) == ((0, 1, 0, 300, 0, 2), (0, 1, 0, 300, 2, 3))
    g = torch.Generator().manual_seed(12)
    a = torch.randn(1, 2000, 16, generator=g)
    b = torch.randn(1, 16, 150, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = run(a, b, "mitchell7")
        torch.set_num_threads(1)
        one = run(a, b, "mitchell7")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.view(torch.int32), two.view(torch.int32))
    assert_sum_close(one, products(a, b, "mitchell7"))


def test_rows_split_pays_only_for_uneven_tiles() -> None:
    from approxsim.ops._threads import rows_split_pays

    assert rows_split_pays(1000, 1, 3, 2, 10.0, 1000.0)  # 3 tiles on 2 threads, cheap V
    assert not rows_split_pays(1000, 1, 3, 2, 1000.0, 10.0)  # V dearer than the rows' work
    assert not rows_split_pays(1000, 1, 4, 2, 10.0, 1000.0)  # tiles divide evenly
    assert not rows_split_pays(1000, 2, 3, 2, 10.0, 1000.0)  # enough batches to split
    assert not rows_split_pays(1000, 1, 3, 1, 10.0, 1000.0)  # one thread
    assert rows_split_pays(1000, 1, 3, 16, 10.0, 1000.0)  # more threads than tiles
