"""Batching rules shared by the table ops (``torch.library.register_vmap``): each op takes two
operands and a table, and a vmapped dimension joins the op's own batch dimension."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["vmap_bmm", "vmap_operands"]


def vmap_operands(
    info: Any, in_dims: tuple[int | None, ...], a: Tensor, b: Tensor
) -> tuple[Tensor, Tensor]:
    """The two operands of a table op under ``vmap``, the vmapped dimension first in both
    (broadcast where an operand has none). The table (third argument) may not be vmapped.

    Raises:
        RuntimeError: ``vmap`` over the table.
    """
    if in_dims[2] is not None:
        raise RuntimeError("approxsim: vmap over the multiplier's table is not supported")
    n = info.batch_size
    a = a.movedim(in_dims[0], 0) if in_dims[0] is not None else a.expand(n, *a.shape)
    b = b.movedim(in_dims[1], 0) if in_dims[1] is not None else b.expand(n, *b.shape)
    return a, b


def vmap_bmm(bmm: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor) -> tuple[Tensor, int]:
    """A batched GEMM on :func:`vmap_operands`' result: the vmapped dimension joins the op's own
    batch dimension and is split off again (output batch dimension 0)."""
    n, nb, r, k = a.shape
    out = bmm(a.reshape(n * nb, r, k), b.reshape(n * nb, k, b.shape[-1]))
    return out.reshape(n, nb, r, b.shape[-1]), 0
