"""Datasets for training and evaluation: IDX files (MNIST, Fashion-MNIST) and a registry.

* :func:`load_dataset` / :func:`list_datasets` — named datasets, loaded from standard files.
* :class:`ImageDataset` — uint8 images in memory, normalized float32 batches on the fly.
* :func:`read_idx` / :func:`write_idx` — the IDX format, checked on reading.
"""

from approxsim.data.datasets import (
    SPLITS,
    DatasetError,
    DatasetNotFoundError,
    ImageDataset,
    UnknownDatasetError,
    dataset_info,
    list_datasets,
    load_dataset,
)
from approxsim.data.idx import IdxFormatError, read_idx, write_idx

__all__ = [
    "SPLITS",
    "DatasetError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "IdxFormatError",
    "ImageDataset",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "write_idx",
]
