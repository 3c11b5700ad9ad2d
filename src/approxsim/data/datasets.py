"""Image classification datasets: a registry of loaders and a compact in-memory dataset.

``load_dataset("fashion-mnist")`` reads the IDX files of Debian's ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``) or of ``$APPROXSIM_DATA/fashion-mnist``;
``load_dataset("mnist", root=DIR)`` reads MNIST's IDX files from a directory the user names;
``"cifar10"`` / ``"cifar100"`` read the "python version" batch files of CIFAR; ``"imagenet"``
/ ``"imagefolder"`` read a ``train/CLASS/IMAGE`` + ``val/CLASS/IMAGE`` tree
(:class:`~approxsim.data.folder.ImageFolderDataset`, decoded with Pillow batch by batch).

Images stay uint8 in memory (47 MB for the 60,000 Fashion-MNIST training images rather than
188 MB as float32; 150 MB for CIFAR's 50,000); :meth:`ImageDataset.batch` produces
normalized float32 ``(B, C, H, W)`` batches on the fly. The training splits of CIFAR and
ImageNet carry their standard augmentation, which :meth:`ImageDataset.batches` applies when
it shuffles, drawing from the same generator as the order.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from approxsim.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    CifarFormatError,
    read_cifar_batch,
    read_cifar_meta,
)
from approxsim.data.idx import IdxFormatError, read_idx
from approxsim.data.transforms import RandomCropFlip, RandomResizedCropFlip
from approxsim.errors import ApproxsimError

if TYPE_CHECKING:
    from approxsim.data.folder import ImageFolderDataset

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "ImageDataset",
    "Augmentation",
    "SPLITS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "list_datasets",
    "load_dataset",
    "dataset_info",
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


# ---------------------------------------------------------------------------- registry
def _env_dirs(name: str) -> list[Path]:
    env = os.environ.get(DATA_ENV)
    return [Path(env).expanduser() / name] if env else []


@dataclass(frozen=True)
class _Spec:
    """What every registered dataset has; subclasses know its file format."""

    name: str
    description: str
    classes: tuple[str, ...]  # empty: taken from the files (ImageFolder)
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    default_dirs: Callable[[], list[Path]]
    missing_hint: str

    #: ``augment=True`` is meaningful (CIFAR, ImageNet).
    augmentable = False
    #: ``image_size=`` is meaningful (ImageFolder trees).
    sized = False

    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        raise NotImplementedError

    def num_classes(self) -> int | None:
        return len(self.classes) or None

    def has_files(self, directory: Path) -> bool:
        raise NotImplementedError

    def locate(self, directory: Path) -> Path:
        """The folder below ``directory`` (or itself) that holds the files."""
        return directory

    def load(
        self, directory: Path, split: str, *, augment: bool, image_size: int | None
    ) -> ImageDataset:
        raise NotImplementedError


# ---------------------------------------------------------------- IDX (MNIST family)
@dataclass(frozen=True)
class _IdxSpec(_Spec):
    files: dict[str, tuple[str, str]]  # split -> (images stem, labels stem)
    image_hw: tuple[int, int]

    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        return (1, *self.image_hw)

    def has_files(self, directory: Path) -> bool:
        return any(p.is_file() for p in _candidates(directory, self.files["train"][0]))

    def load(
        self, directory: Path, split: str, *, augment: bool, image_size: int | None
    ) -> ImageDataset:
        img_stem, lbl_stem = self.files[split]
        img_path = _find_file(directory, img_stem, self)
        lbl_path = _find_file(directory, lbl_stem, self)
        try:
            images = read_idx(img_path, ndim=3, dtype="uint8")
            labels = read_idx(lbl_path, ndim=1, dtype="uint8")
        except IdxFormatError as exc:
            raise DatasetError(f"{self.name} in {directory}: {exc}") from None
        if tuple(images.shape[1:]) != self.image_hw:
            raise DatasetError(
                f"{self.name} in {directory}: {img_path.name} holds {images.shape[1]}x"
                f"{images.shape[2]} images, expected {self.image_hw[0]}x{self.image_hw[1]}"
            )
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{self.name} in {directory}: {img_path.name} holds {images.shape[0]} images "
                f"but {lbl_path.name} holds {labels.shape[0]} labels"
            )
        if labels.size and int(labels.max()) >= len(self.classes):
            raise DatasetError(
                f"{self.name} in {directory}: {lbl_path.name} has label {int(labels.max())}; "
                f"labels must be below {len(self.classes)}"
            )
        return ImageDataset(
            torch.from_numpy(images),
            torch.from_numpy(labels.astype(np.int64)),
            mean=self.mean,
            std=self.std,
            classes=self.classes,
            name=self.name,
            split=split,
            root=directory,
        )


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _candidates(directory: Path, stem: str) -> list[Path]:
    # The official downloads are "train-images-idx3-ubyte.gz"; some mirrors unpack them or
    # spell them "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    return [directory / f for s in (stem, dotted) for f in (f"{s}.gz", s)]


def _find_file(directory: Path, stem: str, spec: _Spec) -> Path:
    for path in _candidates(directory, stem):
        if path.is_file():
            return path
    raise DatasetNotFoundError(
        f"{spec.name}: {directory} has no {stem}.gz (nor {stem}); {spec.missing_hint}"
    )


# ---------------------------------------------------------------- CIFAR (python version)
@dataclass(frozen=True)
class _CifarSpec(_Spec):
    folder: str  # the folder the archive extracts to
    files: dict[str, tuple[str, ...]]  # split -> batch files, concatenated in this order
    label_key: bytes
    meta_file: str
    meta_key: bytes

    augmentable = True

    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        return (3, 32, 32)

    def _holds_files(self, directory: Path) -> bool:
        return any((directory / f).is_file() for fs in self.files.values() for f in fs)

    def has_files(self, directory: Path) -> bool:
        return self._holds_files(directory) or self._holds_files(directory / self.folder)

    def locate(self, directory: Path) -> Path:
        # Accept the extracted folder itself or the folder it was extracted into.
        if not self._holds_files(directory) and (directory / self.folder).is_dir():
            return directory / self.folder
        return directory

    def load(
        self, directory: Path, split: str, *, augment: bool, image_size: int | None
    ) -> ImageDataset:
        paths = []
        for fname in self.files[split]:
            path = directory / fname
            if not path.is_file():
                raise DatasetNotFoundError(
                    f"{self.name}: {directory} has no {fname}; {self.missing_hint}"
                )
            paths.append(path)
        n = len(self.classes)
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        try:
            for path in paths:
                images, labels = read_cifar_batch(path, self.label_key)
                if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n):
                    bad = int(labels.max()) if int(labels.max()) >= n else int(labels.min())
                    raise DatasetError(
                        f"{self.name} in {directory}: {path.name} has label {bad}; labels "
                        f"must lie in [0, {n})"
                    )
                parts.append((images, labels))
            classes = self.classes
            meta = directory / self.meta_file
            if meta.is_file():
                names = read_cifar_meta(meta, self.meta_key)
                if len(names) != n:
                    raise DatasetError(
                        f"{self.name} in {directory}: {self.meta_file} names {len(names)} "
                        f"classes, {self.name} has {n}; is this the right dataset?"
                    )
                classes = tuple(names)
        except CifarFormatError as exc:
            raise DatasetError(f"{self.name} in {directory}: {exc}") from None
        images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        labels = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        return ImageDataset(
            torch.from_numpy(images),
            torch.from_numpy(labels),
            mean=self.mean,
            std=self.std,
            classes=classes,
            name=self.name,
            split=split,
            root=directory,
            augmentation=RandomCropFlip(padding=4, flip=True) if augment else None,
        )


# ---------------------------------------------------------------- ImageFolder trees
#: Folder names of the test split of an ImageFolder tree, in order of preference.
_FOLDER_TEST_DIRS = ("val", "test")


@dataclass(frozen=True)
class _FolderSpec(_Spec):
    expected_classes: int | None  # ImageNet-1k: 1000; a generic tree: any
    default_image_size: int = 224

    augmentable = True
    sized = True

    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        s = image_size or self.default_image_size
        return (3, s, s)

    def num_classes(self) -> int | None:
        return self.expected_classes

    def has_files(self, directory: Path) -> bool:
        return any((directory / d).is_dir() for d in ("train", *_FOLDER_TEST_DIRS))

    def _split_dir(self, directory: Path, split: str) -> Path:
        names = ("train",) if split == "train" else _FOLDER_TEST_DIRS
        for n in names:
            if (directory / n).is_dir():
                return directory / n
        want = " (nor test/)" if split == "test" else ""
        raise DatasetNotFoundError(
            f"{self.name}: {directory} has no {names[0]}/ folder{want} for the {split} split; "
            f"expected {directory / names[0] / 'CLASS' / 'IMAGE'}; {self.missing_hint}"
        )

    def load(
        self, directory: Path, split: str, *, augment: bool, image_size: int | None
    ) -> ImageFolderDataset:
        # folder.py builds on ImageDataset, so it is imported when first needed.
        from approxsim.data.folder import ImageFolderDataset, find_classes, scan_image_folder

        split_dir = self._split_dir(directory, split)
        # Labels are indices into the training split's sorted class folders, so a model
        # trained on train/ reads val/ with the same numbering.
        train_dir = directory / "train"
        classes = find_classes(train_dir if train_dir.is_dir() else split_dir, self.name)
        if self.expected_classes is not None and len(classes) != self.expected_classes:
            raise DatasetError(
                f"{self.name}: {train_dir if train_dir.is_dir() else split_dir} holds "
                f"{len(classes)} class folders, {self.name} has {self.expected_classes}; for "
                "another ImageFolder tree use the dataset 'imagefolder'"
            )
        classes, files, labels = scan_image_folder(split_dir, classes, name=self.name)
        return ImageFolderDataset(
            split_dir,
            files,
            torch.tensor(labels, dtype=torch.int64),
            classes=classes,
            mean=self.mean,
            std=self.std,
            image_size=image_size or self.default_image_size,
            train_transform=RandomResizedCropFlip() if augment else None,
            name=self.name,
            split=split,
            root=directory,
        )


_FOLDER_LAYOUT = "ROOT/train/CLASS/IMAGE and ROOT/val/CLASS/IMAGE"

_REGISTRY: dict[str, _Spec] = {
    "fashion-mnist": _IdxSpec(
        name="fashion-mnist",
        description="Fashion-MNIST: 28x28 grey clothing images, 10 classes, 60k/10k (IDX)",
        files=_MNIST_FILES,
        image_hw=(28, 28),
        mean=0.2860,
        std=0.3530,
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        default_dirs=lambda: (
            _env_dirs("fashion-mnist") + [Path("/usr/share/datasets/fashion-mnist")]
        ),
        missing_hint="install it with apt-get install dataset-fashion-mnist or pass --data-dir "
        "(root=) naming a folder with its four IDX files",
    ),
    "mnist": _IdxSpec(
        name="mnist",
        description="MNIST: 28x28 grey handwritten digits, 10 classes, 60k/10k (IDX, your folder)",
        files=_MNIST_FILES,
        image_hw=(28, 28),
        mean=0.1307,
        std=0.3081,
        classes=tuple(str(d) for d in range(10)),
        default_dirs=lambda: _env_dirs("mnist"),
        missing_hint="approxsim does not ship MNIST: put its four IDX files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        f"t10k-labels-idx1-ubyte.gz) in a folder and pass --data-dir (root=), or in "
        f"${DATA_ENV}/mnist",
    ),
    "cifar10": _CifarSpec(
        name="cifar10",
        description="CIFAR-10: 32x32 colour images, 10 classes, 50k/10k (python batches)",
        folder="cifar-10-batches-py",
        files={
            "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
            "test": ("test_batch",),
        },
        label_key=b"labels",
        meta_file="batches.meta",
        meta_key=b"label_names",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        classes=CIFAR10_CLASSES,
        default_dirs=lambda: _env_dirs("cifar10"),
        missing_hint="approxsim does not ship CIFAR-10: download cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir (root=) "
        f"naming cifar-10-batches-py or the folder holding it, or put it in ${DATA_ENV}/cifar10",
    ),
    "cifar100": _CifarSpec(
        name="cifar100",
        description="CIFAR-100: 32x32 colour images, 100 fine classes, 50k/10k (python files)",
        folder="cifar-100-python",
        files={"train": ("train",), "test": ("test",)},
        label_key=b"fine_labels",
        meta_file="meta",
        meta_key=b"fine_label_names",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        classes=CIFAR100_CLASSES,
        default_dirs=lambda: _env_dirs("cifar100"),
        missing_hint="approxsim does not ship CIFAR-100: download cifar-100-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir (root=) "
        f"naming cifar-100-python or the folder holding it, or put it in ${DATA_ENV}/cifar100",
    ),
    "imagenet": _FolderSpec(
        name="imagenet",
        description="ImageNet-1k (ILSVRC 2012): colour images decoded on the fly, 1000 classes, "
        "224x224 crops (ImageFolder tree)",
        expected_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=(),
        default_dirs=lambda: _env_dirs("imagenet"),
        missing_hint="approxsim does not ship ImageNet: arrange it as "
        f"{_FOLDER_LAYOUT} (val/ sorted into class folders) and pass --data-dir (root=) naming "
        f"ROOT, or put it in ${DATA_ENV}/imagenet",
    ),
    "imagefolder": _FolderSpec(
        name="imagefolder",
        description="any ImageFolder tree (train/CLASS/IMAGE, val/CLASS/IMAGE): colour images "
        "decoded on the fly, classes = sorted folder names, 224x224 crops",
        expected_classes=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=(),
        default_dirs=lambda: _env_dirs("imagefolder"),
        missing_hint=f"arrange the images as {_FOLDER_LAYOUT} and pass --data-dir (root=) "
        f"naming ROOT, or put it in ${DATA_ENV}/imagefolder",
    ),
}


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def _spec(name: str) -> _Spec:
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; available: {', '.join(list_datasets())}"
        )
    return spec


def dataset_info(name: str) -> dict[str, Any]:
    """Description, classes, image shape and normalization of a registered dataset.

    ``classes`` is empty and ``num_classes`` is ``None`` where the class folders decide
    (``imagefolder``); ``imagenet`` lists no names (its 1000 WordNet ids come from the
    folders) but has ``num_classes`` 1000. ``mean`` / ``std`` are one number, or a list of
    one per channel.

    Raises:
        UnknownDatasetError: no such dataset.
    """
    s = _spec(name)
    return {
        "name": s.name,
        "description": s.description,
        "classes": list(s.classes),
        "num_classes": s.num_classes(),
        "image_shape": list(s.image_shape(None)),
        "mean": s.mean if isinstance(s.mean, float) else list(s.mean),
        "std": s.std if isinstance(s.std, float) else list(s.std),
        "augmentation": s.augmentable,
        "default_dirs": [str(p) for p in s.default_dirs()],
    }


def _resolve_root(spec: _Spec, root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        r = Path(root).expanduser()
        if not r.is_dir():
            raise DatasetNotFoundError(
                f"{spec.name}: the data folder {r} does not exist; {spec.missing_hint}"
            )
        # Accept a parent folder holding <name>/ as well (``--data-dir ~/data``).
        if not spec.has_files(r) and (r / spec.name).is_dir():
            r = r / spec.name
        return spec.locate(r)
    searched = spec.default_dirs()
    for d in searched:
        if d.is_dir():
            return spec.locate(d)
    where = ", ".join(str(d) for d in searched) or f"(no folder: ${DATA_ENV} is not set)"
    raise DatasetNotFoundError(f"{spec.name} not found (looked in {where}); {spec.missing_hint}")


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    *,
    augment: bool | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """Load one split of a registered dataset.

    Args:
        name: A name from :func:`list_datasets`: ``"fashion-mnist"``, ``"mnist"``,
            ``"cifar10"``, ``"cifar100"``, ``"imagenet"``, ``"imagefolder"``.
        root: Folder holding the dataset's files (or a folder holding ``<name>/``). CIFAR:
            the extracted ``cifar-10-batches-py`` / ``cifar-100-python`` or the folder
            holding it; ImageFolder trees: the folder holding ``train/`` and ``val/``.
            Default: ``$APPROXSIM_DATA/<name>``; for Fashion-MNIST then
            ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
        split: ``"train"`` or ``"test"`` (an ImageFolder tree's ``val/``, else ``test/``).
        augment: Give the dataset its standard training augmentation, which
            :meth:`ImageDataset.batches` applies when shuffling: CIFAR random 32x32 crops of
            the 4-pixel zero-padded image and horizontal flips; ImageNet random-resized crops
            and flips (without it, training images get the evaluation resize and centre
            crop). ``None``: on for the training split of CIFAR and ImageFolder trees, off
            otherwise. MNIST and Fashion-MNIST have none.
        image_size: Side of the square crops of an ImageFolder tree (default 224; the
            evaluation resize is ``image_size * 256 / 224``). Other datasets have a fixed size.

    Returns:
        An :class:`ImageDataset`: uint8 images ``(N, 1, 28, 28)`` for the MNIST family,
        ``(N, 3, 32, 32)`` for CIFAR; an :class:`~approxsim.data.folder.ImageFolderDataset`
        for ImageFolder trees.

    Raises:
        UnknownDatasetError: no such dataset (the message lists the valid names).
        DatasetNotFoundError: the folder or a file is missing (the message names it and says
            how to get the data).
        DatasetError: a malformed file (bad magic, wrong sizes or keys, mismatched counts,
            labels out of range, an empty class folder); the message names the folder and
            the file. Unreadable images of a tree are reported when a batch decodes them.
    """
    spec = _spec(name)
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if augment is not None and not isinstance(augment, bool):
        raise DatasetError(f"augment must be True, False or None, got {augment!r}")
    if augment and not spec.augmentable:
        raise DatasetError(
            f"{spec.name} has no training augmentation (CIFAR and ImageFolder trees have)"
        )
    if image_size is not None:
        if not spec.sized:
            _, h, w = spec.image_shape(None)
            raise DatasetError(
                f"{spec.name} images are {h}x{w}; image_size applies to ImageFolder trees "
                "(imagenet, imagefolder) only"
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise DatasetError(f"image_size must be a positive integer, got {image_size!r}")
    if augment is None:
        augment = spec.augmentable and split == "train"
    directory = _resolve_root(spec, root)
    return spec.load(directory, split, augment=augment, image_size=image_size)
