"""Reading and writing ApproxTrain's LUT files.

ApproxTrain (Gong et al., 2023) ships its approximate mantissa products as raw ``uint8`` files
named ``NAME_<M>.bin`` with ``2^(2M)`` entries, row-major with operand A's top M fraction
bits selecting the row. In each byte, bit 7 is the carry (the product is ``>= 2``) and the low
M bits are the product's top M fraction bits after normalization. A byte therefore holds
M <= 7 only.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from approxsim._io import atomic_write_bytes
from approxsim.multipliers.core import Multiplier, MultiplierError, check_mantissa_bits

__all__ = ["read_approxtrain_lut", "write_approxtrain_lut", "APPROXTRAIN_MAX_BITS"]

#: A byte has the carry in bit 7, so at most 7 mantissa bits fit.
APPROXTRAIN_MAX_BITS = 7


def _bits_from_name(path: Path) -> int:
    m = re.search(r"_(\d+)\.bin$", path.name)
    if m is None:
        raise MultiplierError(
            f"cannot tell the mantissa width of {path}: ApproxTrain LUT files are named "
            "NAME_<M>.bin (e.g. MBM_7.bin); rename it or pass mantissa_bits="
        )
    return int(m.group(1))


def read_approxtrain_lut(
    path: str | Path, mantissa_bits: int | None = None, *, name: str | None = None
) -> Multiplier:
    """Build a multiplier from an ApproxTrain LUT file.

    Args:
        path: The ``.bin`` file.
        mantissa_bits: M; taken from the ``NAME_<M>.bin`` file name when omitted.
        name: Report name (default: the file's stem, e.g. ``MBM_7``).

    Returns:
        A truncating LUT multiplier with ``lut[i, j] = (1 + f/2^M) · 2^carry``.

    Raises:
        FileNotFoundError: the file does not exist.
        MultiplierError: M cannot be inferred or is out of range, the file has the wrong size,
            or a byte uses bits that an M-bit entry cannot have.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ApproxTrain LUT file not found: {p}")
    m = _bits_from_name(p) if mantissa_bits is None else mantissa_bits
    m = check_mantissa_bits(m)
    if m > APPROXTRAIN_MAX_BITS:
        raise MultiplierError(
            f"{p}: ApproxTrain's one-byte LUT entries hold at most {APPROXTRAIN_MAX_BITS} "
            f"mantissa bits, not {m}"
        )
    raw = p.read_bytes()
    n = 1 << m
    if len(raw) != n * n:
        hint = ""
        if len(raw) == 4 * n * n:
            hint = (
                " (4 bytes per entry: this looks like the older uint32 format; "
                "convert it to one byte per entry)"
            )
        raise MultiplierError(
            f"{p} has {len(raw)} bytes, but an ApproxTrain LUT with M={m} has 2^(2M) = "
            f"{n * n} one-byte entries{hint}"
        )
    data = np.frombuffer(raw, dtype=np.uint8).reshape(n, n)
    stray = data & np.uint8(0x7F & ~(n - 1))
    if stray.any():
        i, j = (int(v) for v in np.argwhere(stray)[0])
        raise MultiplierError(
            f"{p}: entry [{i}, {j}] = 0x{data[i, j]:02x} sets bits between the M={m} mantissa "
            "bits and the carry bit; the file is damaged or M is wrong"
        )
    carry = (data >> 7).astype(np.float64)
    frac = (data & np.uint8(n - 1)).astype(np.float64)
    lut = ((1.0 + frac / n) * np.exp2(carry)).astype(np.float32)
    return Multiplier(
        name or p.stem,
        m,
        lut,
        rounding="truncate",
        provenance={
            "builder": "approxtrain_lut",
            "file": p.name,
            "file_sha256": hashlib.sha256(raw).hexdigest(),
        },
    )


def write_approxtrain_lut(multiplier: Multiplier, path: str | Path) -> Path:
    """Write a multiplier as an ApproxTrain LUT file (for use with ApproxTrain itself).

    Raises:
        MultiplierError: M > 7, or a LUT value that is not ``(1 + f/2^M) · 2^carry``.
    """
    lut_t = multiplier.lut
    if lut_t is None or multiplier.mantissa_bits > APPROXTRAIN_MAX_BITS:
        raise MultiplierError(
            f"{multiplier.name} cannot be written as an ApproxTrain LUT: that format needs a "
            f"LUT multiplier with M <= {APPROXTRAIN_MAX_BITS}"
        )
    m = multiplier.mantissa_bits
    n = 1 << m
    lut = lut_t.numpy().astype(np.float64)
    carry = lut >= 2.0
    frac = (lut / np.where(carry, 2.0, 1.0) - 1.0) * n
    if (lut >= 4.0).any() or (lut < 1.0).any() or (frac != np.round(frac)).any():
        raise MultiplierError(
            f"{multiplier.name}: its LUT has values that ApproxTrain's format cannot hold "
            f"(it needs values in [1, 4) with {m} fraction bits)"
        )
    data = (carry.astype(np.uint8) << 7) | frac.astype(np.uint8)
    return atomic_write_bytes(path, data.astype(np.uint8).tobytes())
