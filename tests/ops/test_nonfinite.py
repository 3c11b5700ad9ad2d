"""inf/NaN operands on the CPU kernels: the exact results of the reference, without running
the reference on the whole GEMM (see ``approxsim/ops/_nonfinite.py``)."""

from __future__ import annotations

import importlib

import pytest
import torch

import approxsim
from approxsim.multipliers.numformat import ROUNDINGS, operand_index
from approxsim.ops import _cpu_native
from approxsim.ops._cpu import lut_bmm_cpu
from approxsim.ops.reference import lut_bmm_ref

cpu = importlib.import_module("approxsim.ops._cpu")
nonfinite = importlib.import_module("approxsim.ops._nonfinite")
numba_kernel = importlib.import_module("approxsim.ops._numba")

NAN, INF = float("nan"), float("inf")
#: Finite, but input rounding to nearest carries it past the largest float: infinite.
ROUNDS_TO_INF = torch.tensor([0x7F7FFFFF], dtype=torch.int32).view(torch.float32).item()


@pytest.fixture(params=["native", "numba"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", request.param)
    if request.param == "native":
        try:
            _cpu_native.load()
        except _cpu_native.KernelBuildError as exc:
            pytest.skip(f"no compiled kernel on this machine: {exc}")
    return str(request.param)


@pytest.fixture
def reference_products(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the products the reference computes (the slow path's cost)."""
    counted: list[int] = []

    def counting(a: torch.Tensor, b: torch.Tensor, *args: object) -> torch.Tensor:
        counted.append(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2])
        return lut_bmm_ref(a, b, *args)  # type: ignore[arg-type]

    for module in (cpu, nonfinite, numba_kernel):
        monkeypatch.setattr(module, "lut_bmm_ref", counting)
    return counted


def run(a: torch.Tensor, b: torch.Tensor, m: approxsim.Multiplier) -> torch.Tensor:
    return lut_bmm_cpu(a, b, m.lut_bits(), m.mantissa_bits, ROUNDINGS.index(m.rounding))


def ref(a: torch.Tensor, b: torch.Tensor, m: approxsim.Multiplier) -> torch.Tensor:
    return lut_bmm_ref(a, b, m.lut_bits(), m.mantissa_bits, ROUNDINGS.index(m.rounding))


def sprinkle(
    nb: int, r: int, k: int, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Operands with NaN, ±inf and a value that rounds to inf in a few rows of A and columns
    of B (zeros and subnormals too, for ``inf · 0``); and the mask of the outputs they reach."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(nb, r, k, generator=g)
    b = torch.randn(nb, k, n, generator=g)
    a[0, 1, 2] = NAN
    a[0, 3, 0] = INF
    a[-1, r - 1, k - 1] = -INF
    a[-1, r - 1, 0] = ROUNDS_TO_INF
    b[0, 1, n - 1] = -INF
    b[0, 0, n - 1] = 0.0  # inf · 0 in row 3 of A, column n-1 of B
    b[-1, 2, 0] = NAN
    b[-1, k - 1, 1] = 1e-40  # a subnormal: acts as zero against A's -inf
    bad_rows = torch.zeros(nb, r, dtype=torch.bool)
    bad_rows[0, [1, 3]] = True
    bad_rows[-1, r - 1] = True
    bad_cols = torch.zeros(nb, n, dtype=torch.bool)
    bad_cols[0, n - 1] = True
    bad_cols[-1, 0] = True
    return a, b, bad_rows[:, :, None] | bad_cols[:, None, :]


def finite_only(x: torch.Tensor, m: approxsim.Multiplier) -> torch.Tensor:
    """``x`` with the operands the multiplier sees as inf or NaN zeroed."""
    _, _, _, inf, nan = operand_index(x.view(torch.int32), m.mantissa_bits, m.rounding)
    return x.masked_fill(inf | nan, 0.0)


def same_bits_or_both_nan(x: torch.Tensor, y: torch.Tensor) -> bool:
    both_nan = x.isnan() & y.isnan()
    return bool(((x.view(torch.int32) == y.view(torch.int32)) | both_nan).all())


@pytest.mark.parametrize("name", ["mitchell7", "mbm7"])  # truncate and nearest
@pytest.mark.parametrize("shape", [(2, 9, 37, 16), (1, 70, 40, 64), (2, 8, 120, 300)])
def test_specials_match_the_reference_exactly(
    kernel: str, name: str, shape: tuple[int, int, int, int]
) -> None:
    m = approxsim.get_multiplier(name)
    a, b, reached = sprinkle(*shape, seed=sum(shape))
    got = run(a, b, m)
    want = ref(a, b, m)
    # The outputs a non-finite operand reaches: the reference's, bit for bit.
    assert same_bits_or_both_nan(got[reached], want[reached])
    assert got[reached].isnan().any() and got[reached].isinf().any()
    # The others: what the kernel gives for the finite operands alone, bit for bit.
    fa, fb = finite_only(a, m), finite_only(b, m)
    assert torch.equal(got[~reached], run(fa, fb, m)[~reached])
    assert torch.allclose(got[~reached], want[~reached], rtol=1e-5, atol=1e-5)


def test_transposed_operands(kernel: str) -> None:
    m = approxsim.get_multiplier("mitchell7")
    a, b, reached = sprinkle(1, 30, 20, 12, seed=1)
    at = a.transpose(1, 2).contiguous().transpose(1, 2)  # column-major views
    bt = b.transpose(1, 2).contiguous().transpose(1, 2)
    got, want = run(at, bt, m), ref(a, b, m)
    assert same_bits_or_both_nan(got[reached], want[reached])
    assert torch.allclose(got[~reached], want[~reached], rtol=1e-5, atol=1e-5)


def test_all_nan_never_runs_the_reference(kernel: str, reference_products: list[int]) -> None:
    m = approxsim.get_multiplier("mitchell7")
    a = torch.full((2, 40, 50), NAN)
    b = torch.randn(2, 50, 30)
    assert run(a, b, m).isnan().all()
    assert reference_products == []


def test_only_the_reached_rows_and_columns_run_the_reference(
    kernel: str, reference_products: list[int]
) -> None:
    m = approxsim.get_multiplier("mitchell7")
    r, k, n = 64, 48, 40
    a, b = torch.randn(1, r, k), torch.randn(1, k, n)
    a[0, 5, 7] = INF  # one row of A
    b[0, 3, 11] = -INF  # one column of B
    b[0, 9, 20] = NAN  # NaN: filled, no reference
    got = run(a, b, m)
    assert sum(reference_products) == 1 * k * n + r * k * 1
    assert got[0, :, 20].isnan().all() and got[0, 5].isinf().sum() >= n - 2


def test_finite_operands_never_run_the_reference(
    kernel: str, reference_products: list[int]
) -> None:
    m = approxsim.get_multiplier("mitchell7")
    run(torch.randn(2, 30, 40), torch.randn(2, 40, 20), m)
    assert reference_products == []
