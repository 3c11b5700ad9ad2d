"""The dataset registry: names → :class:`~approxsim.data.base.DatasetFormat`, and loading.

``load_dataset("fashion-mnist")`` reads the IDX files of Debian's ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``) or of ``$APPROXSIM_DATA/fashion-mnist``;
``load_dataset("mnist", root=DIR)`` reads MNIST's IDX files from a directory the user names;
``"cifar10"`` / ``"cifar100"`` read the "python version" batch files of CIFAR; ``"imagenet"``
/ ``"imagefolder"`` read a ``train/CLASS/IMAGE`` + ``val/CLASS/IMAGE`` tree
(:class:`~approxsim.data.folder.ImageFolderDataset`, decoded with Pillow batch by batch).

:func:`register_dataset` adds a dataset of any :class:`~approxsim.data.base.DatasetFormat`
(an IDX folder of your own, say) under a new name; :func:`list_datasets` and
:func:`get_dataset_format` look them up, as timm's model registry does for models.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

from approxsim.data.base import (
    DATA_ENV,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    DatasetError,
    DatasetFormat,
    DatasetNotFoundError,
    ImageDataset,
    UnknownDatasetError,
)
from approxsim.data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, CifarFormat
from approxsim.data.folder import FOLDER_LAYOUT, ImageFolderFormat
from approxsim.data.idx import MNIST_FILES, IdxFormat

__all__ = [
    "register_dataset",
    "unregister_dataset",
    "get_dataset_format",
    "list_datasets",
    "dataset_info",
    "load_dataset",
]


def _env_dirs(name: str) -> list[Path]:
    env = os.environ.get(DATA_ENV)
    return [Path(env).expanduser() / name] if env else []


_BUILT_IN: tuple[DatasetFormat, ...] = (
    IdxFormat(
        name="fashion-mnist",
        description="Fashion-MNIST: 28x28 grey clothing images, 10 classes, 60k/10k (IDX)",
        files=MNIST_FILES,
        image_hw=(28, 28),
        mean=0.2860,
        std=0.3530,
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        default_dirs=lambda: (
            _env_dirs("fashion-mnist") + [Path("/usr/share/datasets/fashion-mnist")]
        ),
        missing_hint="install it with apt-get install dataset-fashion-mnist or pass --data-dir "
        "(root=) naming a folder with its four IDX files",
    ),
    IdxFormat(
        name="mnist",
        description="MNIST: 28x28 grey handwritten digits, 10 classes, 60k/10k (IDX, your folder)",
        files=MNIST_FILES,
        image_hw=(28, 28),
        mean=0.1307,
        std=0.3081,
        classes=tuple(str(d) for d in range(10)),
        default_dirs=lambda: _env_dirs("mnist"),
        missing_hint="approxsim does not ship MNIST: put its four IDX files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        f"t10k-labels-idx1-ubyte.gz) in a folder and pass --data-dir (root=), or in "
        f"${DATA_ENV}/mnist",
    ),
    CifarFormat(
        name="cifar10",
        description="CIFAR-10: 32x32 colour images, 10 classes, 50k/10k (python batches)",
        folder="cifar-10-batches-py",
        files={
            "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
            "test": ("test_batch",),
        },
        label_key=b"labels",
        meta_file="batches.meta",
        meta_key=b"label_names",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        classes=CIFAR10_CLASSES,
        default_dirs=lambda: _env_dirs("cifar10"),
        missing_hint="approxsim does not ship CIFAR-10: download cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir (root=) "
        f"naming cifar-10-batches-py or the folder holding it, or put it in ${DATA_ENV}/cifar10",
    ),
    CifarFormat(
        name="cifar100",
        description="CIFAR-100: 32x32 colour images, 100 fine classes, 50k/10k (python files)",
        folder="cifar-100-python",
        files={"train": ("train",), "test": ("test",)},
        label_key=b"fine_labels",
        meta_file="meta",
        meta_key=b"fine_label_names",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        classes=CIFAR100_CLASSES,
        default_dirs=lambda: _env_dirs("cifar100"),
        missing_hint="approxsim does not ship CIFAR-100: download cifar-100-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir (root=) "
        f"naming cifar-100-python or the folder holding it, or put it in ${DATA_ENV}/cifar100",
    ),
    ImageFolderFormat(
        name="imagenet",
        description="ImageNet-1k (ILSVRC 2012): colour images decoded on the fly, 1000 classes, "
        "224x224 crops (ImageFolder tree)",
        expected_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=(),
        default_dirs=lambda: _env_dirs("imagenet"),
        missing_hint="approxsim does not ship ImageNet: arrange it as "
        f"{FOLDER_LAYOUT} (val/ sorted into class folders) and pass --data-dir (root=) naming "
        f"ROOT, or put it in ${DATA_ENV}/imagenet",
    ),
    ImageFolderFormat(
        name="imagefolder",
        description="any ImageFolder tree (train/CLASS/IMAGE, val/CLASS/IMAGE): colour images "
        "decoded on the fly, classes = sorted folder names, 224x224 crops",
        expected_classes=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=(),
        default_dirs=lambda: _env_dirs("imagefolder"),
        missing_hint=f"arrange the images as {FOLDER_LAYOUT} and pass --data-dir (root=) "
        f"naming ROOT, or put it in ${DATA_ENV}/imagefolder",
    ),
)

#: Registered datasets by name.
_REGISTRY: dict[str, DatasetFormat] = {f.name: f for f in _BUILT_IN}


def register_dataset(fmt: DatasetFormat, *, overwrite: bool = False) -> DatasetFormat:
    """Make a dataset loadable by name (:func:`load_dataset`, ``--dataset NAME``).

    Args:
        fmt: The dataset: an instance of a :class:`~approxsim.data.base.DatasetFormat`
            subclass (:class:`~approxsim.data.idx.IdxFormat`,
            :class:`~approxsim.data.cifar.CifarFormat`,
            :class:`~approxsim.data.folder.ImageFolderFormat` or your own).
        overwrite: Replace a dataset already registered under ``fmt.name``.

    Returns:
        ``fmt``.

    Raises:
        DatasetError: ``fmt`` is not a dataset format, or its name is taken and
            ``overwrite`` is false.
    """
    if not isinstance(fmt, DatasetFormat):
        raise DatasetError(f"register_dataset needs a DatasetFormat, got {type(fmt).__name__}")
    if fmt.name in _REGISTRY and not overwrite:
        raise DatasetError(
            f"a dataset named {fmt.name!r} is registered already; pick another name or pass "
            "overwrite=True"
        )
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (for tests and interactive sessions); no error if absent.

    Args:
        name: The name it was registered under.
    """
    _REGISTRY.pop(name, None)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell pattern, sorted.

    Args:
        pattern: A :mod:`fnmatch` pattern, e.g. ``"cifar*"``.

    Returns:
        The matching names.
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_dataset_format(name: str) -> DatasetFormat:
    """The registered dataset called ``name``.

    Args:
        name: A name from :func:`list_datasets`.

    Returns:
        Its :class:`~approxsim.data.base.DatasetFormat` instance.

    Raises:
        UnknownDatasetError: no such dataset (the message lists the valid names).
    """
    fmt = _REGISTRY.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; available: {', '.join(list_datasets())}"
        )
    return fmt


def dataset_info(name: str) -> dict[str, Any]:
    """Description, classes, image shape and normalization of a registered dataset.

    ``classes`` is empty and ``num_classes`` is ``None`` where the class folders decide
    (``imagefolder``); ``imagenet`` lists no names (its 1000 WordNet ids come from the
    folders) but has ``num_classes`` 1000. ``mean`` / ``std`` are one number, or a list of
    one per channel.

    Args:
        name: A name from :func:`list_datasets`.

    Returns:
        A JSON-ready dictionary: ``name``, ``description``, ``classes``, ``num_classes``,
        ``image_shape``, ``mean``, ``std``, ``augmentation`` and ``default_dirs``.

    Raises:
        UnknownDatasetError: no such dataset.
    """
    s = get_dataset_format(name)
    return {
        "name": s.name,
        "description": s.description,
        "classes": list(s.classes),
        "num_classes": s.num_classes(),
        "image_shape": list(s.image_shape(None)),
        "mean": s.mean if isinstance(s.mean, float) else list(s.mean),
        "std": s.std if isinstance(s.std, float) else list(s.std),
        "augmentation": s.augmentable,
        "default_dirs": [str(p) for p in s.default_dirs()],
    }


def _resolve_root(spec: DatasetFormat, root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        r = Path(root).expanduser()
        if not r.is_dir():
            raise DatasetNotFoundError(
                f"{spec.name}: the data folder {r} does not exist; {spec.missing_hint}"
            )
        # Accept a parent folder holding <name>/ as well (``--data-dir ~/data``).
        if not spec.has_files(r) and (r / spec.name).is_dir():
            r = r / spec.name
        return spec.locate(r)
    searched = spec.default_dirs()
    for d in searched:
        if d.is_dir():
            return spec.locate(d)
    where = ", ".join(str(d) for d in searched) or f"(no folder: ${DATA_ENV} is not set)"
    raise DatasetNotFoundError(f"{spec.name} not found (looked in {where}); {spec.missing_hint}")


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    *,
    augment: bool | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """Load one split of a registered dataset.

    Args:
        name: A name from :func:`list_datasets`: ``"fashion-mnist"``, ``"mnist"``,
            ``"cifar10"``, ``"cifar100"``, ``"imagenet"``, ``"imagefolder"``.
        root: Folder holding the dataset's files (or a folder holding ``<name>/``). CIFAR:
            the extracted ``cifar-10-batches-py`` / ``cifar-100-python`` or the folder
            holding it; ImageFolder trees: the folder holding ``train/`` and ``val/``.
            Default: ``$APPROXSIM_DATA/<name>``; for Fashion-MNIST then
            ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
        split: ``"train"`` or ``"test"`` (an ImageFolder tree's ``val/``, else ``test/``).
        augment: Give the dataset its standard training augmentation, which
            :meth:`ImageDataset.batches` applies when shuffling: CIFAR random 32x32 crops of
            the 4-pixel zero-padded image and horizontal flips; ImageNet random-resized crops
            and flips (without it, training images get the evaluation resize and centre
            crop). ``None``: on for the training split of CIFAR and ImageFolder trees, off
            otherwise. MNIST and Fashion-MNIST have none.
        image_size: Side of the square crops of an ImageFolder tree (default 224; the
            evaluation resize is ``image_size * 256 / 224``). Other datasets have a fixed size.

    Returns:
        An :class:`ImageDataset`: uint8 images ``(N, 1, 28, 28)`` for the MNIST family,
        ``(N, 3, 32, 32)`` for CIFAR; an :class:`~approxsim.data.folder.ImageFolderDataset`
        for ImageFolder trees.

    Raises:
        UnknownDatasetError: no such dataset (the message lists the valid names).
        DatasetNotFoundError: the folder or a file is missing (the message names it and says
            how to get the data).
        DatasetError: a malformed file (bad magic, wrong sizes or keys, mismatched counts,
            labels out of range, an empty class folder, a split without images); the
            message names the folder and the file. Unreadable images of a tree are reported
            when a batch decodes them.
    """
    spec = get_dataset_format(name)
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if augment is not None and not isinstance(augment, bool):
        raise DatasetError(f"augment must be True, False or None, got {augment!r}")
    if augment and not spec.augmentable:
        raise DatasetError(
            f"{spec.name} has no training augmentation (CIFAR and ImageFolder trees have)"
        )
    if image_size is not None:
        if not spec.sized:
            _, h, w = spec.image_shape(None)
            raise DatasetError(
                f"{spec.name} images are {h}x{w}; image_size applies to ImageFolder trees "
                "(imagenet, imagefolder) only"
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise DatasetError(f"image_size must be a positive integer, got {image_size!r}")
    if augment is None:
        augment = spec.augmentable and split == "train"
    directory = _resolve_root(spec, root)
    data = spec.load(directory, split, augment=augment, image_size=image_size)
    if len(data) == 0:
        # Every format can describe an empty split (an IDX header of 0 images, an empty
        # CIFAR batch); training on one "succeeds" with a loss of 0 and teaches nothing.
        raise DatasetError(
            f"{spec.name}: the {split} split in {directory} holds no images; check the "
            "dataset's files (a download may have failed) or name another --data-dir"
        )
    return data
