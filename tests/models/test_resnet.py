"""``approxsim.models.resnet``: shapes, sizes, torchvision layout, and approximate training."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import nn

import approxsim
from approxsim.models import (
    BasicBlock,
    Bottleneck,
    ModelError,
    ResNet,
    TrainDefaults,
    create_model,
    list_models,
    model_info,
    train_defaults,
)

CIFAR = ["resnet18", "resnet34", "resnet50"]
IMAGENET = [f"{n}_imagenet" for n in CIFAR]

# The parameter counts of torchvision's resnet18/34/50 (1000 classes).
PARAMS_1000 = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}

# Every torchvision ResNet key has one of these forms.
_TORCHVISION_KEY = re.compile(
    r"(conv1|bn1|fc|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01]))"
    r"\.(weight|bias|running_mean|running_var|num_batches_tracked)"
)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_names() -> None:
    assert list_models("resnet*") == sorted(CIFAR + IMAGENET)


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_shapes(name: str) -> None:
    model = create_model(name)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert create_model(name, num_classes=100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_shapes(name: str) -> None:
    assert create_model(name)(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet18_imagenet"])
def test_one_channel_28x28(name: str) -> None:
    model = create_model(name, in_channels=1)
    assert isinstance(model, ResNet) and model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_stems() -> None:
    cifar, imagenet = create_model("resnet18"), create_model("resnet18_imagenet")
    assert isinstance(cifar, ResNet) and isinstance(imagenet, ResNet)
    assert (cifar.conv1.kernel_size, cifar.conv1.stride, cifar.conv1.padding) == (
        (3, 3),
        (1, 1),
        (1, 1),
    )
    assert isinstance(cifar.maxpool, nn.Identity)
    assert (imagenet.conv1.kernel_size, imagenet.conv1.stride, imagenet.conv1.padding) == (
        (7, 7),
        (2, 2),
        (3, 3),
    )
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    # The CIFAR stem keeps 32x32 into layer1; the ImageNet stem divides by 4.
    x = torch.randn(2, 3, 32, 32)
    assert cifar.maxpool(cifar.conv1(x)).shape[-2:] == (32, 32)
    assert imagenet.maxpool(imagenet.conv1(x)).shape[-2:] == (8, 8)
    # Same parameters apart from conv1.
    assert _n_params(cifar) - 64 * 3 * 3 * 3 == _n_params(imagenet) - 64 * 3 * 7 * 7


@pytest.mark.parametrize("name", CIFAR)
def test_parameter_counts(name: str) -> None:
    assert _n_params(create_model(f"{name}_imagenet", num_classes=1000)) == PARAMS_1000[name]


def test_state_dict_layout_resnet18() -> None:
    sd = create_model("resnet18_imagenet", num_classes=1000).state_dict()
    assert len(sd) == 122 and all(_TORCHVISION_KEY.fullmatch(k) for k in sd)
    assert list(sd)[:7] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
    ]
    expected_shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.1.bn2.running_var": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_mean": (128,),
        "layer3.0.downsample.1.weight": (256,),
        "layer4.1.bn2.bias": (512,),
        "fc.weight": (1000, 512),
        "fc.bias": (1000,),
    }
    assert {k: tuple(sd[k].shape) for k in expected_shapes} == expected_shapes
    assert not any(k.startswith("layer1.0.downsample") for k in sd)
    assert list(sd)[-2:] == ["fc.weight", "fc.bias"]


def test_state_dict_layout_resnet50() -> None:
    sd = create_model("resnet50_imagenet", num_classes=1000).state_dict()
    assert len(sd) == 320 and all(_TORCHVISION_KEY.fullmatch(k) for k in sd)
    expected_shapes = {
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.weight": (1024,),
        "layer4.2.bn3.num_batches_tracked": (),
        "fc.weight": (1000, 2048),
    }
    assert {k: tuple(sd[k].shape) for k in expected_shapes} == expected_shapes
    # ResNet v1.5: the stride sits on the 3x3 convolution.
    model = create_model("resnet50_imagenet")
    assert isinstance(model, ResNet)
    block = model.layer2[0]
    assert isinstance(block, Bottleneck)
    assert (block.conv1.stride, block.conv2.stride) == ((1, 1), (2, 2))


def test_loads_own_state_dict_strictly() -> None:
    src = create_model("resnet34_imagenet", num_classes=1000)
    dst = create_model("resnet34_imagenet", num_classes=1000)
    dst.load_state_dict(src.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    src.eval()
    dst.eval()
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def _torchvision_resnet() -> Any:
    try:
        from torchvision.models import resnet as tv_resnet
    except Exception as exc:  # noqa: BLE001 - absent, or built for another torch
        pytest.skip(f"torchvision not usable: {exc}")
    return tv_resnet


@pytest.mark.parametrize("name", CIFAR)
def test_matches_torchvision(name: str) -> None:
    tv = getattr(_torchvision_resnet(), name)()
    ours = create_model(f"{name}_imagenet", num_classes=1000)
    ours.load_state_dict(tv.state_dict(), strict=True)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in tv.named_modules()]
    tv.eval()
    ours.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "block", "bn"), [("resnet18", BasicBlock, "bn2"), ("resnet50", Bottleneck, "bn3")]
)
def test_zero_init_residual(name: str, block: type, bn: str) -> None:
    factory = getattr(approxsim.models, name)
    blocks: list[Any] = [
        m for m in factory(zero_init_residual=True).modules() if isinstance(m, block)
    ]
    assert blocks and all(torch.all(getattr(b, bn).weight == 0) for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    default = [m for m in factory().modules() if isinstance(m, block)]
    assert all(torch.all(getattr(b, bn).weight == 1) for b in default)


def test_defaults_and_info() -> None:
    d = train_defaults("resnet18")
    assert d == TrainDefaults(
        optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", batch_size=128
    )
    assert train_defaults("resnet34") == train_defaults("resnet50") == d
    info = model_info("resnet18")
    assert info["input_shape"] == [3, 32, 32]
    assert info["any_in_channels"] and info["any_image_size"]
    assert model_info("resnet50_imagenet")["input_shape"] == [3, 224, 224]
    lenet = model_info("lenet5")
    assert not lenet["any_in_channels"] and not lenet["any_image_size"]


def test_in_channels_argument() -> None:
    assert create_model("lenet5", in_channels=1)(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    with pytest.raises(ModelError, match="1-channel images only"):
        create_model("lenet5", in_channels=3)
    for bad in (0, -1, 1.0, True):
        with pytest.raises(ModelError, match="in_channels"):
            create_model("resnet18", in_channels=bad)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(ModelError, match="stem"):
        ResNet(BasicBlock, [2, 2, 2, 2], stem="tiny")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="layers"):
        ResNet(BasicBlock, [2, 2, 2])
    with pytest.raises(ModelError, match="schedule"):
        TrainDefaults(schedule="step")
    with pytest.raises(ModelError, match="momentum"):
        TrainDefaults(momentum=1.0)


def test_approximate_forward_backward() -> None:
    torch.manual_seed(0)
    exact = create_model("resnet18")
    model = approxsim.convert_model(exact, "mitchell7")
    report = approxsim.conversion_report(model)
    assert report.unsupported == [] and report.left_exact == []
    assert len(report.converted) == 21  # conv1, 16 block convs, 3 downsample convs, fc
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    stem_grad = dict(model.named_parameters())["conv1.weight"].grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    # Approximate, yet close: not exact float32, and above a loose SQNR floor.
    with torch.no_grad():
        y_exact = exact(x)
    assert not torch.equal(y.detach(), y_exact)
    sqnr = 20 * torch.log10(y_exact.norm() / (y.detach() - y_exact).norm())
    assert sqnr > 10, f"SQNR {sqnr:.1f} dB"
