"""convert_model / restore_model / conversion_report on small real architectures."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from approxsim.convert import (
    ConversionReport,
    UnsupportedModuleWarning,
    conversion_report,
    convert_model,
    restore_model,
)
from approxsim.nn import (
    ApproxConv2d,
    ApproxLinear,
    ApproxModule,
    ApproxMultiheadAttention,
)


# ---------------------------------------------------------------------------- a tiny ResNet
class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn plus an (optionally projected) skip."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


RESNET_LAYERS = {
    "conv1",
    "layer1.0.conv1",
    "layer1.0.conv2",
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer2.0.downsample.0",
    "fc",
}


def _names(entries: list[Any]) -> set[str]:
    return {e.name for e in entries}


@pytest.fixture
def resnet() -> TinyResNet:
    torch.manual_seed(0)
    return TinyResNet()


def test_resnet_converts_trains_and_leaves_original(resnet: TinyResNet) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedModuleWarning)
        model = convert_model(resnet, "mitchell7")
    report = conversion_report(model)
    assert _names(report.converted) == RESNET_LAYERS
    assert not report.left_exact and not report.unsupported and report.fully_converted
    assert {e.multiplier for e in report.converted} == {"mitchell7"}
    assert isinstance(model.layer2[0].downsample[0], ApproxConv2d)
    assert isinstance(model.fc, ApproxLinear)
    # The original is untouched, and the copy has its own weights.
    assert _names(conversion_report(resnet).left_exact) == RESNET_LAYERS
    assert model.fc.weight is not resnet.fc.weight
    assert torch.equal(model.fc.weight, resnet.fc.weight)
    assert list(model.state_dict()) == list(resnet.state_dict())
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not torch.allclose(out, resnet(x), atol=1e-5), "no approximation happened"
    table = str(report)
    assert "layer2.0.downsample.0" in table and "7 converted" in table


def test_inplace_shares_parameters(resnet: TinyResNet) -> None:
    params = {name: p for name, p in resnet.named_parameters()}
    model = convert_model(resnet, "bf16", inplace=True)
    assert model is resnet
    for name, p in model.named_parameters():
        assert p is params[name], name
    assert isinstance(resnet.conv1, ApproxConv2d)


@pytest.mark.parametrize(
    "include,exclude,expected",
    [
        ("layer1.*", None, {"layer1.0.conv1", "layer1.0.conv2"}),
        ("layer2", None, {"layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"}),
        (nn.Linear, None, {"fc"}),
        ([nn.Linear, "conv1"], None, {"fc", "conv1"}),
        (None, "*downsample*", RESNET_LAYERS - {"layer2.0.downsample.0"}),
        (None, BasicBlock, {"conv1", "fc"}),
        ("layer2*", nn.Conv2d, set()),
        (["layer1", "fc"], ["layer1.0.conv2"], {"layer1.0.conv1", "fc"}),
    ],
)
def test_include_exclude(
    resnet: TinyResNet, include: Any, exclude: Any, expected: set[str]
) -> None:
    model = convert_model(resnet, "mitchell7", include=include, exclude=exclude)
    report = conversion_report(model)
    assert _names(report.converted) == expected
    assert _names(report.left_exact) == RESNET_LAYERS - expected


@pytest.mark.parametrize(
    "include,exclude",
    [
        ("layer1.*", None),
        (nn.Linear, None),
        (None, BasicBlock),
        (["layer1", "fc"], ["layer1.0.conv2"]),
        ("layer2*", "*downsample*"),
    ],
)
def test_convert_and_the_cim_chip_select_the_same_layers(
    resnet: TinyResNet, include: Any, exclude: Any
) -> None:
    """Both read include / exclude through approxsim._select: one rule, same layers."""
    from approxsim.cim import select_layers

    converted = _names(
        conversion_report(
            convert_model(resnet, "mitchell7", include=include, exclude=exclude)
        ).converted
    )
    assert set(select_layers(resnet, include, exclude)) == converted


def test_selection_rule_and_errors() -> None:
    from approxsim._select import LayerSelection, matches, parse_patterns

    root, block, conv = nn.Sequential(), nn.Sequential(), nn.Conv2d(1, 1, 1)
    chain = [("", root), ("features", block), ("features.0", conv)]
    assert matches(("features",), chain)  # an ancestor's name selects what is inside it
    assert matches((nn.Conv2d,), chain) and not matches((nn.Linear, "head*"), chain)
    assert LayerSelection.parse("features*", nn.Conv2d).selects(chain) is False  # exclude wins
    assert LayerSelection.parse().selects(chain)
    assert parse_patterns("a*", "include") == ("a*",) and parse_patterns(None, "x") is None

    class Refused(ValueError):
        pass

    with pytest.raises(Refused, match=r"exclude takes fnmatch patterns .* 'blocks\.\*'"):
        LayerSelection.parse(None, [1], error=Refused, example="blocks.*")


def test_bad_arguments(resnet: TinyResNet) -> None:
    with pytest.raises(TypeError, match="fnmatch patterns"):
        convert_model(resnet, "mitchell7", include=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="nn.Module"):
        convert_model("resnet", "mitchell7")  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # MultiplierError is a ValueError
        convert_model(resnet, "no-such-multiplier")


class MyLinear(nn.Linear):
    """A custom subclass: its forward may differ, so it is not converted."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class Gate(nn.Module):
    """A custom module that multiplies by its own matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.randn(4, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 4))  # additive: not a multiply


class PosOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))


def _zoo() -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "fc": nn.Linear(4, 4),
            "conv3d": nn.Conv3d(1, 1, 1),
            "deconv": nn.ConvTranspose2d(1, 1, 2),
            "bilinear": nn.Bilinear(2, 2, 2),
            "gru": nn.GRU(2, 2),
            "cell": nn.LSTMCell(2, 2),
            "mine": MyLinear(2, 2),
            "lazy": nn.LazyLinear(3),
            "gate": Gate(),
            "pos": PosOnly(),
            "emb": nn.Embedding(5, 4),
            "ln": nn.LayerNorm([2, 4]),
            "bn": nn.BatchNorm1d(4),
            "prelu": nn.PReLU(4),
        }
    )


UNSUPPORTED = {"conv3d", "deconv", "bilinear", "gru", "cell", "mine", "lazy", "gate"}


def test_unsupported_modules_are_reported_and_warned() -> None:
    with pytest.warns(UnsupportedModuleWarning, match="8 layer") as rec:
        model = convert_model(_zoo(), "mitchell7")
    message = str(rec[0].message)
    for name in UNSUPPORTED:
        assert f"{name} (" in message
    report = conversion_report(model)
    assert _names(report.unsupported) == UNSUPPORTED
    assert _names(report.converted) == {"fc"}
    assert isinstance(model["mine"], MyLinear) and not isinstance(model["mine"], ApproxModule)
    # Acknowledging them (exclude) silences the warning; not selecting them too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedModuleWarning)
        convert_model(_zoo(), "mitchell7", exclude=sorted(UNSUPPORTED))
        convert_model(_zoo(), "mitchell7", include=nn.Linear, exclude=["mine", "lazy"])


def test_restore_model_gives_plain_modules(resnet: TinyResNet) -> None:
    resnet.eval()
    model = convert_model(resnet, "mbm7")
    restored = restore_model(model)
    assert not any(isinstance(m, ApproxModule) for m in restored.modules())
    assert type(restored.fc) is nn.Linear and type(restored.layer1[0].conv1) is nn.Conv2d
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(restored(x), resnet(x), rtol=0, atol=0)
    assert isinstance(model.fc, ApproxLinear)  # not in place: the converted model is kept
    back = restore_model(model, inplace=True)
    assert back is model and type(model.fc) is nn.Linear
    assert _names(conversion_report(model).left_exact) == RESNET_LAYERS


def test_state_dict_moves_between_plain_and_converted(resnet: TinyResNet) -> None:
    model = convert_model(resnet, "mitchell7")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    plain = TinyResNet()
    plain.load_state_dict(model.state_dict())  # strict
    for (n1, t1), (n2, t2) in zip(
        plain.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(t1, t2)
    fresh = convert_model(TinyResNet(), "mitchell7")
    fresh.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 8, 8)
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_single_layer_shared_modules_and_reconversion() -> None:
    lin = nn.Linear(3, 2)
    approx = convert_model(lin, "bf16")
    assert isinstance(approx, ApproxLinear) and type(lin) is nn.Linear
    shared = nn.Linear(4, 4)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    conv = convert_model(seq, "mitchell7")
    assert conv[0] is conv[2] and isinstance(conv[0], ApproxLinear)
    again = convert_model(conv, "mbm7")
    assert {e.multiplier for e in conversion_report(again).converted} == {"mbm7"}
    assert conv[0].multiplier.forward.name == "mitchell7"  # the copy was changed, not conv


def test_attention_out_proj_belongs_to_the_attention() -> None:
    model = nn.Sequential(nn.MultiheadAttention(8, 2))
    conv = convert_model(model, "mitchell7")
    report = conversion_report(conv)
    assert [(e.name, e.type_name) for e in report.converted] == [("0", "ApproxMultiheadAttention")]
    assert not report.left_exact
    assert isinstance(conv[0], ApproxMultiheadAttention)
    assert not isinstance(conv[0].out_proj, ApproxModule)
    kept = convert_model(model, "mitchell7", exclude=nn.MultiheadAttention)
    assert _names(conversion_report(kept).left_exact) == {"0"}
    assert not isinstance(kept[0].out_proj, ApproxModule)


# ---------------------------------------------------------------------------- transformers
@pytest.fixture
def fast_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of torch's fused encoder-layer kernel (its native fast path)."""
    calls: list[int] = []
    original = torch._transformer_encoder_layer_fwd

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", counting)
    return calls


def _encoder_layer() -> nn.TransformerEncoderLayer:
    torch.manual_seed(1)
    return nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)


def test_encoder_layer_converts_and_trains() -> None:
    layer = _encoder_layer()
    model = convert_model(layer, "mitchell7")
    assert _names(conversion_report(model).converted) == {"self_attn", "linear1", "linear2"}
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = model(x)
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_encoder_layer_fast_path_is_off_in_eval_no_grad(fast_path_calls: list[int]) -> None:
    layer = _encoder_layer()
    model = convert_model(layer, "mitchell7")
    x = torch.randn(2, 5, 16)
    approx_grad_path = model(x).detach()  # training mode, grad enabled: the regular path
    layer.eval()
    model.eval()
    with torch.no_grad():
        exact = layer(x)
        assert len(fast_path_calls) == 1  # the plain layer does take the fast path here
        out = model(x)
    assert len(fast_path_calls) == 1  # the converted layer does not
    torch.testing.assert_close(out, approx_grad_path, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out, exact, atol=1e-4), "the exact result came back"
    restored = restore_model(model)
    with torch.no_grad():
        restored(x)
    assert len(fast_path_calls) == 2  # restoring switches the fast path back on


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_encoder_nested_tensor_path_is_off(fast_path_calls: list[int]) -> None:
    torch.manual_seed(2)
    enc = nn.TransformerEncoder(_encoder_layer(), 2, enable_nested_tensor=True)
    model = convert_model(enc, "mitchell7")
    assert not model.use_nested_tensor and not model.enable_nested_tensor
    x = torch.randn(2, 5, 16)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[1, 3:] = True
    reference = model(x, src_key_padding_mask=kpm).detach()
    model.eval()
    enc.eval()
    with torch.no_grad():
        out = model(x, src_key_padding_mask=kpm)
        exact = enc(x, src_key_padding_mask=kpm)
    assert not out.is_nested and len(fast_path_calls) >= 1  # only from the plain encoder
    calls = len(fast_path_calls)
    with torch.no_grad():
        model(x, src_key_padding_mask=kpm)
    assert len(fast_path_calls) == calls
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out[0], exact[0], atol=1e-4)


def test_decoder_layer_converts_and_runs() -> None:
    torch.manual_seed(3)
    dec = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    model = convert_model(dec, "bf16")
    assert _names(conversion_report(model).converted) == {
        "self_attn",
        "multihead_attn",
        "linear1",
        "linear2",
    }
    tgt, memory = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    out = model(tgt, memory, tgt_mask=mask, tgt_is_causal=True)
    out.sum().backward()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(tgt, memory, tgt_mask=mask, tgt_is_causal=True), out.detach()
        )
    assert isinstance(conversion_report(model), ConversionReport)
