"""What ``approxsim.matmul`` supports beyond one backward pass: a second derivative raises
instead of silently dropping its terms; ``torch.func`` reverse-mode transforms and ``vmap``
work and match eager autograd; forward mode raises a clear error."""

from __future__ import annotations

import importlib

import pytest
import torch

import approxsim
from approxsim.ops.matmul import DOUBLE_BACKWARD_ERROR, FORWARD_MODE_ERROR

ops_matmul = importlib.import_module("approxsim.ops.matmul")
M = "mitchell7"


@pytest.fixture(params=["eager", "custom op"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways matmul runs on CPU: the eager autograd.Function and the custom op (the path
    of torch.compile, export and GPUs)."""
    if request.param == "custom op":
        monkeypatch.setattr(ops_matmul, "_eager_cpu", lambda *tensors: False)
    return str(request.param)


def operands(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 4, generator=g), torch.randn(4, 5, generator=g)


# ----------------------------------------------------------------------------- double backward
def test_gradient_penalty_raises_instead_of_dropping_terms(path: str) -> None:
    a0, b0 = operands()
    x, w = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    y = approxsim.matmul(x, w, M).pow(2).sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once") as exc:
        (y + gx.norm()).backward()
    assert str(exc.value) == DOUBLE_BACKWARD_ERROR


@pytest.mark.parametrize("channels", [2, 16])  # patches by the kernel / by shifted slices
def test_convolution_gradient_penalty_raises(channels: int) -> None:
    torch.manual_seed(0)
    model = approxsim.convert_model(torch.nn.Sequential(torch.nn.Conv2d(channels, 3, 3)), M)
    x = torch.randn(2, channels, 6, 6, requires_grad=True)
    y = model(x).pow(2).sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        (y + gx.norm()).backward()


def test_create_graph_without_a_second_derivative_is_fine(path: str) -> None:
    a0, b0 = operands(1)
    grads = []
    for create_graph in (False, True):
        x, w = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        y = approxsim.matmul(x, w, M).pow(2).sum()
        grads.append(torch.autograd.grad(y, (x, w), create_graph=create_graph))
    for plain, graphed in zip(*grads, strict=True):
        assert torch.equal(plain, graphed.detach())


def test_exact_multiplier_keeps_its_second_derivative() -> None:
    a0, b0 = operands(2)
    x, w = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    y = approxsim.matmul(x, w, "fp32").pow(2).sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=True)
    gx.norm().backward()
    assert w.grad is not None and w.grad.norm() > 0


# ----------------------------------------------------------------------------- torch.func
def _loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return approxsim.matmul(a, b, M).pow(2).sum()


def _autograd(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    ga, gb = torch.autograd.grad(_loss(a, b), (a, b))
    return ga, gb


def test_func_grad_and_vjp_match_autograd() -> None:
    a, b = operands(3)
    ga, gb = _autograd(a, b)
    assert torch.equal(torch.func.grad(_loss)(a, b), ga)
    assert torch.equal(torch.func.grad(_loss, argnums=1)(a, b), gb)
    (ga2, gb2), value = torch.func.grad_and_value(_loss, argnums=(0, 1))(a, b)
    assert torch.equal(value, _loss(a, b)) and torch.equal(ga2, ga) and torch.equal(gb2, gb)
    out, vjp_fn = torch.func.vjp(lambda x, y: approxsim.matmul(x, y, M), a, b)
    va, vb = vjp_fn(2 * out)  # d(sum(out²)) = 2·out
    assert torch.equal(va, ga) and torch.equal(vb, gb)


def test_vmap_and_jacrev_match_a_loop() -> None:
    a, b = operands(4)
    batch = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(5))
    mapped = torch.func.vmap(lambda x: approxsim.matmul(x, b, M))(batch)
    assert torch.equal(mapped, torch.stack([approxsim.matmul(x, b, M) for x in batch]))
    both = torch.func.vmap(lambda x, y: approxsim.matmul(x, y, M))(batch, batch.transpose(1, 2))
    assert torch.equal(both[2], approxsim.matmul(batch[2], batch[2].T, M))
    jac = torch.func.jacrev(lambda x: approxsim.matmul(x, b, M))(a)
    for r in range(3):
        for n in range(5):
            x = a.clone().requires_grad_()
            (row,) = torch.autograd.grad(approxsim.matmul(x, b, M)[r, n], x)
            assert torch.equal(jac[r, n], row)


def test_mul_vmaps() -> None:
    _, b = operands(6)
    rows = b.T.contiguous()  # five rows of 4
    y = rows[0]
    got = torch.func.vmap(lambda x: approxsim.mul(x, y, M))(rows)
    assert torch.equal(got, torch.stack([approxsim.mul(x, y, M) for x in rows]))


@pytest.mark.parametrize(
    "transform",
    [
        lambda f, a, b: torch.func.jacfwd(lambda x: approxsim.matmul(x, b, M))(a),
        lambda f, a, b: torch.func.jvp(lambda x: approxsim.matmul(x, b, M), (a,), (a,)),
        lambda f, a, b: torch.func.hessian(f)(a, b),
    ],
    ids=["jacfwd", "jvp", "hessian"],
)
def test_forward_mode_is_a_clear_error(transform: object) -> None:
    a, b = operands(7)
    with pytest.raises(RuntimeError) as exc:
        transform(_loss, a, b)  # type: ignore[operator]
    assert str(exc.value) == FORWARD_MODE_ERROR


def test_grad_of_grad_is_a_clear_error() -> None:
    a, b = operands(8)
    with pytest.raises(RuntimeError) as exc:
        torch.func.grad(lambda x: torch.func.grad(_loss)(x, b).sum())(a)
    assert str(exc.value) == DOUBLE_BACKWARD_ERROR


def test_forward_ad_and_autograd_hessian_are_clear_errors() -> None:
    import torch.autograd.forward_ad as fw_ad

    a, b = operands(9)
    with fw_ad.dual_level(), pytest.raises(RuntimeError) as exc:
        approxsim.matmul(fw_ad.make_dual(a, torch.ones_like(a)), b, M)
    assert str(exc.value) == FORWARD_MODE_ERROR
    with pytest.raises(RuntimeError) as exc:
        torch.autograd.functional.hessian(lambda x: _loss(x, b), a)
    assert str(exc.value) == DOUBLE_BACKWARD_ERROR


def test_vmap_of_grad_matches_a_loop() -> None:
    _, b = operands(10)
    batch = torch.randn(4, 3, 4, generator=torch.Generator().manual_seed(11))
    grads = torch.func.vmap(torch.func.grad(_loss))(batch, b.expand(4, 4, 5))
    for i in range(4):
        assert torch.equal(grads[i], torch.func.grad(_loss)(batch[i], b))
