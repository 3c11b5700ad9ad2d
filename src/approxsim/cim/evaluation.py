"""Data handling and accuracy of a model (on a chip or not) over a dataset or tensors.

Every CIM function takes its data as an :class:`approxsim.data.ImageDataset` (or anything
with its ``batches`` / ``__len__`` interface, such as an ImageFolder dataset) or as a pair of
tensors ``(images, labels)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from approxsim._runtime import ProgressLike
from approxsim.cim.device import CIMError

__all__ = ["DataLike", "num_samples", "iter_batches", "split_data", "accuracy", "model_device"]

#: An ImageDataset-like object, or ``(images, labels)`` tensors.
DataLike = Any


def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    )


def _check(data: Any) -> None:
    if _is_pair(data):
        x, y = data
        if x.shape[0] != y.shape[0] or y.dim() != 1:
            raise CIMError(
                f"data (images, labels) must have the same length and 1-D labels, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        return
    if not (hasattr(data, "batches") and hasattr(data, "__len__")):
        raise CIMError(
            "data must be an approxsim ImageDataset (approxsim.data.load_dataset) or a pair "
            f"of tensors (images, labels), got {type(data).__name__}"
        )


def num_samples(data: DataLike) -> int:
    """Number of samples in ``data``."""
    _check(data)
    return int(data[0].shape[0]) if _is_pair(data) else len(data)


def iter_batches(
    data: DataLike,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images, labels)`` batches of ``data`` (never augmented).

    Args:
        data: Dataset or ``(images, labels)``.
        batch_size: Samples per batch.
        shuffle: Random order drawn from ``generator``.
        generator: Source of the order.
    """
    _check(data)
    if not _is_pair(data):
        yield from data.batches(batch_size, shuffle=shuffle, generator=generator, augment=False)
        return
    x, y = data
    n = int(x.shape[0])
    order = torch.randperm(n, generator=generator) if shuffle else None
    for i in range(0, n, batch_size):
        if order is None:
            yield x[i : i + batch_size], y[i : i + batch_size]
        else:
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]


def split_data(data: DataLike, first: int) -> tuple[DataLike, DataLike]:
    """``data``'s first ``first`` samples and the rest, as ``(images, labels)`` pairs.

    Raises:
        CIMError: ``first`` not in ``[1, len(data) - 1]``.
    """
    n = num_samples(data)
    if not 1 <= first < n:
        raise CIMError(f"cannot split {n} samples after {first}: need 1 <= first < {n}")
    if _is_pair(data):
        x, y = data
    elif hasattr(data, "batch"):
        x, y = data.batch(torch.arange(n))
    else:
        xs, ys = zip(*iter_batches(data, 1024), strict=True)
        x, y = torch.cat(xs), torch.cat(ys)
    return (x[:first], y[:first]), (x[first:], y[first:])


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: DataLike,
    *,
    batch_size: int = 1000,
    progress: ProgressLike | None = None,
) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) over ``data``.

    Run it inside :func:`~approxsim.cim.chip` to score a chip.

    Args:
        model: The model (its mode is restored afterwards).
        data: Dataset or ``(images, labels)``.
        batch_size: Samples per forward pass.
        progress: An object with ``update(n)`` (a progress bar), or ``None``.

    Returns:
        Fraction of samples whose largest logit is the label's.
    """
    dev = model_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    total = 0
    try:
        for x, y in iter_batches(data, batch_size):
            x, y = x.to(dev), y.to(dev)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += int(y.shape[0])
            if progress is not None:
                progress.update(int(y.shape[0]))
    finally:
        model.train(was_training)
    if total == 0:
        raise CIMError("data is empty: nothing to score")
    return correct / total
