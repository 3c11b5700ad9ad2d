"""Datasets for training and evaluation: MNIST family, CIFAR, ImageFolder trees, a registry.

* :func:`load_dataset` / :func:`list_datasets` — named datasets, loaded from standard files:
  ``fashion-mnist`` and ``mnist`` (IDX), ``cifar10`` and ``cifar100`` (python batches),
  ``imagenet`` and ``imagefolder`` (``train/CLASS/IMAGE`` trees).
* :class:`ImageDataset` — uint8 images in memory, normalized float32 batches on the fly.
* :class:`ImageFolderDataset` — the same interface over image files decoded per batch.
* :class:`RandomCropFlip` / :class:`RandomResizedCropFlip` — the CIFAR and ImageNet training
  augmentations, drawn from the caller's generator.
* :func:`read_idx` / :func:`write_idx`, :func:`read_cifar_batch` — the file formats, checked
  on reading; :func:`write_banded_mnist` — a tiny synthetic set in Fashion-MNIST's layout,
  for smoke tests.
"""

from approxsim.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    CifarFormatError,
    read_cifar_batch,
    read_cifar_meta,
)
from approxsim.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    Augmentation,
    DatasetError,
    DatasetNotFoundError,
    ImageDataset,
    UnknownDatasetError,
    dataset_info,
    list_datasets,
    load_dataset,
)
from approxsim.data.folder import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    find_classes,
    scan_image_folder,
)
from approxsim.data.idx import IdxFormatError, read_idx, write_banded_mnist, write_idx
from approxsim.data.transforms import RandomCropFlip, RandomResizedCropFlip, center_crop_box

__all__ = [
    "SPLITS",
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "Augmentation",
    "DatasetError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "IdxFormatError",
    "CifarFormatError",
    "ImageDataset",
    "ImageFolderDataset",
    "RandomCropFlip",
    "RandomResizedCropFlip",
    "center_crop_box",
    "dataset_info",
    "find_classes",
    "list_datasets",
    "load_dataset",
    "read_cifar_batch",
    "read_cifar_meta",
    "read_idx",
    "scan_image_folder",
    "write_idx",
    "write_banded_mnist",
]
