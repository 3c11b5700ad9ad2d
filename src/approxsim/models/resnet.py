"""ResNet-18, -34 (basic blocks) and -50 (bottleneck blocks) with a CIFAR or an ImageNet stem.

Registered names:

* ``resnet18``, ``resnet34``, ``resnet50`` — CIFAR stem (3x3 convolution, stride 1, no
  max-pool), the usual choice for 32x32 images (and 28x28 Fashion-MNIST);
* ``resnet18_imagenet``, ``resnet34_imagenet``, ``resnet50_imagenet`` — ImageNet stem (7x7
  convolution, stride 2, then a 3x3 max-pool with stride 2), for 224x224 images.

The first convolution takes the images' channel count (``create_model(name, in_channels=1)``),
and global average pooling before the classifier makes every variant take any image size.

Module names and ``state_dict`` keys follow torchvision's layout (``conv1``, ``bn1``,
``layer1``..``layer4`` of blocks with ``conv1``/``bn1``/``conv2``/``bn2`` (/``conv3``/``bn3``)
and ``downsample.0``/``downsample.1``, ``fc``), so a torchvision ImageNet checkpoint loads into
the ``*_imagenet`` variant built with ``num_classes=1000`` (torchvision itself is not needed).
ResNet-50 strides in its 3x3 convolution ("ResNet v1.5"), as torchvision does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from torch import Tensor, nn

from approxsim.models.registry import ModelError, TrainDefaults, register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "STEMS",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet18_imagenet",
    "resnet34_imagenet",
    "resnet50_imagenet",
]

_Stem = Literal["cifar", "imagenet"]
#: Accepted values of the ``stem`` argument.
STEMS: tuple[str, ...] = ("cifar", "imagenet")

#: The usual CIFAR-10/100 ResNet recipe (SGD 0.1, momentum 0.9, weight decay 5e-4, cosine).
_CIFAR_DEFAULTS = TrainDefaults(
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", batch_size=128
)
#: torchvision's ImageNet recipe (lr 0.1 for batch 256, weight decay 1e-4), with the cosine
#: schedule in place of its step schedule (approxsim trains with none or cosine).
_IMAGENET_DEFAULTS = TrainDefaults(
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="cosine", batch_size=256
)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # No bias: a BatchNorm follows every convolution.
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (ResNet-18/34).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity, or
    ``downsample`` (1x1 convolution + batch norm) when the stride or the width changes.

    Args:
        in_planes: Input channels.
        planes: Output channels (``planes * expansion``, with ``expansion = 1``).
        stride: Stride of the first convolution (and of the shortcut).
        downsample: Shortcut module, or ``None`` for the identity.

    Shape:
        - Input: ``(N, in_planes, H, W)``.
        - Output: ``(N, planes, ceil(H / stride), ceil(W / stride))``.
    """

    expansion: ClassVar[int] = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        """The batch norm before the addition (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        """The block's output for a batch of feature maps."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand convolutions with batch norm and a shortcut.

    The ResNet-50 block: ``planes`` channels inside, ``4 * planes`` out. The stride sits on
    the 3x3 convolution (torchvision's "ResNet v1.5").

    Args:
        in_planes: Input channels.
        planes: Channels of the inner convolutions; the output has ``planes * 4``.
        stride: Stride of the 3x3 convolution (and of the shortcut).
        downsample: Shortcut module, or ``None`` for the identity.

    Shape:
        - Input: ``(N, in_planes, H, W)``.
        - Output: ``(N, 4 * planes, ceil(H / stride), ceil(W / stride))``.
    """

    expansion: ClassVar[int] = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        """The batch norm before the addition (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        """The block's output for a batch of feature maps."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


_Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """A residual network: stem, four stages of blocks (64, 128, 256, 512 planes), pool, fc.

    Stages 2-4 halve the resolution in their first block. Convolutions are initialized with
    Kaiming-normal (fan-out, ReLU gain), batch norms with weight 1 and bias 0.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: Blocks per stage, four positive integers (``[2, 2, 2, 2]`` for ResNet-18).
        num_classes: Outputs of ``fc``.
        in_channels: Channels of the input images (the input of ``conv1``).
        stem: ``"cifar"``: ``conv1`` is 3x3 with stride 1 and ``maxpool`` is the identity (for
            32x32 images). ``"imagenet"``: ``conv1`` is 7x7 with stride 2, then a 3x3 max-pool
            with stride 2 (for 224x224 images).
        zero_init_residual: Start the last batch norm of every block at weight 0, so each
            block starts as the identity (Goyal et al., 2017); often helps large batches.

    Raises:
        ModelError: an unknown ``stem`` or a bad ``layers``, ``num_classes`` or
            ``in_channels``.

    Shape:
        - Input: ``(N, in_channels, H, W)``, any ``H, W >= 1``.
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        block: _Block,
        layers: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: _Stem = "cifar",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise ModelError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        if len(layers) != 4 or not all(_positive_int(n) for n in layers):
            raise ModelError(f"layers must be four positive integers, got {list(layers)!r}")
        for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if not _positive_int(value):
                raise ModelError(f"{arg} must be a positive integer, got {value!r}")
        if stem not in STEMS:
            raise ModelError(f"stem must be one of {STEMS}, got {stem!r}")

        self.stem: str = stem
        self.in_planes = 64  # channels entering the next stage; _make_layer advances it
        self.conv1: nn.Conv2d
        self.maxpool: nn.Module
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        if stem == "cifar":
            # Identity, not absent: keeps the forward and the module names of both stems alike.
            self.maxpool = nn.Identity()
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def _make_layer(self, block: _Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or self.in_planes != out_planes:
            downsample = nn.Sequential(
                _conv1x1(self.in_planes, out_planes, stride), nn.BatchNorm2d(out_planes)
            )
        stage: list[nn.Module] = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = out_planes
        stage += [block(out_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of images."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# ---------------------------------------------------------------------------- factories
@register_model(
    "resnet18",
    defaults=_CIFAR_DEFAULTS,
    input_shape=(3, 32, 32),
    any_image_size=True,
    description="ResNet-18 (basic blocks 2-2-2-2), CIFAR stem: 3x3 conv stride 1, no max-pool",
)
def resnet18(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    stem: _Stem = "cifar",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-18: basic blocks ``[2, 2, 2, 2]``, 11.7 M parameters with 1000 classes.

    Args:
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images.
        stem: ``"cifar"`` (default) or ``"imagenet"`` (see :class:`ResNet`).
        zero_init_residual: Zero the last batch norm of every block.

    Returns:
        The model, in training mode.

    Raises:
        ModelError: an unknown ``stem`` or a bad ``num_classes`` / ``in_channels``.
    """
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, stem, zero_init_residual)


@register_model(
    "resnet34",
    defaults=_CIFAR_DEFAULTS,
    input_shape=(3, 32, 32),
    any_image_size=True,
    description="ResNet-34 (basic blocks 3-4-6-3), CIFAR stem: 3x3 conv stride 1, no max-pool",
)
def resnet34(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    stem: _Stem = "cifar",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-34: basic blocks ``[3, 4, 6, 3]``, 21.8 M parameters with 1000 classes.

    Args:
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images.
        stem: ``"cifar"`` (default) or ``"imagenet"`` (see :class:`ResNet`).
        zero_init_residual: Zero the last batch norm of every block.

    Returns:
        The model, in training mode.

    Raises:
        ModelError: an unknown ``stem`` or a bad ``num_classes`` / ``in_channels``.
    """
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, stem, zero_init_residual)


@register_model(
    "resnet50",
    defaults=_CIFAR_DEFAULTS,
    input_shape=(3, 32, 32),
    any_image_size=True,
    description="ResNet-50 (bottlenecks 3-4-6-3), CIFAR stem: 3x3 conv stride 1, no max-pool",
)
def resnet50(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    stem: _Stem = "cifar",
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-50: bottleneck blocks ``[3, 4, 6, 3]``, 25.6 M parameters with 1000 classes.

    Args:
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images.
        stem: ``"cifar"`` (default) or ``"imagenet"`` (see :class:`ResNet`).
        zero_init_residual: Zero the last batch norm of every block.

    Returns:
        The model, in training mode.

    Raises:
        ModelError: an unknown ``stem`` or a bad ``num_classes`` / ``in_channels``.
    """
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, stem, zero_init_residual)


@register_model(
    "resnet18_imagenet",
    defaults=_IMAGENET_DEFAULTS,
    input_shape=(3, 224, 224),
    any_image_size=True,
    description="ResNet-18, ImageNet stem: 7x7 conv stride 2 + 3x3 max-pool; torchvision keys",
)
def resnet18_imagenet(
    num_classes: int = 10, in_channels: int = 3, *, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-18 with the ImageNet stem: ``resnet18(..., stem="imagenet")``.

    Built with ``num_classes=1000`` it loads torchvision's ``resnet18`` ImageNet weights.

    Args:
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images.
        zero_init_residual: Zero the last batch norm of every block.

    Returns:
        The model, in training mode.
    """
    return resnet18(
        num_classes, in_channels, stem="imagenet", zero_init_residual=zero_init_residual
    )


@register_model(
    "resnet34_imagenet",
    defaults=_IMAGENET_DEFAULTS,
    input_shape=(3, 224, 224),
    any_image_size=True,
    description="ResNet-34, ImageNet stem: 7x7 conv stride 2 + 3x3 max-pool; torchvision keys",
)
def resnet34_imagenet(
    num_classes: int = 10, in_channels: int = 3, *, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-34 with the ImageNet stem: ``resnet34(..., stem="imagenet")``.

    Built with ``num_classes=1000`` it loads torchvision's ``resnet34`` ImageNet weights.

    Args:
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images.
        zero_init_residual: Zero the last batch norm of every block.

    Returns:
        The model, in training mode.
    """
    return resnet34(
        num_classes, in_channels, stem="imagenet", zero_init_residual=zero_init_residual
    )


@register_model(
    "resnet50_imagenet",
    defaults=_IMAGENET_DEFAULTS,
    input_shape=(3, 224, 224),
    any_image_size=True,
    description="ResNet-50, ImageNet stem: 7x7 conv stride 2 + 3x3 max-pool; torchvision keys",
)
def resnet50_imagenet(
    num_classes: int = 10, in_channels: int = 3, *, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-50 with the ImageNet stem: ``resnet50(..., stem="imagenet")``.

    Built with ``num_classes=1000`` it loads torchvision's ``resnet50`` ImageNet weights.

    Args:
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images.
        zero_init_residual: Zero the last batch norm of every block.

    Returns:
        The model, in training mode.
    """
    return resnet50(
        num_classes, in_channels, stem="imagenet", zero_init_residual=zero_init_residual
    )
