"""Saving and loading multipliers as ``.npz`` files.

A float multiplier file holds its LUT, M, rounding and provenance; an integer multiplier file
(``format: approxsim-int-multiplier``) its product table, bits, signedness and provenance.
Both record the fingerprint, and loading recomputes it: a damaged or edited file is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from approxsim._io import atomic_write_bytes
from approxsim.multipliers.core import Multiplier, MultiplierError
from approxsim.multipliers.integer import IntMultiplier

__all__ = [
    "save_multiplier",
    "load_multiplier",
    "save_int_multiplier",
    "load_int_multiplier",
    "FORMAT_VERSION",
    "atomic_write_bytes",
]

FORMAT_VERSION = 1


def save_multiplier(
    multiplier: Multiplier,
    path: str | Path,
    *,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Save ``multiplier`` to ``path`` (``.npz``), atomically.

    Args:
        multiplier: A LUT multiplier.
        path: The ``.npz`` file to write.
        overwrite: Replace an existing file (``False``: refuse it, as ``--save`` without
            ``--overwrite`` does).
        inputs: Files the caller read (never written over, whatever ``overwrite`` says).

    Returns:
        The path written.

    Raises:
        MultiplierError: for the exact multiplier (use the name ``fp32`` instead).
        OutputExistsError: ``path`` exists (without ``overwrite``), or is one of ``inputs``.
    """
    lut = multiplier.lut
    if lut is None:
        raise MultiplierError("the exact multiplier has nothing to save; refer to it as 'fp32'")
    meta = {
        "format": "approxsim-multiplier",
        "version": FORMAT_VERSION,
        "name": multiplier.name,
        "mantissa_bits": multiplier.mantissa_bits,
        "rounding": multiplier.rounding,
        "fingerprint": multiplier.fingerprint,
        "provenance": multiplier.provenance,
    }
    p = Path(path)
    import io

    buf = io.BytesIO()
    np.savez(buf, lut=lut.numpy(), meta=np.array(json.dumps(meta)))
    atomic_write_bytes(p, buf.getvalue(), mode=0o644, overwrite=overwrite, inputs=inputs)
    return p


def load_multiplier(path: str | Path) -> Multiplier:
    """Load a multiplier saved by :func:`save_multiplier`, verifying its fingerprint.

    Raises:
        FileNotFoundError: no such file.
        MultiplierError: not an approxsim multiplier file, or damaged.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"multiplier file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            lut = np.array(data["lut"]) if "lut" in data.files else None
    except Exception as exc:  # zip, npy and JSON layers each raise their own types
        raise MultiplierError(f"{p} is not a readable approxsim multiplier file: {exc}") from None
    if isinstance(meta, dict) and meta.get("format") == INT_FORMAT:
        raise MultiplierError(f"{p} holds an integer multiplier; load it with IntMultiplier.load")
    if not isinstance(meta, dict) or meta.get("format") != "approxsim-multiplier" or lut is None:
        raise MultiplierError(f"{p} is not an approxsim multiplier file")
    try:
        mult = Multiplier(
            meta["name"],
            meta["mantissa_bits"],
            lut,
            rounding=meta["rounding"],
            provenance=meta["provenance"],
        )
    except KeyError as exc:
        raise MultiplierError(f"{p} is damaged: its metadata lacks {exc}") from None
    if mult.fingerprint != meta.get("fingerprint"):
        raise MultiplierError(f"{p} is damaged: its LUT does not match its recorded fingerprint")
    return mult


INT_FORMAT = "approxsim-int-multiplier"


def save_int_multiplier(
    multiplier: IntMultiplier,
    path: str | Path,
    *,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Save an integer multiplier to ``path`` (``.npz``: table, bits, signed, provenance).

    Args:
        multiplier: The integer multiplier.
        path: The ``.npz`` file to write.
        overwrite: Replace an existing file (``False``: refuse it).
        inputs: Files the caller read (never written over, whatever ``overwrite`` says).

    Returns:
        The path written.

    Raises:
        OutputExistsError: ``path`` exists (without ``overwrite``), or is one of ``inputs``.
    """
    meta = {
        "format": INT_FORMAT,
        "version": FORMAT_VERSION,
        "name": multiplier.name,
        "bits": multiplier.bits,
        "signed": multiplier.signed,
        "fingerprint": multiplier.fingerprint,
        "provenance": multiplier.provenance,
    }
    import io

    buf = io.BytesIO()
    np.savez(buf, table=multiplier.table.numpy(), meta=np.array(json.dumps(meta)))
    p = Path(path)
    atomic_write_bytes(p, buf.getvalue(), mode=0o644, overwrite=overwrite, inputs=inputs)
    return p


def load_int_multiplier(path: str | Path) -> IntMultiplier:
    """Load an integer multiplier saved by :func:`save_int_multiplier`.

    Args:
        path: The ``.npz`` file.

    Returns:
        The multiplier, its fingerprint checked against the one recorded.

    Raises:
        FileNotFoundError: no such file.
        MultiplierError: not an approxsim integer multiplier file, or damaged (a table or
            metadata that does not match the recorded fingerprint).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"multiplier file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            table = np.array(data["table"]) if "table" in data.files else None
    except Exception as exc:  # zip, npy and JSON layers each raise their own types
        raise MultiplierError(f"{p} is not a readable approxsim multiplier file: {exc}") from None
    if isinstance(meta, dict) and meta.get("format") == "approxsim-multiplier":
        raise MultiplierError(f"{p} holds a float multiplier; load it with Multiplier.load")
    if not isinstance(meta, dict) or meta.get("format") != INT_FORMAT or table is None:
        raise MultiplierError(f"{p} is not an approxsim integer multiplier file")
    try:
        mult = IntMultiplier(
            meta["name"], meta["bits"], meta["signed"], table, provenance=meta["provenance"]
        )
    except KeyError as exc:
        raise MultiplierError(f"{p} is damaged: its metadata lacks {exc}") from None
    except MultiplierError as exc:
        raise MultiplierError(f"{p} is damaged: {exc}") from None
    if mult.fingerprint != meta.get("fingerprint"):
        raise MultiplierError(f"{p} is damaged: its table does not match its recorded fingerprint")
    return mult
