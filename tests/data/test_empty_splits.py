"""Empty data is refused where it is loaded (issue 14): a split without images, in any format,
and files of zero bytes, each a one-line :class:`DatasetError` naming the folder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from approxsim.data import (
    DatasetError,
    load_dataset,
    write_banded_mnist,
    write_idx,
)


@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_split_without_images(tmp_path: Path, split: str) -> None:
    write_banded_mnist(tmp_path, 0 if split == "train" else 8, 0 if split == "test" else 8)
    with pytest.raises(DatasetError, match=f"the {split} split in {tmp_path} holds no images"):
        load_dataset("fashion-mnist", tmp_path, split)
    other = "test" if split == "train" else "train"
    assert len(load_dataset("fashion-mnist", tmp_path, other)) == 8


def test_idx_files_of_zero_bytes(tmp_path: Path) -> None:
    write_banded_mnist(tmp_path, 8, 8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: 0 bytes is too short"):
        load_dataset("fashion-mnist", tmp_path, "train")


def test_idx_empty_labels_beside_images(tmp_path: Path) -> None:
    write_banded_mnist(tmp_path, 8, 8)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(0, dtype=np.uint8))
    with pytest.raises(DatasetError, match="8 images but .* 0 labels"):
        load_dataset("fashion-mnist", tmp_path, "test")


def _cifar10(folder: Path, n_test: int) -> None:
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", n_test)]:
        obj = {
            b"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        (folder / name).write_bytes(pickle.dumps(obj, protocol=4))


def test_cifar_split_without_images(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _cifar10(folder, 0)
    assert len(load_dataset("cifar10", folder, "train")) == 10
    with pytest.raises(DatasetError, match="the test split in .* holds no images"):
        load_dataset("cifar10", folder, "test")
    (folder / "test_batch").write_bytes(b"")
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", folder, "test")
