"""The IDX file format of MNIST and Fashion-MNIST: a checked reader and a writer.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element type, ``NN`` the
number of dimensions), ``NN`` big-endian uint32 sizes, then the elements in C order, big-endian.
Files may be gzip-compressed; the reader tells by the gzip magic bytes, not by the file name.
Every inconsistency (bad magic, unknown type, a size that disagrees with the data) is an
:class:`IdxFormatError` naming the file, so a damaged download is caught before training.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from approxsim.errors import ApproxsimError

__all__ = ["IdxFormatError", "read_idx", "write_idx", "write_banded_mnist", "IDX_DTYPES"]

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
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


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
