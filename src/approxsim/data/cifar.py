"""The "python version" files of CIFAR-10 and CIFAR-100: a checked reader.

Each file is a pickled ``dict`` (written by Python 2, so read with ``encoding="bytes"``):
``b"data"`` is a uint8 array ``(N, 3072)`` holding each image's red, green and blue 32x32
planes in row-major order, and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100) a
list of N class indices. ``batches.meta`` / ``meta`` hold the class names.

Unpickling can run arbitrary code, so the reader only lets the few numpy constructors that
an array needs through (:class:`_ArrayUnpickler`); anything else in the file is refused.
Every inconsistency is a :class:`CifarFormatError` naming the file.

:class:`CifarFormat` is the :class:`~approxsim.data.base.DatasetFormat` of CIFAR-10 and
CIFAR-100: the extracted archive folder (or the folder holding it), its batch files read and
concatenated, the class names taken from its meta file when present.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from approxsim.data.base import DatasetError, DatasetFormat, DatasetNotFoundError, ImageDataset
from approxsim.data.transforms import RandomCropFlip
from approxsim.errors import ApproxsimError

__all__ = [
    "CifarFormatError",
    "CifarFormat",
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "read_cifar_batch",
    "read_cifar_meta",
]

#: The classes of CIFAR-10, index = label (as in ``batches.meta``).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: The 100 fine classes of CIFAR-100, index = label (alphabetical, as in ``meta``).
CIFAR100_CLASSES: tuple[str, ...] = tuple(
    """
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house
    kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
    mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
    plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
    skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
    telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
    woman worm
    """.split()
)

#: Pixels per image: 3 planes of 32x32.
_ROW = 3 * 32 * 32

# What a pickled numpy array may reference: its reconstructors (numpy 1 and 2 module names,
# pickle protocols 2-5), ndarray and dtype, and the codec Python 3 uses for bytes in
# protocol 2. Nothing here can run code chosen by the file.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class CifarFormatError(ApproxsimError, ValueError):
    """A CIFAR file is malformed (not a pickle, wrong keys, shapes or types)."""


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes, numbers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"the file references {module}.{name}, which a CIFAR file never does; "
                "refusing to load it"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[bytes, Any]:
    with open(path, "rb") as f:
        try:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise CifarFormatError(
                f"{path}: not a CIFAR python-version file or damaged ({type(exc).__name__}: "
                f"{exc}); download cifar-*-python.tar.gz again"
            ) from None
    if not isinstance(obj, dict):
        raise CifarFormatError(
            f"{path}: expected a pickled dict, found {type(obj).__name__}; this is not a CIFAR "
            "python-version file"
        )
    # Files re-pickled by Python 3 have str keys; the originals have bytes keys.
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _entry(obj: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in obj:
        have = ", ".join(repr(k) for k in obj) or "none"
        raise CifarFormatError(f"{path}: no {key!r} entry (the file has {have})")
    return obj[key]


def read_cifar_batch(
    path: str | os.PathLike[str], label_key: bytes = b"labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file (``data_batch_1``, ``test_batch``, ``train``, ``test``).

    Args:
        path: The file.
        label_key: ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"``
            (CIFAR-100).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        FileNotFoundError: the file does not exist.
        CifarFormatError: not a pickled dict, a missing key, data that is not uint8
            ``(N, 3072)``, or labels that are not N integers.
    """
    p = Path(path)
    obj = _unpickle(p)
    data = _entry(obj, b"data", p)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _ROW:
        got = f"shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CifarFormatError(
            f"{p}: b'data' must be an array of shape (N, {_ROW}) (N images of 3x32x32), got {got}"
        )
    if data.dtype != np.uint8:
        raise CifarFormatError(f"{p}: b'data' must hold uint8 pixels, got {data.dtype}")
    raw = _entry(obj, label_key, p)
    try:
        labels = np.asarray(raw)
    except (TypeError, ValueError) as exc:  # ragged or exotic objects
        raise CifarFormatError(f"{p}: {label_key!r} is not a list of integers ({exc})") from None
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise CifarFormatError(
            f"{p}: {label_key!r} must be a flat list of integers, got {labels.dtype} of shape "
            f"{labels.shape}"
        )
    if labels.shape[0] != data.shape[0]:
        raise CifarFormatError(
            f"{p}: b'data' holds {data.shape[0]} images but {label_key!r} holds "
            f"{labels.shape[0]} labels"
        )
    images = np.ascontiguousarray(data).reshape(-1, 3, 32, 32)
    return images, labels.astype(np.int64)


def read_cifar_meta(path: str | os.PathLike[str], key: bytes = b"label_names") -> list[str]:
    """Read the class names from ``batches.meta`` (CIFAR-10) or ``meta`` (CIFAR-100).

    Args:
        path: The file.
        key: ``b"label_names"`` (CIFAR-10) or ``b"fine_label_names"`` (CIFAR-100).

    Returns:
        The names, index = label.

    Raises:
        FileNotFoundError: the file does not exist.
        CifarFormatError: not a pickled dict, the key is missing or not a list of strings.
    """
    p = Path(path)
    names = _entry(_unpickle(p), key, p)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
        raise CifarFormatError(f"{p}: {key!r} must be a list of names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


# ---------------------------------------------------------------------------- format
@dataclass(frozen=True)
class CifarFormat(DatasetFormat):
    """A CIFAR dataset in its "python version" files.

    Attributes:
        folder: The folder the archive extracts to (``cifar-10-batches-py``).
        files: Split → batch files, concatenated in this order.
        label_key: The labels' key in a batch file (``b"labels"``, ``b"fine_labels"``).
        meta_file: The file naming the classes (``batches.meta``, ``meta``).
        meta_key: The class names' key in it.
    """

    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: bytes
    meta_file: str
    meta_key: bytes

    augmentable: ClassVar[bool] = True

    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        """``(3, 32, 32)``."""
        return (3, 32, 32)

    def _holds_files(self, directory: Path) -> bool:
        return any((directory / f).is_file() for fs in self.files.values() for f in fs)

    def has_files(self, directory: Path) -> bool:
        """Whether ``directory`` or its extracted archive folder holds a batch file."""
        return self._holds_files(directory) or self._holds_files(directory / self.folder)

    def locate(self, directory: Path) -> Path:
        """The extracted archive folder: ``directory`` itself or its :attr:`folder`."""
        # Accept the extracted folder itself or the folder it was extracted into.
        if not self._holds_files(directory) and (directory / self.folder).is_dir():
            return directory / self.folder
        return directory

    def _read(self, directory: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        """The images and labels of ``paths``, concatenated, labels checked."""
        n = len(self.classes)
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for path in paths:
            images, labels = read_cifar_batch(path, self.label_key)
            if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n):
                bad = int(labels.max()) if int(labels.max()) >= n else int(labels.min())
                raise DatasetError(
                    f"{self.name} in {directory}: {path.name} has label {bad}; labels "
                    f"must lie in [0, {n})"
                )
            parts.append((images, labels))
        images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        labels = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        return images, labels

    def _classes(self, directory: Path) -> tuple[str, ...]:
        """The class names of the meta file when there is one, else the built-in names."""
        meta = directory / self.meta_file
        if not meta.is_file():
            return self.classes
        names = read_cifar_meta(meta, self.meta_key)
        if len(names) != len(self.classes):
            raise DatasetError(
                f"{self.name} in {directory}: {self.meta_file} names {len(names)} "
                f"classes, {self.name} has {len(self.classes)}; is this the right dataset?"
            )
        return tuple(names)

    def load(
        self, directory: Path, split: str, *, augment: bool, image_size: int | None
    ) -> ImageDataset:
        """Read a split's batch files (and the class names).

        Args:
            directory: The extracted archive folder.
            split: ``"train"`` or ``"test"``.
            augment: Attach the CIFAR training augmentation (4-pixel padded random crops
                and horizontal flips).
            image_size: Unused (32x32 images).

        Returns:
            An :class:`~approxsim.data.base.ImageDataset` of uint8 ``(N, 3, 32, 32)`` images.

        Raises:
            DatasetNotFoundError: a batch file is missing.
            DatasetError: a malformed file, labels out of range or a meta file naming the
                wrong number of classes.
        """
        paths = []
        for fname in self.files[split]:
            path = directory / fname
            if not path.is_file():
                raise DatasetNotFoundError(
                    f"{self.name}: {directory} has no {fname}; {self.missing_hint}"
                )
            paths.append(path)
        try:
            images, labels = self._read(directory, paths)
            classes = self._classes(directory)
        except CifarFormatError as exc:
            raise DatasetError(f"{self.name} in {directory}: {exc}") from None
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
