"""Building :class:`~approxsim.multipliers.integer.IntMultiplier` s from Python and LUTs.

* :func:`int_from_python`: a Python functional model, called on numpy integer arrays of
  operand values (or, for a model written for scalars, on Python ints pair by pair).
* :func:`int_from_lut`: a product table in memory, a ``.npy`` file, or a TFApprox binary LUT
  file (raw little-endian ``uint16``, ``2^bits × 2^bits`` entries, row-major with the first
  operand selecting the row).

Both reduce nothing silently except what hardware does: a model's result keeps its low
``2·bits`` bits (a ``2·bits``-bit product register), read as two's complement when signed.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from approxsim.multipliers.core import MultiplierError
from approxsim.multipliers.integer import (
    IntMultiplier,
    check_int_bits,
    operand_values,
)

__all__ = ["int_from_python", "int_from_lut", "reduce_products", "TFAPPROX_MAX_BITS"]

#: A ``uint16`` entry holds a product of two operands of at most 8 bits.
TFAPPROX_MAX_BITS = 8


def reduce_products(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Keep the low ``2·bits`` bits of each value, read as two's complement when signed.

    This is what a ``2·bits``-bit product register does with a model's wider return value
    (EvoApproxLib returns ``uint64_t``; a signed product comes back sign-extended or not).

    Args:
        values: Integer array (any integer dtype, or Python ints in an object array).
        bits: Operand width.
        signed: Read the kept bits as two's complement.

    Returns:
        int64 array of the same shape.
    """
    width = 2 * bits
    mask = (1 << width) - 1
    if values.dtype == object:
        low = np.array([int(v) & mask for v in values.reshape(-1)], dtype=np.int64)
        low = low.reshape(values.shape)
    else:
        # Bitwise AND in the value's own dtype is two's complement, also for negative int64.
        low = (values & values.dtype.type(mask)).astype(np.int64)
    if signed:
        low = np.where(low >= 1 << (width - 1), low - (1 << width), low)
    return low


def int_from_python(
    fn: Callable[..., Any],
    bits: int,
    signed: bool,
    *,
    name: str | None = None,
    vectorized: bool | None = None,
) -> IntMultiplier:
    """Build an integer multiplier from a Python model of the circuit.

    Args:
        fn: ``fn(a, b)`` returns the product of the first operand ``a`` and the second
            ``b``. Called once on two int64 numpy arrays holding every operand pair (shape
            ``(2^bits, 2^bits)``, ``a`` varying along rows); a model written for scalars is
            then called on each pair as Python ints instead. The result must be integers;
            its low ``2·bits`` bits are kept, read as two's complement when ``signed``.
        bits: Operand width, 2..12.
        signed: Two's complement operands and product (else unsigned).
        name: Report name (default: the function's name).
        vectorized: ``True``: call on arrays only; ``False``: call on scalars only;
            ``None`` (default): arrays, falling back to scalars when the array call raises or
            returns something that is not an integer array of the operands' shape.

    Returns:
        The multiplier.

    Raises:
        MultiplierError: ``bits`` out of range, ``fn`` not callable, raising, or returning
            non-integers.
    """
    if not callable(fn):
        raise MultiplierError(f"from_python needs a callable, got {type(fn).__name__}")
    bits = check_int_bits(bits)
    label = getattr(fn, "__qualname__", repr(fn))
    v = operand_values(bits, bool(signed))
    a, b = np.meshgrid(v, v, indexing="ij")
    raw: np.ndarray | None = None
    mode = "scalar"
    if vectorized is not False:
        out: Any = None
        try:
            out = fn(a.copy(), b.copy())
        except Exception as exc:
            if vectorized:
                raise MultiplierError(
                    f"the Python model {label} failed on arrays: {type(exc).__name__}: {exc} "
                    "(it is called with two int64 numpy arrays of operand values; pass "
                    "vectorized=False for a model written for Python ints)"
                ) from exc
        if _is_array_result(out, a.shape) or vectorized:
            # An array of the right shape: the model is vectorized, its dtype must be right.
            raw = _integer_result(out, a.shape, label)
            mode = "vectorized"
    if raw is None:
        raw = _call_scalar(fn, v, label)
    table = reduce_products(raw, bits, bool(signed))
    prov: dict[str, Any] = {
        "builder": "python",
        "function": f"{getattr(fn, '__module__', '?')}.{label}",
        "called_on": mode,
    }
    try:
        prov["source_sha256"] = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    except (OSError, TypeError):
        pass
    return IntMultiplier(
        name or str(getattr(fn, "__name__", "python_model")),
        bits,
        bool(signed),
        table,
        provenance=prov,
    )


def _is_array_result(out: Any, shape: tuple[int, ...]) -> bool:
    return isinstance(out, (np.ndarray, Tensor)) and tuple(out.shape) == shape


def _integer_result(out: Any, shape: tuple[int, ...], label: str) -> np.ndarray:
    arr = out.detach().cpu().numpy() if isinstance(out, Tensor) else out
    if not isinstance(arr, np.ndarray) or arr.shape != shape:
        raise MultiplierError(
            f"the Python model {label} returned {type(out).__name__} "
            f"{getattr(out, 'shape', '')} for arrays of shape {shape}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise MultiplierError(
            f"the Python model {label} returned dtype {arr.dtype}; it must return integers "
            "(use // and >> rather than /, or cast with .astype(np.int64))"
        )
    return arr


def _call_scalar(fn: Callable[..., Any], v: np.ndarray, label: str) -> np.ndarray:
    values = [int(x) for x in v]
    out = np.empty((len(values), len(values)), dtype=object)
    for i, x in enumerate(values):
        for j, y in enumerate(values):
            try:
                r = fn(x, y)
            except Exception as exc:
                raise MultiplierError(
                    f"the Python model {label} raised {type(exc).__name__} for operands "
                    f"({x}, {y}): {exc}"
                ) from exc
            if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)):
                raise MultiplierError(
                    f"the Python model {label} returned {r!r} ({type(r).__name__}) for "
                    f"operands ({x}, {y}); it must return an integer"
                )
            out[i, j] = int(r)
    return out


def int_from_lut(
    lut: Any,
    *,
    signed: bool,
    bits: int | None = None,
    name: str | None = None,
) -> IntMultiplier:
    """Build an integer multiplier from a product table or a LUT file.

    Layout: ``lut[i, j]`` is the product of operand values ``min + i`` (first operand) and
    ``min + j`` (second), ``min`` being ``-2^(bits-1)`` when signed, else 0 — each axis
    ascending from the smallest value. (For a signed table indexed by the operands' raw
    two's complement bytes instead, reorder it first, e.g. ``np.roll(t, (128, 128), (0, 1))``
    for 8 bits.)

    Args:
        lut: A 2-D integer numpy array or tensor ``(2^bits, 2^bits)`` (or flat
            ``2^(2·bits)``), or a path: a ``.npy`` file holding such an array, or a TFApprox
            binary LUT file — raw little-endian ``uint16`` entries, row-major, first operand
            selecting the row; 256×256 (131,072 bytes) for 8-bit multipliers.
        signed: Two's complement operands and products. With an *unsigned* integer dtype
            (a ``uint16`` file or array), signed products are read from their raw
            ``2·bits``-bit patterns as two's complement; other dtypes must hold the values.
        bits: Operand width; inferred from the size when omitted.
        name: Report name (default: the file's stem, or ``"lut"``).

    Returns:
        The multiplier.

    Raises:
        FileNotFoundError: the file does not exist.
        MultiplierError: a size that is not ``2^(2·bits)`` entries, a ``bits`` that
            disagrees with it, a non-integer table or an entry out of the product range.
    """
    prov: dict[str, Any] = {"builder": "lut"}
    if isinstance(lut, (str, os.PathLike)):
        arr, prov = _read_lut_file(Path(lut), bits)
        name = name or Path(lut).stem
    elif isinstance(lut, Tensor):
        arr = lut.detach().cpu().numpy()
    else:
        arr = np.asarray(lut)
    inferred = _bits_of(arr.size)
    if (
        inferred is None
        or arr.ndim not in (1, 2)
        or (arr.ndim == 2 and arr.shape[0] != arr.shape[1])
    ):
        raise MultiplierError(
            f"a LUT must be a square (2^bits, 2^bits) table or 2^(2·bits) entries, got shape "
            f"{arr.shape}"
        )
    if bits is not None and check_int_bits(bits) != inferred:
        raise MultiplierError(
            f"bits={bits} disagrees with the LUT's {arr.size} entries (that is bits={inferred})"
        )
    if signed and np.issubdtype(arr.dtype, np.unsignedinteger):
        # Raw product registers: the bits are right, reading them is the caller's choice.
        width = 2 * inferred
        if int(arr.max()) >= 1 << width:
            raise MultiplierError(
                f"LUT entry {int(arr.max())} does not fit the {width}-bit product of a "
                f"{inferred}-bit multiplier"
            )
        arr = reduce_products(arr.astype(np.int64), inferred, True)
        prov["signed_from_raw"] = True
    return IntMultiplier(
        name or "lut",
        inferred,
        bool(signed),
        arr.reshape(1 << inferred, 1 << inferred),
        provenance=prov,
    )


def _bits_of(size: int) -> int | None:
    bits = (size.bit_length() - 1) // 2
    if size <= 0 or 1 << (2 * bits) != size:
        return None
    return bits


def _read_lut_file(path: Path, bits: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"LUT file not found: {path}")
    raw = path.read_bytes()
    prov: dict[str, Any] = {
        "builder": "lut",
        "file": path.name,
        "file_sha256": hashlib.sha256(raw).hexdigest(),
    }
    if path.suffix == ".npz":
        raise MultiplierError(
            f"{path} is an .npz file; load a saved multiplier with IntMultiplier.load"
        )
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise MultiplierError(f"{path} is not a readable .npy array: {exc}") from None
        prov["format"] = "npy"
        return arr, prov
    if len(raw) % 2:
        raise MultiplierError(
            f"{path} has {len(raw)} bytes; a TFApprox LUT holds 2-byte uint16 entries "
            "(131,072 bytes for an 8-bit multiplier)"
        )
    entries = len(raw) // 2
    inferred = _bits_of(entries)
    if inferred is None or inferred > TFAPPROX_MAX_BITS:
        raise MultiplierError(
            f"{path} has {entries} uint16 entries; a TFApprox LUT has 2^(2·bits) of them, "
            f"bits ≤ {TFAPPROX_MAX_BITS} (65,536 entries, 131,072 bytes, for 8 bits)"
        )
    if bits is not None and check_int_bits(bits) != inferred:
        raise MultiplierError(
            f"bits={bits} disagrees with {path}: its {entries} entries make bits={inferred}"
        )
    prov["format"] = "tfapprox-uint16"
    return np.frombuffer(raw, dtype="<u2").astype(np.uint16), prov
