"""Old import path of the dataset API, kept so ``approxsim.data.datasets.X`` keeps working.

The code now lives in one module per concern: :mod:`approxsim.data.base` (errors,
:class:`ImageDataset`, the :class:`~approxsim.data.base.DatasetFormat` base class),
:mod:`approxsim.data.registry` (names, :func:`load_dataset`, :func:`dataset_info`) and one
module per file format (:mod:`~approxsim.data.idx`, :mod:`~approxsim.data.cifar`,
:mod:`~approxsim.data.folder`). Import from :mod:`approxsim.data` in new code.
"""

from __future__ import annotations

from approxsim.data.base import (
    DATA_ENV,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    Augmentation,
    DatasetError,
    DatasetNotFoundError,
    ImageDataset,
    UnknownDatasetError,
)
from approxsim.data.registry import dataset_info, list_datasets, load_dataset

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "ImageDataset",
    "Augmentation",
    "SPLITS",
    "DATA_ENV",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "list_datasets",
    "load_dataset",
    "dataset_info",
]
