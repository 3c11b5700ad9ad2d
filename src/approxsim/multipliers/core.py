"""The :class:`Multiplier`: an immutable description of a simulated float multiplier.

A multiplier is either *exact* (IEEE float32, dispatched to native PyTorch arithmetic) or a
*LUT multiplier*: an M-bit mantissa table plus an input rounding mode, whose products follow
DESIGN §2 bit for bit. Builders (``from_c``, ``from_python``, ``from_approxtrain_lut``) live in
sibling modules and are attached here as class methods so users find them on the class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.errors import ApproxsimError
from approxsim.multipliers.numformat import ROUNDINGS, lut_product

__all__ = ["Multiplier", "MIN_MANTISSA_BITS", "MAX_MANTISSA_BITS", "MultiplierError"]

MIN_MANTISSA_BITS = 1
#: Largest M: 2^22 LUT entries (16 MiB); every M-bit exact product is still exact in float32.
MAX_MANTISSA_BITS = 11


class MultiplierError(ApproxsimError, ValueError):
    """A multiplier could not be built or used as asked; the message says what to change."""


def check_mantissa_bits(mantissa_bits: Any) -> int:
    """Validate M and return it as an int.

    Raises:
        MultiplierError: if M is not an integer in ``[MIN_MANTISSA_BITS, MAX_MANTISSA_BITS]``.
    """
    if isinstance(mantissa_bits, bool) or not isinstance(mantissa_bits, (int, np.integer)):
        raise MultiplierError(
            f"mantissa_bits must be an integer from {MIN_MANTISSA_BITS} to "
            f"{MAX_MANTISSA_BITS}, got {mantissa_bits!r}"
        )
    m = int(mantissa_bits)
    if not MIN_MANTISSA_BITS <= m <= MAX_MANTISSA_BITS:
        raise MultiplierError(
            f"mantissa_bits={m} is out of range: approxsim supports M from {MIN_MANTISSA_BITS} "
            f"to {MAX_MANTISSA_BITS} (a 2^(2M)-entry LUT; M={MAX_MANTISSA_BITS} is 2^22 entries)"
        )
    return m


def check_rounding(rounding: Any) -> str:
    """Validate an input rounding mode."""
    if rounding not in ROUNDINGS:
        raise MultiplierError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return str(rounding)


def validate_lut(lut: np.ndarray, mantissa_bits: int, what: str = "LUT") -> np.ndarray:
    """Check a LUT's shape, dtype and values; return it as a C-contiguous float32 array.

    Raises:
        MultiplierError: wrong shape, non-finite, non-positive or subnormal entries.
    """
    n = 1 << mantissa_bits
    arr = np.asarray(lut)
    if arr.shape == (n * n,):
        arr = arr.reshape(n, n)
    if arr.shape != (n, n):
        raise MultiplierError(
            f"{what} must have shape ({n}, {n}) for mantissa_bits={mantissa_bits}, got {arr.shape}"
        )
    if arr.dtype != np.float32:
        raise MultiplierError(f"{what} must be float32, got {arr.dtype}")
    bad = ~np.isfinite(arr) | (arr < np.finfo(np.float32).tiny)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise MultiplierError(
            f"{what} entry [{i}, {j}] (operands 1+{i}/2^{mantissa_bits} and "
            f"1+{j}/2^{mantissa_bits}) is {arr[i, j]!r}; every entry must be a positive normal "
            f"float32 (the mantissa product, normally in [1, 4)). {int(bad.sum())} entries are bad."
        )
    return np.ascontiguousarray(arr)


class Multiplier:
    """An immutable simulated float32 multiplier.

    Build one with :func:`approxsim.get_multiplier` (built-ins), :meth:`from_c`,
    :meth:`from_python`, :meth:`from_approxtrain_lut` or :meth:`from_lut`; call it like a
    function to multiply tensors elementwise.

    Attributes:
        name: A short name (``"mitchell7"``, ``"mul@model.c"``...), used in reports.
        mantissa_bits: M, the fraction bits each operand port sees (23 for the exact multiplier).
        rounding: How an operand is reduced to M bits: ``"truncate"`` or ``"nearest"``.
        is_exact: True only for IEEE float32 multiplication (``fp32``).
    """

    __slots__ = (
        "_name",
        "_mantissa_bits",
        "_rounding",
        "_lut",
        "_provenance",
        "_fingerprint",
        "_device_cache",
        "_frozen",
    )

    def __init__(
        self,
        name: str,
        mantissa_bits: int,
        lut: np.ndarray | None,
        *,
        rounding: str = "truncate",
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Create a multiplier from a validated LUT (prefer the ``from_*`` builders).

        Args:
            name: Name shown in reports.
            mantissa_bits: M (1..11) for a LUT multiplier; 23 with ``lut=None`` for exact.
            lut: float32 array of shape ``(2^M, 2^M)``, ``lut[i, j] = model(1.i, 1.j)``;
                ``None`` for the exact float32 multiplier.
            rounding: Input rounding mode, ``"truncate"`` or ``"nearest"``.
            provenance: JSON-serializable description of where the LUT came from.

        Raises:
            MultiplierError: invalid M, rounding or LUT.
        """
        if not isinstance(name, str) or not name:
            raise MultiplierError(f"a multiplier needs a non-empty name, got {name!r}")
        rounding = check_rounding(rounding)
        prov = dict(provenance or {})
        if lut is None:
            if mantissa_bits != 23:
                raise MultiplierError("the exact multiplier (lut=None) has mantissa_bits=23")
            arr = None
        else:
            mantissa_bits = check_mantissa_bits(mantissa_bits)
            arr = validate_lut(lut, mantissa_bits).copy()
            arr.setflags(write=False)
        try:
            json.dumps(prov, sort_keys=True)
        except TypeError as exc:
            raise MultiplierError(f"provenance must be JSON-serializable: {exc}") from None
        self._frozen = False
        self._name = name
        self._mantissa_bits = int(mantissa_bits)
        self._rounding = rounding
        self._lut = arr
        self._provenance = prov
        h = hashlib.sha256()
        h.update(f"approxsim-multiplier:{self._mantissa_bits}:{rounding}:".encode())
        h.update(b"exact" if arr is None else arr.tobytes())
        self._fingerprint = h.hexdigest()
        self._device_cache: dict[str, Tensor] = {}
        self._frozen = True

    def __setattr__(self, key: str, value: Any) -> None:
        if getattr(self, "_frozen", False) and key != "_device_cache":
            raise AttributeError(f"Multiplier is immutable; cannot set {key!r}")
        object.__setattr__(self, key, value)

    def __copy__(self) -> Multiplier:
        return self  # immutable: copies may share it

    def __deepcopy__(self, memo: dict[int, Any]) -> Multiplier:
        return self

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"Multiplier is immutable; cannot delete {key!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self._name, self._mantissa_bits, self._lut, self._rounding, self._provenance),
        )

    # ------------------------------------------------------------------ public attributes
    @property
    def name(self) -> str:
        """Name shown in reports."""
        return self._name

    @property
    def mantissa_bits(self) -> int:
        """M: how many fraction bits of each operand the multiplier sees."""
        return self._mantissa_bits

    @property
    def rounding(self) -> str:
        """Input rounding mode: ``"truncate"`` or ``"nearest"``."""
        return self._rounding

    @property
    def is_exact(self) -> bool:
        """True for IEEE float32 multiplication, which approxsim runs natively."""
        return self._lut is None

    @property
    def lut(self) -> Tensor | None:
        """A copy of the LUT: float32 tensor of shape ``(2^M, 2^M)``; ``None`` when exact.

        ``lut[i, j]`` is the product of ``1 + i/2^M`` (operand A) and ``1 + j/2^M``
        (operand B) with both exponents 0.
        """
        if self._lut is None:
            return None
        return torch.from_numpy(self._lut.copy())

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the LUT came from: builder, source hash, function, parameters, check results."""
        return json.loads(json.dumps(self._provenance))

    @property
    def fingerprint(self) -> str:
        """SHA-256 of what determines every product (M, rounding, LUT bytes)."""
        return self._fingerprint

    def lut_bits(self, device: torch.device | str = "cpu") -> Tensor:
        """The LUT as a flat int32 tensor of float32 bit patterns on ``device`` (cached).

        Kernels use this; treat the returned tensor as read-only.

        Raises:
            MultiplierError: for the exact multiplier, which has no LUT.
        """
        if self._lut is None:
            raise MultiplierError(f"{self._name} is exact and has no LUT")
        key = str(torch.device(device))
        cached = self._device_cache.get(key)
        if cached is None:
            flat = torch.from_numpy(self._lut.reshape(-1).view(np.int32).copy())
            cached = flat.to(device)
            self._device_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ products
    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise simulated product of two tensors (broadcasting like ``a * b``).

        Products are bit-exact to the functional model wherever the result is a normal float
        away from the range edges; zeros, subnormals (flushed to zero), overflow (±inf),
        underflow (signed zero), inf and NaN follow DESIGN §2. float16/bfloat16/float64 inputs
        are converted to float32 first; the result is float32.

        Args:
            a: Tensor (or number) for operand A.
            b: Tensor (or number) for operand B.

        Returns:
            float32 tensor of the broadcast shape.

        Raises:
            MultiplierError: non-floating or complex input, or tensors on different devices.
        """
        ta = _as_float32(a, "a")
        tb = _as_float32(b, "b")
        if ta.device != tb.device:
            raise MultiplierError(
                f"operands are on different devices ({ta.device} and {tb.device}); "
                "move them to one device first"
            )
        if self._lut is None:
            return ta * tb
        return lut_product(ta, tb, self.lut_bits(ta.device), self._mantissa_bits, self._rounding)

    # ------------------------------------------------------------------ statistics
    def error_stats(self) -> dict[str, float]:
        """Error of the LUT over the whole M-bit mantissa grid.

        Each error is relative to the exact product ``(1+i/2^M)(1+j/2^M)`` of the grid
        operands (so input truncation is not counted; the grid operands are exact at M bits).

        Returns:
            A dict with ``mean_rel_error`` (signed mean: the relative bias),
            ``mean_abs_rel_error``, ``max_abs_rel_error``, ``min_rel_error``,
            ``max_rel_error``, ``std_rel_error``, ``rms_rel_error``, ``bias`` (mean of
            ``LUT - exact`` in absolute units of the product) and ``grid_points``.
            All zero for the exact multiplier.
        """
        keys = (
            "mean_rel_error",
            "mean_abs_rel_error",
            "max_abs_rel_error",
            "min_rel_error",
            "max_rel_error",
            "std_rel_error",
            "rms_rel_error",
            "bias",
        )
        if self._lut is None:
            stats = dict.fromkeys(keys, 0.0)
            stats["grid_points"] = 0.0
            return stats
        rel, diff = _grid_errors(self._lut, self._mantissa_bits)
        return {
            "mean_rel_error": float(rel.mean()),
            "mean_abs_rel_error": float(np.abs(rel).mean()),
            "max_abs_rel_error": float(np.abs(rel).max()),
            "min_rel_error": float(rel.min()),
            "max_rel_error": float(rel.max()),
            "std_rel_error": float(rel.std()),
            "rms_rel_error": float(np.sqrt((rel * rel).mean())),
            "bias": float(diff.mean()),
            "grid_points": float(rel.size),
        }

    def relative_error_grid(self) -> np.ndarray:
        """Relative error ``LUT/exact - 1`` over the mantissa grid, float64 ``(2^M, 2^M)``.

        Raises:
            MultiplierError: for the exact multiplier.
        """
        if self._lut is None:
            raise MultiplierError(f"{self._name} is exact; it has no error grid")
        return _grid_errors(self._lut, self._mantissa_bits)[0]

    def describe(self) -> dict[str, Any]:
        """A JSON-serializable summary: name, M, rounding, fingerprint, provenance, stats."""
        return {
            "name": self._name,
            "mantissa_bits": self._mantissa_bits,
            "rounding": self._rounding,
            "exact": self.is_exact,
            "fingerprint": self._fingerprint,
            "provenance": self.provenance,
            "error_stats": self.error_stats(),
        }

    def __repr__(self) -> str:
        if self._lut is None:
            return f"Multiplier(name={self._name!r}, exact float32)"
        return (
            f"Multiplier(name={self._name!r}, mantissa_bits={self._mantissa_bits}, "
            f"rounding={self._rounding!r}, builder={self._provenance.get('builder', '?')!r})"
        )

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_lut(
        cls,
        lut: np.ndarray | Tensor,
        *,
        name: str = "custom",
        rounding: str = "truncate",
        provenance: Mapping[str, Any] | None = None,
    ) -> Multiplier:
        """Build a multiplier from a float32 LUT of shape ``(2^M, 2^M)``; M is inferred.

        Raises:
            MultiplierError: the LUT is not square with a power-of-two side, or has bad values.
        """
        arr = lut.detach().cpu().numpy() if isinstance(lut, Tensor) else np.asarray(lut)
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 2:
            raise MultiplierError(f"a LUT must be a square (2^M, 2^M) array, got {arr.shape}")
        side = arr.shape[0]
        m = side.bit_length() - 1
        if 1 << m != side:
            raise MultiplierError(f"a LUT's side must be a power of two (2^M), got {side}")
        prov = {"builder": "lut"}
        prov.update(provenance or {})
        return cls(name, m, arr, rounding=rounding, provenance=prov)

    @classmethod
    def from_python(
        cls,
        fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
        mantissa_bits: int,
        *,
        name: str | None = None,
        rounding: str = "truncate",
        accept_mismatch: bool = False,
        check_samples: int = 65536,
        seed: int = 0,
    ) -> Multiplier:
        """Build a multiplier from a Python functional model.

        Args:
            fn: Maps two float32 numpy arrays of equal shape to their float32 products.
            mantissa_bits: M, the fraction bits the multiplier sees (1..11).
            name: Report name (default: the function's name).
            rounding: How operands are reduced to M bits before the LUT.
            accept_mismatch: Accept a model that fails the decomposability check; the mismatch
                rate is recorded in ``provenance``.
            check_samples: Random operand pairs for the decomposability check.
            seed: Seed of those pairs.

        Raises:
            MultiplierError: M out of range, ``fn`` raising or returning a wrong shape/dtype,
                or a model that is not decomposable (unless ``accept_mismatch``).
        """
        from approxsim.multipliers.build import build_from_model, python_provenance

        return build_from_model(
            _checked_python_model(fn),
            mantissa_bits,
            name=name or str(getattr(fn, "__name__", "python_model")),
            rounding=rounding,
            accept_mismatch=accept_mismatch,
            check_samples=check_samples,
            seed=seed,
            provenance=python_provenance(fn),
        )

    @classmethod
    def from_c(
        cls, source: str | Path, function: str, mantissa_bits: int, **options: Any
    ) -> Multiplier:
        """Build a multiplier from a C/C++ functional model ``float function(float, float)``.

        See :func:`approxsim.multipliers.cmodel.from_c` for the options (``language``,
        ``compiler``, ``flags``, ``rounding``, ``accept_mismatch``, ``check_samples``, ``name``,
        ``cache_results``).
        """
        from approxsim.multipliers.cmodel import from_c

        return from_c(source, function, mantissa_bits, **options)

    @classmethod
    def from_approxtrain_lut(
        cls, path: str | Path, mantissa_bits: int | None = None, *, name: str | None = None
    ) -> Multiplier:
        """Read an ApproxTrain LUT file (``NAME_<M>.bin``, raw uint8, ``2^(2M)`` entries).

        See :func:`approxsim.multipliers.approxtrain.read_approxtrain_lut`.
        """
        from approxsim.multipliers.approxtrain import read_approxtrain_lut

        return read_approxtrain_lut(path, mantissa_bits, name=name)

    def save(self, path: str | Path, *, overwrite: bool = True, inputs: Any = ()) -> Path:
        """Save the multiplier (LUT, M, rounding, provenance) to an ``.npz`` file.

        Args:
            path: The file to write.
            overwrite: Replace an existing file (``False``: refuse it).
            inputs: Files never to write over, whatever ``overwrite`` says.

        Returns:
            The path written.
        """
        from approxsim.multipliers.storage import save_multiplier

        return save_multiplier(self, path, overwrite=overwrite, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path) -> Multiplier:
        """Load a multiplier written by :meth:`save`."""
        from approxsim.multipliers.storage import load_multiplier

        return load_multiplier(path)


def _rebuild(
    name: str,
    mantissa_bits: int,
    lut: np.ndarray | None,
    rounding: str,
    provenance: dict[str, Any],
) -> Multiplier:
    return Multiplier(name, mantissa_bits, lut, rounding=rounding, provenance=provenance)


def _as_float32(x: Any, what: str) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(x)
    if t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise MultiplierError(
            f"operand {what} has dtype {t.dtype}; approximate products need real "
            "floating-point tensors (float32, or float16/bfloat16/float64 which are converted)"
        )
    return t.to(torch.float32)


_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _grid_errors(lut: np.ndarray, mantissa_bits: int) -> tuple[np.ndarray, np.ndarray]:
    n = 1 << mantissa_bits
    idx = np.arange(n, dtype=np.float64) / n + 1.0
    exact = idx[:, None] * idx[None, :]
    approx = lut.astype(np.float64)
    return approx / exact - 1.0, approx - exact


def _checked_python_model(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Wrap a user function so a bad return value becomes a clear MultiplierError."""
    if not callable(fn):
        raise MultiplierError(f"from_python needs a callable, got {type(fn).__name__}")
    label = getattr(fn, "__qualname__", repr(fn))

    def model(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        try:
            out = fn(a, b)
        except Exception as exc:
            raise MultiplierError(
                f"the Python model {label} raised {type(exc).__name__}: {exc} "
                f"(it is called with two float32 numpy arrays of shape {a.shape})"
            ) from exc
        if not isinstance(out, np.ndarray):
            raise MultiplierError(
                f"the Python model {label} returned {type(out).__name__}; it must return a "
                f"numpy float32 array of shape {a.shape}"
            )
        if out.shape != a.shape:
            raise MultiplierError(
                f"the Python model {label} returned shape {out.shape} for inputs of shape "
                f"{a.shape}; it must be elementwise"
            )
        if out.dtype != np.float32:
            raise MultiplierError(
                f"the Python model {label} returned dtype {out.dtype}; it must return float32 "
                "(products are compared bit for bit; cast with .astype(np.float32) if the "
                "rounding to float32 is part of your model)"
            )
        return out

    return model
