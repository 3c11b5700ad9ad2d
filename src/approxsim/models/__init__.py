"""Model registry and built-in models (``list_models("lenet*")``, ``create_model("lenet5")``).

Built-in: ``lenet300100`` (MLP 784-300-100-10), ``lenet5`` (conv, ReLU, max-pool), and
``resnet18`` / ``resnet34`` / ``resnet50`` with a CIFAR stem plus their ``*_imagenet`` twins
with the ImageNet stem (torchvision-compatible ``state_dict`` keys). Add your own with
:func:`register_model`; any ``nn.Module`` also trains through
:func:`approxsim.convert.convert_model` without being registered.
"""

from approxsim.models import lenet as _lenet  # noqa: F401  (registers the LeNets)
from approxsim.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from approxsim.models.lenet import LeNet5, LeNet300100
from approxsim.models.registry import (
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
from approxsim.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    resnet18,
    resnet18_imagenet,
    resnet34,
    resnet34_imagenet,
    resnet50,
    resnet50_imagenet,
)

__all__ = [
    "ModelError",
    "UnknownModelError",
    "TrainDefaults",
    "LeNet300100",
    "LeNet5",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet18_imagenet",
    "resnet34_imagenet",
    "resnet50_imagenet",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "train_defaults",
    "unregister_model",
]
