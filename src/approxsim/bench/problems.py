"""The benchmark problems: GEMM shapes, most of them taken from real convolution layers.

A :class:`Problem` is a GEMM ``(R, K) × (K, N)``; one taken from a convolution layer also
carries its :class:`ConvGeometry`, checked to lower to the same ``R, K, N``. :data:`PROBLEMS`
is the registry every benchmark (``ops``, ``direct``) draws from by name.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from approxsim.bench.common import BenchError

__all__ = [
    "ConvGeometry",
    "Problem",
    "PROBLEMS",
    "DEFAULT_PROBLEMS",
    "QUICK_PROBLEMS",
    "list_problems",
    "resolve_problems",
]


@dataclass(frozen=True)
class ConvGeometry:
    """A stride-1 2-D convolution with a square kernel, and the GEMM it lowers to.

    Lowered by im2col, the convolution is ``(R, K) × (K, N)`` with ``R = batch · H_out · W_out``
    output pixels, ``K = in_channels · kernel_size²`` and ``N = out_channels``.

    Attributes:
        batch: Batch size.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Side of the square kernel.
        height: Input height (before padding).
        width: Input width (before padding).
        padding: Zero padding on each side.
    """

    batch: int
    in_channels: int
    out_channels: int
    kernel_size: int
    height: int
    width: int
    padding: int = 0

    def __post_init__(self) -> None:
        for field in ("batch", "in_channels", "out_channels", "kernel_size", "height", "width"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise BenchError(f"ConvGeometry.{field} must be a positive int, got {value!r}")
        if not isinstance(self.padding, int) or self.padding < 0:
            raise BenchError(f"ConvGeometry.padding must be an int >= 0, got {self.padding!r}")
        if min(self.out_hw) < 1:
            raise BenchError(
                f"a {self.kernel_size}x{self.kernel_size} kernel does not fit a "
                f"{self.height}x{self.width} input with padding {self.padding}"
            )

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width."""
        pad = 2 * self.padding - self.kernel_size + 1
        return self.height + pad, self.width + pad

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of the input tensor, ``(batch, in_channels, height, width)``."""
        return self.batch, self.in_channels, self.height, self.width

    def gemm_shape(self) -> tuple[int, int, int]:
        """``(R, K, N)`` of the lowered GEMM."""
        ho, wo = self.out_hw
        return (
            self.batch * ho * wo,
            self.in_channels * self.kernel_size**2,
            self.out_channels,
        )


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: a GEMM ``(R, K) × (K, N)``, optionally from a convolution.

    Attributes:
        name: Registry name (used by ``--problems``).
        description: What the shape is, for reports.
        r: Rows of A (output pixels of a convolution).
        k: Reduction length.
        n: Columns of B (output channels of a convolution).
        conv: The convolution this GEMM lowers, or None for a plain GEMM; it must give the
            same ``(r, k, n)``.
    """

    name: str
    description: str
    r: int
    k: int
    n: int
    conv: ConvGeometry | None = None

    def __post_init__(self) -> None:
        for field in ("r", "k", "n"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise BenchError(f"Problem.{field} must be a positive int, got {value!r}")
        if self.conv is not None and self.conv.gemm_shape() != (self.r, self.k, self.n):
            raise BenchError(
                f"problem {self.name!r}: its convolution lowers to R, K, N = "
                f"{self.conv.gemm_shape()}, not the declared {(self.r, self.k, self.n)}"
            )

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the forward GEMM, ``R · K · N``."""
        return self.r * self.k * self.n

    @property
    def shape(self) -> str:
        """``"RxKxN"``."""
        return f"{self.r}x{self.k}x{self.n}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (with the MAC count)."""
        out = dataclasses.asdict(self)
        out["macs"] = self.macs
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        """The problem a :meth:`to_dict` dictionary describes (checked again).

        Raises:
            BenchError: a missing field or a shape that does not hold together.
        """
        try:
            conv = data.get("conv")
            return cls(
                name=str(data["name"]),
                description=str(data["description"]),
                r=data["r"],
                k=data["k"],
                n=data["n"],
                conv=None if conv is None else ConvGeometry(**conv),
            )
        except (KeyError, TypeError) as exc:
            raise BenchError(f"not a problem description: {exc}") from None


def _registry(*problems: Problem) -> dict[str, Problem]:
    return {p.name: p for p in problems}


#: Every known problem by name. R, K, N are written out by hand and each conv geometry is
#: checked against them when the registry is built (a typo in either fails at import).
PROBLEMS: dict[str, Problem] = _registry(
    Problem("gemm512", "square GEMM 512", 512, 512, 512),
    Problem("gemm1024", "square GEMM 1024", 1024, 1024, 1024),
    Problem(
        "lenet5_conv1",
        "LeNet-5 conv1, batch 32: 1->6 ch, 5x5, 28x28 input, padding 2",
        32 * 28 * 28,
        25,
        6,
        ConvGeometry(32, 1, 6, 5, 28, 28, padding=2),
    ),
    Problem(
        "lenet5_conv2",
        "LeNet-5 conv2, batch 32: 6->16 ch, 5x5, 14x14 input",
        32 * 10 * 10,
        150,
        16,
        ConvGeometry(32, 6, 16, 5, 14, 14),
    ),
    Problem(
        "resnet18_layer1",
        "ResNet-18 (CIFAR stem) layer1 conv, batch 32: 64->64 ch, 3x3, 32x32, padding 1",
        32 * 32 * 32,
        576,
        64,
        ConvGeometry(32, 64, 64, 3, 32, 32, padding=1),
    ),
    Problem(
        "resnet18_layer4",
        "ResNet-18 (CIFAR stem) layer4 conv, batch 32: 512->512 ch, 3x3, 4x4, padding 1",
        32 * 4 * 4,
        4608,
        512,
        ConvGeometry(32, 512, 512, 3, 4, 4, padding=1),
    ),
    Problem(
        "resnet50_layer1_reduce",
        "ResNet-50 (CIFAR stem) layer1 1x1 reduce, batch 32: 256->64 ch, 32x32",
        32 * 32 * 32,
        256,
        64,
        ConvGeometry(32, 256, 64, 1, 32, 32),
    ),
    Problem(
        "resnet50_layer1_expand",
        "ResNet-50 (CIFAR stem) layer1 1x1 expand, batch 32: 64->256 ch, 32x32",
        32 * 32 * 32,
        64,
        256,
        ConvGeometry(32, 64, 256, 1, 32, 32),
    ),
    Problem(
        "resnet50_layer4_reduce",
        "ResNet-50 (CIFAR stem) layer4 1x1 reduce, batch 32: 2048->512 ch, 4x4",
        32 * 4 * 4,
        2048,
        512,
        ConvGeometry(32, 2048, 512, 1, 4, 4),
    ),
    # Larger shapes, named explicitly (minutes on a 2-core CPU).
    Problem("gemm2048", "square GEMM 2048", 2048, 2048, 2048),
    Problem("gemm4096", "square GEMM 4096", 4096, 4096, 4096),
    Problem(
        "lenet5_conv1_b128",
        "LeNet-5 conv1, batch 128: 1->6 ch, 5x5, 28x28 input, padding 2",
        128 * 28 * 28,
        25,
        6,
        ConvGeometry(128, 1, 6, 5, 28, 28, padding=2),
    ),
    Problem(
        "lenet5_conv2_b128",
        "LeNet-5 conv2, batch 128: 6->16 ch, 5x5, 14x14 input",
        128 * 10 * 10,
        150,
        16,
        ConvGeometry(128, 6, 16, 5, 14, 14),
    ),
    Problem(
        "resnet18_layer1_b128",
        "ResNet-18 (CIFAR stem) layer1 conv, batch 128: 64->64 ch, 3x3, 32x32, padding 1",
        128 * 32 * 32,
        576,
        64,
        ConvGeometry(128, 64, 64, 3, 32, 32, padding=1),
    ),
    Problem(
        "resnet18_layer4_b128",
        "ResNet-18 (CIFAR stem) layer4 conv, batch 128: 512->512 ch, 3x3, 4x4, padding 1",
        128 * 4 * 4,
        4608,
        512,
        ConvGeometry(128, 512, 512, 3, 4, 4, padding=1),
    ),
    # Tiny shapes for tests and smoke runs (--quick): milliseconds per call.
    Problem("tiny_gemm", "tiny square GEMM 48 (smoke test)", 48, 48, 48),
    Problem(
        "tiny_conv",
        "tiny conv, batch 2: 3->4 ch, 3x3, 8x8, padding 1 (smoke test)",
        2 * 8 * 8,
        27,
        4,
        ConvGeometry(2, 3, 4, 3, 8, 8, padding=1),
    ),
)

#: Problems run when none are named.
DEFAULT_PROBLEMS: tuple[str, ...] = (
    "gemm512",
    "gemm1024",
    "lenet5_conv1",
    "lenet5_conv2",
    "resnet18_layer1",
    "resnet18_layer4",
    "resnet50_layer1_reduce",
    "resnet50_layer1_expand",
    "resnet50_layer4_reduce",
)

#: Problems run by ``quick=True`` / ``--quick``.
QUICK_PROBLEMS: tuple[str, ...] = ("tiny_gemm", "tiny_conv")


def list_problems(pattern: str = "*") -> list[str]:
    """Names of the registered problems matching a shell pattern, in registry order.

    Args:
        pattern: A :mod:`fnmatch` pattern, e.g. ``"resnet18*"``.

    Returns:
        The matching names.
    """
    return [name for name in PROBLEMS if fnmatch.fnmatchcase(name, pattern)]


def resolve_problems(
    problems: str | Sequence[str | Problem] | None, quick: bool = False
) -> list[Problem]:
    """The problems a benchmark runs, from names, :class:`Problem` objects or the defaults.

    Args:
        problems: Names (a list or a comma-separated string) or :class:`Problem` objects;
            ``None``: :data:`DEFAULT_PROBLEMS` (:data:`QUICK_PROBLEMS` with ``quick``).
        quick: Default to the tiny problems.

    Returns:
        The problems, in the order given.

    Raises:
        BenchError: no problems, or a name that is not registered.
    """
    if problems is None:
        items: list[str | Problem] = list(QUICK_PROBLEMS if quick else DEFAULT_PROBLEMS)
    elif isinstance(problems, str):
        items = [p.strip() for p in problems.split(",") if p.strip()]
    else:
        items = list(problems)
    if not items:
        raise BenchError("no problems to run; name at least one (see list_problems())")
    out: list[Problem] = []
    for item in items:
        if isinstance(item, Problem):
            out.append(item)
        elif isinstance(item, str) and item in PROBLEMS:
            out.append(PROBLEMS[item])
        else:
            raise BenchError(f"unknown problem {item!r}; known problems: {', '.join(PROBLEMS)}")
    return out
