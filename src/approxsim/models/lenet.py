"""LeNet-300-100 and LeNet-5 for 28x28 single-channel images (MNIST, Fashion-MNIST).

Both are the classic architectures with ReLU activations and max-pooling (the variants
ApproxTrain and most approximate-computing papers train), not LeCun's original tanh /
average-pooling / RBF-output versions.
"""

from __future__ import annotations

from torch import Tensor, nn

from approxsim.models.registry import TrainDefaults, register_model

__all__ = ["LeNet300100", "LeNet5", "lenet300100", "lenet5"]

_LENET_DEFAULTS = TrainDefaults(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128)


class LeNet300100(nn.Module):
    """The fully connected LeNet-300-100: 784 → 300 → 100 → classes, ReLU between.

    Args:
        num_classes: Outputs of the last layer.

    Shape:
        - Input: ``(N, 1, 28, 28)`` (any ``(N, ...)`` with 784 values per sample).
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of images."""
        x = self.relu(self.fc1(self.flatten(x)))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling.

    conv 6@5x5 (padding 2) → pool 2 → conv 16@5x5 → pool 2 → fc 120 → fc 84 → fc classes.

    Args:
        num_classes: Outputs of the last layer.

    Shape:
        - Input: ``(N, 1, 28, 28)``.
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),  # 6 x 28 x 28
            nn.ReLU(),
            nn.MaxPool2d(2),  # 6 x 14 x 14
            nn.Conv2d(6, 16, kernel_size=5),  # 16 x 10 x 10
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 5 x 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of images."""
        return self.classifier(self.features(x))


@register_model(
    "lenet300100",
    defaults=_LENET_DEFAULTS,
    description="LeNet-300-100: MLP 784-300-100-classes, ReLU",
)
def lenet300100(num_classes: int = 10) -> nn.Module:
    """LeNet-300-100 (see :class:`LeNet300100`)."""
    return LeNet300100(num_classes)


@register_model(
    "lenet5",
    defaults=_LENET_DEFAULTS,
    description="LeNet-5: conv6-pool-conv16-pool-fc120-fc84-classes, ReLU, max-pool",
)
def lenet5(num_classes: int = 10) -> nn.Module:
    """LeNet-5 (see :class:`LeNet5`)."""
    return LeNet5(num_classes)
