"""The compiled kernels on torch's OpenMP threads: one runtime, the thread count torch sets.

Where torch runs on GNU libgomp, the kernels are built with ``-fopenmp`` and must share that
runtime (one libgomp mapped), take their thread count from ``torch.get_num_threads()``, and
give the same bits on one thread, on two, and on approxsim's own thread pool (the fallback).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_matmul import assert_sum_close, products

import approxsim
from approxsim.ops import _cpu_layout, _cpu_native, _int_cpu, _threads
from approxsim.ops._cpu import lut_bmm_cpu
from approxsim.ops.reference import int_lut_bmm_ref

needs_shared_runtime = pytest.mark.skipif(
    not _threads.shared_openmp_runtime(), reason="torch does not run on GNU libgomp here"
)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(a: torch.Tensor, b: torch.Tensor, name: str = "mitchell7") -> torch.Tensor:
    m = approxsim.get_multiplier(name)
    return lut_bmm_cpu(a, b, m.lut_bits(), m.mantissa_bits, 0)


def test_mapped_openmp_runtimes_reads_the_map(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f10 r-xp 00000000 08:01 11 /opt/torch/lib/libgomp.so.1\n"
        "7f10-7f20 r--p 00010000 08:01 11 /opt/torch/lib/libgomp.so.1\n"
        "7f20-7f30 r-xp 00000000 08:01 12 /usr/lib/libc.so.6\n"
        "7f30-7f40 rw-p 00000000 00:00 0 \n"
        "7f40-7f50 r-xp 00000000 08:01 13 /usr/lib/libiomp5.so\n"
    )
    got = _threads.mapped_openmp_runtimes(maps)
    assert got == ["/opt/torch/lib/libgomp.so.1", "/usr/lib/libiomp5.so"]
    assert _threads.mapped_openmp_runtimes(tmp_path / "missing") == []


@needs_shared_runtime
def test_kernels_share_torchs_openmp_runtime(lib: Any) -> None:
    before = _threads.mapped_openmp_runtimes()
    int_lib = _int_cpu.load_int_kernel()
    assert _cpu_native.uses_openmp(lib)
    assert int_lib is not None and _cpu_native.uses_openmp(int_lib)
    # Loading the kernels mapped no second runtime: theirs is the copy torch loaded.
    assert _threads.mapped_openmp_runtimes() == before and len(before) == 1


# (B, R, K, N) reaching each way of splitting: column tiles, batches, rows, swapped operands,
# the direct kernel.
SPLITS = [(1, 40, 50, 150), (4, 30, 40, 16), (1, 90, 70, 16), (1, 8, 120, 300), (2, 47, 300, 40)]


@pytest.mark.parametrize("shape", SPLITS)
def test_same_bits_on_one_and_two_threads_and_on_the_pool(
    lib: Any, monkeypatch: pytest.MonkeyPatch, restore_threads: None, shape: tuple[int, ...]
) -> None:
    nb, r, k, n = shape
    g = torch.Generator().manual_seed(sum(shape))
    a, b = torch.randn(nb, r, k, generator=g), torch.randn(nb, k, n, generator=g)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(run(a, b))
    monkeypatch.setattr(lib, "_approxsim_openmp", False)  # approxsim's thread pool instead
    outs.append(run(a, b))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert_sum_close(outs[0], products(a, b, "mitchell7"))


def test_k_chunks_same_bits_on_openmp_and_the_pool(
    lib: Any, monkeypatch: pytest.MonkeyPatch, restore_threads: None
) -> None:
    monkeypatch.setattr(_cpu_native, "K_CHUNK", 50)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(1, 21, 333, generator=g), torch.randn(1, 333, 6, generator=g)
    torch.set_num_threads(2)
    on_openmp = run(a, b, "mbm7")
    monkeypatch.setattr(lib, "_approxsim_openmp", False)
    assert torch.equal(on_openmp, run(a, b, "mbm7"))
    assert_sum_close(on_openmp, products(a, b, "mbm7"))


@needs_shared_runtime
def test_torch_thread_count_reaches_the_kernels(lib: Any, restore_threads: None) -> None:
    a, b = torch.randn(2, 64, 48), torch.randn(2, 48, 64)
    x = torch.randn(3, 2, 40, 40)
    m = approxsim.IntMultiplier.exact(8, True)
    qa = torch.randint(-128, 128, (1, 64, 40))
    qb = torch.randint(-128, 128, (1, 40, 600))
    int_lib = _int_cpu.load_int_kernel()
    assert int_lib is not None
    for threads in (1, 2):
        torch.set_num_threads(threads)
        run(a, b)
        assert lib.approxsim_last_team() == threads
        _cpu_layout.im2col_t(lib, x, (3, 3, 1, 1, 1, 1, 1, 1))
        assert lib.approxsim_last_team() == threads
        _cpu_layout.transposed_copy(torch.randn(4, 300, 300))
        assert lib.approxsim_last_team() == threads
        got = _int_cpu.int_lut_bmm_cpu(qa, qb, m.table, m.min_value, False)
        assert int_lib.approxsim_last_team() == threads
        assert torch.equal(got, int_lut_bmm_ref(qa, qb, m.table, m.min_value, False))


@pytest.fixture
def fresh_load(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The float kernel loads afresh in this test (and again, as usual, after it)."""
    monkeypatch.delenv("APPROXSIM_CPU_KERNEL", raising=False)
    monkeypatch.setattr(_cpu_native, "_OPENMP_REFUSED", set())
    _cpu_native._load_library.cache_clear()
    yield
    _cpu_native._load_library.cache_clear()


@needs_shared_runtime
@pytest.mark.parametrize("failure", ["build", "second runtime"])
def test_unusable_openmp_build_falls_back_to_the_pool(
    fresh_load: None, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    if failure == "build":
        monkeypatch.setattr(_cpu_native, "OPENMP_FLAGS", ["-fopenmp", "-fapproxsim-no-such-flag"])
        match = "cannot share torch's OpenMP threads .*failed"
    else:
        two = ["/a/libgomp.so.1", "/b/libgomp.so.1"]
        monkeypatch.setattr(_cpu_native, "mapped_openmp_runtimes", lambda: two)
        match = "second OpenMP runtime"
    with pytest.warns(RuntimeWarning, match=match):
        lib = _cpu_native.load()
    assert lib is not None and not _cpu_native.uses_openmp(lib)
    a, b = torch.randn(1, 30, 20), torch.randn(1, 20, 40)
    assert_sum_close(run(a, b), products(a, b, "mitchell7"))


@needs_shared_runtime
def test_problems_worth_a_few_microseconds_split_on_the_team(restore_threads: None) -> None:
    # About 70 us of estimated work: below the pool's threshold, above the OpenMP team's.
    lib = _cpu_native.load()
    assert lib is not None
    cost = _cpu_native._best(64, 64, 32, 7)[0]
    assert _cpu_native.ONE_THREAD_NS_OPENMP < cost < _cpu_native.ONE_THREAD_NS
    torch.set_num_threads(2)
    run(torch.randn(1, 64, 64), torch.randn(1, 64, 32))
    assert lib.approxsim_last_team() == 2


def test_integer_kernel_same_result_on_openmp_and_the_pool(
    monkeypatch: pytest.MonkeyPatch, restore_threads: None
) -> None:
    monkeypatch.setattr(_int_cpu, "ONE_THREAD_NS", 0)
    int_lib = _int_cpu.load_int_kernel()
    if int_lib is None:
        pytest.skip("no compiled integer kernel on this machine")
    m = approxsim.IntMultiplier.exact(6, False)
    g = torch.Generator().manual_seed(5)
    qa = torch.randint(0, 64, (3, 37, 50), generator=g)
    qb = torch.randint(0, 64, (3, 50, 70), generator=g)
    torch.set_num_threads(2)
    want = int_lut_bmm_ref(qa, qb, m.table, m.min_value, False)
    assert torch.equal(_int_cpu.int_lut_bmm_cpu(qa, qb, m.table, m.min_value, False), want)
    monkeypatch.setattr(int_lib, "_approxsim_openmp", False)
    assert torch.equal(_int_cpu.int_lut_bmm_cpu(qa, qb, m.table, m.min_value, False), want)


def test_pool_on_request(fresh_load: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROXSIM_CPU_THREADS", "pool")
    lib = _cpu_native.load()
    assert lib is not None and not _cpu_native.uses_openmp(lib)
    a, b = torch.randn(1, 30, 20), torch.randn(1, 20, 40)
    assert_sum_close(run(a, b), products(a, b, "mitchell7"))


def test_unknown_thread_setting_is_a_clear_error(
    fresh_load: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPROXSIM_CPU_THREADS", "tbb")
    with pytest.raises(_threads.ThreadSettingError, match="APPROXSIM_CPU_THREADS.*'tbb'"):
        _cpu_native.load()
