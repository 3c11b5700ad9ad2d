"""What every dataset shares: the errors, the in-memory dataset and the format base class.

* :class:`ImageDataset` — labelled uint8 images in memory, normalized to float32 batches on the
  fly (47 MB for the 60,000 Fashion-MNIST training images rather than 188 MB as float32; 150 MB
  for CIFAR's 50,000). Training splits may carry an augmentation, which
  :meth:`ImageDataset.batches` applies when it shuffles, drawing from the same generator as
  the order.
* :class:`DatasetFormat` — a named dataset stored in one file format: where its files may lie
  and how to read one split. Each format module implements it (:mod:`approxsim.data.idx`,
  :mod:`approxsim.data.cifar`, :mod:`approxsim.data.folder`) and
  :mod:`approxsim.data.registry` maps names to instances.
* :class:`DatasetError` and its subclasses, the errors of every loader.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from approxsim.errors import ApproxsimError

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "ImageDataset",
    "DatasetFormat",
    "Augmentation",
    "SPLITS",
    "DATA_ENV",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

#: The splits every dataset has.
SPLITS = ("train", "test")

#: Environment variable naming a folder of datasets (``$APPROXSIM_DATA/<name>/``).
DATA_ENV = "APPROXSIM_DATA"

#: Per-channel (R, G, B) mean and standard deviation of ImageNet's training images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: A batch augmentation: ``f(uint8 images (B, C, H, W), generator) -> uint8 images``, drawing
#: every random number from ``generator`` (``None``: torch's global RNG).
Augmentation = Callable[[Tensor, torch.Generator | None], Tensor]


class DatasetError(ApproxsimError, ValueError):
    """A dataset could not be loaded as asked; the message says what to change."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's folder or one of its files is missing."""


class UnknownDatasetError(DatasetError, KeyError):
    """No dataset of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# ---------------------------------------------------------------------------- dataset
def _channel_stats(
    name: str, what: str, value: float | Sequence[float], channels: int
) -> tuple[float | tuple[float, ...], Tensor]:
    """``value`` as given (a float or a per-channel tuple) and as a ``(C, 1, 1)`` tensor."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v: float | tuple[float, ...] = float(value)
        values = [float(value)] * channels
    else:
        try:
            values = [float(x) for x in value]  # type: ignore[union-attr]
        except TypeError:
            raise DatasetError(
                f"{name}: {what} must be a number or one number per channel, got {value!r}"
            ) from None
        if len(values) != channels:
            raise DatasetError(
                f"{name}: {what} has {len(values)} values but the images have {channels} channel(s)"
            )
        v = tuple(values)
    if what == "std" and not all(x > 0 for x in values):
        raise DatasetError(f"{name}: std must be positive, got {value}")
    return v, torch.tensor(values, dtype=torch.float32).view(channels, 1, 1)


class ImageDataset:
    """Labelled images kept as uint8, normalized to float32 when a batch is taken.

    Behaves like a ``torch.utils.data.TensorDataset`` of ``(image, label)`` pairs (so a
    ``DataLoader`` can wrap it), and adds :meth:`batch` / :meth:`batches`, which gather and
    normalize a whole batch in one step, much faster than collating single samples.

    Args:
        images: uint8 tensor ``(N, H, W)`` or ``(N, C, H, W)``.
        labels: integer tensor ``(N,)`` with values in ``[0, len(classes))``.
        mean: Mean of the pixel values scaled to [0, 1]: one number, or one per channel.
        std: Matching standard deviation (positive).
        classes: Class names, index = label.
        name: Dataset name (``"fashion-mnist"``).
        split: ``"train"`` or ``"test"``.
        root: The folder the files were read from, if any.
        augmentation: Training augmentation of uint8 batches (e.g.
            :class:`~approxsim.data.transforms.RandomCropFlip`), applied by
            :meth:`batches` when it shuffles; ``None``: none.

    Raises:
        DatasetError: inconsistent shapes, dtypes, labels or normalization.

    Shape:
        - ``dataset[i]``: ``((C, H, W) float32, int label)``.
        - ``dataset.batch(idx)``: ``((B, C, H, W) float32, (B,) int64)``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        classes: Sequence[str],
        name: str = "custom",
        split: str = "train",
        root: Path | None = None,
        augmentation: Augmentation | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() not in (3, 4):
            raise DatasetError(
                f"{name}: images must be a uint8 tensor (N, H, W) or (N, C, H, W), got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if augmentation is not None and not callable(augmentation):
            raise DatasetError(f"{name}: augmentation must be callable, got {augmentation!r}")
        self.images = images if images.dim() == 4 else images.unsqueeze(1)
        self._init_common(
            labels,
            int(self.images.shape[0]),
            int(self.images.shape[1]),
            mean=mean,
            std=std,
            classes=classes,
            name=name,
            split=split,
            root=root,
        )
        self.augmentation = augmentation

    def _init_common(
        self,
        labels: Tensor,
        count: int,
        channels: int,
        *,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        classes: Sequence[str],
        name: str,
        split: str,
        root: Path | None,
    ) -> None:
        """Check and store what every dataset has: labels, classes, normalization, names."""
        if labels.dim() != 1 or labels.shape[0] != count:
            raise DatasetError(f"{name}: {count} images but labels of shape {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex():
            raise DatasetError(f"{name}: labels must be integers, got {labels.dtype}")
        labels = labels.to(torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DatasetError(
                f"{name}: labels must lie in [0, {len(classes)}), found "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        self.mean, self._mean_t = _channel_stats(name, "mean", mean, channels)
        self.std, self._std_t = _channel_stats(name, "std", std, channels)
        self.labels = labels
        self.classes = tuple(classes)
        self.name = name
        self.split = split
        self.root = root

    # ------------------------------------------------------------------ TensorDataset API
    @property
    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(images, labels)``: the uint8 ``(N, C, H, W)`` images and int64 labels."""
        return self.images, self.labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, y = self.batch(torch.tensor([index]))
        return x[0], int(y[0])

    def __repr__(self) -> str:
        where = f", root={str(self.root)!r}" if self.root is not None else ""
        aug = ", augmented" if self.augments else ""
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
            f"samples={len(self)}, shape={self.sample_shape}{where}{aug})"
        )

    # ------------------------------------------------------------------ batches
    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def augments(self) -> bool:
        """Whether the dataset has a training augmentation (see :meth:`batches`)."""
        return self.augmentation is not None

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images ``(B, C, H, W)`` → float32 ``(x / 255 - mean) / std`` per channel."""
        x = images.to(torch.float32) / 255.0
        if isinstance(self.mean, float) and isinstance(self.std, float):
            return (x - self.mean) / self.std
        return (x - self._mean_t) / self._std_t

    def _pixels(self, idx: Tensor, augment: bool, generator: torch.Generator | None) -> Tensor:
        """The uint8 images at ``idx``, augmented when asked."""
        x = self.images[idx]
        if augment and self.augmentation is not None:
            x = self.augmentation(x, generator)
        return x

    def batch(
        self,
        indices: Tensor | Sequence[int],
        *,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Gather the samples at ``indices`` as a normalized float32 batch.

        Args:
            indices: 1-D integer tensor or sequence.
            augment: Apply the dataset's training augmentation.
            generator: Source of the augmentation's random numbers; ``None``: torch's global
                RNG. Unused without ``augment``.

        Returns:
            ``(images, labels)``: float32 ``(B, C, H, W)`` and int64 ``(B,)``.

        Raises:
            DatasetError: ``augment`` on a dataset without augmentation.
        """
        if augment and not self.augments:
            raise DatasetError(
                f"{self.name} ({self.split}) has no training augmentation; load it with "
                "augment=True (CIFAR, ImageNet) or pass augmentation="
            )
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return self.normalize(self._pixels(idx, augment, generator)), self.labels[idx]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        augment: bool | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate over the dataset in normalized float32 batches.

        The order is drawn first, then each batch's augmentation, all from ``generator``: a
        generator seeded from ``(seed, epoch)`` reproduces an epoch exactly, augmentation
        included (which is how ``approxsim train`` resumes bit-identically).

        Args:
            batch_size: Samples per batch (the last one may be smaller).
            shuffle: Visit the samples in a random order drawn from ``generator``.
            generator: Source of the order and the augmentation; a fixed seed reproduces both.
            drop_last: Skip a last, smaller batch.
            augment: Apply the training augmentation; ``None``: when shuffling a dataset that
                has one (a training pass), not otherwise (evaluation).

        Yields:
            ``(images, labels)`` as from :meth:`batch`.

        Raises:
            DatasetError: ``batch_size`` is not a positive integer, or ``augment=True`` on a
                dataset without augmentation.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"batch_size must be a positive integer, got {batch_size!r}")
        aug = (shuffle and self.augments) if augment is None else bool(augment)
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size], augment=aug, generator=generator)

    def subset(self, max_samples: int | None) -> ImageDataset:
        """The first ``max_samples`` samples (all when ``None`` or larger than the dataset).

        The files of MNIST, Fashion-MNIST and CIFAR are stored in random class order, so a
        prefix is a fair sample; it is also the same for every run, which a random subset
        would only be with a fixed seed.

        Raises:
            DatasetError: ``max_samples`` is below 1.
        """
        if max_samples is None or max_samples >= len(self):
            return self
        if max_samples < 1:
            raise DatasetError(f"max_samples must be positive, got {max_samples}")
        return ImageDataset(
            self.images[:max_samples],
            self.labels[:max_samples],
            mean=self.mean,
            std=self.std,
            classes=self.classes,
            name=self.name,
            split=self.split,
            root=self.root,
            augmentation=self.augmentation,
        )


# ---------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class DatasetFormat(ABC):
    """A named dataset in one file format: its metadata, where it lies, how to read a split.

    Subclasses implement :meth:`image_shape`, :meth:`has_files` and :meth:`load` for their
    format (and :meth:`locate` where the files may sit one folder down);
    :func:`~approxsim.data.registry.register_dataset` makes an instance loadable by name.

    Attributes:
        name: Registry name (``"fashion-mnist"``).
        description: One line for listings.
        classes: Class names, index = label; empty where the files decide (ImageFolder).
        mean: Mean of the pixels scaled to [0, 1]: one number, or one per channel.
        std: Matching standard deviation.
        default_dirs: The folders searched, in order, when the caller names none.
        missing_hint: What the user should do when the files are missing (ends an error).
    """

    name: str
    description: str
    classes: tuple[str, ...]
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    default_dirs: Callable[[], list[Path]]
    missing_hint: str

    #: ``augment=True`` is meaningful (CIFAR, ImageFolder trees).
    augmentable: ClassVar[bool] = False
    #: ``image_size=`` is meaningful (ImageFolder trees).
    sized: ClassVar[bool] = False

    @abstractmethod
    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image.

        Args:
            image_size: The requested crop size (formats with ``sized`` only); ``None``:
                the format's default.

        Returns:
            The shape of one sample.
        """

    def num_classes(self) -> int | None:
        """The number of classes, or ``None`` where the files decide."""
        return len(self.classes) or None

    @abstractmethod
    def has_files(self, directory: Path) -> bool:
        """Whether ``directory`` holds this dataset's files.

        Args:
            directory: A candidate folder (a user's ``root`` or a default folder).

        Returns:
            ``True`` when the files (or the folder :meth:`locate` would pick) are there.
        """

    def locate(self, directory: Path) -> Path:
        """The folder that holds the files: ``directory`` itself unless a format nests them.

        Args:
            directory: The folder the user named or a default folder.

        Returns:
            The folder :meth:`load` reads.
        """
        return directory

    @abstractmethod
    def load(
        self, directory: Path, split: str, *, augment: bool, image_size: int | None
    ) -> ImageDataset:
        """Read one split from ``directory``.

        Args:
            directory: The folder holding the files (as :meth:`locate` returned it).
            split: ``"train"`` or ``"test"``.
            augment: Give the dataset its training augmentation (``augmentable`` only).
            image_size: Crop size (``sized`` only); ``None``: the default.

        Returns:
            The split as an :class:`ImageDataset`.

        Raises:
            DatasetNotFoundError: a file is missing.
            DatasetError: a file is malformed.
        """
