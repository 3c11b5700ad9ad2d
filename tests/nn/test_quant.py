"""Quantized layers: exact against the slow reference, gradients, calibration, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from quant_reference import (
    code_range,
    dequant,
    dot,
    noisy_multiplier,
    params,
    product_fn,
    quantize,
    ref_conv2d,
    ref_linear,
    weight_params,
)
from torch import nn

from approxsim.multipliers import MultiplierError
from approxsim.multipliers.integer import IntMultiplier
from approxsim.nn.quant import QuantConfig, QuantError, lut_gradient_tables
from approxsim.nn.quant_attention import QuantMultiheadAttention
from approxsim.nn.quant_layers import QuantConv1d, QuantConv2d, QuantLinear, calibrate

U8 = noisy_multiplier(8, False, seed=1)
S8 = noisy_multiplier(8, True, seed=2)
U6 = noisy_multiplier(6, False, seed=3, spread=6)

# (multiplier, mapping, bits): both mappings for unsigned tables, symmetric for signed ones,
# and codes narrower than the table.
CASES = [
    (U8, "affine", 8),
    (U8, "sign-magnitude", 7),
    (S8, "symmetric", 8),
    (U8, "affine", 5),
    (U6, "sign-magnitude", 6),
]
CASE_IDS = ["u8-affine", "u8-signmag7", "s8-symmetric", "u8-affine5", "u6-signmag"]


def _kind(mapping: str, signed: bool) -> str:
    return mapping if mapping != "auto" else ("symmetric" if signed else "affine")


def _act_range(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    obs = layer.input_observer  # type: ignore[attr-defined]
    return obs.lo.clone(), obs.hi.clone()


# ---------------------------------------------------------------------------- exact forward
@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize(("mult", "mapping", "bits"), CASES, ids=CASE_IDS)
def test_linear_matches_reference(
    mult: IntMultiplier, mapping: str, bits: int, per_channel: bool
) -> None:
    torch.manual_seed(0)
    gran = "per-channel" if per_channel else "per-tensor"
    cfg = QuantConfig(bits=bits, mapping=mapping, weight_granularity=gran)  # type: ignore[arg-type]
    layer = QuantLinear(7, 5, int_multiplier=mult, quant=cfg)
    x = torch.randn(4, 7) * 2 + 0.3
    calibrate(layer, [x])
    got = layer(x)
    want = ref_linear(
        x, layer.weight, layer.bias, _act_range(layer), mult, mapping, bits, per_channel
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # Leading dimensions are flattened into rows.
    got3 = layer(x.reshape(2, 2, 7))
    torch.testing.assert_close(got3.reshape(4, 5), want, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "mode"),
    [
        (1, 1, 2, 2, "zeros"),
        (2, 1, 1, 1, "reflect"),
        (1, 1, 1, 4, "zeros"),  # depthwise
        (1, "same", 1, 2, "circular"),
    ],
    ids=["groups-dilation", "strided-reflect", "depthwise", "same-circular"],
)
@pytest.mark.parametrize(("mult", "mapping", "bits"), CASES[:3], ids=CASE_IDS[:3])
def test_conv2d_matches_reference(
    mult: IntMultiplier,
    mapping: str,
    bits: int,
    stride: int,
    padding: int | str,
    dilation: int,
    groups: int,
    mode: str,
) -> None:
    torch.manual_seed(1)
    cfg = QuantConfig(bits=bits, mapping=mapping)  # type: ignore[arg-type]
    layer = QuantConv2d(
        4,
        4,
        3,
        stride,
        padding,
        dilation,
        groups,
        padding_mode=mode,  # type: ignore[arg-type]
        int_multiplier=mult,
        quant=cfg,
    )
    x = torch.randn(2, 4, 6, 5)
    calibrate(layer, [x])
    if padding == "same":
        pad = (1, 1, 1, 1)
    else:
        p = int(padding)
        pad = (p, p, p, p)
    want = ref_conv2d(
        x,
        layer.weight,
        layer.bias,
        stride,
        pad,
        dilation,
        groups,
        mode,
        _act_range(layer),
        mult,
        mapping,
        bits,
        True,
    )
    torch.testing.assert_close(layer(x), want, rtol=0, atol=0)
    torch.testing.assert_close(layer(x[0]), want[0], rtol=0, atol=0)  # unbatched


@pytest.mark.parametrize(("mult", "mapping", "bits"), CASES[:3], ids=CASE_IDS[:3])
def test_conv1d_matches_reference(mult: IntMultiplier, mapping: str, bits: int) -> None:
    torch.manual_seed(2)
    cfg = QuantConfig(bits=bits, mapping=mapping)  # type: ignore[arg-type]
    layer = QuantConv1d(
        4, 6, 3, stride=2, padding=2, dilation=2, groups=2, int_multiplier=mult, quant=cfg
    )
    x = torch.randn(2, 4, 9)
    calibrate(layer, [x])
    got = layer(x)
    f = product_fn(mult, mapping)
    sa, za = params(*_act_range(layer), mapping, bits)
    sb, zb = weight_params(layer.weight, mapping, bits, True)
    qx = quantize(F.pad(x, (2, 2)), sa, za, mapping, bits).tolist()
    qw = quantize(layer.weight, sb.view(-1, 1, 1), zb.view(-1, 1, 1), mapping, bits).tolist()
    out = torch.zeros_like(got)
    for n in range(2):
        for o in range(6):
            g = o // 3
            for j in range(out.shape[2]):
                acc = 0
                for c in range(2):
                    for u in range(3):
                        a = qx[n][g * 2 + c][j * 2 + u * 2]
                        b = qw[o][c][u]
                        acc += f(a, b)
                        if mapping == "affine":
                            acc += -int(za) * b - int(zb[o]) * a + int(za) * int(zb[o])
                out[n, o, j] = float(
                    torch.tensor(acc * (float(sa) * float(sb[o])), dtype=torch.float32)
                )
    out = out + layer.bias.detach().view(1, -1, 1)
    torch.testing.assert_close(got, out, rtol=0, atol=0)


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
def test_exact_multiplier_is_fake_quantized_float(signed: bool) -> None:
    torch.manual_seed(3)
    mult = IntMultiplier.exact(8, signed)
    kind = "symmetric" if signed else "affine"
    lin = nn.Linear(16, 8)
    layer = QuantLinear.from_float(lin, mult, QuantConfig())
    x = torch.randn(10, 16)
    calibrate(layer, [x])
    sa, za = params(*_act_range(layer), kind, 8)
    sb, zb = weight_params(lin.weight, kind, 8, True)
    x_hat = (quantize(x, sa, za, kind, 8) - za).double() * sa.double()
    w_hat = (quantize(lin.weight, sb[:, None], zb[:, None], kind, 8) - zb[:, None]).double()
    w_hat = w_hat * sb[:, None].double()
    want = F.linear(x_hat, w_hat).float() + lin.bias
    torch.testing.assert_close(layer(x), want, rtol=1e-6, atol=1e-6)
    # And close to the float layer itself (8-bit quantization noise only).
    assert (layer(x) - lin(x)).abs().max() < 0.05


def test_sign_magnitude_table_on_all_pairs() -> None:
    cfg = QuantConfig(mapping="sign-magnitude", bits=8)
    scheme = cfg.resolve(U8)
    tm = scheme.table_multiplier
    assert tm.signed and tm.bits == 9
    v = torch.arange(-255, 256)
    a, b = v[:, None].expand(511, 511), v[None, :].expand(511, 511)
    sign = torch.where(a < 0, -1, 1) * torch.where(b < 0, -1, 1)
    want = sign * U8.table.long()[a.abs(), b.abs()]
    assert torch.equal(tm.m(a, b).long(), want)


# ---------------------------------------------------------------------------- gradients
def test_ste_gradient_is_float_gradient_of_dequantized_model() -> None:
    torch.manual_seed(4)
    layer = QuantLinear(6, 4, int_multiplier=U8, quant=QuantConfig(grad="ste"))
    x = torch.randn(5, 6)
    calibrate(layer, [x])
    layer.train()
    x = x.clone().requires_grad_(True)
    g = torch.randn(5, 4)
    layer(x).backward(g)
    sa, za = params(*_act_range(layer), "affine", 8)
    sb, zb = weight_params(layer.weight, "affine", 8, True)
    x_hat = ((quantize(x, sa, za, "affine", 8) - za).float() * sa).requires_grad_(True)
    w_hat = quantize(layer.weight, sb[:, None], zb[:, None], "affine", 8) - zb[:, None]
    w_hat = (w_hat.float() * sb[:, None]).requires_grad_(True)
    F.linear(x_hat, w_hat, layer.bias.detach()).backward(g)
    torch.testing.assert_close(x.grad, x_hat.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, w_hat.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad, g.sum(0))


def test_ste_gradient_is_zero_where_clipped() -> None:
    layer = QuantLinear(3, 2, int_multiplier=U8)
    calibrate(layer, [torch.tensor([[-1.0, 0.0, 1.0]])])
    x = torch.tensor([[0.5, 3.0, -0.5]], requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad[0, 1] == 0 and x.grad[0, 0] != 0


def _brute_lut_grads(
    layer: QuantLinear, x: torch.Tensor, g: torch.Tensor, mapping: str, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per product: ∂/∂x[r,k] = Σ_n g·sb[n]·(Ga - zb[n]); ∂/∂w[n,k] = Σ_r g·sa·(Gb - za)."""
    mult = layer.int_multiplier
    f = product_fn(mult, mapping)
    qmin, qmax = code_range(mapping, bits)

    def ga(a: int, b: int) -> float:
        if a == qmin:
            return f(a + 1, b) - f(a, b)
        if a == qmax:
            return f(a, b) - f(a - 1, b)
        return (f(a + 1, b) - f(a - 1, b)) / 2

    def gb(a: int, b: int) -> float:
        if b == qmin:
            return f(a, b + 1) - f(a, b)
        if b == qmax:
            return f(a, b) - f(a, b - 1)
        return (f(a, b + 1) - f(a, b - 1)) / 2

    sa, za = params(*_act_range(layer), mapping, bits)
    sb, zb = weight_params(layer.weight, mapping, bits, True)
    qx = quantize(x, sa, za, mapping, bits).tolist()
    qw = quantize(layer.weight, sb[:, None], zb[:, None], mapping, bits).tolist()
    r_, k_, n_ = x.shape[0], x.shape[1], layer.weight.shape[0]
    gx = torch.zeros(r_, k_, dtype=torch.float64)
    gw = torch.zeros(n_, k_, dtype=torch.float64)
    for r in range(r_):
        for k in range(k_):
            for n in range(n_):
                a, b = qx[r][k], qw[n][k]
                gx[r, k] += float(g[r, n]) * float(sb[n]) * (ga(a, b) - int(zb[n]))
                gw[n, k] += float(g[r, n]) * float(sa) * (gb(a, b) - int(za))
    return gx.float(), gw.float()


@pytest.mark.parametrize(("mult", "mapping", "bits"), CASES, ids=CASE_IDS)
def test_lut_gradient_matches_brute_force(mult: IntMultiplier, mapping: str, bits: int) -> None:
    torch.manual_seed(5)
    cfg = QuantConfig(bits=bits, mapping=mapping, grad="lut")  # type: ignore[arg-type]
    layer = QuantLinear(6, 3, int_multiplier=mult, quant=cfg)
    x = torch.randn(4, 6)
    calibrate(layer, [x])
    layer.train()
    xg = x.clone().requires_grad_(True)
    g = torch.randn(4, 3)
    layer(xg).backward(g)
    gx, gw = _brute_lut_grads(layer, x, g, mapping, bits)
    torch.testing.assert_close(xg.grad, gx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
def test_lut_gradient_of_exact_table_is_ste(signed: bool) -> None:
    torch.manual_seed(6)
    mult = IntMultiplier.exact(8, signed)
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    grads = []
    for grad in ("ste", "lut"):
        layer = QuantConv2d.from_float(conv, mult, QuantConfig(grad=grad))  # type: ignore[arg-type]
        x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
        calibrate(layer, [x])
        x.requires_grad_(True)
        conv.weight.grad = None
        layer(x).square().sum().backward()
        grads.append((x.grad, conv.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-4)


def test_lut_tables_all_pairs() -> None:
    scheme = QuantConfig(grad="lut").resolve(U8)
    ga, gb = lut_gradient_tables(scheme, torch.device("cpu"))
    t = U8.table.double()
    assert torch.equal(ga[1:-1].double(), (t[2:] - t[:-2]) / 2)
    assert torch.equal(gb[:, 1:-1].double(), (t[:, 2:] - t[:, :-2]) / 2)
    assert torch.equal(ga[0].double(), t[1] - t[0]) and torch.equal(ga[-1].double(), t[-1] - t[-2])
    assert torch.equal(gb[:, 0].double(), t[:, 1] - t[:, 0])


# ---------------------------------------------------------------------------- calibration
def test_calibration_minmax_and_percentile() -> None:
    batches = [torch.randn(50, 4) * s for s in (1.0, 3.0, 0.5)]
    layer = QuantLinear(4, 2, int_multiplier=U8)
    assert calibrate(layer, batches) == 3
    cat = torch.cat(batches)
    assert float(layer.input_observer.lo) == float(cat.min())
    assert float(layer.input_observer.hi) == float(cat.max())
    assert layer.input_observer.frozen
    layer = QuantLinear(
        4, 2, int_multiplier=U8, quant=QuantConfig(calibration="percentile", percentile=90.0)
    )
    calibrate(layer, [(b, None) for b in batches])  # (input, target) batches
    his = [float(b.reshape(-1).kthvalue(180).values) for b in batches]
    los = [float(b.reshape(-1).kthvalue(21).values) for b in batches]
    assert float(layer.input_observer.hi) == pytest.approx(sum(his) / 3, rel=1e-6)
    assert float(layer.input_observer.lo) == pytest.approx(sum(los) / 3, rel=1e-6)


def test_ema_observer_in_training_and_frozen_after_calibration() -> None:
    layer = QuantLinear(2, 2, int_multiplier=U8, quant=QuantConfig(momentum=0.5))
    layer.train()
    layer(torch.tensor([[-1.0, 1.0]]))
    layer(torch.tensor([[-3.0, 5.0]]))
    assert (float(layer.input_observer.lo), float(layer.input_observer.hi)) == (-2.0, 3.0)
    calibrate(layer, [torch.tensor([[-1.0, 1.0]])])
    layer.train()
    layer(torch.tensor([[-9.0, 9.0]]))
    assert (float(layer.input_observer.lo), float(layer.input_observer.hi)) == (-1.0, 1.0)
    calibrate(layer, [torch.tensor([[-1.0, 1.0]])], freeze=False)
    layer(torch.tensor([[-3.0, 3.0]]))
    assert float(layer.input_observer.hi) == 2.0


def test_uncalibrated_eval_is_refused() -> None:
    layer = QuantLinear(2, 2, int_multiplier=U8).eval()
    with pytest.raises(QuantError, match="calibrate"):
        layer(torch.randn(1, 2))


def test_state_dict_float_checkpoint_loads_and_ranges_round_trip() -> None:
    lin = nn.Linear(3, 2)
    layer = QuantLinear(3, 2, int_multiplier=U8)
    layer.load_state_dict(lin.state_dict())  # strict: a float checkpoint lacks the observer
    assert torch.equal(layer.weight, lin.weight) and not layer.input_observer.observed
    calibrate(layer, [torch.randn(4, 3)])
    sd = layer.state_dict()
    assert set(sd) == {
        "weight",
        "bias",
        "input_observer.lo",
        "input_observer.hi",
        "input_observer.state",
    }
    other = QuantLinear(3, 2, int_multiplier=U8)
    other.load_state_dict(sd)
    x = torch.randn(2, 3)
    assert torch.equal(other.eval()(x), layer.eval()(x))


def test_calibrate_errors() -> None:
    with pytest.raises(QuantError, match="no quantized layers"):
        calibrate(nn.Linear(2, 2), [torch.randn(1, 2)])
    with pytest.raises(QuantError, match="no batches"):
        calibrate(QuantLinear(2, 2, int_multiplier=U8), [])
    model = nn.ModuleDict({"a": QuantLinear(2, 2, int_multiplier=U8)})
    with pytest.raises(QuantError, match="saw no data"):
        calibrate(model, [torch.randn(1, 2)], forward=lambda m, b: None)


# ---------------------------------------------------------------------------- config errors
def test_config_errors() -> None:
    with pytest.raises(QuantError, match="bits=9"):
        QuantConfig(bits=9).resolve(U8)
    with pytest.raises(QuantError, match="signed"):
        QuantConfig(mapping="affine").resolve(S8)
    with pytest.raises(QuantError, match="signed multiplier"):
        QuantConfig(mapping="symmetric").resolve(U8)
    for bad in (
        {"bits": 1},
        {"bits": True},
        {"percentile": 40},
        {"momentum": 0},
        {"grad": "exact"},
        {"mapping": "twos"},
        {"calibration": "mse"},
        {"weight_granularity": "per-row"},
    ):
        with pytest.raises(QuantError):
            QuantConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(MultiplierError, match="float multiplier"):
        QuantLinear(2, 2, int_multiplier="mitchell7")
    with pytest.raises(QuantError, match="IntMultiplier"):
        QuantLinear(2, 2, int_multiplier=3)
    assert QuantLinear(2, 2, int_multiplier="drum4_u8").int_multiplier.name == "drum4_u8"
    assert QuantConfig().resolve(U6).bits == 6  # default: the multiplier's width


def test_non_finite_input_is_refused() -> None:
    layer = QuantLinear(2, 2, int_multiplier=U8)
    calibrate(layer, [torch.randn(3, 2)])
    with pytest.raises(QuantError, match="NaN"):
        layer(torch.tensor([[float("nan"), 0.0]]))


# ---------------------------------------------------------------------------- convert_model
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1d = nn.Conv1d(4, 4, 3, padding=1, groups=4)
        self.fc = nn.Linear(4 * 16, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))  # (N, 4, 4, 4)
        y = self.conv1d(y.flatten(2)).flatten(1)
        return self.head(torch.relu(self.fc(y)))


def test_convert_calibrate_restore() -> None:
    from approxsim.convert import conversion_report, convert_model, restore_model

    torch.manual_seed(7)
    model = _Net().eval()
    x = torch.randn(6, 3, 4, 4)
    q = convert_model(model, IntMultiplier.exact(8, False), quant=QuantConfig(), exclude="head")
    assert isinstance(q.conv, QuantConv2d) and isinstance(q.conv1d, QuantConv1d)
    assert isinstance(q.fc, QuantLinear) and type(q.head) is nn.Linear
    assert type(model.conv) is nn.Conv2d  # deep copy by default
    report = conversion_report(q)
    assert len(report.converted) == 3 and [e.name for e in report.left_exact] == ["head"]
    assert "uint8@" in report.converted[0].multiplier
    calibrate(q, [x[:3], x[3:]])
    assert (q(x) - model(x)).abs().max() < 0.05  # exact table: 8-bit quantization noise only
    # A float checkpoint loads into the quantized model (strict), and back.
    q.load_state_dict(model.state_dict())
    restored = restore_model(q)
    assert type(restored.conv) is nn.Conv2d and type(restored.fc) is nn.Linear
    assert set(restored.state_dict()) == set(model.state_dict())
    # Approximate float layers and quantized layers convert into one another.
    approx = convert_model(q, "mitchell7")
    assert type(approx.fc).__name__ == "ApproxLinear"
    requant = convert_model(approx, U8, quant=QuantConfig(grad="lut"), include=["fc"])
    assert isinstance(requant.fc, QuantLinear) and requant.fc.quant_config.grad == "lut"
    named = convert_model(model, "drum4_u8", quant=QuantConfig())
    assert named.fc.int_multiplier.name == "drum4_u8"


def test_convert_errors_and_attention_warning() -> None:
    import warnings

    from approxsim.convert import UnsupportedModuleWarning, convert_model
    from approxsim.multipliers import get_multiplier

    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(QuantError, match="IntMultiplier"):
        convert_model(model, get_multiplier("mitchell7"), quant=QuantConfig())
    with pytest.raises(QuantError, match="bits=9"):
        convert_model(model, U8, quant=QuantConfig(bits=9))
    with pytest.raises(QuantError, match="grad_input"):
        convert_model(model, U8, quant=QuantConfig(), grad_input="fp32")
    mha = nn.Sequential(nn.MultiheadAttention(4, 2, add_bias_kv=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = convert_model(mha, U8, quant=QuantConfig())
    assert any(issubclass(w.category, UnsupportedModuleWarning) for w in caught)
    assert type(out[0]) is nn.MultiheadAttention


# ---------------------------------------------------------------------------- attention
def _ref_bmm(a, b, ra, rb, mult, kind, bits):  # type: ignore[no-untyped-def]
    """Per-tensor quantized ``a @ b`` for 3-D operands, one product at a time."""
    f = product_fn(mult, kind)
    sa, za = params(ra[0], ra[1], kind, bits)
    sb, zb = params(rb[0], rb[1], kind, bits)
    qa = quantize(a, sa, za, kind, bits).tolist()
    qb = quantize(b.transpose(1, 2), sb, zb, kind, bits).tolist()
    out = torch.zeros(a.shape[0], a.shape[1], b.shape[2])
    for g in range(a.shape[0]):
        for r in range(a.shape[1]):
            for n in range(b.shape[2]):
                acc = dot(f, qa[g][r], qb[g][n], int(za), int(zb), kind)
                out[g, r, n] = dequant(acc, sa, sb)
    return out


@pytest.mark.parametrize(("mult", "mapping", "bits"), CASES[:3], ids=CASE_IDS[:3])
def test_attention_matches_reference(mult: IntMultiplier, mapping: str, bits: int) -> None:
    torch.manual_seed(8)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    cfg = QuantConfig(bits=bits, mapping=mapping)  # type: ignore[arg-type]
    layer = QuantMultiheadAttention.from_float(mha, mult, cfg)
    x = torch.randn(2, 3, 4)
    kpm = torch.tensor([[False, False, True], [False, False, False]])
    calibrate(layer, [x], forward=lambda m, b: m(b, b, b, key_padding_mask=kpm))
    out, weights = layer(x, x, x, key_padding_mask=kpm)

    def rng(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        obs = getattr(layer, name)
        return obs.lo.clone(), obs.hi.clone()

    seq = x.transpose(0, 1).reshape(6, 4)  # (L·N, E), rows in (L, N) order
    w, bias = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    q, k, v = (
        ref_linear(seq, w[i * 4 : (i + 1) * 4], bias[i * 4 : (i + 1) * 4],
                   rng(o), mult, mapping, bits, True)
        for i, o in enumerate(("query_observer", "key_observer", "value_observer"))
    )  # fmt: skip
    q = q.reshape(3, 4, 2).transpose(0, 1) * (1.0 / 2**0.5)  # (N·H, L, hd)
    k = k.reshape(3, 4, 2).transpose(0, 1)
    v = v.reshape(3, 4, 2).transpose(0, 1)
    scores = _ref_bmm(q, k.transpose(1, 2), rng("q_observer"), rng("k_observer"), mult,
                      mapping, bits)  # fmt: skip
    mask = torch.zeros(2, 1, 1, 3).masked_fill(kpm.view(2, 1, 1, 3), float("-inf"))
    probs = torch.softmax(scores + mask.expand(2, 2, 1, 3).reshape(4, 1, 3), dim=-1)
    ctx = _ref_bmm(probs, v, rng("probs_observer"), rng("v_observer"), mult, mapping, bits)
    ctx = ctx.transpose(0, 1).reshape(6, 4)
    want = ref_linear(ctx, mha.out_proj.weight.detach(), mha.out_proj.bias.detach(),
                      rng("out_observer"), mult, mapping, bits, True)  # fmt: skip
    torch.testing.assert_close(out, want.reshape(3, 2, 4).transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(weights, probs.reshape(2, 2, 3, 3).mean(1), rtol=0, atol=0)


def test_attention_converts_trains_and_restores() -> None:
    from approxsim.convert import convert_model, restore_model

    torch.manual_seed(9)
    model = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    x = torch.randn(2, 5, 8)
    q = convert_model(model, IntMultiplier.exact(8, True), quant=QuantConfig(grad="lut"))
    assert isinstance(q.self_attn, QuantMultiheadAttention)
    assert isinstance(q.linear1, QuantLinear)
    q.load_state_dict(model.state_dict())  # float checkpoint, strict
    calibrate(q, [x])
    model.eval()
    assert (q.eval()(x) - model(x)).abs().max() < 0.1
    q.train()
    q(
        x, is_causal=True, src_mask=nn.Transformer.generate_square_subsequent_mask(5)
    ).sum().backward()
    assert q.self_attn.in_proj_weight.grad is not None
    assert type(restore_model(q).self_attn) is nn.MultiheadAttention


def test_conv_ste_gradient_is_float_gradient_of_dequantized_model() -> None:
    torch.manual_seed(10)
    layer = QuantConv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect",
                        int_multiplier=U8)  # fmt: skip
    x = torch.randn(2, 4, 7, 7)
    calibrate(layer, [x])
    layer.train()
    xg = x.clone().requires_grad_(True)
    g = torch.randn(2, 6, 4, 4)
    layer(xg).backward(g)
    sa, za = params(*_act_range(layer), "affine", 8)
    sb, zb = weight_params(layer.weight, "affine", 8, True)
    x_hat = ((quantize(x, sa, za, "affine", 8) - za).float() * sa).requires_grad_(True)
    w4 = (-1, 1, 1, 1)
    w_hat = quantize(layer.weight, sb.view(w4), zb.view(w4), "affine", 8) - zb.view(w4)
    w_hat = (w_hat.float() * sb.view(w4)).requires_grad_(True)
    F.conv2d(F.pad(x_hat, (1, 1, 1, 1), mode="reflect"), w_hat, None, 2, 0, 1, 2).backward(g)
    torch.testing.assert_close(xg.grad, x_hat.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, w_hat.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("mult", "mapping", "bits"), CASES[:3], ids=CASE_IDS[:3])
def test_conv_lut_gradient_is_linear_lut_gradient_on_patches(
    mult: IntMultiplier, mapping: str, bits: int
) -> None:
    """The convolution's LUT backward (patch gradients folded into the image) equals the
    linear layer's (checked per product above) applied to the explicit patch matrix."""
    torch.manual_seed(11)
    cfg = QuantConfig(bits=bits, mapping=mapping, grad="lut")  # type: ignore[arg-type]
    conv = QuantConv2d(3, 4, 3, dilation=2, bias=False, int_multiplier=mult, quant=cfg)
    x = torch.randn(2, 3, 6, 7)
    calibrate(conv, [x])
    lin = QuantLinear(27, 4, bias=False, int_multiplier=mult, quant=cfg)
    lin.weight = nn.Parameter(conv.weight.detach().reshape(4, 27).clone())
    lin.load_state_dict({**lin.state_dict(), **{f"input_observer.{k}": v for k, v in
                         conv.input_observer.state_dict().items()}})  # fmt: skip
    conv.train()
    lin.train()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g = torch.randn(2, 4, 2, 3)
    y_conv = conv(x1)
    patches = F.unfold(x2, 3, dilation=2).transpose(1, 2)  # (N, L, 27)
    y_lin = lin(patches).transpose(1, 2).reshape(2, 4, 2, 3)
    torch.testing.assert_close(y_conv, y_lin, rtol=0, atol=0)
    y_conv.backward(g)
    y_lin.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad.reshape(4, 27), lin.weight.grad, rtol=1e-5,
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("grad", ["ste", "lut"])
def test_quantization_aware_training_learns(grad: str) -> None:
    torch.manual_seed(12)
    x = torch.randn(64, 8)
    target = x @ torch.randn(8, 2)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    q = convert_model_quant(model, QuantConfig(grad=grad))  # type: ignore[arg-type]
    opt = torch.optim.Adam(q.parameters(), lr=0.02)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(q(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert not q[0].input_observer.frozen and q[0].input_observer.observed


def convert_model_quant(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    from approxsim.convert import convert_model

    return convert_model(model, U8, quant=cfg).train()


def test_lut_backward_strategies_agree() -> None:
    from approxsim.nn.quant_ops import lut_backward_reference

    gen = torch.Generator().manual_seed(13)
    ga, gb = torch.randn(9, 9, generator=gen), torch.randn(9, 9, generator=gen)
    qa = torch.randint(-4, 5, (2, 11, 5), generator=gen, dtype=torch.int16)
    qb = torch.randint(-4, 5, (2, 5, 7), generator=gen, dtype=torch.int16)
    g = torch.randn(2, 11, 7, generator=gen)
    brute_a = torch.zeros(2, 11, 5)
    brute_b = torch.zeros(2, 5, 7)
    for gi in range(2):
        for r in range(11):
            for k in range(5):
                for n in range(7):
                    a, b = int(qa[gi, r, k]) + 4, int(qb[gi, k, n]) + 4
                    brute_a[gi, r, k] += g[gi, r, n] * ga[a, b]
                    brute_b[gi, k, n] += g[gi, r, n] * gb[a, b]
    for strategy in ("elements", "rows"):
        out_a, out_b = lut_backward_reference(qa, qb, g, g, ga, gb, -4, strategy)  # type: ignore[arg-type]
        torch.testing.assert_close(out_a, brute_a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_b, brute_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "groups"),
    [
        ((3, 4, 9, 7), (3, 2), (1, 1), 1),
        ((2, 6, 11, 10), (5, 5), (2, 3), 2),
        ((2, 4, 6, 6), (1, 1), (2, 2), 4),
        ((1, 2, 5, 5), (5, 5), (1, 1), 1),  # one output position
    ],
)
def test_patch_code_sums_match_the_patch_matrix(
    shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], groups: int
) -> None:
    from approxsim.nn.quant_ops import patch_code_sums, patch_codes

    g = torch.Generator().manual_seed(sum(shape))
    q = torch.randint(-2048, 2048, shape, generator=g, dtype=torch.int16)
    got = patch_code_sums(q, kernel, stride, (1, 1), groups)
    want = patch_codes(q, kernel, stride, (1, 1), groups).sum(-1, keepdim=True, dtype=torch.int64)
    assert got is not None and got.dtype == torch.int64 and torch.equal(got, want)
    assert patch_code_sums(q, kernel, stride, (2, 1), groups) is None  # dilated: the caller sums


@pytest.mark.parametrize("grad", ["ste", "lut"])
@pytest.mark.parametrize("name", ["drum4_u8", "trunc8_s8"])
def test_conv_patch_layouts_give_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, grad: str, name: str
) -> None:
    """K = 8·3·3 = 72 and 8 channels per group: the GEMM gets the patch codes k-major; forced
    row-major, every output and gradient bit is the same (exact integer sums)."""
    import approxsim
    from approxsim.nn import quant_ops

    torch.manual_seed(8)
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=2)
    layer = QuantConv2d.from_float(conv, approxsim.get_int_multiplier(name), QuantConfig(grad=grad))  # type: ignore[arg-type]
    x = torch.randn(3, 16, 6, 5, generator=torch.Generator().manual_seed(1))
    calibrate(layer, [x])
    up = torch.randn(3, 16, 6, 5, generator=torch.Generator().manual_seed(2))
    results = []
    for min_k in (quant_ops.K_MAJOR_MIN_K, 10**9):
        monkeypatch.setattr(quant_ops, "K_MAJOR_MIN_K", min_k)
        xi = x.clone().requires_grad_(True)
        conv.weight.grad = None
        y = layer(xi)
        y.backward(up)
        results.append((y.detach(), xi.grad, conv.weight.grad.clone()))
    for k_major, row_major in zip(*results, strict=True):
        assert torch.equal(k_major.view(torch.int32), row_major.view(torch.int32))
