"""Quantized layers under ``torch.compile(fullgraph=True)``: the same products and gradients
as eager, for both backwards, from a cold start (no table cached yet), and a NaN input is
still refused with the quantized layers' message."""

from __future__ import annotations

import pytest
import torch
from quant_reference import noisy_multiplier
from torch import nn

from approxsim.nn.quant import QuantConfig
from approxsim.nn.quant_layers import QuantConv2d, QuantLinear, calibrate

# The "eager" backend runs dynamo's fullgraph capture (where data-dependent branches and
# cache writes inside the autograd.Function are refused) without code generation, which
# would only add minutes here.
_BACKEND = "eager"


def _layer(kind: str, grad: str, seed: int) -> tuple[nn.Module, torch.Tensor]:
    # A fresh multiplier each time: its tables are not cached yet (the cold start).
    mult = noisy_multiplier(8, False, seed=seed)
    cfg = QuantConfig(grad=grad)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    if kind == "linear":
        layer: nn.Module = QuantLinear(12, 5, int_multiplier=mult, quant=cfg)
        x = torch.randn(6, 12)
    else:
        layer = QuantConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), mult, cfg)
        x = torch.randn(2, 3, 6, 6)
    calibrate(layer, [x])
    return layer, x


def _run(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    layer.zero_grad()
    xg = x.clone().requires_grad_(True)
    out = layer(xg)
    out.square().sum().backward()
    params = [p.grad for p in layer.parameters() if p.grad is not None]
    assert xg.grad is not None and params
    return (out.detach(), xg.grad, *params)


@pytest.mark.parametrize(("kind", "grad"), [("linear", "lut"), ("conv2d", "ste")])
def test_compiled_layer_matches_eager(kind: str, grad: str) -> None:
    torch._dynamo.reset()
    layer, x = _layer(kind, grad, seed=11 if grad == "ste" else 12)
    layer.train()
    compiled = torch.compile(layer, fullgraph=True, backend=_BACKEND)
    got = _run(compiled, x)  # first: every cache is cold while tracing
    want = _run(layer, x)
    assert torch.equal(got[0], want[0])  # the products are exact either way
    for g, w in zip(got[1:], want[1:], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    layer.eval()
    with torch.no_grad():
        assert torch.equal(compiled(x), layer(x))
        x[0, 0] = float("nan")
        with pytest.raises(RuntimeError, match="quantized layer got a NaN or infinite value"):
            compiled(x)
