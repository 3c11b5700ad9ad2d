"""``approxsim.data.registry`` and ``approxsim.data.base``: the format base class, registering a
dataset of one's own, and the old ``approxsim.data.datasets`` import path."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest

import approxsim.data as data
from approxsim.data import (
    CifarFormat,
    DatasetError,
    DatasetFormat,
    IdxFormat,
    ImageFolderFormat,
    UnknownDatasetError,
    get_dataset_format,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
    write_idx,
)
from approxsim.data import registry as registry_mod


def test_every_registered_dataset_is_a_format_implementation() -> None:
    kinds = {type(get_dataset_format(name)) for name in list_datasets()}
    assert kinds == {IdxFormat, CifarFormat, ImageFolderFormat}
    for kind in kinds:
        assert issubclass(kind, DatasetFormat) and not inspect.isabstract(kind)
    assert inspect.isabstract(DatasetFormat)
    with pytest.raises(TypeError):
        DatasetFormat(  # type: ignore[abstract]
            "x", "x", (), 0.5, 0.5, default_dirs=lambda: [], missing_hint=""
        )


def test_unknown_format_name() -> None:
    with pytest.raises(UnknownDatasetError, match="available: .*mnist"):
        get_dataset_format("nope")


def test_register_a_dataset_of_ones_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (3, 8, 8), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 1], dtype=np.uint8))
    mine = dataclasses.replace(
        get_dataset_format("mnist"),
        name="tiny8",
        description="8x8 test images",
        image_hw=(8, 8),
        classes=("a", "b"),
        default_dirs=lambda: [tmp_path],
    )
    assert register_dataset(mine) is mine
    assert "tiny8" in list_datasets("tiny*")
    ds = load_dataset("tiny8")
    assert len(ds) == 3 and ds.sample_shape == (1, 8, 8) and ds.classes == ("a", "b")
    assert data.dataset_info("tiny8")["image_shape"] == [1, 8, 8]
    with pytest.raises(DatasetError, match="registered already"):
        register_dataset(mine)
    register_dataset(dataclasses.replace(mine, description="again"), overwrite=True)
    assert data.dataset_info("tiny8")["description"] == "again"
    with pytest.raises(DatasetError, match="DatasetFormat"):
        register_dataset("tiny8")  # type: ignore[arg-type]
    unregister_dataset("tiny8")
    assert "tiny8" not in list_datasets()
    with pytest.raises(UnknownDatasetError):
        load_dataset("tiny8")


def test_old_module_path_keeps_the_public_names() -> None:
    from approxsim.data import datasets

    for name in datasets.__all__:
        assert getattr(datasets, name) is getattr(data.base, name, None) or getattr(
            datasets, name
        ) is getattr(registry_mod, name)
    assert datasets.ImageDataset is data.ImageDataset
    assert datasets.load_dataset is data.load_dataset
