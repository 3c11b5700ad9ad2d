"""ApproxLinear: exact twin with fp32, independent product sums with approximate multipliers."""

from __future__ import annotations

import copy

import pytest
import torch
from nn_reference import assert_sum_close, products, sum_ref
from torch import nn

import approxsim
from approxsim.nn import ApproxLinear, ApproxModule
from approxsim.ops import PassMultipliers

APPROX = ["mitchell7", "mbm7", "bf16"]


def linear_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, name: str):
    """(exact, Σ|P|, K) of x ⊗@ wᵀ + b over the flattened leading dims, float64."""
    x2 = x.reshape(-1, x.shape[-1])
    exact, absum, k = sum_ref(products(x2, w.t().contiguous(), name), 1)
    if b is not None:
        exact = exact + b.double()
        absum = absum + b.double().abs()
    shape = (*x.shape[:-1], w.shape[0])
    return exact.reshape(shape), absum.reshape(shape), k


def test_fp32_matches_torch_linear() -> None:
    torch.manual_seed(0)
    ref = nn.Linear(7, 5)
    layer = ApproxLinear(7, 5, multiplier="fp32")
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ref(x).square().sum().backward()
    layer(x2).square().sum().backward()
    torch.testing.assert_close(layer(x2), ref(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", APPROX)
@pytest.mark.parametrize("shape", [(9,), (4, 9), (2, 3, 9)])
def test_forward_matches_products(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    layer = ApproxLinear(9, 6, multiplier=name)
    x = torch.randn(shape) * 2
    got = layer(x)
    exact, absum, k = linear_ref(x, layer.weight.detach(), layer.bias.detach(), name)
    assert got.shape == (*shape[:-1], 6)
    assert_sum_close(got, exact, absum, k, name)
    # The approximation really happens.
    assert not torch.allclose(got, nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6)


def test_gradients_use_each_pass_multiplier() -> None:
    torch.manual_seed(2)
    layer = ApproxLinear(
        8, 5, bias=False, multiplier="mitchell7", grad_input="mbm7", grad_weight="bf16"
    )
    x = torch.randn(6, 8, requires_grad=True)
    g = torch.randn(6, 5)
    layer(x).backward(g)
    w = layer.weight.detach()
    # Input gradient: operand A = grad, operand B = W (= (Wᵀ)ᵀ).
    exact, absum, k = sum_ref(products(g, w, "mbm7"), 1)
    assert_sum_close(x.grad, exact, absum, k, "grad_input")
    # Weight gradient of Wᵀ: operand A = xᵀ, operand B = grad.
    exact, absum, k = sum_ref(products(x.detach().t().contiguous(), g, "bf16"), 1)
    assert_sum_close(layer.weight.grad.t(), exact, absum, k, "grad_weight")


def test_float64_input_keeps_dtype() -> None:
    layer = ApproxLinear(4, 3, multiplier="mitchell7", dtype=torch.float64)
    out = layer(torch.randn(2, 4, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_repr_and_multiplier_setter() -> None:
    layer = ApproxLinear(4, 3, multiplier="mitchell7")
    assert "multiplier=mitchell7" in repr(layer)
    layer.multiplier = "mbm7"
    assert layer.multiplier.forward.name == "mbm7"
    layer.set_multiplier("mitchell7", grad_weight="fp32")
    assert "grad_weight=fp32" in repr(layer)
    assert isinstance(layer.multiplier, PassMultipliers)
    assert isinstance(layer, nn.Linear) and isinstance(layer, ApproxModule)
    with pytest.raises(approxsim.MultiplierError):
        ApproxLinear(4, 3, multiplier="no-such-multiplier")
    assert "multiplier" not in "".join(layer.state_dict())


def test_from_float_to_float_share_parameters() -> None:
    lin = nn.Linear(5, 3)
    approx = ApproxLinear.from_float(lin, "mitchell7")
    assert approx.weight is lin.weight and approx.bias is lin.bias
    assert approx.multiplier.forward.name == "mitchell7"
    back = approx.to_float()
    assert type(back) is nn.Linear
    assert back.weight is lin.weight and back.bias is lin.bias
    # A training step through the approximate layer updates the original's parameters.
    before = lin.weight.detach().clone()
    opt = torch.optim.SGD(approx.parameters(), lr=0.1)
    approx(torch.randn(4, 5)).sum().backward()
    opt.step()
    assert not torch.equal(lin.weight.detach(), before)
    no_bias = ApproxLinear.from_float(nn.Linear(5, 3, bias=False), "bf16")
    assert no_bias.bias is None
    with pytest.raises(TypeError, match="nn.Linear"):
        ApproxLinear.from_float(nn.Conv1d(1, 1, 1), "bf16")  # type: ignore[arg-type]


def test_deepcopy_shares_the_multiplier() -> None:
    layer = ApproxLinear(4, 3, multiplier="mitchell7")
    dup = copy.deepcopy(layer)
    assert dup.multiplier.forward is layer.multiplier.forward
    assert dup.weight is not layer.weight and torch.equal(dup.weight, layer.weight)
    x = torch.randn(2, 4)
    assert torch.equal(dup(x), layer(x))
