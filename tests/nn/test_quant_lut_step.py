"""``QuantConfig.lut_step``: the half-width of the ``lut`` gradient tables' difference stencil
(issue 15: DRUM's 1-code differences reach 18 times the exact derivative)."""

from __future__ import annotations

import pytest
import torch
from quant_reference import code_range, params, product_fn, quantize, weight_params

from approxsim.multipliers.integer import IntMultiplier
from approxsim.multipliers.registry import get_int_multiplier
from approxsim.nn.quant import QuantConfig, QuantError, lut_gradient_tables
from approxsim.nn.quant_layers import QuantLinear, calibrate

CPU = torch.device("cpu")


def _brute_tables(mult: IntMultiplier, kind: str, bits: int, step: int) -> torch.Tensor:
    """``Ga`` over all code pairs, one scalar product at a time."""
    f = product_fn(mult, kind)
    qmin, qmax = code_range(kind, bits)
    ga = torch.empty(qmax - qmin + 1, qmax - qmin + 1, dtype=torch.float64)
    for a in range(qmin, qmax + 1):
        hi, lo = min(a + step, qmax), max(a - step, qmin)
        for b in range(qmin, qmax + 1):
            ga[a - qmin, b - qmin] = (f(hi, b) - f(lo, b)) / (hi - lo)
    return ga


@pytest.mark.parametrize("step", [1, 3, 8])
@pytest.mark.parametrize(
    ("name", "kind", "bits"),
    [("drum4_u8", "affine", 6), ("trunc8_s8", "symmetric", 5), ("drum4_u8", "sign-magnitude", 5)],
)
def test_tables_are_the_wide_difference(name: str, kind: str, bits: int, step: int) -> None:
    mult = get_int_multiplier(name)
    scheme = QuantConfig(bits=bits, mapping=kind, grad="lut", lut_step=step).resolve(mult)  # type: ignore[arg-type]
    ga, gb = lut_gradient_tables(scheme, CPU)
    want = _brute_tables(mult, kind, bits, step)
    assert torch.equal(ga.double(), want.float().double())
    assert torch.equal(gb.double(), want.T.float().double())  # these tables are symmetric


@pytest.mark.parametrize("step", [1, 2, 16])
@pytest.mark.parametrize("signed", [False, True])
def test_exact_table_gives_the_exact_derivative(signed: bool, step: int) -> None:
    scheme = QuantConfig(grad="lut", lut_step=step).resolve(IntMultiplier.exact(8, signed))
    ga, gb = lut_gradient_tables(scheme, CPU)
    codes = torch.arange(scheme.qmin, scheme.qmax + 1, dtype=torch.float32)
    assert torch.equal(ga, codes[None, :].expand_as(ga))
    assert torch.equal(gb, codes[:, None].expand_as(gb))


def test_wider_stencil_bounds_drum_slopes() -> None:
    # The measurement of docs/results-int8.md: for |b| >= 16 the 1-code difference of
    # drum4_u8 (affine codes) reaches 18·b; halving by each doubling of the stencil.
    mult = get_int_multiplier("drum4_u8")
    ratios = []
    for step in (1, 8):
        ga, _ = lut_gradient_tables(QuantConfig(grad="lut", lut_step=step).resolve(mult), CPU)
        b = torch.arange(256.0)[None, :].expand_as(ga)
        ratios.append(float((ga / b)[b >= 16].max()))
    assert ratios[0] == 18.0 and ratios[1] == pytest.approx(2.25)


def test_layer_backward_uses_the_wide_tables() -> None:
    torch.manual_seed(3)
    mult, step = get_int_multiplier("drum4_u8"), 4
    grads = {}
    for h in (1, step):
        layer = QuantLinear(8, 3, int_multiplier=mult, quant=QuantConfig(grad="lut", lut_step=h))
        x = torch.randn(5, 8)
        with torch.no_grad():
            layer.weight.copy_(torch.linspace(-1, 1, 24).view(3, 8))
        calibrate(layer, [x])
        layer.train()
        xg = x.clone().requires_grad_(True)
        layer(xg).backward(torch.ones(5, 3))
        grads[h] = xg.grad
    # By hand (affine codes, inputs inside the calibrated range, upstream gradient 1):
    # ∂/∂x[r,k] = Σ_n sb[n]·(Ga[qx[r,k], qw[n,k]] - zb[n]).
    obs = layer.input_observer
    sa, za = params(obs.lo.clone(), obs.hi.clone(), "affine", 8)
    sb, zb = weight_params(layer.weight, "affine", 8, True)
    qx = quantize(x, sa, za, "affine", 8).long()
    qw = quantize(layer.weight, sb[:, None], zb[:, None], "affine", 8).long()
    ga = _brute_tables(mult, "affine", 8, step).float()
    want = torch.zeros(5, 8)
    for n in range(3):
        want += sb[n] * (ga[qx, qw[n][None, :].expand_as(qx)] - zb[n])
    torch.testing.assert_close(grads[step], want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(grads[1], grads[step])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_step_is_refused(bad: object) -> None:
    with pytest.raises(QuantError, match=f"lut_step must be an int ≥ 1, got {bad!r}"):
        QuantConfig(grad="lut", lut_step=bad)  # type: ignore[arg-type]
