"""ImageFolder trees (``ROOT/train/CLASS/IMAGE``): ImageNet and any dataset laid out like it.

:func:`scan_image_folder` lists a split's images once (classes = sorted sub-folder names);
:class:`ImageFolderDataset` keeps only the file names and labels in memory and decodes each
batch with Pillow when it is taken, on a few threads (Pillow releases the GIL while
decoding). Training batches get a random-resized crop and a horizontal flip
(:class:`~approxsim.data.transforms.RandomResizedCropFlip`), evaluation batches a resize of the
shorter side and a centre crop (:func:`~approxsim.data.transforms.center_crop_box`), then
the same per-channel normalization as every other dataset.

An empty class folder, a split without class folders and an image Pillow cannot read are
:class:`~approxsim.data.base.DatasetError` naming the folder or file.

:class:`ImageFolderFormat` is the :class:`~approxsim.data.base.DatasetFormat` of such trees
(ImageNet-1k and any other): labels follow the training split's sorted class folders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from approxsim.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    DatasetFormat,
    DatasetNotFoundError,
    ImageDataset,
)
from approxsim.data.transforms import RandomResizedCropFlip, center_crop_box

__all__ = [
    "IMAGE_EXTENSIONS",
    "FOLDER_LAYOUT",
    "ImageFolderDataset",
    "ImageFolderFormat",
    "find_classes",
    "scan_image_folder",
]

#: File name endings (compared in lower case) taken as images; others are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise DatasetError(
            "reading image folders needs Pillow: pip install 'pillow>=9.1'"
        ) from None
    return Image


def _visible_dirs(directory: Path) -> list[str]:
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _is_image(filename: str) -> bool:
    return not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS)


def find_classes(directory: str | os.PathLike[str], name: str = "imagefolder") -> list[str]:
    """The class folders of a split folder, sorted (label = position in this list).

    Args:
        directory: A split folder such as ``ROOT/train``.
        name: Dataset name for error messages.

    Returns:
        The names of the visible sub-folders, sorted.

    Raises:
        DatasetNotFoundError: ``directory`` does not exist.
        DatasetError: it has no sub-folders.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DatasetNotFoundError(f"{name}: the folder {d} does not exist")
    classes = _visible_dirs(d)
    if not classes:
        with os.scandir(d) as it:
            loose = any(e.is_file() and _is_image(e.name) for e in it)
        why = " (its images lie directly in it)" if loose else ""
        raise DatasetError(
            f"{name}: {d} has no class folders{why}; put each class's images in a sub-folder "
            f"named after the class: {d / 'CLASS' / 'IMAGE'}"
        )
    return classes


def scan_image_folder(
    directory: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    *,
    name: str = "imagefolder",
) -> tuple[list[str], list[str], list[int]]:
    """List the images of a split folder ``directory/CLASS/**/IMAGE``.

    Args:
        directory: The split folder (``ROOT/train``, ``ROOT/val``).
        classes: The class list that defines the labels (the training split's); every class
            folder of ``directory`` must be in it, but it may name classes ``directory``
            lacks. ``None``: the sorted class folders of ``directory``.
        name: Dataset name for error messages.

    Returns:
        ``(classes, files, labels)``: the class list, the image paths relative to
        ``directory`` (sorted by class, then by path) and their labels.

    Raises:
        DatasetNotFoundError: ``directory`` does not exist.
        DatasetError: no class folders, a class folder without images, or a class folder
            that is not in ``classes``.
    """
    d = Path(directory)
    present = find_classes(d, name)
    classes = list(present if classes is None else classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in present if c not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DatasetError(
            f"{name}: {d} has {len(unknown)} class folder(s) the training split lacks "
            f"({shown}); both splits must use the training split's class folders"
        )
    files: list[str] = []
    labels: list[int] = []
    for c in present:
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(d / c, followlinks=True):
            dirnames[:] = [n for n in dirnames if not n.startswith(".")]
            rel = os.path.relpath(dirpath, d)
            found.extend(os.path.join(rel, f) for f in filenames if _is_image(f))
        if not found:
            raise DatasetError(
                f"{name}: the class folder {d / c} holds no images (files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}); add its images or remove the folder"
            )
        found.sort()
        files.extend(found)
        labels.extend([index[c]] * len(found))
    return classes, files, labels


class ImageFolderDataset(ImageDataset):
    """Images in a folder tree, decoded with Pillow, cropped and normalized per batch.

    An :class:`~approxsim.data.base.ImageDataset` whose pixels are not in memory: it has
    :meth:`batch`, :meth:`batches`, :meth:`subset`, ``len()``, indexing, ``classes``,
    ``num_classes`` and ``sample_shape`` like the in-memory datasets, but no ``images``
    tensor. Each image is converted to RGB; with a ``train_transform`` and ``augment`` a
    random-resized crop and flip (random numbers drawn from the batch's generator before
    decoding, so threads do not change them), otherwise the evaluation transform: resize the
    shorter side to ``resize_size``, crop the centre ``image_size`` square.

    Args:
        directory: The split folder the ``files`` are relative to (``ROOT/train``).
        files: Image paths relative to ``directory``.
        labels: int64 ``(N,)`` class indices.
        classes: Class names, index = label.
        mean: Per-channel mean of the pixels scaled to [0, 1] (default: ImageNet's).
        std: Matching standard deviation.
        image_size: Side of the square output images.
        resize_size: Shorter side before the evaluation centre crop; ``None``:
            ``round(image_size * 256 / 224)`` (256 for 224).
        train_transform: The training augmentation; ``None``: none (training images get the
            evaluation transform).
        name: Dataset name (``"imagenet"``).
        split: ``"train"`` or ``"test"``.
        root: The dataset's root folder (holding ``train/`` and ``val/``).
        num_workers: Threads decoding a batch; ``None``: up to 8, at most the CPU count.

    Raises:
        DatasetError: inconsistent labels, sizes or normalization.

    Shape:
        - ``dataset[i]``: ``((3, image_size, image_size) float32, int label)``.
        - ``dataset.batch(idx)``: ``((B, 3, image_size, image_size) float32, (B,) int64)``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        files: Sequence[str | os.PathLike[str]],
        labels: Tensor,
        *,
        classes: Sequence[str],
        mean: float | Sequence[float] = IMAGENET_MEAN,
        std: float | Sequence[float] = IMAGENET_STD,
        image_size: int = 224,
        resize_size: int | None = None,
        train_transform: RandomResizedCropFlip | None = None,
        name: str = "imagefolder",
        split: str = "train",
        root: Path | None = None,
        num_workers: int | None = None,
    ) -> None:
        for what, v in (("image_size", image_size), ("resize_size", resize_size or 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DatasetError(f"{name}: {what} must be a positive integer, got {v!r}")
        if resize_size is None:
            resize_size = max(image_size, round(image_size * 256 / 224))
        if resize_size < image_size:
            raise DatasetError(
                f"{name}: resize_size ({resize_size}) must be at least image_size ({image_size})"
            )
        if train_transform is not None and not isinstance(train_transform, RandomResizedCropFlip):
            raise DatasetError(
                f"{name}: train_transform must be a RandomResizedCropFlip, got {train_transform!r}"
            )
        if num_workers is None:
            num_workers = min(8, os.cpu_count() or 1)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise DatasetError(
                f"{name}: num_workers must be a positive integer, got {num_workers!r}"
            )
        self.directory = Path(directory)
        # Relative paths as bytes: ImageNet's 1.28M names take ~40 MB this way, ~150 MB as str.
        self._files = np.array([os.fsencode(f) for f in files], dtype=np.bytes_)
        self._init_common(
            torch.as_tensor(labels),
            len(self._files),
            3,
            mean=mean,
            std=std,
            classes=classes,
            name=name,
            split=split,
            root=root,
        )
        self.image_size = image_size
        self.resize_size = resize_size
        self.train_transform = train_transform
        self.num_workers = num_workers
        self.augmentation = None

    # ------------------------------------------------------------------ overrides
    @property
    def tensors(self) -> tuple[Tensor, Tensor]:
        """Not available: the images are decoded per batch, not held in memory."""
        raise DatasetError(
            f"{self.name}: an image folder has no in-memory image tensor; take batches with "
            ".batch(indices) or .batches(batch_size)"
        )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(3, image_size, image_size)``."""
        return 3, self.image_size, self.image_size

    @property
    def augments(self) -> bool:
        """Whether training batches get the random-resized crop and flip."""
        return self.train_transform is not None

    def path(self, index: int) -> Path:
        """The file of sample ``index``."""
        return self.directory / os.fsdecode(self._files[index])

    @property
    def files(self) -> list[Path]:
        """Every sample's file, in sample order."""
        return [self.directory / os.fsdecode(f) for f in self._files]

    def _decode(self, path: Path, u: Sequence[float] | None) -> np.ndarray:
        """One image as uint8 ``(S, S, 3)``: decoded, cropped, resized, maybe flipped."""
        image_mod = _pil()
        try:
            with image_mod.open(path) as im:
                rgb = im.convert("RGB")  # decodes the whole file
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
            raise DatasetError(
                f"{self.name}: cannot read the image {path} ({type(exc).__name__}: {exc}); "
                "replace or delete the file"
            ) from None
        w, h = rgb.size
        s = self.image_size
        if u is None or self.train_transform is None:
            box = center_crop_box(w, h, s, self.resize_size)
            flip = False
        else:
            box, flip = self.train_transform.box(w, h, u)
        out = rgb.resize((s, s), image_mod.Resampling.BILINEAR, box=box)
        if flip:
            out = out.transpose(image_mod.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.uint8)

    def _pixels(self, idx: Tensor, augment: bool, generator: torch.Generator | None) -> Tensor:
        n = int(idx.numel())
        s = self.image_size
        # Every random number is drawn here, in sample order, before any thread runs.
        rand = (
            self.train_transform.sample(n, generator).tolist()
            if augment and self.train_transform is not None
            else None
        )
        paths = [self.path(int(i)) for i in idx.tolist()]

        def work(k: int) -> np.ndarray:
            return self._decode(paths[k], None if rand is None else rand[k])

        if n == 0:
            return torch.zeros(0, 3, s, s, dtype=torch.uint8)
        workers = min(self.num_workers, n)
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                arrays = list(pool.map(work, range(n)))
        else:
            arrays = [work(k) for k in range(n)]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def subset(self, max_samples: int | None) -> ImageFolderDataset:
        """``max_samples`` samples spread evenly over the dataset (all when ``None`` or
        larger than the dataset).

        The files are sorted by class, so a prefix would hold the first classes only; every
        ``len / max_samples``-th file keeps the class proportions and is the same every run.

        Raises:
            DatasetError: ``max_samples`` is below 1.
        """
        if max_samples is None or max_samples >= len(self):
            return self
        if max_samples < 1:
            raise DatasetError(f"max_samples must be positive, got {max_samples}")
        pick = (np.arange(max_samples, dtype=np.int64) * len(self)) // max_samples
        return ImageFolderDataset(
            self.directory,
            [os.fsdecode(f) for f in self._files[pick]],
            self.labels[torch.from_numpy(pick)],
            classes=self.classes,
            mean=self.mean,
            std=self.std,
            image_size=self.image_size,
            resize_size=self.resize_size,
            train_transform=self.train_transform,
            name=self.name,
            split=self.split,
            root=self.root,
            num_workers=self.num_workers,
        )


# ---------------------------------------------------------------------------- format
#: Folder names of the test split of an ImageFolder tree, in order of preference.
_TEST_DIRS = ("val", "test")

#: How an ImageFolder tree is laid out, for messages.
FOLDER_LAYOUT = "ROOT/train/CLASS/IMAGE and ROOT/val/CLASS/IMAGE"


@dataclass(frozen=True)
class ImageFolderFormat(DatasetFormat):
    """A dataset of image files in class folders (``ROOT/train/CLASS/IMAGE``, ``ROOT/val/...``).

    Attributes:
        expected_classes: The number of class folders the dataset must have (ImageNet-1k:
            1000); ``None``: any.
        default_image_size: Side of the square crops when the caller names none.
    """

    expected_classes: int | None
    default_image_size: int = 224

    augmentable: ClassVar[bool] = True
    sized: ClassVar[bool] = True

    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        """``(3, S, S)``, ``S`` the requested or default crop size."""
        s = image_size or self.default_image_size
        return (3, s, s)

    def num_classes(self) -> int | None:
        """:attr:`expected_classes`: the folders decide the rest."""
        return self.expected_classes

    def has_files(self, directory: Path) -> bool:
        """Whether ``directory`` has a ``train/``, ``val/`` or ``test/`` folder."""
        return any((directory / d).is_dir() for d in ("train", *_TEST_DIRS))

    def _split_dir(self, directory: Path, split: str) -> Path:
        names = ("train",) if split == "train" else _TEST_DIRS
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
        """List a split's images (decoded later, batch by batch).

        Args:
            directory: The folder holding ``train/`` and ``val/`` (or ``test/``).
            split: ``"train"`` or ``"test"`` (``val/``, else ``test/``).
            augment: Give training batches the random-resized crop and flip.
            image_size: Side of the square crops; ``None``: :attr:`default_image_size`.

        Returns:
            An :class:`ImageFolderDataset`.

        Raises:
            DatasetNotFoundError: the split's folder is missing.
            DatasetError: no class folders, an empty class folder, a class the training
                split lacks, or the wrong number of classes.
        """
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
