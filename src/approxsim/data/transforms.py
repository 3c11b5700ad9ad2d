"""Training augmentations and evaluation crops, drawn from an explicit ``torch.Generator``.

* :class:`RandomCropFlip` — the CIFAR recipe (zero-pad, random crop back to size, random
  horizontal flip) on a whole uint8 batch ``(B, C, H, W)`` at once, in torch.
* :class:`RandomResizedCropFlip` — the ImageNet recipe (a random area and aspect ratio,
  resized to a square, random horizontal flip) as crop boxes for Pillow to resample.
* :func:`center_crop_box` — the evaluation crop ("resize the shorter side, crop the centre").

Every random number comes from the ``generator`` the caller passes, in a fixed order and a
fixed amount per image, so a training run that re-creates its per-epoch generator from
``(seed, epoch)`` sees the same augmented batches after a resume as an uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "RandomCropFlip",
    "RandomResizedCropFlip",
    "center_crop_box",
    "CropBox",
]

#: ``(left, upper, right, lower)`` in source pixels, Pillow's ``box`` convention.
CropBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class RandomCropFlip:
    """Pad with zeros, crop a random window of the original size, flip half the images.

    The standard CIFAR training augmentation (``padding=4``, 32x32 crops, horizontal flips
    with probability 1/2), applied to a whole uint8 batch with one gather.

    Raises:
        ValueError: ``padding`` is not a non-negative integer or ``flip`` is not a bool.

    Shape:
        - Input: uint8 (or any dtype) ``(B, C, H, W)``.
        - Output: same shape and dtype.
    """

    padding: int = 4
    """Zero pixels added on every side before cropping; offsets are uniform in
    ``[0, 2 * padding]`` along each axis."""

    flip: bool = True
    """Mirror each image left-right with probability 1/2."""

    def __post_init__(self) -> None:
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {self.padding!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch.

        Args:
            images: ``(B, C, H, W)`` images (uint8 pixels; zero is the padding value).
            generator: Source of the offsets and flips; ``None``: torch's global RNG.

        Returns:
            A new ``(B, C, H, W)`` tensor.

        Raises:
            ValueError: ``images`` is not 4-D.
        """
        if images.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        b, c, h, w = images.shape
        p = self.padding
        # Draw before any early return so the stream advances by the same amount per batch
        # whatever the padding and flip settings are.
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator)
        flips = torch.rand(b, generator=generator) < 0.5
        if b == 0:
            return images.clone()
        padded = F.pad(images, (p, p, p, p)) if p else images
        wp = w + 2 * p
        rows = offsets[:, :1] + torch.arange(h)  # (B, H): source row of each output row
        cols = offsets[:, 1:] + torch.arange(w)  # (B, W)
        if self.flip:
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        # One gather over the flattened padded planes (3-4x faster than 4-D fancy indexing).
        pixel = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, -1)
        return padded.reshape(b, c, -1).gather(2, pixel).reshape(b, c, h, w)


def _pair(what: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (low, high) pair of numbers, got {value!r}") from None
    return lo, hi


@dataclass(frozen=True)
class RandomResizedCropFlip:
    """A random crop of random area and aspect ratio (then resized square) and a random flip.

    The ImageNet training augmentation of torchvision's ``RandomResizedCrop`` +
    ``RandomHorizontalFlip``: up to :attr:`attempts` tries to find a crop whose area is a
    uniform fraction in :attr:`scale` of the image and whose aspect ratio is log-uniform in
    :attr:`ratio`; when none fits, the largest centred crop with a ratio in range. The
    random numbers are drawn up front, :attr:`draws` per image, so the result does not depend
    on the image size or on which thread decodes the image.

    Raises:
        ValueError: a range that is empty or outside its domain.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    """Range of the crop's area as a fraction of the image's, within (0, 1]."""

    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Range of the crop's width / height (sampled log-uniformly)."""

    flip: bool = True
    """Mirror the result left-right with probability 1/2."""

    attempts: int = 10
    """Tries before falling back to a centred crop."""

    def __post_init__(self) -> None:
        lo, hi = _pair("scale", self.scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale!r}")
        rlo, rhi = _pair("ratio", self.ratio)
        if not 0 < rlo <= rhi:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {self.ratio!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"attempts must be a positive integer, got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be a positive integer, got {self.attempts!r}")

    @property
    def draws(self) -> int:
        """Uniform numbers used per image: four per attempt (area, ratio, top, left) + flip."""
        return 4 * self.attempts + 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The uniform numbers for ``n`` images, float64 ``(n, draws)``, from ``generator``."""
        return torch.rand(n, self.draws, generator=generator, dtype=torch.float64)

    def box(self, width: int, height: int, u: Sequence[float]) -> tuple[CropBox, bool]:
        """The crop box and flip decision for one image.

        Args:
            width: Source image width in pixels.
            height: Source image height.
            u: This image's :attr:`draws` uniform numbers in [0, 1) (a row of :meth:`sample`).

        Returns:
            ``((left, upper, right, lower), flip)``, the box in integer source pixels.
        """
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for k in range(self.attempts):
            ua, ur, ut, ul = (float(v) for v in u[4 * k : 4 * k + 4])
            target = area * (self.scale[0] + ua * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + ur * (log_hi - log_lo))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= width and 0 < ch <= height:
                top = min(int(ut * (height - ch + 1)), height - ch)
                left = min(int(ul * (width - cw + 1)), width - cw)
                return (left, top, left + cw, top + ch), self._flip(u)
        # Fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            cw, ch = width, min(height, max(1, int(round(width / self.ratio[0]))))
        elif in_ratio > self.ratio[1]:
            cw, ch = min(width, max(1, int(round(height * self.ratio[1])))), height
        else:
            cw, ch = width, height
        top, left = (height - ch) // 2, (width - cw) // 2
        return (left, top, left + cw, top + ch), self._flip(u)

    def _flip(self, u: Sequence[float]) -> bool:
        return self.flip and float(u[4 * self.attempts]) < 0.5


def center_crop_box(width: int, height: int, size: int, resize: int) -> CropBox:
    """Source box of "resize the shorter side to ``resize``, then crop ``size`` x ``size``
    from the centre" (the ImageNet evaluation transform: 256 then 224).

    Resampling this box straight to ``size`` x ``size`` does both steps in one pass, with no
    rounding of the intermediate image.

    Args:
        width: Source image width in pixels.
        height: Source image height.
        size: Side of the square output.
        resize: Length the shorter side is scaled to (at least ``size``).

    Returns:
        ``(left, upper, right, lower)`` in (fractional) source pixels.

    Raises:
        ValueError: ``resize`` is smaller than ``size`` or a size is not positive.
    """
    if min(width, height, size) < 1 or resize < size:
        raise ValueError(
            f"need positive sizes and resize >= size, got {width}x{height}, size={size}, "
            f"resize={resize}"
        )
    side = size * min(width, height) / resize  # the crop's side in source pixels
    left = (width - side) / 2
    top = (height - side) / 2
    return (left, top, left + side, top + side)
