"""Image classification datasets: a registry of loaders and a compact in-memory dataset.

``load_dataset("fashion-mnist")`` reads the IDX files of Debian's ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``) or of ``$APPROXSIM_DATA/fashion-mnist``;
``load_dataset("mnist", root=DIR)`` reads MNIST's IDX files from a directory the user names.
Images stay uint8 in memory (47 MB for the 60,000 training images rather than 188 MB as
float32); :meth:`ImageDataset.batch` produces normalized float32 ``(B, 1, 28, 28)`` batches
on the fly.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.data.idx import IdxFormatError, read_idx

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "ImageDataset",
    "SPLITS",
    "list_datasets",
    "load_dataset",
    "dataset_info",
]

#: The splits every dataset has.
SPLITS = ("train", "test")

#: Environment variable naming a folder of datasets (``$APPROXSIM_DATA/<name>/``).
DATA_ENV = "APPROXSIM_DATA"


class DatasetError(ValueError):
    """A dataset could not be loaded as asked; the message says what to change."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's folder or one of its files is missing."""


class UnknownDatasetError(DatasetError, KeyError):
    """No dataset of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# ---------------------------------------------------------------------------- dataset
class ImageDataset:
    """Labelled images kept as uint8, normalized to float32 when a batch is taken.

    Behaves like a ``torch.utils.data.TensorDataset`` of ``(image, label)`` pairs (so a
    ``DataLoader`` can wrap it), and adds :meth:`batch` / :meth:`batches`, which gather and
    normalize a whole batch in one step, much faster than collating single samples.

    Args:
        images: uint8 tensor ``(N, H, W)`` or ``(N, C, H, W)``.
        labels: integer tensor ``(N,)`` with values in ``[0, len(classes))``.
        mean: Per-dataset mean of the pixel values scaled to [0, 1] (normalization).
        std: Matching standard deviation.
        classes: Class names, index = label.
        name: Dataset name (``"fashion-mnist"``).
        split: ``"train"`` or ``"test"``.
        root: The folder the files were read from, if any.

    Raises:
        DatasetError: inconsistent shapes, dtypes or labels.

    Shape:
        - ``dataset[i]``: ``((C, H, W) float32, int label)``.
        - ``dataset.batch(idx)``: ``((B, C, H, W) float32, (B,) int64)``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        mean: float,
        std: float,
        classes: Sequence[str],
        name: str = "custom",
        split: str = "train",
        root: Path | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() not in (3, 4):
            raise DatasetError(
                f"{name}: images must be a uint8 tensor (N, H, W) or (N, C, H, W), got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex():
            raise DatasetError(f"{name}: labels must be integers, got {labels.dtype}")
        if not std > 0:
            raise DatasetError(f"{name}: std must be positive, got {std}")
        labels = labels.to(torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DatasetError(
                f"{name}: labels must lie in [0, {len(classes)}), found "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        self.images = images if images.dim() == 4 else images.unsqueeze(1)
        self.labels = labels
        self.mean = float(mean)
        self.std = float(std)
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
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, samples={len(self)}, "
            f"shape={self.sample_shape}{where})"
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

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images → float32 ``(x / 255 - mean) / std``."""
        return (images.to(torch.float32) / 255.0 - self.mean) / self.std

    def batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Gather the samples at ``indices`` as a normalized float32 batch.

        Args:
            indices: 1-D integer tensor or sequence.

        Returns:
            ``(images, labels)``: float32 ``(B, C, H, W)`` and int64 ``(B,)``.
        """
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.normalize(self.images[idx]), self.labels[idx]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate over the dataset in normalized float32 batches.

        Args:
            batch_size: Samples per batch (the last one may be smaller).
            shuffle: Visit the samples in a random order drawn from ``generator``.
            generator: Source of the order; a fixed seed gives a reproducible order.
            drop_last: Skip a last, smaller batch.

        Yields:
            ``(images, labels)`` as from :meth:`batch`.

        Raises:
            DatasetError: ``batch_size`` is not a positive integer.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"batch_size must be a positive integer, got {batch_size!r}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])

    def subset(self, max_samples: int | None) -> ImageDataset:
        """The first ``max_samples`` samples (all when ``None`` or larger than the dataset).

        The IDX files of MNIST and Fashion-MNIST are stored in random class order, so a
        prefix is a fair sample; it is also the same for every run, which a random subset
        would only be with a fixed seed.
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
        )


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _IdxSpec:
    name: str
    description: str
    files: dict[str, tuple[str, str]]  # split -> (images stem, labels stem)
    image_hw: tuple[int, int]
    mean: float
    std: float
    classes: tuple[str, ...]
    default_dirs: Callable[[], list[Path]]
    missing_hint: str


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _env_dirs(name: str) -> list[Path]:
    env = os.environ.get(DATA_ENV)
    return [Path(env).expanduser() / name] if env else []


_REGISTRY: dict[str, _IdxSpec] = {
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
}


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def _spec(name: str) -> _IdxSpec:
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; available: {', '.join(list_datasets())}"
        )
    return spec


def dataset_info(name: str) -> dict[str, Any]:
    """Description, classes, image shape and normalization of a registered dataset.

    Raises:
        UnknownDatasetError: no such dataset.
    """
    s = _spec(name)
    return {
        "name": s.name,
        "description": s.description,
        "classes": list(s.classes),
        "image_shape": [1, *s.image_hw],
        "mean": s.mean,
        "std": s.std,
        "default_dirs": [str(p) for p in s.default_dirs()],
    }


def _candidates(directory: Path, stem: str) -> list[Path]:
    # The official downloads are "train-images-idx3-ubyte.gz"; some mirrors unpack them or
    # spell them "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    return [directory / f for s in (stem, dotted) for f in (f"{s}.gz", s)]


def _find_file(directory: Path, stem: str, spec: _IdxSpec) -> Path:
    for path in _candidates(directory, stem):
        if path.is_file():
            return path
    raise DatasetNotFoundError(
        f"{spec.name}: {directory} has no {stem}.gz (nor {stem}); {spec.missing_hint}"
    )


def _has_files(directory: Path, spec: _IdxSpec) -> bool:
    return any(p.is_file() for p in _candidates(directory, spec.files["train"][0]))


def _resolve_root(spec: _IdxSpec, root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        r = Path(root).expanduser()
        if not r.is_dir():
            raise DatasetNotFoundError(
                f"{spec.name}: the data folder {r} does not exist; {spec.missing_hint}"
            )
        # Accept a parent folder holding <name>/ as well (``--data-dir ~/data``).
        if not _has_files(r, spec) and (r / spec.name).is_dir():
            r = r / spec.name
        return r
    searched = spec.default_dirs()
    for d in searched:
        if d.is_dir():
            return d
    where = ", ".join(str(d) for d in searched) or f"(no folder: ${DATA_ENV} is not set)"
    raise DatasetNotFoundError(f"{spec.name} not found (looked in {where}); {spec.missing_hint}")


def load_dataset(
    name: str, root: str | os.PathLike[str] | None = None, split: str = "train"
) -> ImageDataset:
    """Load one split of a registered dataset.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"`` (see :func:`list_datasets`).
        root: Folder holding the dataset's files (or a folder holding ``<name>/``). Default
            for Fashion-MNIST: ``$APPROXSIM_DATA/fashion-mnist``, then
            ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``);
            for MNIST: ``$APPROXSIM_DATA/mnist``.
        split: ``"train"`` or ``"test"``.

    Returns:
        An :class:`ImageDataset` with uint8 images ``(N, 1, 28, 28)``.

    Raises:
        UnknownDatasetError: no such dataset (the message lists the valid names).
        DatasetNotFoundError: the folder or a file is missing (the message names it and says
            how to get the data).
        DatasetError: a malformed file (bad magic, wrong sizes, mismatched counts, labels out
            of range); the message names the folder and the file.
    """
    spec = _spec(name)
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    directory = _resolve_root(spec, root)
    img_stem, lbl_stem = spec.files[split]
    img_path = _find_file(directory, img_stem, spec)
    lbl_path = _find_file(directory, lbl_stem, spec)
    try:
        images = read_idx(img_path, ndim=3, dtype="uint8")
        labels = read_idx(lbl_path, ndim=1, dtype="uint8")
    except IdxFormatError as exc:
        raise DatasetError(f"{spec.name} in {directory}: {exc}") from None
    if tuple(images.shape[1:]) != spec.image_hw:
        raise DatasetError(
            f"{spec.name} in {directory}: {img_path.name} holds {images.shape[1]}x"
            f"{images.shape[2]} images, expected {spec.image_hw[0]}x{spec.image_hw[1]}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{spec.name} in {directory}: {img_path.name} holds {images.shape[0]} images but "
            f"{lbl_path.name} holds {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= len(spec.classes):
        raise DatasetError(
            f"{spec.name} in {directory}: {lbl_path.name} has label {int(labels.max())}; "
            f"labels must be below {len(spec.classes)}"
        )
    return ImageDataset(
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        mean=spec.mean,
        std=spec.std,
        classes=spec.classes,
        name=spec.name,
        split=split,
        root=directory,
    )
