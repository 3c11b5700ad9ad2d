"""Model registry and built-in models (``list_models("lenet*")``, ``create_model("lenet5")``).

Built-in: ``lenet300100`` (MLP 784-300-100-10) and ``lenet5`` (conv, ReLU, max-pool). Add
your own with :func:`register_model`; any ``nn.Module`` also trains through
:func:`approxsim.convert.convert_model` without being registered.
"""

from approxsim.models import lenet as _lenet  # noqa: F401  (registers the LeNets)
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

__all__ = [
    "ModelError",
    "UnknownModelError",
    "TrainDefaults",
    "LeNet300100",
    "LeNet5",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "train_defaults",
    "unregister_model",
]
