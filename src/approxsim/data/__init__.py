"""Datasets for training and evaluation: MNIST family, CIFAR, ImageFolder trees, a registry.

* :func:`load_dataset` / :func:`list_datasets` — named datasets, loaded from standard files:
  ``fashion-mnist`` and ``mnist`` (IDX), ``cifar10`` and ``cifar100`` (python batches),
  ``imagenet`` and ``imagefolder`` (``train/CLASS/IMAGE`` trees).
* :class:`DatasetFormat` — the base class every file format implements
  (:class:`IdxFormat`, :class:`CifarFormat`, :class:`ImageFolderFormat`);
  :func:`register_dataset` adds one under a new name.
* :class:`ImageDataset` — uint8 images in memory, normalized float32 batches on the fly.
* :class:`ImageFolderDataset` — the same interface over image files decoded per batch.
* :class:`RandomCropFlip` / :class:`RandomResizedCropFlip` — the CIFAR and ImageNet training
  augmentations, drawn from the caller's generator.
* :func:`read_idx` / :func:`write_idx`, :func:`read_cifar_batch` — the file formats, checked
  on reading; :func:`write_banded_mnist` — a tiny synthetic set in Fashion-MNIST's layout,
  for smoke tests.
"""

from approxsim.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    Augmentation,
    DatasetError,
    DatasetFormat,
    DatasetNotFoundError,
    ImageDataset,
    UnknownDatasetError,
)
from approxsim.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    CifarFormat,
    CifarFormatError,
    read_cifar_batch,
    read_cifar_meta,
)
from approxsim.data.folder import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    ImageFolderFormat,
    find_classes,
    scan_image_folder,
)
from approxsim.data.idx import IdxFormat, IdxFormatError, read_idx, write_banded_mnist, write_idx
from approxsim.data.registry import (
    dataset_info,
    get_dataset_format,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
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
    "DatasetFormat",
    "IdxFormat",
    "CifarFormat",
    "ImageFolderFormat",
    "RandomCropFlip",
    "RandomResizedCropFlip",
    "center_crop_box",
    "dataset_info",
    "find_classes",
    "get_dataset_format",
    "list_datasets",
    "load_dataset",
    "read_cifar_batch",
    "read_cifar_meta",
    "read_idx",
    "register_dataset",
    "scan_image_folder",
    "unregister_dataset",
    "write_idx",
    "write_banded_mnist",
]
