"""The compiled ``lut`` backward (``approxsim::lut_grad_bmm``) against its float64 reference.

The kernel sums in float32 by default (``_lut_grad_cpu.WIDE`` selects float64). Whatever the
order of a summation tree over ``n`` terms, each rounded product and each addition add at most
one unit roundoff ``u`` along the way, so ``|kernel − exact| ≤ (n + 1)·u·Σ|terms|`` (to first
order; ``n`` = N for the A side, R for the B side). The tests hold the kernel to that bound
around a float64 evaluation of the same sums, with ``Σ|terms|`` from the reference on the
absolute values; the float64 accumulator is held to one float32 rounding of the result plus
the same bound at ``u = 2^-53``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from quant_reference import noisy_multiplier
from torch import Tensor, nn

from approxsim.nn import quant_ops
from approxsim.nn.quant import QuantConfig
from approxsim.nn.quant_layers import QuantConv2d, QuantLinear, calibrate
from approxsim.ops import _lut_grad_cpu
from approxsim.ops._cpu_native import KernelBuildError, uses_openmp
from approxsim.ops._threads import mapped_openmp_runtimes, shared_openmp_runtime
from approxsim.ops.lutgrad import _lut_grad_op, lut_grad_bmm, lut_grad_reference

U32 = 2.0**-24
U64 = 2.0**-53


def _problem(
    shape: tuple[int, int, int, int], qmin: int, c: int, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Codes ``(G, R, K)``, ``(G, K, N)``, weights ``(G, R, N)`` twice, tables ``(C, C)``."""
    g, r, k, n = shape
    gen = torch.Generator().manual_seed(seed)
    qa = torch.randint(qmin, qmin + c, (g, r, k), generator=gen).to(torch.int16)
    qb = torch.randint(qmin, qmin + c, (g, k, n), generator=gen).to(torch.int16)
    w_a = torch.randn(g, r, n, generator=gen)
    w_b = torch.randn(g, r, n, generator=gen)
    ga = torch.randn(c, c, generator=gen) * 100
    gb = torch.randn(c, c, generator=gen)
    return qa, qb, w_a, w_b, ga, gb


def _check(
    got: tuple[Tensor | None, Tensor | None],
    args: tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor, Tensor],
    qmin: int,
    wide: bool,
) -> None:
    """Each side within the summation bound (module docstring) of the float64 sums."""
    qa, qb, w_a, w_b, ga, gb = args
    d = [None if t is None else t.double() for t in (w_a, w_b)]
    exact = lut_grad_reference(qa, qb, d[0], d[1], ga.double(), gb.double(), qmin)
    a = [None if t is None else t.abs() for t in d]
    mag = lut_grad_reference(qa, qb, a[0], a[1], ga.double().abs(), gb.double().abs(), qmin)
    terms = (qb.shape[2], qa.shape[1])  # N for the A side, R for the B side
    for out, want, size, n in zip(got, exact, mag, terms, strict=True):
        if want is None:
            assert out is None
            continue
        assert out is not None and size is not None
        assert out.dtype == torch.float32 and out.shape == want.shape
        u = U64 if wide else U32
        bound = (n + 1) * u * size * 1.01 + (U32 * want.abs() if wide else 0)
        err = (out.double() - want).abs()
        assert bool((err <= bound).all()), f"max excess {(err - bound).max().item()}"


# (G, R, K, N): R below and above C (direct and V mode), groups, K = 1, N = 1, N wider than
# a vector and not a multiple of one.
SHAPES = [
    (1, 9, 5, 7),
    (2, 300, 6, 3),
    (3, 40, 1, 20),
    (1, 700, 4, 1),
    (1, 2, 7, 37),
    (2, 600, 3, 70),
]
#: (qmin, C): a signed 8-bit table, an unsigned one, narrower codes.
RANGES = [(-128, 256), (0, 256), (-8, 16)]


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize(("qmin", "c"), RANGES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_float64_sums(
    shape: tuple[int, int, int, int], qmin: int, c: int, wide: bool, monkeypatch: Any
) -> None:
    monkeypatch.setattr(_lut_grad_cpu, "WIDE", wide)
    args = _problem(shape, qmin, c, seed=sum(shape) + c)
    _check(_lut_grad_cpu.lut_grad_cpu(*args, qmin), args, qmin, wide)


def test_shapes_cover_both_modes() -> None:
    modes = {_lut_grad_cpu.lut_grad_plan(r, k, n, c)[0] for _, r, k, n in SHAPES for _, c in RANGES}
    assert modes == {True, False}


@pytest.mark.parametrize("side", ["a", "b"])
def test_one_side_only(side: str) -> None:
    qa, qb, w_a, w_b, ga, gb = _problem((2, 50, 4, 9), 0, 256, seed=3)
    args = (qa, qb, w_a if side == "a" else None, w_b if side == "b" else None, ga, gb)
    got = lut_grad_bmm(*args, 0)
    assert (got[0] is None) == (side == "b") and (got[1] is None) == (side == "a")
    _check(got, args, 0, wide=False)


@pytest.mark.parametrize("shape", [(1, 0, 3, 4), (1, 5, 0, 4), (1, 5, 3, 0), (0, 5, 3, 4)])
def test_empty(shape: tuple[int, int, int, int]) -> None:
    qa, qb, w_a, w_b, ga, gb = _problem(shape, 0, 16, seed=1)
    out_a, out_b = lut_grad_bmm(qa, qb, w_a, w_b, ga, gb, 0)
    g, r, k, n = shape
    assert out_a is not None and out_b is not None
    assert out_a.shape == (g, r, k) and out_b.shape == (g, k, n)
    assert not out_a.any() and not out_b.any()


def test_code_layouts_and_dtypes() -> None:
    """Codes in any layout (row- or k-major) and integer dtype give the same bits."""
    args = _problem((2, 70, 5, 6), -8, 16, seed=5)
    qa, qb, *rest = args
    want = lut_grad_bmm(qa, qb, *rest, -8)
    qa_k = qa.transpose(1, 2).contiguous().transpose(1, 2)
    for a, b in ((qa_k, qb), (qa.int(), qb.long()), (qa.to(torch.int8), qb.to(torch.int8))):
        got = lut_grad_bmm(a, b, *rest, -8)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.int16, torch.int64])
def test_code_out_of_range(dtype: torch.dtype) -> None:
    qa, qb, w_a, w_b, ga, gb = _problem((1, 20, 3, 4), 0, 16, seed=2)
    qb = qb.to(dtype)
    qb[0, 1, 2] = 16
    with pytest.raises(ValueError, match=r"qb holds codes in \[\d+, 16\], outside"):
        lut_grad_bmm(qa, qb, w_a, w_b, ga, gb, 0)


def test_same_bits_on_any_thread_count(monkeypatch: Any) -> None:
    monkeypatch.setattr(_lut_grad_cpu, "ONE_THREAD_NS", 0)
    monkeypatch.setattr(_lut_grad_cpu, "ONE_THREAD_NS_OPENMP", 0)
    parts: list[int] = []
    run = _lut_grad_cpu._run_parts

    def spy(lib: Any, head: Any, spans: list[tuple[int, int]], *rest: Any) -> list[int]:
        parts.append(len(spans))
        return run(lib, head, spans, *rest)

    monkeypatch.setattr(_lut_grad_cpu, "_run_parts", spy)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for shape in ((2, 300, 7, 10), (1, 30, 9, 40)):
                args = _problem(shape, 0, 256, seed=7)
                outs.append(lut_grad_bmm(*args, 0))
        # approxsim's thread pool (where the kernel cannot share torch's OpenMP team).
        lib = _lut_grad_cpu.load_lut_grad_kernel()
        assert lib is not None
        monkeypatch.setattr(lib, "_approxsim_openmp", False)
        torch.set_num_threads(2)
        outs.append(lut_grad_bmm(*_problem((2, 300, 7, 10), 0, 256, seed=7), 0))
    finally:
        torch.set_num_threads(before)
    assert parts == [1, 1, 2, 2, 3, 3, 2]
    for got in outs[2:]:
        want = outs[0] if got[0].shape == outs[0][0].shape else outs[1]  # type: ignore[union-attr]
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # type: ignore[arg-type]


@pytest.mark.skipif(not shared_openmp_runtime(), reason="torch does not run on GNU libgomp here")
def test_kernel_shares_torchs_openmp_runtime() -> None:
    before = mapped_openmp_runtimes()
    lib = _lut_grad_cpu.load_lut_grad_kernel()
    assert lib is not None and uses_openmp(lib)
    assert mapped_openmp_runtimes() == before and len(before) == 1


def test_other_dtypes_take_the_reference() -> None:
    qa, qb, w_a, w_b, ga, gb = _problem((1, 30, 4, 5), 0, 16, seed=4)
    args = (qa, qb, w_a.double(), w_b.double(), ga.double(), gb.double(), 0)
    got = lut_grad_bmm(*args)
    want = lut_grad_reference(*args)
    assert got[0] is not None and got[0].dtype == torch.float64
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # type: ignore[arg-type]
    op = _lut_grad_op(*args)  # the op's CPU kernel too: never float64 read as float32
    assert op[0].dtype == torch.float32 and op[0].transpose(1, 2).is_contiguous()
    assert torch.equal(op[0], want[0].float()) and torch.equal(op[1], want[1].float())  # type: ignore[union-attr]


def test_weights_needing_a_gradient_take_the_reference() -> None:
    """A backward with ``create_graph=True`` stays differentiable (the op has no autograd)."""
    qa, qb, w_a, w_b, ga, gb = _problem((1, 30, 4, 5), 0, 16, seed=4)
    w = w_a.clone().requires_grad_(True)
    got = lut_grad_bmm(qa, qb, w, None, ga, gb, 0)[0]
    assert got is not None and got.grad_fn is not None
    (grad_w,) = torch.autograd.grad(got.sum(), w)
    want = lut_grad_reference(qa, qb, torch.ones_like(w_a), None, ga, gb, 0)[0]
    assert want is not None
    torch.testing.assert_close(grad_w.sum(), want.sum())


def _broken(monkeypatch: Any) -> None:
    def fail() -> None:
        raise KernelBuildError("no compiler here")

    monkeypatch.setattr(_lut_grad_cpu, "_load_library", fail)
    monkeypatch.setattr(_lut_grad_cpu, "_WARNED", [])


def test_failed_build_falls_back_with_one_warning(monkeypatch: Any) -> None:
    _broken(monkeypatch)
    monkeypatch.delenv("APPROXSIM_CPU_KERNEL", raising=False)
    args = _problem((1, 30, 4, 5), 0, 16, seed=6)
    with pytest.warns(RuntimeWarning, match="lut gradient CPU kernel is unavailable"):
        got = lut_grad_bmm(*args, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lut_grad_bmm(*args, 0)  # warned once
    want = lut_grad_reference(*args, 0)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # type: ignore[arg-type]
    # The op keeps the layout its fake kernel promises.
    out_a = _lut_grad_op(*args, 0)[0]
    assert out_a.transpose(1, 2).is_contiguous() and torch.equal(out_a, want[0])  # type: ignore[arg-type]


def test_failed_build_is_an_error_when_native_is_asked(monkeypatch: Any) -> None:
    _broken(monkeypatch)
    monkeypatch.setenv("APPROXSIM_CPU_KERNEL", "native")
    with pytest.raises(KernelBuildError, match="no compiler here"):
        lut_grad_bmm(*_problem((1, 30, 4, 5), 0, 16, seed=6), 0)


def test_opcheck() -> None:
    qa, qb, w_a, w_b, ga, gb = _problem((2, 40, 5, 6), -8, 16, seed=8)
    for wa, wb in ((w_a, w_b), (w_a, None), (None, w_b)):
        torch.library.opcheck(_lut_grad_op, (qa, qb, wa, wb, ga, gb, -8))


def _layer_grads(layer: nn.Module, x: Tensor) -> list[Tensor]:
    layer.zero_grad()
    xg = x.clone().requires_grad_(True)
    layer(xg).square().sum().backward()
    assert xg.grad is not None
    return [xg.grad, *(p.grad for p in layer.parameters() if p.grad is not None)]


@pytest.mark.parametrize("lut_step", [1, 8])
@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_layer_backward_matches_reference(kind: str, lut_step: int, monkeypatch: Any) -> None:
    """A quantized layer's ``lut`` gradients: the kernel against the torch reference."""
    mult = noisy_multiplier(8, False, seed=21)
    cfg = QuantConfig(grad="lut", lut_step=lut_step)
    torch.manual_seed(lut_step)
    layer: nn.Module
    if kind == "linear":
        layer, x = QuantLinear(30, 7, int_multiplier=mult, quant=cfg), torch.randn(300, 30)
    else:
        conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, dilation=2)
        layer, x = QuantConv2d.from_float(conv, mult, cfg), torch.randn(3, 4, 9, 8)
    calibrate(layer, [x])
    got = _layer_grads(layer, x)
    monkeypatch.setattr(quant_ops, "lut_grad_bmm", lut_grad_reference)
    want = _layer_grads(layer, x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))


@pytest.mark.compile
def test_compiled_conv_lut_matches_eager() -> None:
    """``torch.compile(fullgraph=True)`` of a ``lut`` convolution: the op and its fake
    kernel (k-major codes, transposed ``grad_a``) give eager's gradients."""
    torch._dynamo.reset()
    mult = noisy_multiplier(8, False, seed=22)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), mult, QuantConfig(grad="lut"))
    x = torch.randn(2, 3, 6, 6)
    calibrate(layer, [x])
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    got = _layer_grads(compiled, x)
    want = _layer_grads(layer, x)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
