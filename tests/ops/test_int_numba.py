"""The Numba integer kernel (approxsim.ops._int_numba) and when it runs.

Integer sums are exact, so every comparison with the reference is bit for bit: tables of 2 to
12 bits, signed and unsigned, int32 and int64 results, both ways (row gather and direct) on
the problem as given and transposed, batches, strided operands, K = 1 and empty dimensions;
then the switches that pick it (``APPROXSIM_CPU_KERNEL=numba``, a compiled kernel that
cannot be built) and the reference where Numba is missing too. Shapes stay small: each
kernel compiles once per result dtype (and is cached on disk).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch

from approxsim.ops import _int_cpu, _int_numba
from approxsim.ops._cpu_native import KernelBuildError
from approxsim.ops._int_numba import int_lut_bmm_numba, numba_int_plan
from approxsim.ops.reference import int_lut_bmm_ref

WAYS = list(itertools.product([False, True], [False, True]))  # (swap, direct)


def _table(bits: int, signed: bool, seed: int) -> tuple[torch.Tensor, int]:
    """A random table of ``2·bits``-bit products (any entry, as an approximate design may
    have) and the smallest operand value."""
    g = torch.Generator().manual_seed(seed)
    size = 1 << bits
    span = 1 << (2 * bits - 1)
    lo, hi = (-span, span) if signed else (0, 2 * span)
    table = torch.randint(lo, hi, (size, size), generator=g, dtype=torch.int32)
    return table, (-(size >> 1) if signed else 0)


def _values(shape: tuple[int, ...], bits: int, min_value: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(min_value, min_value + (1 << bits), shape, generator=g)
    if bits <= 8:
        return x.to(torch.int8 if min_value < 0 else torch.uint8)
    return x.to(torch.int16)


@pytest.mark.parametrize(
    ("bits", "signed"), [(2, False), (2, True), (3, True), (5, False), (8, False), (8, True),
                         (10, True), (12, False)],
)  # fmt: skip
def test_equals_reference_every_way(bits: int, signed: bool) -> None:
    table, lo = _table(bits, signed, seed=bits)
    a = _values((2, 9, 21), bits, lo, 1)
    b = _values((2, 21, 70), bits, lo, 2)
    for acc in (False, True):
        ref = int_lut_bmm_ref(a, b, table, lo, acc)
        for way in WAYS:
            out = int_lut_bmm_numba(a, b, table, lo, acc, force=way)
            assert out.dtype == ref.dtype and out.is_contiguous(), way
            assert torch.equal(out, ref), (way, acc)
        assert torch.equal(int_lut_bmm_numba(a, b, table, lo, acc), ref)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 5, 1, 9), (3, 2, 17, 90), (1, 70, 40, 3)])
def test_small_and_k1_shapes(shape: tuple[int, ...]) -> None:
    nb, r, k, n = shape
    table, lo = _table(4, True, seed=3)
    a = _values((nb, r, k), 4, lo, 4)
    b = _values((nb, k, n), 4, lo, 5)
    ref = int_lut_bmm_ref(a, b, table, lo, False)
    for way in WAYS:
        assert torch.equal(int_lut_bmm_numba(a, b, table, lo, False, force=way), ref), way


def test_strided_operands_and_every_dtype() -> None:
    table, lo = _table(6, True, seed=6)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        a = _values((2, 13, 30), 6, lo, 7).to(dtype)
        b = _values((2, 30, 11), 6, lo, 8).to(dtype)
        ref = int_lut_bmm_ref(a, b, table, lo, False)
        at = a.transpose(1, 2).contiguous().transpose(1, 2)  # column-major A
        bt = b.transpose(1, 2).contiguous().transpose(1, 2)
        sliced = b.repeat_interleave(2, dim=2)[:, :, ::2]  # b as a stride-2 view
        for x, y in ((at, b), (a, bt), (at, bt), (a, sliced)):
            for way in WAYS:
                assert torch.equal(int_lut_bmm_numba(x, y, table, lo, False, force=way), ref)


def test_int64_sums_of_entries_near_2_30() -> None:
    """Entries near 2^30: the int32 partial sums need k tiles of one or two terms, added into
    int64 (a wrong bound would wrap)."""
    g = torch.Generator().manual_seed(0)
    table = torch.randint(-(2**30), 2**30, (4, 4), generator=g, dtype=torch.int32)
    table[0, 0] = 2**31 - 1
    table[3, 3] = -(2**31) + 1
    a = torch.randint(0, 4, (2, 6, 53), generator=g)
    b = torch.randint(0, 4, (2, 53, 70), generator=g)
    expect = table.long()[a[:, :, :, None], b[:, None, :, :]].sum(dim=2)
    for way in WAYS:
        assert torch.equal(int_lut_bmm_numba(a, b, table, 0, True, force=way), expect), way


def test_plan_prefers_direct_for_few_rows_and_the_gather_for_many() -> None:
    assert numba_int_plan(2, 784, 300, 256)[:2] == (False, True)
    assert numba_int_plan(4096, 150, 64, 256)[:2] == (False, False)
    assert numba_int_plan(300, 150, 4096, 256)[:2] == (True, False)


def test_split_over_threads_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work split by column tiles, batches or rows (each worker with its own V)."""
    monkeypatch.setattr(_int_numba, "ONE_THREAD_NS", 0)
    table, lo = _table(5, False, seed=9)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for nb, r, n in ((1, 20, 200), (3, 20, 10), (1, 40, 10)):
            a = _values((nb, r, 33), 5, lo, 10)
            b = _values((nb, 33, n), 5, lo, 11)
            ref = int_lut_bmm_ref(a, b, table, lo, False)
            for way in WAYS:
                assert torch.equal(int_lut_bmm_numba(a, b, table, lo, False, force=way), ref)
    finally:
        torch.set_num_threads(old)


def _numba_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = _int_cpu.int_lut_bmm_numba

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_int_cpu, "int_lut_bmm_numba", spy)
    return calls


def test_env_var_selects_the_numba_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "numba")
    calls = _numba_spy(monkeypatch)
    table, lo = _table(8, True, seed=12)
    a = _values((1, 20, 30), 8, lo, 13)
    b = _values((1, 30, 9), 8, lo, 14)
    out = _int_cpu.int_lut_bmm_cpu(a, b, table, lo, False)
    assert calls and torch.equal(out, int_lut_bmm_ref(a, b, table, lo, False))
    with pytest.raises(ValueError, match=r"operand b holds values in \[-128, 200\]"):
        _int_cpu.int_lut_bmm_cpu(a, torch.cat([b.long(), torch.full((1, 30, 1), 200)], 2),
                                 table, lo, False)  # fmt: skip
    empty = _int_cpu.int_lut_bmm_cpu(a[:, :0], b, table, lo, True)
    assert empty.shape == (1, 0, 9) and empty.dtype == torch.int64


def _failing_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise KernelBuildError("no C++ compiler found (mocked)")

    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "auto")
    monkeypatch.setattr(_int_cpu, "_load_library", fail)
    monkeypatch.setattr(_int_cpu, "_WARNED", [])


def test_without_a_compiler_the_numba_kernel_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_build(monkeypatch)
    calls = _numba_spy(monkeypatch)
    table, lo = _table(8, False, seed=15)
    a = _values((2, 7, 40), 8, lo, 16)
    b = _values((2, 40, 5), 8, lo, 17)
    with pytest.warns(RuntimeWarning, match="Numba integer kernel runs instead"):
        out = _int_cpu.int_lut_bmm_cpu(a, b, table, lo, True)
    assert calls and torch.equal(out, int_lut_bmm_ref(a, b, table, lo, True))
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "native")
    with pytest.raises(KernelBuildError, match="mocked"):
        _int_cpu.int_lut_bmm_cpu(a, b, table, lo, True)


def test_without_numba_either_the_reference_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_build(monkeypatch)
    monkeypatch.setattr(_int_cpu, "numba_available", lambda: False)
    calls = _numba_spy(monkeypatch)
    table, lo = _table(3, True, seed=18)
    a = _values((1, 6, 11), 3, lo, 19)
    b = _values((1, 11, 4), 3, lo, 20)
    with pytest.warns(RuntimeWarning, match="run the much slower reference"):
        out = _int_cpu.int_lut_bmm_cpu(a, b, table, lo, False)
    assert not calls and torch.equal(out, int_lut_bmm_ref(a, b, table, lo, False))


def test_runs_without_a_second_openmp_runtime() -> None:
    """The Numba kernels never start Numba's threading layer, whose OpenMP flavour would map
    a second libgomp beside torch's (a fresh process: this one may have mapped anything)."""
    code = (
        "import torch\n"
        "from approxsim.ops import _int_numba, _threads\n"
        "_int_numba.ONE_THREAD_NS = 0\n"
        "torch.set_num_threads(2)\n"
        "before = _threads.mapped_openmp_runtimes()\n"
        "t = torch.randint(-50, 50, (16, 16), dtype=torch.int32)\n"
        "a = torch.randint(0, 16, (1, 40, 30)); b = torch.randint(0, 16, (1, 30, 200))\n"
        "for way in [(False, False), (False, True)]:\n"
        "    _int_numba.int_lut_bmm_numba(a, b, t, 0, False, force=way)\n"
        "assert _threads.mapped_openmp_runtimes() == before, _threads.mapped_openmp_runtimes()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
