"""The device model: slicing constants, the signed mappings, the weight-perturbation variance
per bit-slicing setting (measured through the chip, against the derivation), write-verify,
read noise, conductance clipping and config validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from approxsim.cim import (
    CIMError,
    DeviceConfig,
    Perturbation,
    chip,
    device_conductances,
    device_to_weight_delta,
    effective_deviations,
    per_device_bound,
    per_weight_bound,
    quantize_weight,
    sample_device_deviations,
    sample_perturbation,
    slice_coefficients,
    weight_delta_to_device,
    weight_sign,
)


def _layer(seed: int = 0, n: int = 64) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        layer.weight.normal_()
        layer.weight[0, 0] = 0.0  # an exact zero: its sign bit is +
    return layer


def _chip_weight(layer: nn.Linear, **chip_kw: object) -> torch.Tensor:
    """The weight the layer computes with on the chip, read through its forward."""
    eye = torch.eye(layer.in_features)
    with torch.no_grad(), chip(layer, **chip_kw):  # type: ignore[arg-type]
        return layer(eye).T.clone()


# ---------------------------------------------------------------------------- constants
@pytest.mark.parametrize(("n", "m"), [(8, 2), (8, 1), (8, 4), (8, 8), (6, 3), (4, 2)])
def test_slice_coefficients(n: int, m: int) -> None:
    c = slice_coefficients(n, m)
    k = n // m
    assert c.shape == (k,)
    assert float(c.sum()) == pytest.approx(1.0, abs=1e-12)
    for i in range(k):
        want = (2**m - 1) * 2 ** (n - m * (i + 1)) / (2**n - 1)
        assert float(c[i]) == pytest.approx(want, rel=1e-12)
    if k > 1:
        assert torch.allclose(c[1:] / c[:-1], torch.full((k - 1,), 2.0**-m, dtype=c.dtype))


def test_default_config_matches_the_paper_setting() -> None:
    cfg = DeviceConfig()
    assert (cfg.weight_bits, cfg.device_bits, cfg.slices, cfg.devices_per_weight) == (8, 2, 4, 4)
    c = (3 * 64 / 255, 3 * 16 / 255, 3 * 4 / 255, 3 / 255)
    assert cfg.coefficients == pytest.approx(c)
    assert cfg.weight_std_factor == pytest.approx(math.sqrt(sum(x * x for x in c)))
    assert DeviceConfig(mapping="differential").devices_per_weight == 8


@pytest.mark.parametrize("mapping", ["sign-magnitude", "differential"])
@pytest.mark.parametrize(("n", "m"), [(8, 2), (8, 1), (6, 3)])
def test_device_conductances_reconstruct_the_quantized_weight(mapping: str, n: int, m: int) -> None:
    w = _layer().weight.detach()
    cfg = DeviceConfig(weight_bits=n, device_bits=m, mapping=mapping)
    g = device_conductances(w, cfg)
    assert g.shape == (cfg.devices_per_weight, *w.shape)
    top = 2**m - 1
    assert torch.equal(g * top, torch.round(g * top)) and g.min() >= 0 and g.max() <= 1
    wq, s = quantize_weight(w, n)
    c = slice_coefficients(n, m, torch.float32).view(-1, 1, 1)
    k = cfg.slices
    if mapping == "sign-magnitude":
        rebuilt = weight_sign(w) * s * (c * g).sum(0)
    else:
        rebuilt = s * (c * (g[:k] - g[k:])).sum(0)
        assert torch.all((g[:k] == 0) | (g[k:] == 0))  # one side of each pair is unused
    torch.testing.assert_close(rebuilt, wq, rtol=0, atol=1e-6)
    assert float(wq.abs().max()) == pytest.approx(float(w.abs().max()))
    levels = torch.round(wq.abs() / s * (2**n - 1))
    torch.testing.assert_close(levels * s / (2**n - 1), wq.abs(), rtol=0, atol=1e-6)


def test_quantize_straight_through_gradient() -> None:
    w = torch.randn(5, 7, requires_grad=True)
    wq, _ = quantize_weight(w, 4, straight_through=True)
    wq.sum().backward()
    assert w.grad is not None and torch.equal(w.grad, torch.ones_like(w))
    w2 = w.detach().clone().requires_grad_(True)
    quantize_weight(w2, 4)[0].sum().backward()
    assert w2.grad is not None and torch.all(w2.grad == 0)  # rounding: zero almost everywhere


# ---------------------------------------------------------------------------- signed mappings
def test_sign_magnitude_deviation_follows_the_weight_sign() -> None:
    layer = _layer()
    cfg = DeviceConfig()
    w = layer.weight.detach()
    dg = torch.full((4, *w.shape), 0.01)
    pert = Perturbation(cfg, {"": dg})
    wq, s = quantize_weight(w, 8)
    got = _chip_weight(layer, perturbation=pert)
    # Every device +1% of its range: the magnitude grows by 1% of s (Σ c_i = 1).
    torch.testing.assert_close(got, wq + weight_sign(w) * 0.01 * s, rtol=0, atol=1e-6)
    assert float(got[0, 0]) == pytest.approx(0.01 * float(s), rel=1e-5)  # 0 counts as +


def test_differential_deviation_ignores_the_weight_sign() -> None:
    layer = _layer()
    cfg = DeviceConfig(mapping="differential")
    w = layer.weight.detach()
    dg = torch.cat([torch.full((4, *w.shape), 0.01), torch.full((4, *w.shape), -0.02)])
    wq, s = quantize_weight(w, 8)
    got = _chip_weight(layer, perturbation=Perturbation(cfg, {"": dg}))
    torch.testing.assert_close(got, wq + 0.03 * s, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mapping", ["sign-magnitude", "differential"])
def test_weight_delta_device_round_trip_and_bounds(mapping: str) -> None:
    cfg = DeviceConfig(mapping=mapping)
    eps_w = 0.03
    eps_d = per_device_bound(eps_w, cfg)
    assert per_weight_bound(eps_d, cfg) == pytest.approx(eps_w)
    assert eps_d == pytest.approx(eps_w / cfg.sets)
    w = torch.randn(6, 5)
    delta = (torch.rand(6, 5) * 2 - 1) * eps_w
    delta[0, 0] = eps_w  # the extreme is reached with every device at the per-device bound
    dg = weight_delta_to_device(delta, weight_sign(w), cfg)
    assert float(dg.abs().max()) == pytest.approx(eps_d, rel=1e-6)
    torch.testing.assert_close(device_to_weight_delta(dg, weight_sign(w), cfg), delta)
    # Any deviation inside the per-device box stays inside the per-weight box.
    box = (torch.rand(cfg.devices_per_weight, 6, 5) * 2 - 1) * eps_d
    assert float(device_to_weight_delta(box, weight_sign(w), cfg).abs().max()) <= eps_w + 1e-7


# ---------------------------------------------------------------------------- statistics
@pytest.mark.parametrize(
    ("n", "m", "mapping"),
    [
        (8, 2, "sign-magnitude"),
        (8, 1, "sign-magnitude"),
        (8, 4, "sign-magnitude"),
        (8, 8, "sign-magnitude"),
        (6, 3, "sign-magnitude"),
        (8, 2, "differential"),
    ],
)
def test_weight_perturbation_variance_matches_the_derivation(n: int, m: int, mapping: str) -> None:
    """Var(Δw) = s² σ² · sets · Σ c_i², measured on the weights the layer computes with."""
    sigma = 0.05
    cfg = DeviceConfig(weight_bits=n, device_bits=m, mapping=mapping, sigma=sigma)
    layer = _layer(1)
    wq, s = quantize_weight(layer.weight.detach(), n)
    deltas = []
    for seed in range(50):
        pert = sample_perturbation(layer, cfg, seed=seed)
        deltas.append(((_chip_weight(layer, perturbation=pert) - wq) / s).reshape(-1))
    d = torch.cat(deltas).double()
    c = slice_coefficients(n, m)
    want = sigma**2 * cfg.sets * float((c * c).sum())
    assert float(d.var()) == pytest.approx(want, rel=0.03)  # n = 204,800: 1 sd is 0.3%
    assert abs(float(d.mean())) < 5 * math.sqrt(want / d.numel())
    assert cfg.weight_std_factor**2 * sigma**2 == pytest.approx(want)


def _truncated_variance(sigma: float, tol: float) -> float:
    b = tol / sigma
    phi = math.exp(-b * b / 2) / math.sqrt(2 * math.pi)
    return sigma**2 * (1 - 2 * b * phi / math.erf(b / math.sqrt(2)))


def test_write_verify_bounds_and_variance() -> None:
    sigma, tol = 0.05, 0.04
    cfg = DeviceConfig(sigma=sigma, write_verify_tolerance=tol, write_verify_slices=2)
    g = torch.Generator().manual_seed(0)
    dg = sample_device_deviations((100_000,), cfg, g)
    assert dg.shape == (4, 100_000)
    assert float(dg[:2].abs().max()) <= tol
    assert float(dg[2:].abs().max()) > tol  # unverified slices keep their Gaussian tails
    tv = _truncated_variance(sigma, tol)
    assert float(dg[:2].double().var()) == pytest.approx(tv, rel=0.02)
    assert float(dg[2:].double().var()) == pytest.approx(sigma**2, rel=0.02)
    every = DeviceConfig(sigma=1.0, write_verify_tolerance=0.01)
    assert float(sample_device_deviations((10_000,), every, g).abs().max()) <= 0.01
    # The weight variance follows: Σ c_i² Var_i.
    c = torch.tensor(cfg.coefficients, dtype=torch.float64)
    want = float((c[:2] ** 2).sum()) * tv + float((c[2:] ** 2).sum()) * sigma**2
    delta = device_to_weight_delta(dg.double(), torch.ones(100_000, dtype=torch.float64), cfg)
    assert float(delta.var()) == pytest.approx(want, rel=0.03)


def test_read_noise_is_fresh_per_forward_with_the_derived_variance() -> None:
    layer = _layer(2)
    cfg = DeviceConfig(read_noise=0.05)
    wq, s = quantize_weight(layer.weight.detach(), 8)
    eye = torch.eye(64)
    with torch.no_grad(), chip(layer, config=cfg, read_seed=3):
        a = (layer(eye).T - wq) / s
        b = (layer(eye).T - wq) / s
    assert not torch.equal(a, b)
    var = float(torch.cat([a.reshape(-1), b.reshape(-1)]).double().var())
    assert var == pytest.approx((0.05 * cfg.weight_std_factor) ** 2, rel=0.06)
    with torch.no_grad(), chip(layer, config=cfg, read_seed=3):
        again = (layer(eye).T - wq) / s
    assert torch.equal(again, a)  # seeded reads repeat


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"weight_bits": 8, "device_bits": 3}, "multiple of device_bits"),
        ({"weight_bits": 0}, "weight_bits"),
        ({"weight_bits": 17}, "weight_bits"),
        ({"weight_bits": True}, "weight_bits"),
        ({"device_bits": 9}, "device_bits"),
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"mapping": "two's complement"}, "mapping"),
        ({"write_verify_tolerance": 0.0}, "write_verify_tolerance"),
        ({"write_verify_slices": 1}, "needs write_verify_tolerance"),
        ({"write_verify_tolerance": 0.1, "write_verify_slices": 5}, "write_verify_slices"),
        ({"read_noise": float("inf")}, "read_noise"),
        ({"clip": 1}, "clip"),
        ({"clip": "yes"}, "clip"),
    ],
)
def test_bad_configs_are_rejected(kw: dict[str, object], match: str) -> None:
    with pytest.raises(CIMError, match=match):
        DeviceConfig(**kw)  # type: ignore[arg-type]


def test_config_round_trips_through_a_dict() -> None:
    cfg = DeviceConfig(sigma=0.1, mapping="differential", write_verify_tolerance=0.2)
    assert DeviceConfig.from_dict(cfg.to_dict()) == cfg
    clipped = cfg.replace(clip=True)
    assert clipped.to_dict()["clip"] is True
    assert DeviceConfig.from_dict(clipped.to_dict()) == clipped
    # Without clipping the dict keeps the form it had before the field existed, so result
    # files and run folders written earlier resume and compare equal.
    assert "clip" not in cfg.to_dict()
    with pytest.raises(CIMError, match="unknown device config keys"):
        DeviceConfig.from_dict({"sigmaa": 0.1})


# ---------------------------------------------------------------------------- clipping
@pytest.mark.parametrize("mapping", ["sign-magnitude", "differential"])
def test_effective_deviations_clip_each_device_to_its_range(mapping: str) -> None:
    w = _layer(3).weight.detach()
    cfg = DeviceConfig(sigma=0.5, mapping=mapping, clip=True)
    dg = sample_device_deviations(w.shape, cfg, torch.Generator().manual_seed(0))
    g = device_conductances(w, cfg)
    eff = effective_deviations(dg, w, cfg)
    assert eff.shape == dg.shape and eff.dtype == dg.dtype
    torch.testing.assert_close(eff, (g + dg).clamp(0, 1) - g, rtol=0, atol=1e-6)
    assert float((g + eff).min()) >= 0 and float((g + eff).max()) <= 1 + 1e-6
    inside = ((g + dg) >= 0) & ((g + dg) <= 1)
    assert 0 < float(inside.double().mean()) < 1  # the draw exercises both cases
    assert torch.equal(eff[inside], dg[inside])  # devices inside their range: untouched
    assert torch.all(eff.abs() <= dg.abs())  # clipping never enlarges a deviation
    assert torch.equal(effective_deviations(eff, w, cfg), eff)  # idempotent
    # A device at 0 only moves up, one at full range only down.
    assert torch.all(eff[g == 0] >= 0) and torch.all(eff[g == 1] <= 0)
    # Off: the deviations themselves, untouched.
    assert effective_deviations(dg, w, cfg.replace(clip=False)) is dg
    with pytest.raises(CIMError, match="shape"):
        effective_deviations(dg[:1], w, cfg)


@pytest.mark.parametrize("mapping", ["sign-magnitude", "differential"])
def test_clipped_chip_weights_stay_within_the_layer_scale(mapping: str) -> None:
    """A huge sigma drives every device to 0 or full range: |w_chip| <= s (all devices of
    one side at full conductance), while the unclipped chip goes far beyond."""
    layer = _layer(4, n=32)
    w = layer.weight.detach()
    wq, s = quantize_weight(w, 8)
    cfg = DeviceConfig(sigma=100.0, mapping=mapping, clip=True)
    pert = sample_perturbation(layer, cfg, seed=1)
    dg = pert.deviations[""]
    g = device_conductances(w, cfg)
    assert float((g + dg).min()) >= 0 and float((g + dg).max()) <= 1 + 1e-6  # stored clipped
    got = _chip_weight(layer, perturbation=pert)
    assert float(got.abs().max()) <= float(s) * (1 + 1e-6)
    # The chip's weight is the one its clipped devices hold.
    c = slice_coefficients(8, 2, torch.float32).view(-1, 1, 1)
    held = (g + dg).clamp(0, 1)
    k = cfg.slices
    if mapping == "sign-magnitude":
        want = weight_sign(w) * s * (c * held).sum(0)
    else:
        want = s * (c * (held[:k] - held[k:])).sum(0)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6 * float(s))
    raw = sample_perturbation(layer, cfg.replace(clip=False), seed=1)
    assert float(_chip_weight(layer, perturbation=raw).abs().max()) > 10 * float(s)


@pytest.mark.parametrize("mapping", ["sign-magnitude", "differential"])
def test_clip_without_variation_is_the_nominal_chip(mapping: str) -> None:
    layer = _layer(5)
    nominal = _chip_weight(layer, config=DeviceConfig(mapping=mapping))
    wq, _ = quantize_weight(layer.weight.detach(), 8)
    torch.testing.assert_close(nominal, wq, rtol=0, atol=1e-6)
    for cfg in (
        DeviceConfig(mapping=mapping, clip=True),
        DeviceConfig(mapping=mapping, clip=True, sigma=0.0, write_verify_tolerance=0.01),
    ):
        pert = sample_perturbation(layer, cfg, seed=0)
        assert all(torch.equal(d, torch.zeros_like(d)) for d in pert.deviations.values())
        assert torch.equal(_chip_weight(layer, perturbation=pert), nominal)


def test_clip_off_gives_the_same_chip_as_before() -> None:
    """clip=False: the stored deviations are the raw draw and the weight is Q(w) + s·δ(Δg)."""
    layer = _layer(6)
    w = layer.weight.detach()
    cfg = DeviceConfig(sigma=0.3, write_verify_tolerance=0.4, write_verify_slices=1)
    pert = sample_perturbation(layer, cfg, seed=11)
    raw = sample_device_deviations(w.shape, cfg, torch.Generator().manual_seed(11))
    assert torch.equal(pert.deviations[""], raw)
    wq, s = quantize_weight(w, 8)
    got = _chip_weight(layer, perturbation=pert)
    delta = device_to_weight_delta(raw, weight_sign(w), cfg)
    torch.testing.assert_close(got, wq + s * delta, rtol=0, atol=1e-6)
    clipped = _chip_weight(
        layer, perturbation=sample_perturbation(layer, cfg.replace(clip=True), seed=11)
    )
    assert not torch.equal(clipped, got)  # at sigma 0.3 clipping bites


def test_clipped_devices_at_the_range_ends_lose_half_their_deviations() -> None:
    """A device at 0 keeps max(Δg, 0): mean σ/√(2π), variance σ²(1/2 − 1/(2π)); at full range
    the mirror image. (So Var(Δw) = s²σ²·n·Σc_i² no longer holds once clipping bites.)"""
    sigma = 0.05
    cfg = DeviceConfig(weight_bits=2, device_bits=2, sigma=sigma, clip=True)  # one device
    w = torch.tensor([0.0, 1.0]).repeat(100_000)  # digits 0 and 3 (g = 0 and g = 1)
    dg = sample_device_deviations(w.shape, cfg, torch.Generator().manual_seed(0))
    eff = effective_deviations(dg, w, cfg)[0].double()
    mean, var = sigma / math.sqrt(2 * math.pi), sigma**2 * (0.5 - 1 / (2 * math.pi))
    for part, sign in ((eff[0::2], 1.0), (eff[1::2], -1.0)):
        assert float(part.mean()) == pytest.approx(sign * mean, rel=0.02)
        assert float(part.var()) == pytest.approx(var, rel=0.03)
