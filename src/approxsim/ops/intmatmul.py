"""Integer approximate matmul: ``approxsim::int_lut_bmm`` and its public entry point.

* ``approxsim::int_lut_bmm(a, b, table, min_value, acc_int64)`` — the kernel op: batched
  ``(B, R, K) × (B, K, N)`` integer operand values, every product read from the multiplier's
  int32 table, ``out[r, n] = Σ_k table[a[r, k] - min, b[k, n] - min]`` summed exactly (int32,
  or int64 with ``acc_int64``). One kernel per device (CPU: :mod:`._int_cpu`; CUDA:
  :mod:`._int_triton`), a fake (meta) kernel; no autograd, since integer operands have no
  gradient. Values outside the table's range raise ``ValueError`` in every kernel.
* :func:`int_matmul` — broadcasts like ``torch.matmul``, checks the operands, picks the
  accumulator (int32 while ``2^(2·bits) · K < 2^31``, else int64: never a silent overflow).
  :func:`approxsim.matmul` calls it when given an integer multiplier.

An integer multiplier is anything with the attributes of ``approxsim.IntMultiplier``:
``table`` (int32, ``(2^bits, 2^bits)``, row = the C function's first operand), ``bits``,
``signed`` and ``min_value``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from approxsim.multipliers import Multiplier
from approxsim.ops._vmap import vmap_bmm, vmap_operands

__all__ = ["IntMultiplierLike", "int_matmul", "is_int_multiplier", "int_accumulator_is_int64"]

_INT32_LIMIT = 2**31


# ---------------------------------------------------------------------------- kernel op
@torch.library.custom_op("approxsim::int_lut_bmm", mutates_args=())
def int_lut_bmm(a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool) -> Tensor:
    """Batched integer table matmul ``(B, R, K) × (B, K, N) → (B, R, N)`` (exact sums)."""
    raise NotImplementedError(f"approxsim::int_lut_bmm has no kernel for device {a.device}")


@int_lut_bmm.register_fake
def _(a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool) -> Tensor:
    dtype = torch.int64 if acc_int64 else torch.int32
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]), dtype=dtype)


@int_lut_bmm.register_kernel("cpu")
def _(a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool) -> Tensor:
    from approxsim.ops._int_cpu import int_lut_bmm_cpu

    _check_accumulator(table, a.shape[2], acc_int64)
    return int_lut_bmm_cpu(a, b, table, min_value, acc_int64)


@int_lut_bmm.register_kernel("cuda")
def _(a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool) -> Tensor:
    from approxsim.ops._int_triton import triton_int_lut_bmm

    _check_accumulator(table, a.shape[2], acc_int64)
    return triton_int_lut_bmm(a.contiguous(), b.contiguous(), table, min_value, acc_int64)


@torch.library.register_vmap("approxsim::int_lut_bmm")
def _int_lut_bmm_vmap(
    info: Any,
    in_dims: tuple[int | None, ...],
    a: Tensor,
    b: Tensor,
    table: Tensor,
    min_value: int,
    acc_int64: bool,
) -> tuple[Tensor, int]:
    """Batching rule: the vmapped dimension joins the op's own batch dimension."""
    a, b = vmap_operands(info, in_dims, a, b)
    return vmap_bmm(lambda x, y: int_lut_bmm(x, y, table, min_value, acc_int64), a, b)


_MAXABS: dict[int, tuple[Tensor, int]] = {}


def _table_maxabs(table: Tensor) -> int:
    """The largest magnitude in ``table`` (cached per tensor: multipliers' tables are
    immutable, and a 12-bit table has 16M entries)."""
    hit = _MAXABS.get(id(table))
    if hit is not None and hit[0] is table:
        return hit[1]
    lo, hi = (int(v) for v in torch.aminmax(table)) if table.numel() else (0, 0)
    if len(_MAXABS) >= 16:
        _MAXABS.clear()
    _MAXABS[id(table)] = (table, max(abs(lo), abs(hi)))
    return _MAXABS[id(table)][1]


def _check_accumulator(table: Tensor, k: int, acc_int64: bool) -> None:
    """Refuse an int32 accumulator that the table's entries could overflow over ``k`` terms."""
    if acc_int64 or k == 0:
        return
    maxabs = _table_maxabs(table)
    if maxabs * k >= _INT32_LIMIT:
        raise ValueError(
            f"approxsim::int_lut_bmm: sums of {k} products with table entries up to "
            f"{maxabs} can overflow int32; call it with acc_int64=True"
        )


# ---------------------------------------------------------------------------- public API
class IntMultiplierLike(Protocol):
    """What the integer ops read from an integer multiplier (``approxsim.IntMultiplier``)."""

    @property
    def table(self) -> Tensor:
        """int32 ``(2^bits, 2^bits)`` products; row = the first operand minus ``min_value``."""

    @property
    def bits(self) -> int:
        """Operand width in bits."""

    @property
    def signed(self) -> bool:
        """Whether operands are two's complement."""

    @property
    def min_value(self) -> int:
        """The smallest operand value (row and column 0 of the table)."""


def is_int_multiplier(m: Any) -> bool:
    """True for an integer multiplier (``approxsim.IntMultiplier`` or an object with its
    ``table``, ``bits``, ``signed`` and ``min_value`` attributes)."""
    if isinstance(m, (str, Multiplier)):
        return False
    # Look the attributes up on the class or the instance without reading them:
    # IntMultiplier.table is a property that copies the table.
    names = getattr(m, "__dict__", {})
    return all(
        hasattr(type(m), name) or name in names for name in ("table", "bits", "signed", "min_value")
    )


def int_accumulator_is_int64(bits: int, k: int) -> bool:
    """Whether a sum of ``k`` products of a ``bits``-bit multiplier needs int64.

    Every table entry is a ``2·bits``-bit value, so its magnitude is below ``2^(2·bits)``; the
    sum fits int32 while ``2^(2·bits) · k < 2^31``.

    Args:
        bits: The multiplier's operand bits.
        k: Terms in each sum.

    Returns:
        True when int64 is needed.
    """
    return (1 << (2 * bits)) * k >= _INT32_LIMIT


_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _check_int_operand(x: Any, what: str, m: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"approxsim.matmul: {what} must be a Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
        raise TypeError(
            f"approxsim.matmul: {what} has dtype {x.dtype}, but the integer multiplier "
            f"{getattr(m, 'name', '')!r} ({m.bits}-bit, {'signed' if m.signed else 'unsigned'}) "
            f"takes integer operand values in [{m.min_value}, {m.min_value + (1 << m.bits) - 1}]"
            "; quantize float tensors first (approxsim.convert_model with a QuantConfig does "
            "this for layers)"
        )
    if x.dtype not in _INT_DTYPES:
        x = x.to(torch.int64)  # uint16/uint32/uint64: torch's kernels barely support them
    return x


def _table_of(m: IntMultiplierLike, device: torch.device) -> Tensor:
    """The multiplier's int32 table on ``device``, checked against its ``bits``."""
    # IntMultiplier.table is a fresh copy per access; table_on caches one per device.
    table_on = getattr(m, "table_on", None)
    table = table_on(device) if callable(table_on) else m.table
    size = 1 << int(m.bits)
    if not isinstance(table, Tensor) or table.shape != (size, size):
        raise ValueError(
            f"approxsim.matmul: the integer multiplier's table must be a ({size}, {size}) "
            f"tensor for bits={m.bits}, got {getattr(table, 'shape', type(table).__name__)}"
        )
    if table.dtype != torch.int32:
        table = table.to(torch.int32)
    if table.device != device:
        table = table.to(device)
    return table


def int_matmul(a: Tensor, b: Tensor, multiplier: IntMultiplierLike) -> Tensor:
    """Integer matrix product with every scalar product read from an integer multiplier.

    Broadcasts like :func:`torch.matmul`: ``(…, R, K) × (…, K, N) → (…, R, N)``, 1-D operands
    included. ``out[…, r, n] = Σ_k multiplier.m(a[…, r, k], b[…, k, n])``, summed exactly:
    int32 while ``2^(2·bits) · K < 2^31``, else int64.

    Args:
        a: Integer operand values (the table's row operand, the C function's first
            parameter), ``(…, R, K)`` or ``(K,)``.
        b: Integer operand values, ``(…, K, N)`` or ``(K,)``.
        multiplier: An ``approxsim.IntMultiplier``.

    Returns:
        The int32 or int64 product, shaped like ``torch.matmul(a, b)``.

    Raises:
        TypeError: non-tensor, floating, complex or bool operands.
        ValueError: operand values outside the multiplier's range, or a malformed table.
        RuntimeError: shapes that cannot be multiplied, or operands on different devices.
    """
    a = _check_int_operand(a, "a", multiplier)
    b = _check_int_operand(b, "b", multiplier)
    if a.device != b.device:
        raise RuntimeError(
            f"approxsim.matmul: operands are on different devices ({a.device} and {b.device})"
        )
    if a.dim() == 0 or b.dim() == 0:
        raise RuntimeError("approxsim.matmul: both arguments need at least 1 dimension")
    table = _table_of(multiplier, a.device)
    min_value = int(multiplier.min_value)
    squeeze_r = a.dim() == 1
    squeeze_n = b.dim() == 1
    a2 = a.unsqueeze(0) if squeeze_r else a
    b2 = b.unsqueeze(-1) if squeeze_n else b
    if a2.shape[-1] != b2.shape[-2]:
        raise RuntimeError(
            f"approxsim.matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be "
            f"multiplied ({a2.shape[-2]}x{a2.shape[-1]} and {b2.shape[-2]}x{b2.shape[-1]})"
        )
    r, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    # The bits decide (so the result dtype is predictable); a table holding entries wider
    # than 2·bits bits (not an IntMultiplier's) gets int64 too. (Under torch.compile the
    # table's values are not known while tracing: the op's kernel refuses such a table.)
    acc_int64 = int_accumulator_is_int64(int(multiplier.bits), k)
    if not acc_int64 and not torch.compiler.is_compiling():
        acc_int64 = _table_maxabs(table) * k >= _INT32_LIMIT
    if b2.dim() == 2:
        # A shared right operand (a Linear weight): fold A's batch dims into its rows.
        batch = a2.shape[:-2]
        rows = a2.shape[:-1].numel()
        out = _bmm(a2.reshape(1, rows, k), b2.unsqueeze(0), table, min_value, acc_int64)
        out = out.reshape(*batch, r, n)
    else:
        batch = a2.shape[:-2]
        if batch != b2.shape[:-2]:
            batch = torch.broadcast_shapes(batch, b2.shape[:-2])
        nb = batch.numel()
        ae = a2.expand(*batch, r, k).reshape(nb, r, k)
        be = b2.expand(*batch, k, n).reshape(nb, k, n)
        out = _bmm(ae, be, table, min_value, acc_int64).reshape(*batch, r, n)
    if squeeze_r:
        out = out.squeeze(-2)
    if squeeze_n:
        out = out.squeeze(-1)
    return out


def _bmm(a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool) -> Tensor:
    """The op, or for plain CPU tensors in eager mode its CPU kernel without the custom-op
    dispatch (about a hundred microseconds a call, felt by small layers)."""
    if (
        a.device.type == "cpu"
        and type(a) is Tensor
        and type(b) is Tensor
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and torch._C._functorch.peek_interpreter_stack() is None
    ):
        from approxsim.ops._int_cpu import int_lut_bmm_cpu

        return int_lut_bmm_cpu(a, b, table, min_value, acc_int64)
    return int_lut_bmm(a, b, table, min_value, acc_int64)
