"""approxsim.matmul and its kernels: CPU kernel vs reference, autograd, broadcasting, errors."""

from __future__ import annotations

import pytest
import torch

import approxsim
from approxsim.multipliers.numformat import ROUNDINGS
from approxsim.ops.matmul import approx_bmm, lut_bmm, lut_mul
from approxsim.ops.reference import lut_bmm_ref, lut_products_ref

EPS = torch.finfo(torch.float32).eps
FAMILIES = ["mitchell7", "mbm7", "trunc3", "bf16", "bf16_trunc", "mitchell11", "mbm2"]


def lut_args(name: str) -> tuple[torch.Tensor, int, int]:
    m = approxsim.get_multiplier(name)
    return m.lut_bits(), m.mantissa_bits, ROUNDINGS.index(m.rounding)


def products(a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
    """All products P[..., r, k, n] computed elementwise by the multiplier itself."""
    m = approxsim.get_multiplier(name)
    return m(a[..., :, :, None], b[..., None, :, :])


def assert_sum_close(got: torch.Tensor, prods: torch.Tensor) -> None:
    """|got - Σ_k P| ≤ 4·eps·K·Σ_k|P| elementwise (the accumulation-order bound)."""
    k = prods.shape[-2]
    exact = prods.double().sum(-2)
    bound = 4 * EPS * max(k, 1) * prods.double().abs().sum(-2)
    diff = (got.double() - exact).abs()
    nonfinite = ~torch.isfinite(exact)
    assert torch.equal(got.isnan(), exact.isnan())
    assert torch.equal(got[nonfinite & ~exact.isnan()], exact[nonfinite & ~exact.isnan()].float())
    ok = (diff <= bound) | nonfinite
    assert bool(ok.all()), f"max excess {float((diff - bound)[~ok].max())}"


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 17, 33, 9), (1, 300, 20, 3)])
def test_cpu_kernel_matches_products(name: str, shape: tuple[int, int, int, int]) -> None:
    nb, r, k, n = shape
    g = torch.Generator().manual_seed(r * 131 + k)
    a = torch.randn(nb, r, k, generator=g) * 3
    b = torch.randn(nb, k, n, generator=g)
    lut, bits, rnd = lut_args(name)
    got = lut_bmm(a, b, lut, bits, rnd)
    assert_sum_close(got, products(a, b, name))
    ref = lut_bmm_ref(a, b, lut, bits, rnd)
    assert_sum_close(ref, products(a, b, name))


def test_products_reference_is_the_multiplier() -> None:
    a = torch.randn(2, 4, 6)
    b = torch.randn(2, 6, 3)
    lut, bits, rnd = lut_args("mbm7")
    p = lut_products_ref(a, b, lut, bits, rnd)
    assert torch.equal(p.view(torch.int32), products(a, b, "mbm7").view(torch.int32))


@pytest.mark.parametrize("name", ["mitchell7", "bf16"])
def test_special_values_in_matmul(name: str) -> None:
    a = torch.randn(1, 8, 6)
    b = torch.randn(1, 6, 5)
    a[0, 0, 0] = 0.0
    a[0, 1, 1] = -0.0
    a[0, 2, 2] = 1e-40  # subnormal: flushed to zero
    b[0, 3, 1] = float("inf")
    b[0, 4, 2] = float("nan")
    a[0, 3, 3] = 3e38
    b[0, 3, 3] = 1e-30
    a[0, 4, 4] = 1e30
    b[0, 4, 4] = 1e30  # overflow -> inf
    a[0, 5, 5] = 1e-30
    b[0, 5, 0] = 1e-30  # underflow -> signed zero
    lut, bits, rnd = lut_args(name)
    got = lut_bmm(a, b, lut, bits, rnd)
    assert_sum_close(got, products(a, b, name))


def test_wide_exponents_use_exact_path() -> None:
    # Exponents so spread that the fast path's intermediates would leave the normal range.
    a = torch.tensor([[[2.0**100, 2.0**-100, 1.5]]])
    b = torch.tensor([[[2.0**20], [2.0**-30], [3.0]]])
    lut, bits, rnd = lut_args("mitchell7")
    got = lut_bmm(a, b, lut, bits, rnd)
    assert_sum_close(got, products(a, b, "mitchell7"))


@pytest.mark.parametrize("r,k,n", [(0, 3, 4), (3, 0, 4), (3, 4, 0)])
def test_empty_dims(r: int, k: int, n: int) -> None:
    a = torch.randn(2, r, k)
    b = torch.randn(2, k, n)
    out = approxsim.matmul(a, b, "mitchell7")
    assert out.shape == (2, r, n)
    assert bool((out == 0).all())


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((5,), (5,)),
        ((5,), (5, 3)),
        ((4, 5), (5,)),
        ((2, 1, 4, 5), (3, 5, 2)),
        ((7, 4, 5), (5, 6)),
        ((4, 5), (2, 5, 3)),
    ],
)
def test_broadcasting_matches_torch_shapes(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    a = torch.randn(sa)
    b = torch.randn(sb)
    out = approxsim.matmul(a, b, "mbm7")
    assert out.shape == torch.matmul(a, b).shape
    # Each output entry equals the product sum of the broadcast rows/columns.
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    batch = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    ae = a2.expand(*batch, *a2.shape[-2:])
    be = b2.expand(*batch, *b2.shape[-2:])
    prods = products(ae, be, "mbm7")
    expected_shape = prods.sum(-2).shape
    assert_sum_close(out.reshape(expected_shape), prods)


def test_non_contiguous_inputs() -> None:
    a = torch.randn(6, 9).t()  # (9, 6) non-contiguous
    b = torch.randn(8, 6)[:, ::2].t()[:3]  # strided
    b = torch.randn(6, 10)[:, ::2]
    out = approxsim.matmul(a, b, "mitchell7")
    assert_sum_close(out, products(a.contiguous(), b.contiguous(), "mitchell7"))


def test_fp32_is_native_and_others_are_not() -> None:
    a = torch.randn(16, 32)
    b = torch.randn(32, 8)
    assert torch.equal(approxsim.matmul(a, b, "fp32"), torch.matmul(a, b))
    for name in ["trunc11", "bf16", "mitchell7"]:
        assert not torch.equal(approxsim.matmul(a, b, name), torch.matmul(a, b)), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_are_upcast(dtype: torch.dtype) -> None:
    a = torch.randn(4, 6).to(dtype)
    b = torch.randn(6, 3).to(dtype)
    out = approxsim.matmul(a, b, "mitchell7")
    assert out.dtype == dtype
    ref = approxsim.matmul(a.float(), b.float(), "mitchell7")
    assert torch.equal(out, ref.to(dtype))


def test_bad_input_errors() -> None:
    a = torch.randn(4, 5)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        approxsim.matmul(a, torch.randn(4, 3), "mitchell7")
    with pytest.raises(TypeError, match="dtype"):
        approxsim.matmul(a.long(), torch.randn(5, 3).long(), "mitchell7")
    with pytest.raises(TypeError, match="Tensor"):
        approxsim.matmul([[1.0]], torch.randn(1, 1), "mitchell7")  # type: ignore[arg-type]
    with pytest.raises(approxsim.MultiplierError):
        approxsim.matmul(a, torch.randn(5, 3), 3.5)  # type: ignore[arg-type]
    with pytest.raises(approxsim.UnknownMultiplierError):
        approxsim.matmul(a, torch.randn(5, 3), "nope7")
    with pytest.raises(RuntimeError, match="at least 1 dimension"):
        approxsim.matmul(torch.tensor(1.0), torch.randn(5, 3), "mitchell7")
    if torch.device("meta") is not None:
        with pytest.raises(RuntimeError, match="different devices"):
            approxsim.matmul(a, torch.randn(5, 3, device="meta"), "mitchell7")


# ---------------------------------------------------------------------------- autograd
@pytest.mark.parametrize(
    "fwd,gi,gw", [("mbm7", None, None), ("mitchell7", "fp32", "bf16"), ("fp32", "mbm7", None)]
)
def test_gradients_are_the_approximate_gemms(fwd: str, gi: str | None, gw: str | None) -> None:
    a = torch.randn(2, 5, 7, requires_grad=True)
    b = torch.randn(7, 4, requires_grad=True)
    out = approxsim.matmul(a, b, fwd, grad_input=gi, grad_weight=gw)
    g = torch.randn_like(out)
    out.backward(g)
    gi_name = gi or fwd
    gw_name = gw or fwd
    ad = a.detach().reshape(10, 7)
    gd = g.reshape(10, 4)
    # Written out: input gradient = grad ⊗@ bᵀ (A = grad), weight gradient = aᵀ ⊗@ grad.
    want_ga = products(gd, b.detach().t().contiguous(), gi_name).sum(-2)
    want_gb = products(ad.t().contiguous(), gd, gw_name).sum(-2)
    assert_sum_close(a.grad.reshape(10, 7), products(gd, b.detach().t().contiguous(), gi_name))
    assert_sum_close(b.grad, products(ad.t().contiguous(), gd, gw_name))
    assert want_ga.shape == (10, 7) and want_gb.shape == (7, 4)


def test_fp32_gradients_match_torch() -> None:
    a = torch.randn(3, 4, 6, requires_grad=True)
    b = torch.randn(3, 6, 2, requires_grad=True)
    approxsim.matmul(a, b, "fp32").square().sum().backward()
    a2 = a.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_()
    torch.matmul(a2, b2).square().sum().backward()
    assert torch.allclose(a.grad, a2.grad) and torch.allclose(b.grad, b2.grad)


def test_asymmetric_operand_order() -> None:
    # A multiplier whose LUT is not symmetric shows that operand A indexes the rows.
    lut = approxsim.get_multiplier("trunc2").lut.numpy().copy()
    lut[1, 2] *= 1.5
    m = approxsim.Multiplier.from_lut(lut, name="asym")
    a = torch.tensor([[1.25]])  # index 1 at M=2
    b = torch.tensor([[1.5]])  # index 2
    assert approxsim.matmul(a, b, m).item() == pytest.approx(1.25 * 1.5 * 1.5)
    assert approxsim.matmul(b, a, m).item() == pytest.approx(1.25 * 1.5)


# ---------------------------------------------------------------------------- torch integration
def test_opcheck() -> None:
    lut, bits, rnd = lut_args("mitchell7")
    a = torch.randn(2, 3, 5)
    b = torch.randn(2, 5, 4)
    torch.library.opcheck(lut_bmm, (a, b, lut, bits, rnd))
    torch.library.opcheck(lut_mul, (a, torch.randn(2, 3, 5), lut, bits, rnd))
    empty = torch.empty(0, dtype=torch.int32)
    torch.library.opcheck(
        approx_bmm,
        (a.requires_grad_(), b.requires_grad_(), lut, lut, empty, [bits, bits, 0], [rnd, rnd, 0]),
    )


def test_mul_matches_multiplier() -> None:
    a = torch.randn(4, 5)
    b = torch.randn(5)
    m = approxsim.get_multiplier("mbm7")
    assert torch.equal(approxsim.mul(a, b, m).view(torch.int32), m(a, b).view(torch.int32))


def test_eager_path_equals_the_custom_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain CPU tensors skip the op dispatch; the results and gradients are the ops'."""
    import importlib

    ops_matmul = importlib.import_module("approxsim.ops.matmul")
    g = torch.Generator().manual_seed(3)
    a0 = torch.randn(3, 20, 30, generator=g)
    b0 = torch.randn(30, 12, generator=g)
    runs = []
    for eager in (True, False):
        if not eager:
            monkeypatch.setattr(ops_matmul, "_eager_cpu", lambda *tensors: False)
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        out = approxsim.matmul(a, b, "mitchell7", grad_input="mbm7", grad_weight="fp32")
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        runs.append((out.detach(), a.grad, b.grad))
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x, y)


def test_eager_path_not_taken_while_tracing() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from approxsim.ops.matmul import _eager_cpu

    a, b = torch.randn(4, 5), torch.randn(5, 3)
    assert _eager_cpu(a, b)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:  # the LUTs are real
        fa, fb = mode.from_tensor(a), mode.from_tensor(b)
        assert not _eager_cpu(fa, fb)
        out = approxsim.matmul(fa, fb, "mitchell7")
        assert out.shape == (4, 3)
