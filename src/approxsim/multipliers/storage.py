"""Saving and loading multipliers as ``.npz`` files (LUT, M, rounding, provenance)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from approxsim._io import atomic_write_bytes
from approxsim.multipliers.core import Multiplier, MultiplierError

__all__ = ["save_multiplier", "load_multiplier", "FORMAT_VERSION", "atomic_write_bytes"]

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
            lut = np.array(data["lut"])
            meta = json.loads(str(data["meta"]))
    except Exception as exc:  # zip, npy and JSON layers each raise their own types
        raise MultiplierError(f"{p} is not a readable approxsim multiplier file: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "approxsim-multiplier":
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
