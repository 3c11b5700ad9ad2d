"""``approxsim.data.idx``: the IDX reader on tiny files written byte by byte, and the writer."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from approxsim.data import IdxFormatError, read_idx, write_idx


def _idx_bytes(code: int, shape: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


def _images(n: int = 3, h: int = 4, w: int = 5) -> np.ndarray:
    return (np.arange(n * h * w) % 256).astype(np.uint8).reshape(n, h, w)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_reads_uint8_images(tmp_path: Path, compressed: bool) -> None:
    imgs = _images()
    raw = _idx_bytes(0x08, imgs.shape, imgs.tobytes())
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    got = read_idx(path, ndim=3, dtype="uint8")
    assert got.dtype == np.uint8 and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, imgs)
    assert got.flags.writeable and got.flags.c_contiguous


def test_reads_big_endian_types(tmp_path: Path) -> None:
    vals = np.array([[1, -2, 300], [-40000 // 2, 7, 0]], dtype=">i4")
    path = tmp_path / "ints.idx"
    path.write_bytes(_idx_bytes(0x0C, vals.shape, vals.tobytes()))
    got = read_idx(path)
    assert got.dtype == np.dtype("int32") and got.dtype.isnative
    np.testing.assert_array_equal(got, vals.astype(np.int32))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_roundtrip(tmp_path: Path, dtype: str, suffix: str) -> None:
    arr = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a-idx3{suffix}", arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, arr)


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(IdxFormatError, match="bad magic number") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_unknown_type_code(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(_idx_bytes(0x07, (2,), b"\x00\x01"))
    with pytest.raises(IdxFormatError, match="unknown IDX element type 0x07"):
        read_idx(path)


@pytest.mark.parametrize(
    ("data", "match"), [(b"\x00" * 59, "truncated"), (b"\x00" * 61, "trailing bytes")]
)
def test_wrong_size(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "imgs.gz"
    path.write_bytes(gzip.compress(_idx_bytes(0x08, (3, 4, 5), data)))
    with pytest.raises(IdxFormatError, match=match) as info:
        read_idx(path)
    assert "(3, 4, 5)" in str(info.value) and str(path) in str(info.value)


def test_short_header(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x01")
    with pytest.raises(IdxFormatError, match="inside its header"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(IdxFormatError, match="too short"):
        read_idx(path)


def test_wrong_rank_and_dtype(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="expected 3 dimension"):
        read_idx(path, ndim=3)
    with pytest.raises(IdxFormatError, match="expected elements of type int32"):
        read_idx(path, dtype="int32")


def test_damaged_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(_idx_bytes(0x08, (100,), bytes(range(100))))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IdxFormatError, match="gzip stream is damaged"):
        read_idx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(IdxFormatError, match="cannot store"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
    assert not list(tmp_path.iterdir())
