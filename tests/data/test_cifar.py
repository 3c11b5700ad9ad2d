"""``approxsim.data``: CIFAR-10/100 python batches, per-channel normalization, crop+flip.

Every test writes tiny files in the official "python version" format (a pickled dict with
bytes keys, ``b"data"`` uint8 ``(N, 3072)``) into ``tmp_path``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from approxsim.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DatasetError,
    DatasetNotFoundError,
    RandomCropFlip,
    UnknownDatasetError,
    dataset_info,
    list_datasets,
    load_dataset,
    read_cifar_batch,
)

C10_MEAN = (0.4914, 0.4822, 0.4465)
C10_STD = (0.2470, 0.2435, 0.2616)
N_PER_BATCH = 4  # five training batches: 20 images
N_TEST = 20


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _write_batch(
    path: Path,
    images: np.ndarray,
    labels: Any,
    *,
    label_key: bytes = b"labels",
    protocol: int = 2,
    str_keys: bool = False,
    **extra: Any,
) -> None:
    obj: dict[Any, Any] = {
        b"batch_label": b"a tiny batch",
        label_key: [int(v) for v in labels] if not isinstance(labels, str) else labels,
        b"data": images.reshape(len(images), -1) if isinstance(images, np.ndarray) else images,
        b"filenames": [b"img_%d.png" % i for i in range(len(images))],
        **{k.encode(): v for k, v in extra.items()},
    }
    if str_keys:
        obj = {k.decode(): v for k, v in obj.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _write_cifar10(folder: Path, *, meta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py with 5 x 4 training images and 20 test images; returns train."""
    rng = np.random.default_rng(0)
    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = _images(N_PER_BATCH, i), rng.integers(0, 10, N_PER_BATCH)
        _write_batch(folder / f"data_batch_{i}", x, y)
        train_x.append(x)
        train_y.append(y)
    _write_batch(folder / "test_batch", _images(N_TEST, 9), np.arange(N_TEST) % 10)
    if meta:
        names = [n.encode() for n in CIFAR10_CLASSES]
        (folder / "batches.meta").write_bytes(
            pickle.dumps(
                {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072},
                protocol=2,
            )
        )
    return np.concatenate(train_x), np.concatenate(train_y)


@pytest.fixture
def c10(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path / "cifar-10-batches-py"
    x, y = _write_cifar10(folder)
    return folder, x, y


def _is_crop_or_flip(aug: torch.Tensor, original: torch.Tensor, pad: int = 4) -> bool:
    padded = torch.nn.functional.pad(original, (pad, pad, pad, pad))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + 32, dx : dx + 32]
            if torch.equal(aug, crop) or torch.equal(aug, crop.flip(-1)):
                return True
    return False


# ---------------------------------------------------------------------------- registry
def test_registry_lists_cifar() -> None:
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    info = dataset_info("cifar10")
    assert info["image_shape"] == [3, 32, 32] and info["num_classes"] == 10
    assert info["classes"] == list(CIFAR10_CLASSES) and info["augmentation"] is True
    assert info["mean"] == list(C10_MEAN) and info["std"] == list(C10_STD)
    info100 = dataset_info("cifar100")
    assert info100["num_classes"] == 100 and len(info100["mean"]) == 3
    # The official fine-label order is alphabetical.
    assert len(set(CIFAR100_CLASSES)) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)


def test_unknown_name_lists_cifar() -> None:
    with pytest.raises(UnknownDatasetError, match="cifar10, cifar100, fashion-mnist"):
        load_dataset("cifar-10")


# ---------------------------------------------------------------------------- loading
@pytest.mark.parametrize("where", ["extracted", "parent", "named-parent", "env", "env-flat"])
def test_cifar10_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    monkeypatch.delenv("APPROXSIM_DATA", raising=False)
    base = {
        "extracted": tmp_path / "cifar-10-batches-py",
        "parent": tmp_path / "cifar-10-batches-py",
        "named-parent": tmp_path / "cifar10" / "cifar-10-batches-py",
        "env": tmp_path / "cifar10" / "cifar-10-batches-py",
        "env-flat": tmp_path / "cifar10",
    }[where]
    _, y = _write_cifar10(base)
    root: Path | None = {
        "extracted": base,
        "parent": tmp_path,
        "named-parent": tmp_path,
        "env": None,
        "env-flat": None,
    }[where]
    if root is None:
        monkeypatch.setenv("APPROXSIM_DATA", str(tmp_path))
    ds = load_dataset("cifar10", root=root)
    assert ds.root == base and len(ds) == 5 * N_PER_BATCH
    assert ds.labels.tolist() == y.tolist()


def test_cifar10_splits(c10: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, x, _ = c10
    train = load_dataset("cifar10", root=folder)
    test = load_dataset("cifar10", root=folder, split="test")
    assert train.images.dtype == torch.uint8 and train.images.shape == (20, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(x))  # batches in order 1..5
    assert train.labels.dtype == torch.int64
    assert len(test) == N_TEST and test.labels.tolist() == [i % 10 for i in range(N_TEST)]
    assert train.sample_shape == (3, 32, 32) and train.num_classes == 10
    assert train.classes == CIFAR10_CLASSES and train.name == "cifar10"
    assert train.augments and not test.augments
    assert not load_dataset("cifar10", root=folder, augment=False).augments
    assert load_dataset("cifar10", root=folder, split="test", augment=True).augments


def test_pixel_layout_and_normalization(c10: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, x, y = c10
    ds = load_dataset("cifar10", root=folder)
    rows = x.reshape(20, 3072)  # what the file holds: R plane, G plane, B plane
    xb, yb = ds.batch([5, 0])
    assert xb.dtype == torch.float32 and xb.shape == (2, 3, 32, 32)
    assert yb.tolist() == [int(y[5]), int(y[0])]
    for b, i in enumerate([5, 0]):
        for c in range(3):
            plane = torch.from_numpy(rows[i, c * 1024 : (c + 1) * 1024].reshape(32, 32))
            want = (plane.float() / 255 - C10_MEAN[c]) / C10_STD[c]
            torch.testing.assert_close(xb[b, c], want, rtol=0, atol=1e-6)
    # Eval passes (no shuffle) and single items are never augmented.
    first, _ = next(ds.batches(2))
    torch.testing.assert_close(first, ds.batch([0, 1])[0], rtol=0, atol=0)
    sample, label = ds[5]
    assert torch.equal(sample, xb[0]) and label == int(y[5])


def test_augmentation_is_seeded_by_the_generator(c10: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, _, _ = c10
    ds = load_dataset("cifar10", root=folder)

    def epoch(seed: int, **kw: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        return list(ds.batches(8, shuffle=True, generator=g, **kw))

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )
    assert not torch.equal(a[0][0], c[0][0])
    # The contract a resumed run relies on: the order first, then each batch's augmentation,
    # all from the one generator.
    g = torch.Generator().manual_seed(7)
    order = torch.randperm(len(ds), generator=g)
    for k, (x, y) in enumerate(a):
        want_x, want_y = ds.batch(order[8 * k : 8 * k + 8], augment=True, generator=g)
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
    # augment=False: the same order, plain images.
    plain = epoch(7, augment=False)
    assert torch.equal(plain[0][0], ds.batch(order[:8])[0])
    assert not torch.equal(plain[0][0], a[0][0])


def test_augmented_images_are_padded_crops_or_flips(
    c10: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    folder, _, _ = c10
    ds = load_dataset("cifar10", root=folder)
    idx = torch.arange(6)
    g = torch.Generator().manual_seed(1)
    pixels = ds._pixels(idx, True, g)
    assert pixels.dtype == torch.uint8 and pixels.shape == (6, 3, 32, 32)
    for i in range(6):
        assert _is_crop_or_flip(pixels[i], ds.images[i])
    x, _ = ds.batch(idx, augment=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x, ds.normalize(pixels), rtol=0, atol=0)


def test_random_crop_flip_unit() -> None:
    imgs = torch.from_numpy(_images(5, 3))
    same = RandomCropFlip(padding=0, flip=False)(imgs, torch.Generator().manual_seed(0))
    assert torch.equal(same, imgs)
    flipped = [
        RandomCropFlip(padding=0)(imgs[:1], torch.Generator().manual_seed(s)) for s in range(20)
    ]
    assert any(torch.equal(f[0], imgs[0].flip(-1)) for f in flipped)
    assert any(torch.equal(f[0], imgs[0]) for f in flipped)
    assert RandomCropFlip()(imgs[:0]).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(padding=-1)
    with pytest.raises(ValueError, match="flip"):
        RandomCropFlip(flip="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        RandomCropFlip()(imgs[0])


def test_subset_keeps_augmentation(c10: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, x, _ = c10
    sub = load_dataset("cifar10", root=folder).subset(6)
    assert len(sub) == 6 and sub.augments and torch.equal(sub.images, torch.from_numpy(x[:6]))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar100_pair(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-100-python"
    x = _images(12, 1)
    fine = (np.arange(12) * 9) % 100
    kw: dict[str, Any] = {"label_key": b"fine_labels", "protocol": protocol}
    _write_batch(folder / "train", x, fine, coarse_labels=[int(v) // 5 for v in fine], **kw)
    _write_batch(folder / "test", _images(3, 2), [99, 0, 50], **kw)
    (folder / "meta").write_bytes(
        pickle.dumps(
            {
                b"fine_label_names": [n.encode() for n in CIFAR100_CLASSES],
                b"coarse_label_names": [b"c%d" % i for i in range(20)],
            },
            protocol=protocol,
        )
    )
    train = load_dataset("cifar100", root=tmp_path)  # the parent of the extracted folder
    test = load_dataset("cifar100", root=folder, split="test")
    assert train.root == folder and train.num_classes == 100 and train.sample_shape == (3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(x))
    assert train.labels.tolist() == fine.tolist() and test.labels.tolist() == [99, 0, 50]
    assert train.classes[99] == "worm" and train.augments and not test.augments
    xb, _ = test.batch([0])
    mean = torch.tensor(dataset_info("cifar100")["mean"]).view(3, 1, 1)
    std = torch.tensor(dataset_info("cifar100")["std"]).view(3, 1, 1)
    torch.testing.assert_close(xb[0], (test.images[0].float() / 255 - mean) / std)


def test_python3_pickles_with_str_keys(tmp_path: Path) -> None:
    _write_batch(tmp_path / "test_batch", _images(2, 0), [1, 2], str_keys=True, protocol=4)
    images, labels = read_cifar_batch(tmp_path / "test_batch")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [1, 2]


_PurePickler: Any = pickle._Pickler  # type: ignore[attr-defined]  # the Python pickler


class _Python2Pickler(_PurePickler):
    """Writes what Python 2's cPickle wrote for CIFAR: every str as a byte string."""

    dispatch = dict(_PurePickler.dispatch)

    def _save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(raw)
        head = (
            pickle.SHORT_BINSTRING + bytes([n])
            if n < 256
            else pickle.BINSTRING + struct.pack("<i", n)
        )
        self.write(head + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def test_python2_pickles_with_numpy1_names(tmp_path: Path) -> None:
    """The original files: protocol 2, Python 2 strings, ``numpy.core.multiarray``."""
    x = _images(3, 4)
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(
        {b"batch_label": b"testing batch 1 of 1", b"labels": [7, 0, 3], b"data": x.reshape(3, -1)}
    )
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    (tmp_path / "test_batch").write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, labels = read_cifar_batch(tmp_path / "test_batch")
    assert np.array_equal(images, x) and labels.tolist() == [7, 0, 3]


# ---------------------------------------------------------------------------- errors
def test_missing_batch_names_folder_and_file(c10: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, _, _ = c10
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=folder)
    msg = str(info.value)
    assert str(folder) in msg and "data_batch_3" in msg and "cifar-10-python.tar.gz" in msg
    assert len(load_dataset("cifar10", root=folder, split="test")) == N_TEST


def test_not_found_without_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("APPROXSIM_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="does not ship CIFAR-100"):
        load_dataset("cifar100")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("cifar10", root=tmp_path / "nope")


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (os.getcwd, ())


def _break(folder: Path, how: str) -> str:
    """Damage ``test_batch`` in one way; return the message the error must contain."""
    path = folder / "test_batch"
    x = _images(4, 0)
    if how == "garbage":
        path.write_bytes(b"this is not a pickle")
        return "not a CIFAR python-version file"
    if how == "not-dict":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
        return "expected a pickled dict"
    if how == "no-labels":
        _write_batch(path, x, [0] * 4, label_key=b"fine_labels")
        return "no b'labels' entry"
    if how == "shape":
        _write_batch(path, x.reshape(4, -1)[:, :3071], [0] * 4)
        return r"shape \(N, 3072\)"
    if how == "dtype":
        _write_batch(path, x.astype(np.float32), [0] * 4)
        return "uint8"
    if how == "count":
        _write_batch(path, x, [0] * 3)
        return "holds 4 images but b'labels' holds 3 labels"
    if how == "range":
        _write_batch(path, x, [0, 1, 10, 2])
        return "label 10"
    if how == "labels-type":
        _write_batch(path, x, "abcd")
        return "list of integers"
    if how == "evil":
        path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
        return "refusing to load it"
    if how == "meta":
        (folder / "batches.meta").write_bytes(
            pickle.dumps({b"label_names": [b"a", b"b", b"c"]}, protocol=2)
        )
        return "batches.meta names 3 classes"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    ["garbage", "not-dict", "no-labels", "shape", "dtype", "count", "range", "labels-type",
     "evil", "meta"],
)  # fmt: skip
def test_malformed_files_name_folder_and_file(
    c10: tuple[Path, np.ndarray, np.ndarray], how: str
) -> None:
    folder, _, _ = c10
    match = _break(folder, how)
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset("cifar10", root=folder, split="test")
    msg = str(info.value)
    assert str(folder) in msg
    assert ("batches.meta" if how == "meta" else "test_batch") in msg


def test_options_that_do_not_apply(c10: tuple[Path, np.ndarray, np.ndarray]) -> None:
    folder, _, _ = c10
    with pytest.raises(DatasetError, match="image_size applies to ImageFolder"):
        load_dataset("cifar10", root=folder, image_size=16)
    with pytest.raises(DatasetError, match="mnist has no training augmentation"):
        load_dataset("mnist", root=folder, augment=True)
    with pytest.raises(DatasetError, match="augment must be"):
        load_dataset("cifar10", root=folder, augment="yes")  # type: ignore[arg-type]
    test = load_dataset("cifar10", root=folder, split="test")
    with pytest.raises(DatasetError, match="no training augmentation"):
        test.batch([0], augment=True)
    with pytest.raises(DatasetError, match="no training augmentation"):
        next(test.batches(2, augment=True))


# ---------------------------------------------------------------------------- training
def test_train_on_cifar_resumes_identically(
    c10: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """``approxsim train --dataset cifar10`` unchanged: augmented epochs replay on resume."""
    from approxsim.models import register_model, unregister_model
    from approxsim.training import TrainConfig, train

    folder, _, _ = c10
    name = "_test_cifar_linear"

    @register_model(name, input_shape=(3, 32, 32))
    def _linear(num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    def config(out: Path, epochs: int, **kw: Any) -> TrainConfig:
        return TrainConfig(
            out,
            model=name,
            dataset="cifar10",
            data_dir=folder,
            multiplier="fp32",
            epochs=epochs,
            batch_size=8,
            lr=0.01,
            progress=False,
            threads=1,
            **kw,
        )

    def metrics(out: Path) -> list[dict[str, Any]]:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        keep = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
        return [{k: json.loads(s)[k] for k in keep} for s in lines]

    try:
        whole = tmp_path / "whole"
        train(config(whole, 2))
        split = tmp_path / "split"
        train(config(split, 1))
        train(config(split, 2, resume=True))
    finally:
        unregister_model(name)
    assert metrics(whole) == metrics(split)
    meta = json.loads((whole / "config.json").read_text())
    assert meta["dataset"]["classes"] == list(CIFAR10_CLASSES)
    assert meta["dataset"]["train_samples"] == 20
