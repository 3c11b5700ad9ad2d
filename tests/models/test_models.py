"""``approxsim.models``: the registry and the LeNets' shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from approxsim.models import (
    LeNet5,
    LeNet300100,
    ModelError,
    TrainDefaults,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
    train_defaults,
    unregister_model,
)


def test_list_models() -> None:
    assert {"lenet5", "lenet300100"} <= set(list_models())
    assert list_models("lenet*") == ["lenet300100", "lenet5"]
    assert list_models("resnet*") == [
        "resnet18",
        "resnet18_imagenet",
        "resnet34",
        "resnet34_imagenet",
        "resnet50",
        "resnet50_imagenet",
    ]


@pytest.mark.parametrize(
    ("name", "cls", "params"), [("lenet5", LeNet5, 61_706), ("lenet300100", LeNet300100, 266_610)]
)
def test_shapes_and_sizes(name: str, cls: type, params: int) -> None:
    model = create_model(name)
    assert isinstance(model, cls)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert create_model(name, num_classes=7)(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_lenet5_layers() -> None:
    model = LeNet5()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (6, (5, 5), (2, 2)),
        (16, (5, 5), (0, 0)),
    ]
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [120, 84, 10]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2


def test_lenet300100_layers() -> None:
    linears = [
        (m.in_features, m.out_features) for m in LeNet300100().modules() if isinstance(m, nn.Linear)
    ]
    assert linears == [(784, 300), (300, 100), (100, 10)]


def test_unknown_model_lists_names() -> None:
    with pytest.raises(UnknownModelError, match="available: .*lenet300100, lenet5"):
        create_model("resnet1000")


def test_bad_num_classes() -> None:
    with pytest.raises(ModelError, match="num_classes"):
        create_model("lenet5", num_classes=0)


def test_defaults_and_info() -> None:
    d = train_defaults("lenet5")
    assert (d.optimizer, d.lr, d.momentum, d.batch_size) == ("sgd", 0.05, 0.9, 128)
    info = model_info("lenet300100")
    assert info["input_shape"] == [1, 28, 28] and info["train_defaults"]["batch_size"] == 128


def test_register_custom_model() -> None:
    @register_model("test_tiny_mlp", defaults=TrainDefaults(optimizer="adam", lr=1e-3))
    def tiny(num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))

    try:
        assert "test_tiny_mlp" in list_models()
        assert create_model("test_tiny_mlp", 4)(torch.zeros(1, 1, 28, 28)).shape == (1, 4)
        assert train_defaults("test_tiny_mlp").optimizer == "adam"
        with pytest.raises(ModelError, match="already registered"):
            register_model("test_tiny_mlp")(tiny)
    finally:
        unregister_model("test_tiny_mlp")
    assert "test_tiny_mlp" not in list_models()
    with pytest.raises(ModelError, match="letters"):
        register_model("bad name")


def test_lenets_convert_fully() -> None:
    convert = pytest.importorskip("approxsim.convert")
    for name, layers in (("lenet5", 5), ("lenet300100", 3)):
        report = convert.conversion_report(convert.convert_model(create_model(name), "mitchell7"))
        assert len(report.converted) == layers and report.fully_converted
