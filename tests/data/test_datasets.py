"""``approxsim.data``: the dataset registry and :class:`ImageDataset` on tiny IDX folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from approxsim.data import (
    DatasetError,
    DatasetNotFoundError,
    ImageDataset,
    UnknownDatasetError,
    dataset_info,
    list_datasets,
    load_dataset,
    write_idx,
)
from approxsim.data import registry as registry_mod

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _write_split(
    root: Path,
    prefix: str,
    n: int,
    *,
    seed: int = 0,
    gz: bool = True,
    n_labels: int | None = None,
    hw: tuple[int, int] = (28, 28),
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
    labels = rng.integers(0, 10, n_labels if n_labels is not None else n, dtype=np.uint8)
    sfx = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", labels)
    return images, labels


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    _write_split(tmp_path, "train", 12, seed=1)
    _write_split(tmp_path, "t10k", 5, seed=2, gz=False)
    return tmp_path


def test_list_datasets() -> None:
    assert {"fashion-mnist", "mnist"} <= set(list_datasets())
    assert list_datasets("fash*") == ["fashion-mnist"]
    info = dataset_info("fashion-mnist")
    assert info["classes"][0] == "T-shirt/top" and info["image_shape"] == [1, 28, 28]


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(UnknownDatasetError, match="available: .*fashion-mnist, .*mnist"):
        load_dataset("cifar-1000")


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_loads_both_splits(tiny_root: Path, name: str) -> None:
    train = load_dataset(name, root=tiny_root)
    test = load_dataset(name, root=tiny_root, split="test")
    assert len(train) == 12 and len(test) == 5
    assert train.images.dtype == torch.uint8 and train.images.shape == (12, 1, 28, 28)
    assert train.labels.dtype == torch.int64
    assert train.root == tiny_root and train.name == name and test.split == "test"
    assert train.num_classes == 10 and train.sample_shape == (1, 28, 28)


def test_batches_are_normalized_float32(tiny_root: Path) -> None:
    ds = load_dataset("fashion-mnist", root=tiny_root)
    images, labels = _write_split(tiny_root / "again", "train", 12, seed=1)
    x, y = ds.batch([3, 0])
    assert x.dtype == torch.float32 and x.shape == (2, 1, 28, 28)
    want = (torch.from_numpy(images[[3, 0]]).float() / 255 - ds.mean) / ds.std
    torch.testing.assert_close(x[:, 0], want, rtol=0, atol=1e-6)
    assert y.tolist() == labels[[3, 0]].tolist()
    sample, label = ds[3]
    assert sample.shape == (1, 28, 28) and label == int(labels[3])
    # A DataLoader can wrap it like a TensorDataset.
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 1, 28, 28) and yb.shape == (4,)


def test_batches_order(tiny_root: Path) -> None:
    ds = load_dataset("fashion-mnist", root=tiny_root)
    sizes = [len(y) for _, y in ds.batches(5)]
    assert sizes == [5, 5, 2]
    assert [len(y) for _, y in ds.batches(5, drop_last=True)] == [5, 5]
    order1 = torch.cat(
        [y for _, y in ds.batches(5, shuffle=True, generator=torch.Generator().manual_seed(3))]
    )
    order2 = torch.cat(
        [y for _, y in ds.batches(5, shuffle=True, generator=torch.Generator().manual_seed(3))]
    )
    assert torch.equal(order1, order2)
    assert sorted(order1.tolist()) == sorted(ds.labels.tolist())
    with pytest.raises(DatasetError, match="batch_size"):
        next(ds.batches(0))


def test_subset(tiny_root: Path) -> None:
    ds = load_dataset("fashion-mnist", root=tiny_root)
    sub = ds.subset(4)
    assert len(sub) == 4 and torch.equal(sub.images, ds.images[:4])
    assert ds.subset(None) is ds and ds.subset(100) is ds


def test_root_may_be_the_parent_folder(tmp_path: Path) -> None:
    _write_split(tmp_path / "fashion-mnist", "train", 3)
    assert len(load_dataset("fashion-mnist", root=tmp_path)) == 3


def test_dotted_file_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx(
        tmp_path / "t10k-images.idx3-ubyte", rng.integers(0, 255, (2, 28, 28), dtype=np.uint8)
    )
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", np.array([1, 2], dtype=np.uint8))
    assert load_dataset("mnist", root=tmp_path, split="test").labels.tolist() == [1, 2]


def test_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_split(tmp_path / "mnist", "train", 4)
    monkeypatch.setenv("APPROXSIM_DATA", str(tmp_path))
    assert len(load_dataset("mnist")) == 4


def test_missing_file_names_folder_and_file(tmp_path: Path) -> None:
    _write_split(tmp_path, "train", 3)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "train-labels-idx1-ubyte" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("fashion-mnist", root=tmp_path / "nope")


def test_fashion_mnist_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = registry_mod._REGISTRY["fashion-mnist"]
    monkeypatch.setitem(
        registry_mod._REGISTRY,
        "fashion-mnist",
        dataclasses.replace(spec, default_dirs=lambda: [tmp_path / "absent"]),
    )
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist")
    assert "install it with apt-get install dataset-fashion-mnist or pass --data-dir" in str(
        info.value
    )
    assert str(tmp_path / "absent") in str(info.value)


def test_mnist_without_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPROXSIM_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="does not ship MNIST"):
        load_dataset("mnist")


def test_count_mismatch(tmp_path: Path) -> None:
    _write_split(tmp_path, "train", 4, n_labels=3)
    with pytest.raises(DatasetError, match="4 images but .*3 labels") as info:
        load_dataset("mnist", root=tmp_path)
    assert str(tmp_path) in str(info.value)


def test_wrong_image_size(tmp_path: Path) -> None:
    _write_split(tmp_path, "train", 2, hw=(27, 28))
    with pytest.raises(DatasetError, match="27x28 images, expected 28x28"):
        load_dataset("mnist", root=tmp_path)


def test_malformed_file_names_folder(tmp_path: Path) -> None:
    _write_split(tmp_path, "train", 2, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="truncated") as info:
        load_dataset("mnist", root=tmp_path)
    assert str(tmp_path) in str(info.value) and p.name in str(info.value)


def test_label_out_of_range(tmp_path: Path) -> None:
    _write_split(tmp_path, "train", 2)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([3, 10], dtype=np.uint8))
    with pytest.raises(DatasetError, match="label 10"):
        load_dataset("mnist", root=tmp_path)


def test_bad_split(tiny_root: Path) -> None:
    with pytest.raises(DatasetError, match="split"):
        load_dataset("mnist", root=tiny_root, split="val")


def test_image_dataset_validates() -> None:
    with pytest.raises(DatasetError, match="uint8"):
        ImageDataset(torch.zeros(2, 28, 28), torch.zeros(2), mean=0, std=1, classes="ab")
    with pytest.raises(DatasetError, match="labels must lie"):
        ImageDataset(
            torch.zeros(2, 28, 28, dtype=torch.uint8),
            torch.tensor([0, 2]),
            mean=0,
            std=1,
            classes=("a", "b"),
        )


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_split() -> None:
    ds = load_dataset("fashion-mnist", split="test")
    assert len(ds) == 10_000 and ds.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
