"""``approxsim.data``: ImageFolder trees (``imagenet`` / ``imagefolder``) decoded with Pillow.

A tiny tree in ``tmp_path``: ``train/{cat,dog}`` with three small PNG/JPEG/BMP images each
(one greyscale, one with an upper-case ``.JPEG`` suffix, a stray text file), ``val/`` with
fewer images; crops are 16x16 (``image_size=16``) to stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from approxsim.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    DatasetNotFoundError,
    ImageFolderDataset,
    RandomResizedCropFlip,
    UnknownDatasetError,
    center_crop_box,
    dataset_info,
    list_datasets,
    load_dataset,
    scan_image_folder,
)

Image = pytest.importorskip("PIL.Image")

SIZE = 16
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _solid(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    t = root / "train"
    _save(t / "cat" / "a.png", _solid(12, 20, (200, 100, 50)))
    _save(t / "cat" / "b.jpg", _noise(24, 18, 1))
    _save(t / "cat" / "c.png", np.full((14, 10), 90, dtype=np.uint8))  # greyscale
    _save(t / "dog" / "d.png", _noise(20, 30, 2))
    _save(t / "dog" / "e.JPEG", _noise(17, 17, 3))
    _save(t / "dog" / "sub" / "f.bmp", _noise(9, 11, 4))
    (t / "dog" / "notes.txt").write_text("not an image")
    _save(root / "val" / "cat" / "g.png", _noise(16, 16, 5))
    _save(root / "val" / "dog" / "h.png", _noise(18, 22, 6))
    _save(root / "val" / "dog" / "i.jpeg", _noise(19, 23, 7))
    return root


def _load(root: Path, split: str = "train", **kw: object) -> ImageFolderDataset:
    ds = load_dataset("imagefolder", root=root, split=split, image_size=SIZE, **kw)  # type: ignore[arg-type]
    assert isinstance(ds, ImageFolderDataset)
    return ds


# ---------------------------------------------------------------------------- registry
def test_registry_lists_folders() -> None:
    assert {"imagenet", "imagefolder"} <= set(list_datasets())
    info = dataset_info("imagenet")
    assert info["image_shape"] == [3, 224, 224] and info["num_classes"] == 1000
    assert info["mean"] == list(IMAGENET_MEAN) and info["std"] == list(IMAGENET_STD)
    assert dataset_info("imagefolder")["num_classes"] is None
    with pytest.raises(UnknownDatasetError, match="imagefolder, imagenet, mnist"):
        load_dataset("image-net")


# ---------------------------------------------------------------------------- loading
def test_loads_tree(tree: Path) -> None:
    ds = _load(tree)
    assert ds.classes == ("cat", "dog") and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and len(ds) == 6
    assert [p.name for p in ds.files] == ["a.png", "b.jpg", "c.png", "d.png", "e.JPEG", "f.bmp"]
    assert ds.files[5] == tree / "train" / "dog" / "sub" / "f.bmp"
    assert ds.root == tree and ds.directory == tree / "train" and ds.split == "train"
    assert ds.sample_shape == (3, SIZE, SIZE) and ds.augments
    x, y = ds.batch(torch.arange(6))
    assert x.dtype == torch.float32 and x.shape == (6, 3, SIZE, SIZE)
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    sample, label = ds[4]
    assert sample.shape == (3, SIZE, SIZE) and label == 1
    assert "ImageFolderDataset" in repr(ds) and "augmented" in repr(ds)
    with pytest.raises(DatasetError, match="no in-memory image tensor"):
        ds.tensors  # noqa: B018


def test_default_size_and_roots(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_dataset("imagefolder", root=tree, split="test")
    assert ds.sample_shape == (3, 224, 224) and not ds.augments
    assert ds.batch([0])[0].shape == (1, 3, 224, 224)
    parent = tree.parent / "data"
    (parent).mkdir()
    tree.rename(parent / "imagefolder")
    assert len(load_dataset("imagefolder", root=parent)) == 6  # a folder holding <name>/
    monkeypatch.setenv("APPROXSIM_DATA", str(parent))
    assert load_dataset("imagefolder").root == parent / "imagefolder"


def test_test_split_is_val_with_training_labels(tree: Path) -> None:
    ds = _load(tree, "test")
    assert ds.directory == tree / "val" and ds.labels.tolist() == [0, 1, 1]
    # A val/ that lacks a class keeps the training split's numbering.
    for f in (tree / "val" / "cat").iterdir():
        f.unlink()
    (tree / "val" / "cat").rmdir()
    ds = _load(tree, "test")
    assert ds.classes == ("cat", "dog") and ds.labels.tolist() == [1, 1]
    # test/ stands in for a missing val/.
    (tree / "val").rename(tree / "test")
    assert _load(tree, "test").directory == tree / "test"


def test_eval_transform_normalizes_and_converts_to_rgb(tree: Path) -> None:
    ds = _load(tree, augment=False)
    x, _ = ds.batch([0, 2])
    solid = torch.tensor([200, 100, 50], dtype=torch.float32).view(3, 1, 1)
    torch.testing.assert_close(x[0], ((solid / 255 - MEAN) / STD).expand(3, SIZE, SIZE))
    grey = torch.full((3, 1, 1), 90.0)
    torch.testing.assert_close(x[1], ((grey / 255 - MEAN) / STD).expand(3, SIZE, SIZE))


@pytest.mark.parametrize("wide", [True, False])
def test_center_crop_keeps_the_middle(tmp_path: Path, wide: bool) -> None:
    # Red | blue halves along the long side; the centre crop keeps both, red first.
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, :20, 0] = 255
    img[:, 20:, 2] = 255
    if not wide:
        img = img.transpose(1, 0, 2).copy()
    _save(tmp_path / "train" / "a" / "x.png", img)
    ds = _load(tmp_path, augment=False)
    pixels = ds._pixels(torch.tensor([0]), False, None)[0]
    first = pixels[:, :, 0] if wide else pixels[:, 0, :]
    last = pixels[:, :, -1] if wide else pixels[:, -1, :]
    assert (first[0] == 255).all() and (first[2] == 0).all()
    assert (last[2] == 255).all() and (last[0] == 0).all()
    # The crop is the centre: 16/18 of the shorter side, long side cut symmetrically.
    left, top, right, bottom = center_crop_box(500, 375, 224, 256)
    assert right - left == pytest.approx(224 * 375 / 256) == bottom - top
    assert left == pytest.approx(500 - right) and top == pytest.approx(375 - bottom)


def test_train_augmentation_is_seeded_by_the_generator(tree: Path) -> None:
    ds = _load(tree)

    def epoch(seed: int, data: ImageFolderDataset = ds) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [
            torch.cat([x.flatten(), y.float()])
            for x, y in data.batches(4, shuffle=True, generator=g)
        ]

    a, b, c = epoch(3), epoch(3), epoch(4)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    # Threads decode in any order; the random numbers are drawn before, so one thread agrees.
    _, files, labels = scan_image_folder(tree / "train")
    serial = ImageFolderDataset(
        tree / "train",
        files,
        torch.tensor(labels),
        classes=ds.classes,
        image_size=SIZE,
        train_transform=RandomResizedCropFlip(),
        num_workers=1,
    )
    assert all(torch.equal(p, q) for p, q in zip(a, epoch(3, serial), strict=True))
    # Evaluation passes and augment=False loads use the resize + centre crop.
    plain = _load(tree, augment=False)
    assert not plain.augments
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(len(ds), generator=g)
    x, _ = next(plain.batches(4, shuffle=True, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(x, ds.batch(order[:4])[0], rtol=0, atol=0)
    torch.testing.assert_close(next(ds.batches(6))[0], ds.batch(torch.arange(6))[0])


def test_random_resized_crop_boxes() -> None:
    t = RandomResizedCropFlip()
    assert t.draws == 41
    u = t.sample(200, torch.Generator().manual_seed(0)).tolist()
    flips = 0
    for k, row in enumerate(u):
        w, h = 7 + k % 50, 5 + (k * 7) % 60
        (left, top, right, bottom), flip = t.box(w, h, row)
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        flips += flip
    assert 60 < flips < 140
    # No attempt can fit: the largest centred crop with an allowed ratio.
    tall = RandomResizedCropFlip(scale=(1.0, 1.0), ratio=(2.0, 3.0), flip=False)
    assert tall.box(40, 40, [0.5] * tall.draws) == ((0, 10, 40, 30), False)
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCropFlip(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCropFlip(ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="attempts"):
        RandomResizedCropFlip(attempts=0)


def test_subset_spreads_over_classes(tree: Path) -> None:
    ds = _load(tree)
    sub = ds.subset(2)
    assert isinstance(sub, ImageFolderDataset) and sub.labels.tolist() == [0, 1]
    assert [p.name for p in sub.files] == ["a.png", "d.png"] and sub.augments
    assert ds.subset(None) is ds and ds.subset(6) is ds
    with pytest.raises(DatasetError, match="max_samples"):
        ds.subset(0)


# ---------------------------------------------------------------------------- errors
def test_empty_class_folder_is_named(tree: Path) -> None:
    (tree / "train" / "eel").mkdir()
    (tree / "train" / "eel" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="holds no images") as info:
        _load(tree)
    assert str(tree / "train" / "eel") in str(info.value)


def test_val_class_missing_from_train(tree: Path) -> None:
    _save(tree / "val" / "eel" / "z.png", _noise(8, 8, 0))
    with pytest.raises(DatasetError, match="class folder.*the training split lacks.*eel"):
        _load(tree, "test")


def test_no_class_folders(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "loose.png", _noise(8, 8, 0))
    with pytest.raises(DatasetError, match="no class folders \\(its images lie directly in it\\)"):
        _load(tmp_path)
    (tmp_path / "train" / "loose.png").unlink()
    with pytest.raises(DatasetError, match=f"{tmp_path / 'train'} has no class folders"):
        _load(tmp_path)


def test_missing_split_folders(tmp_path: Path, tree: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="has no train/ folder") as info:
        _load(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value) and "--data-dir" in str(info.value)
    for f in sorted((tree / "val").rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    (tree / "val").rmdir()
    with pytest.raises(DatasetNotFoundError, match=r"no val/ folder \(nor test/\)"):
        _load(tree, "test")


def test_unreadable_image_is_named(tree: Path) -> None:
    bad = tree / "train" / "dog" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a JPEG")
    ds = _load(tree)  # listing does not decode
    with pytest.raises(DatasetError, match="cannot read the image") as info:
        ds.batch(torch.arange(len(ds)))
    assert str(bad) in str(info.value)
    truncated = tree / "train" / "cat" / "b.jpg"
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(DatasetError, match="b.jpg"):
        ds.batch([1])


def test_imagenet_needs_1000_classes(tree: Path) -> None:
    with pytest.raises(DatasetError, match="2 class folders, imagenet has 1000.*'imagefolder'"):
        load_dataset("imagenet", root=tree, image_size=SIZE)


@pytest.mark.parametrize("size", [0, -3, True, 2.5])
def test_bad_image_size(tree: Path, size: object) -> None:
    with pytest.raises(DatasetError, match="image_size must be a positive integer"):
        load_dataset("imagefolder", root=tree, image_size=size)  # type: ignore[arg-type]
