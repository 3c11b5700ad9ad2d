"""The IDX file format of MNIST and Fashion-MNIST: a checked reader and a writer.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element type, ``NN`` the
number of dimensions), ``NN`` big-endian uint32 sizes, then the elements in C order, big-endian.
Files may be gzip-compressed; the reader tells by the gzip magic bytes, not by the file name.
Every inconsistency (bad magic, unknown type, a size that disagrees with the data) is an
:class:`IdxFormatError` naming the file, so a damaged download is caught before training.

:class:`IdxFormat` is the :class:`~approxsim.data.base.DatasetFormat` of the MNIST family: a
folder holding the four IDX files (gzip-compressed or not, under either spelling mirrors use).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from approxsim._io import atomic_write_bytes
from approxsim.data.base import DatasetError, DatasetFormat, DatasetNotFoundError, ImageDataset
from approxsim.errors import ApproxsimError

__all__ = [
    "IdxFormatError",
    "IdxFormat",
    "MNIST_FILES",
    "read_idx",
    "write_idx",
    "write_banded_mnist",
    "IDX_DTYPES",
]

#: IDX type codes and the big-endian numpy types they hold.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ApproxsimError, ValueError):
    """An IDX file is malformed (bad magic, unknown type, sizes disagreeing with the data)."""


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(
                f"{path}: the gzip stream is damaged ({exc}); download the file again"
            ) from None
    return raw


def read_idx(
    path: str | os.PathLike[str],
    *,
    ndim: int | None = None,
    dtype: np.dtype | str | None = None,
) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian numpy array.

    Args:
        path: The file.
        ndim: Required number of dimensions (3 for images, 1 for labels); ``None``: any.
        dtype: Required element type (e.g. ``"uint8"``); ``None``: any IDX type.

    Returns:
        A writable C-contiguous array in native byte order with the file's shape.

    Raises:
        FileNotFoundError: the file does not exist.
        IdxFormatError: the magic number, type, dimensions or size are wrong.
    """
    p = Path(path)
    raw = _read_bytes(p)
    if len(raw) < 4:
        raise IdxFormatError(f"{p}: {len(raw)} bytes is too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError(
            f"{p}: bad magic number 0x{raw[:4].hex()} (an IDX file starts with two zero bytes); "
            "this is not an IDX file or it is damaged"
        )
    code, nd = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IdxFormatError(f"{p}: unknown IDX element type 0x{code:02X} (known: {known})")
    if nd == 0:
        raise IdxFormatError(f"{p}: the IDX header declares 0 dimensions")
    if ndim is not None and nd != ndim:
        raise IdxFormatError(f"{p}: expected {ndim} dimension(s), the header declares {nd}")
    file_dtype = IDX_DTYPES[code]
    if dtype is not None and file_dtype.newbyteorder("=") != np.dtype(dtype):
        raise IdxFormatError(
            f"{p}: expected elements of type {np.dtype(dtype)}, the file holds "
            f"{file_dtype.newbyteorder('=')}"
        )
    header = 4 + 4 * nd
    if len(raw) < header:
        raise IdxFormatError(f"{p}: the file ends inside its header ({len(raw)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    expected = math.prod(shape) * file_dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{p}: the file {what}: the header declares shape {shape} ({expected} data bytes) "
            f"but {got} data bytes follow; download the file again"
        )
    arr = np.frombuffer(raw, dtype=file_dtype, offset=header).reshape(shape)
    # A copy: native byte order, writable, and not pinning the decompressed buffer.
    return arr.astype(file_dtype.newbyteorder("="), order="C", copy=True)


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None
) -> Path:
    """Write an array as an IDX file, atomically.

    Args:
        path: Output file; gzip-compressed when it ends in ``.gz`` (unless ``compress`` says).
        array: An array of an IDX type (uint8, int8, int16, int32, float32, float64) with
            1 to 255 dimensions.
        compress: Force gzip on or off; default: by the ``.gz`` suffix.

    Returns:
        The path written.

    Raises:
        IdxFormatError: the array's type or rank cannot be stored in IDX.
    """
    p = Path(path)
    arr = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise IdxFormatError(f"IDX cannot store {arr.dtype}; use one of {sorted(map(str, codes))}")
    if not 1 <= arr.ndim <= 255:
        raise IdxFormatError(f"IDX stores 1 to 255 dimensions, got {arr.ndim}")
    data = (
        bytes([0, 0, code, arr.ndim])
        + np.asarray(arr.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    )
    if compress if compress is not None else p.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(p, data)


def write_banded_mnist(
    root: str | os.PathLike[str], n_train: int, n_test: int, *, seed: int = 0
) -> Path:
    """Write a tiny, easily learnable dataset in Fashion-MNIST's file layout, for smoke tests.

    Images are 28×28 uint8 noise (0–59) with one bright horizontal band (240) whose position
    gives the class: rows ``2c + 4`` to ``2c + 6``, columns 4–23, for class ``c`` (0–9).
    Files: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz`` and their
    ``t10k-`` twins in ``root``.

    Args:
        root: Output directory (created).
        n_train: Training samples.
        n_test: Test samples.
        seed: Seed of the labels and the noise.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    out = Path(root)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 4 : 2 * c + 7, 4:24] = 240
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return out


# ---------------------------------------------------------------------------- format
#: The MNIST family's files per split: ``(images stem, labels stem)``.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _candidates(directory: Path, stem: str) -> list[Path]:
    # The official downloads are "train-images-idx3-ubyte.gz"; some mirrors unpack them or
    # spell them "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    return [directory / f for s in (stem, dotted) for f in (f"{s}.gz", s)]


@dataclass(frozen=True)
class IdxFormat(DatasetFormat):
    """A dataset of grey images and labels in IDX files (MNIST, Fashion-MNIST).

    Attributes:
        files: Split → ``(images stem, labels stem)``; each file may end in ``.gz`` or not.
        image_hw: ``(H, W)`` every image must have.
    """

    files: dict[str, tuple[str, str]]
    image_hw: tuple[int, int]

    def image_shape(self, image_size: int | None) -> tuple[int, int, int]:
        """``(1, H, W)``; IDX datasets have one size."""
        return (1, *self.image_hw)

    def has_files(self, directory: Path) -> bool:
        """Whether ``directory`` holds the training images under any accepted spelling."""
        return any(p.is_file() for p in _candidates(directory, self.files["train"][0]))

    def _find_file(self, directory: Path, stem: str) -> Path:
        for path in _candidates(directory, stem):
            if path.is_file():
                return path
        raise DatasetNotFoundError(
            f"{self.name}: {directory} has no {stem}.gz (nor {stem}); {self.missing_hint}"
        )

    def load(
        self, directory: Path, split: str, *, augment: bool, image_size: int | None
    ) -> ImageDataset:
        """Read a split's image and label files, checking their sizes and labels.

        Args:
            directory: The folder holding the IDX files.
            split: ``"train"`` or ``"test"``.
            augment: Unused (the MNIST family has no augmentation).
            image_size: Unused (one size).

        Returns:
            An :class:`~approxsim.data.base.ImageDataset` of uint8 ``(N, 1, H, W)`` images.

        Raises:
            DatasetNotFoundError: a file is missing.
            DatasetError: a malformed file, mismatched counts or labels out of range.
        """
        img_stem, lbl_stem = self.files[split]
        img_path = self._find_file(directory, img_stem)
        lbl_path = self._find_file(directory, lbl_stem)
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
