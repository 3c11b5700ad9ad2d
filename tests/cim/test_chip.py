"""Putting models on a chip: the weights swapped for the forward only (restored exactly, also
after errors), every layer kind including the approximate ones, selection, gradients,
perturbation files and replay."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from approxsim import ApproxConv2d, ApproxLinear, convert_model
from approxsim.cim import (
    CIMError,
    DeviceConfig,
    Perturbation,
    accuracy,
    chip,
    quantize_weight,
    sample_perturbation,
    select_layers,
    weight_deltas,
)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3)
        self.c2 = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4 + 3 * 6, 4)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        a = self.c1(x1).flatten(1)
        b = self.c2(x2).flatten(1)
        return self.fc(torch.cat([a, b], 1))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 2, 8, generator=g), torch.randn(5, 1, 6, 6, generator=g)


def _reference(net: _Net, pert: Perturbation, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The same forward with the chip's weights written into a copy by hand."""
    import copy

    ref = copy.deepcopy(net)
    layers = select_layers(ref)
    deltas = pert.weight_deltas(layers)
    with torch.no_grad():
        for name, m in layers.items():
            wq, s = quantize_weight(m.weight, pert.config.weight_bits)
            m.weight.copy_(wq + s * deltas[name])
        return ref(x1, x2)


def test_chip_swaps_weights_for_the_forward_and_restores_them() -> None:
    torch.manual_seed(0)
    net = _Net()
    x1, x2 = _inputs()
    params = {n: p for n, p in net.named_parameters()}
    before = {n: p.detach().clone() for n, p in params.items()}
    keys = list(net.state_dict())
    pert = sample_perturbation(net, DeviceConfig(sigma=0.1), seed=0)
    assert set(pert.deviations) == {"c1", "c2", "fc"}
    with torch.no_grad(), chip(net, pert) as h:
        got = net(x1, x2)
        assert h.calls == {"c1": 1, "c2": 1, "fc": 1}
        h.check_called()
        assert isinstance(net.fc.weight, nn.Parameter)  # only swapped during a forward
    torch.testing.assert_close(got, _reference(net, pert, x1, x2), rtol=1e-5, atol=1e-6)
    for n, p in net.named_parameters():
        assert p is params[n] and torch.equal(p, before[n])
    assert list(net.state_dict()) == keys
    with torch.no_grad():
        assert not torch.allclose(net(x1, x2), got)


def test_weights_come_back_when_the_forward_raises() -> None:
    torch.manual_seed(0)
    net = _Net()
    w = net.fc.weight
    x1, x2 = _inputs()
    with chip(net, config=DeviceConfig()):
        with pytest.raises(RuntimeError):
            net(x1, x2[:, :, :5])  # fc gets the wrong width: raises inside its forward
        assert net.fc.weight is w  # put back by the forward hook that always runs
    assert net.fc.weight is w
    assert all(isinstance(m.weight, nn.Parameter) for m in (net.c1, net.c2, net.fc))
    assert not net.c1._forward_pre_hooks and not net.fc._forward_hooks


def test_approximate_layers_multiply_the_chip_weight() -> None:
    torch.manual_seed(0)
    net = _Net()
    x1, x2 = _inputs()
    anet = convert_model(net, "bf16")
    assert isinstance(anet.fc, ApproxLinear) and isinstance(anet.c2, ApproxConv2d)
    pert = sample_perturbation(net, DeviceConfig(sigma=0.1), seed=1)
    with torch.no_grad(), chip(anet, pert):
        got = anet(x1, x2)
    # The reference: the same approximate model with the chip's weights written in.
    import copy

    ref = copy.deepcopy(anet)
    layers = select_layers(ref)
    deltas = pert.weight_deltas(layers)
    with torch.no_grad():
        for name, m in layers.items():
            wq, s = quantize_weight(m.weight, 8)
            m.weight.copy_(wq + s * deltas[name])
        want = ref(x1, x2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    exact = _reference(net, pert, x1, x2)
    assert not torch.equal(got, exact)  # bf16 products differ from float32 ones
    torch.testing.assert_close(got, exact, rtol=0.05, atol=0.05)


def test_gradients_reach_the_deltas_and_the_parameters() -> None:
    torch.manual_seed(0)
    net = _Net()
    x1, x2 = _inputs()
    layers = select_layers(net)
    deltas = {n: torch.zeros_like(m.weight, requires_grad=True) for n, m in layers.items()}
    with weight_deltas(net, deltas, DeviceConfig(), straight_through=True):
        net(x1, x2).square().sum().backward()
    for n, d in deltas.items():
        assert d.grad is not None and float(d.grad.abs().sum()) > 0
        w = layers[n].weight
        s = float(w.detach().abs().max())
        # Straight-through: dL/dw equals dL/dδ / s at δ = 0.
        assert w.grad is not None
        torch.testing.assert_close(w.grad, d.grad / s, rtol=1e-4, atol=1e-6)


def test_selection_by_name_and_type() -> None:
    net = _Net()
    assert list(select_layers(net)) == ["c1", "c2", "fc"]
    assert list(select_layers(net, include="c*")) == ["c1", "c2"]
    assert list(select_layers(net, exclude=[nn.Conv1d, "fc"])) == ["c2"]
    assert list(select_layers(net, include=nn.Linear)) == ["fc"]
    with pytest.raises(CIMError, match="select no linear"):
        select_layers(net, include="nope*")
    with pytest.raises(CIMError, match="fnmatch patterns"):
        select_layers(net, include=[3])  # type: ignore[list-item]
    with pytest.raises(CIMError, match="nn.Module"):
        select_layers("model")  # type: ignore[arg-type]


def test_attention_projections_are_reported_not_mapped() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 1))
    with pytest.warns(UserWarning, match="attention"):
        assert list(select_layers(model)) == ["0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select_layers(model, exclude="1")


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.a(x), self.b.weight)  # b never runs as a module


def test_layers_that_never_run_are_reported() -> None:
    model = _Tied()
    with torch.no_grad(), chip(model) as h:
        model(torch.randn(2, 4))
        with pytest.raises(CIMError, match=r"\['b'\] never ran"):
            h.check_called()
    with pytest.raises(CIMError, match="never ran"):
        from approxsim.cim import monte_carlo

        monte_carlo(model, (torch.randn(8, 4), torch.zeros(8, dtype=torch.long)),
                    DeviceConfig(sigma=0.1), samples=2)  # fmt: skip


def test_perturbation_file_round_trip_and_replay(tmp_path: Path, trained_mlp: nn.Module,
                                                 blobs: tuple) -> None:  # fmt: skip
    _, held = blobs
    cfg = DeviceConfig(sigma=0.2, mapping="differential")
    pert = sample_perturbation(trained_mlp, cfg, seed=5)
    with chip(trained_mlp, pert):
        acc = accuracy(trained_mlp, held)
    path = pert.save(tmp_path / "p.pt")
    back = Perturbation.load(path)
    assert back.config == cfg and back.digest == pert.digest and back.meta["seed"] == 5
    assert all(torch.equal(back.deviations[k], v) for k, v in pert.deviations.items())
    with chip(trained_mlp, back):
        assert accuracy(trained_mlp, held) == acc


def test_perturbation_save_is_atomic(
    tmp_path: Path, trained_mlp: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    import approxsim._io as io_mod

    path = sample_perturbation(trained_mlp, DeviceConfig(sigma=0.2), seed=1).save(tmp_path / "p.pt")
    before = path.read_bytes()

    def broken(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        sample_perturbation(trained_mlp, DeviceConfig(sigma=0.2), seed=2).save(path, overwrite=True)
    assert path.read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pt"]  # no temporary left


def test_replay_on_other_weights_or_shapes_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4))
    b = nn.Sequential(nn.Linear(3, 4))
    pert = sample_perturbation(a, DeviceConfig(sigma=0.1), seed=0)
    with pytest.raises(CIMError, match="other weights"), chip(b, pert):
        pass
    with chip(b, pert, strict=False):  # allowed when asked for
        b(torch.randn(1, 3))
    with pytest.raises(CIMError, match="shape"), chip(nn.Sequential(nn.Linear(3, 5)), pert):
        pass
    renamed = nn.Sequential(nn.Identity(), nn.Linear(3, 4))  # its layer is "1", not "0"
    with pytest.raises(CIMError, match="does not map"), chip(renamed, pert):
        pass
    with pytest.raises(CIMError, match="another device model"):
        with chip(a, pert, config=DeviceConfig(weight_bits=4)):
            pass
    with pytest.raises(CIMError, match="clip=False"):  # clipping is never silently dropped
        with chip(a, pert, config=DeviceConfig(clip=True)):
            pass
    with pytest.raises(CIMError, match="devices per weight"):
        Perturbation(DeviceConfig(), {"0": torch.zeros(3, 4, 3)})
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(CIMError, match="not an approxsim CIM perturbation"):
        Perturbation.load(bad)
    with pytest.raises(CIMError, match="no perturbation file"):
        Perturbation.load(tmp_path / "missing.pt")


def test_clipped_perturbation_file_round_trip(tmp_path: Path, trained_mlp: nn.Module,
                                              blobs: tuple) -> None:  # fmt: skip
    _, held = blobs
    cfg = DeviceConfig(sigma=0.5, clip=True)
    pert = sample_perturbation(trained_mlp, cfg, seed=2)
    with chip(trained_mlp, pert):
        acc = accuracy(trained_mlp, held)
    back = Perturbation.load(pert.save(tmp_path / "c.pt"))
    assert back.config == cfg and back.config.clip
    with chip(trained_mlp, back):
        assert accuracy(trained_mlp, held) == acc
    # Clipping changed the draw; the stored, clipped deviations are the chip as programmed.
    raw = Perturbation(cfg.replace(clip=False), dict(pert.deviations))
    unclipped = sample_perturbation(trained_mlp, cfg.replace(clip=False), seed=2)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(pert.deviations.values(), unclipped.deviations.values(), strict=True)
    )
    with chip(trained_mlp, raw):
        assert accuracy(trained_mlp, held) == acc  # stored clipped: replay needs no clip
