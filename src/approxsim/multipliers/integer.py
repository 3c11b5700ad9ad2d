"""The :class:`IntMultiplier`: an immutable approximate integer multiplier (2..12 bits).

An integer multiplier is a table over the raw operand values: ``table[i, j]`` is the product
the circuit gives for operands ``min_value + i`` (the C function's *first* parameter) and
``min_value + j`` (its second). A product is the low ``2·bits`` bits of the model's result,
read as two's complement when ``signed`` (DESIGN §2). The table decides every product, so the
fingerprint hashes it together with ``bits`` and ``signed``.

Builders from Python functions and LUT files live in :mod:`approxsim.multipliers.intbuild`,
from C models in :mod:`approxsim.multipliers.intc` and from EvoApproxLib files in
:mod:`approxsim.multipliers.evoapprox`. They are attached here as class methods so users find
them on the class.
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

from approxsim.multipliers.core import MultiplierError

__all__ = ["IntMultiplier", "MIN_INT_BITS", "MAX_INT_BITS", "product_range", "operand_range"]

MIN_INT_BITS = 2
#: Largest operand width: a 2^24-entry table (64 MiB as int32).
MAX_INT_BITS = 12


def check_int_bits(bits: Any) -> int:
    """Validate an integer operand width and return it as an int.

    Args:
        bits: The operand width to check.

    Returns:
        ``bits`` as an int.

    Raises:
        MultiplierError: ``bits`` is not an integer from 2 to 12.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise MultiplierError(
            f"bits must be an integer from {MIN_INT_BITS} to {MAX_INT_BITS}, got {bits!r}"
        )
    b = int(bits)
    if not MIN_INT_BITS <= b <= MAX_INT_BITS:
        raise MultiplierError(
            f"bits={b} is out of range: integer multipliers have {MIN_INT_BITS} to "
            f"{MAX_INT_BITS} bits per operand (a 2^(2·bits)-entry table)"
        )
    return b


def operand_range(bits: int, signed: bool) -> tuple[int, int]:
    """The smallest and largest operand value of a ``bits``-bit port.

    Args:
        bits: Operand width.
        signed: Two's complement operands (else unsigned).

    Returns:
        ``(-2^(bits-1), 2^(bits-1) - 1)`` when signed, ``(0, 2^bits - 1)`` otherwise.
    """
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def product_range(bits: int, signed: bool) -> tuple[int, int]:
    """The range of a ``2·bits``-bit product register.

    Args:
        bits: Operand width.
        signed: Two's complement product (else unsigned).

    Returns:
        ``(-2^(2·bits-1), 2^(2·bits-1) - 1)`` when signed, ``(0, 2^(2·bits) - 1)`` otherwise.
    """
    return operand_range(2 * bits, signed)


def validate_table(table: Any, bits: int, signed: bool, what: str = "table") -> np.ndarray:
    """Check a product table's shape, dtype and values; return it as C-contiguous int32.

    Args:
        table: Array-like of shape ``(2^bits, 2^bits)`` (or flat ``2^(2·bits)``) of integers.
        bits: Operand width.
        signed: Whether products are two's complement.
        what: How the table is named in messages.

    Returns:
        A new C-contiguous int32 array of shape ``(2^bits, 2^bits)``.

    Raises:
        MultiplierError: wrong shape, a non-integer dtype, or an entry outside the
            ``2·bits``-bit product range.
    """
    n = 1 << bits
    arr = table.detach().cpu().numpy() if isinstance(table, Tensor) else np.asarray(table)
    if arr.shape == (n * n,):
        arr = arr.reshape(n, n)
    if arr.shape != (n, n):
        raise MultiplierError(
            f"{what} must have shape ({n}, {n}) for bits={bits}, got {tuple(arr.shape)}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise MultiplierError(
            f"{what} must hold integers, got dtype {arr.dtype}; integer multipliers store exact "
            "products (convert with .astype(np.int64) if the values are whole numbers)"
        )
    lo, hi = product_range(bits, signed)
    wide = arr.astype(np.int64) if arr.dtype != np.uint64 else arr
    bad = (wide < lo) | (wide > hi) if arr.dtype != np.uint64 else wide > np.uint64(hi)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        omin, _ = operand_range(bits, signed)
        kind = "signed" if signed else "unsigned"
        raise MultiplierError(
            f"{what} entry [{i}, {j}] (operands {omin + i} and {omin + j}) is {arr[i, j]}, "
            f"outside the {2 * bits}-bit {kind} product range {lo}..{hi}; {int(bad.sum())} "
            "entries are outside. Reduce each product to its low 2·bits bits (read as two's "
            "complement when signed), or check `signed=`"
        )
    return np.ascontiguousarray(wide, dtype=np.int32)


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """True for torch's integer dtypes (not bool, floating or complex)."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


class IntMultiplier:
    """An immutable approximate integer multiplier defined by its product table.

    Build one with :func:`approxsim.get_int_multiplier` (built-ins), :meth:`from_python`,
    :meth:`from_lut`, :meth:`exact` or the C/EvoApproxLib builders; multiply integer tensors
    with :meth:`m`.

    Attributes:
        name: A short name shown in reports (``"drum4_u8"``, ``"mul8u_1JFF"``...).
        bits: Operand width, 2..12.
        signed: Two's complement operands and products (else unsigned).
        min_value: The smallest operand value (``-2^(bits-1)`` or 0).
        max_value: The largest operand value (``2^(bits-1) - 1`` or ``2^bits - 1``).
    """

    __slots__ = (
        "_name",
        "_bits",
        "_signed",
        "_table",
        "_provenance",
        "_fingerprint",
        "_device_cache",
        "_stats",
        "_frozen",
    )

    def __init__(
        self,
        name: str,
        bits: int,
        signed: bool,
        table: Any,
        *,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Create a multiplier from its product table (prefer the ``from_*`` builders).

        Args:
            name: Name shown in reports.
            bits: Operand width, 2..12.
            signed: Two's complement operands and products (else unsigned).
            table: Integer array or tensor of shape ``(2^bits, 2^bits)``; ``table[i, j]`` is
                the product of ``min_value + i`` (first operand) and ``min_value + j``.
            provenance: JSON-serializable description of where the table came from.

        Raises:
            MultiplierError: an empty name, invalid ``bits`` or ``signed``, a bad table, or
                provenance that is not JSON-serializable.
        """
        if not isinstance(name, str) or not name:
            raise MultiplierError(f"a multiplier needs a non-empty name, got {name!r}")
        if not isinstance(signed, (bool, np.bool_)):
            raise MultiplierError(f"signed must be True or False, got {signed!r}")
        bits = check_int_bits(bits)
        arr = validate_table(table, bits, bool(signed))
        arr.setflags(write=False)
        prov = dict(provenance or {})
        try:
            json.dumps(prov, sort_keys=True)
        except TypeError as exc:
            raise MultiplierError(f"provenance must be JSON-serializable: {exc}") from None
        self._frozen = False
        self._name = name
        self._bits = bits
        self._signed = bool(signed)
        self._table = arr
        self._provenance = prov
        h = hashlib.sha256()
        h.update(f"approxsim-int-multiplier:{bits}:{'s' if signed else 'u'}:".encode())
        h.update(arr.astype("<i4", copy=False).tobytes())
        self._fingerprint = h.hexdigest()
        self._device_cache: dict[str, Tensor] = {}
        self._stats: dict[str, float] | None = None
        self._frozen = True

    def __setattr__(self, key: str, value: Any) -> None:
        if getattr(self, "_frozen", False) and key not in ("_device_cache", "_stats"):
            raise AttributeError(f"IntMultiplier is immutable; cannot set {key!r}")
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"IntMultiplier is immutable; cannot delete {key!r}")

    def __copy__(self) -> IntMultiplier:
        return self  # immutable: copies may share it

    def __deepcopy__(self, memo: dict[int, Any]) -> IntMultiplier:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self._name, self._bits, self._signed, self._table, self._provenance),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntMultiplier):
            return NotImplemented
        return self._fingerprint == other._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        kind = "signed" if self._signed else "unsigned"
        return (
            f"IntMultiplier(name={self._name!r}, bits={self._bits}, {kind}, "
            f"fingerprint={self._fingerprint[:12]})"
        )

    # ------------------------------------------------------------------ public attributes
    @property
    def name(self) -> str:
        """Name shown in reports."""
        return self._name

    @property
    def bits(self) -> int:
        """Operand width (2..12)."""
        return self._bits

    @property
    def signed(self) -> bool:
        """True for two's complement operands and products."""
        return self._signed

    @property
    def min_value(self) -> int:
        """The smallest operand value: ``-2^(bits-1)`` when signed, else 0."""
        return operand_range(self._bits, self._signed)[0]

    @property
    def max_value(self) -> int:
        """The largest operand value: ``2^(bits-1) - 1`` when signed, else ``2^bits - 1``."""
        return operand_range(self._bits, self._signed)[1]

    @property
    def table(self) -> Tensor:
        """A copy of the product table: int32 tensor of shape ``(2^bits, 2^bits)``.

        ``table[i, j]`` is the product of operand values ``min_value + i`` (the first
        operand, the C function's first parameter) and ``min_value + j``.
        """
        return torch.from_numpy(self._table.copy())

    def table_on(self, device: torch.device | str = "cpu") -> Tensor:
        """The table as an int32 ``(2^bits, 2^bits)`` tensor on ``device``, cached per device.

        Kernels use this to avoid a copy per call; treat the returned tensor as read-only.

        Args:
            device: Where the table should live.

        Returns:
            The cached table tensor.
        """
        key = str(torch.device(device))
        cached = self._device_cache.get(key)
        if cached is None:
            cached = torch.from_numpy(self._table.copy()).to(device)
            self._device_cache[key] = cached
        return cached

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the table came from: builder, source hash, design parameters, header metrics."""
        return json.loads(json.dumps(self._provenance))

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of what determines every product: bits, signedness, table."""
        return self._fingerprint

    # ------------------------------------------------------------------ products
    def m(self, a: Any, b: Any) -> Tensor:
        """Elementwise approximate products of two integer tensors (broadcasting).

        Args:
            a: Integer tensor (or int) of operand values for the first operand.
            b: Integer tensor (or int) of operand values for the second operand.

        Returns:
            int32 tensor of the broadcast shape: ``table[a - min_value, b - min_value]``.

        Raises:
            MultiplierError: a float, bool or complex operand (quantize it first: integer
                multipliers never fall back to exact float arithmetic), a value outside
                ``min_value..max_value``, shapes that do not broadcast, or tensors on
                different devices.
        """
        ta = self.check_operand(a, "a")
        tb = self.check_operand(b, "b")
        if ta.device != tb.device:
            raise MultiplierError(
                f"operands are on different devices ({ta.device} and {tb.device}); "
                "move them to one device first"
            )
        try:
            ta, tb = torch.broadcast_tensors(ta, tb)
        except RuntimeError:
            raise MultiplierError(
                f"operand shapes {tuple(ta.shape)} and {tuple(tb.shape)} do not broadcast"
            ) from None
        n = 1 << self._bits
        lo = self.min_value
        idx = (ta.to(torch.int64) - lo) * n + (tb.to(torch.int64) - lo)
        flat = self.table_on(ta.device).reshape(-1)
        return flat[idx.reshape(-1)].reshape(idx.shape)

    def check_operand(self, x: Any, what: str = "operand") -> Tensor:
        """Check that ``x`` holds integer operand values in range; return it as a tensor.

        Args:
            x: Tensor, array or int.
            what: The operand's name in messages.

        Returns:
            ``x`` as a tensor (unchanged dtype).

        Raises:
            MultiplierError: not an integer dtype, or a value outside the operand range.
        """
        t = x if isinstance(x, Tensor) else torch.as_tensor(x)
        if not is_integer_dtype(t.dtype):
            raise MultiplierError(
                f"operand {what} has dtype {t.dtype}; {self._name} multiplies integer operand "
                f"values ({self.min_value}..{self.max_value}). Quantize float tensors first "
                "(a quantized layer does it for you); no exact float fallback is taken"
            )
        if t.numel():
            lo_v, hi_v = int(t.min()), int(t.max())
            if lo_v < self.min_value or hi_v > self.max_value:
                bad = lo_v if lo_v < self.min_value else hi_v
                kind = "signed" if self._signed else "unsigned"
                raise MultiplierError(
                    f"operand {what} holds {bad}, outside the {self._bits}-bit {kind} range "
                    f"{self.min_value}..{self.max_value} of {self._name}; clamp or requantize "
                    "the operands to that range"
                )
        return t

    # ------------------------------------------------------------------ statistics
    def error_stats(self) -> dict[str, float]:
        """Error of the table against exact products over all ``2^(2·bits)`` operand pairs.

        EvoApproxLib's definitions, with ``d = approx - exact`` and NZ the pairs whose exact
        product is not 0: ``mae`` = mean |d|; ``mae_percent`` = 100·mae / 2^(2·bits);
        ``wce`` = max |d|; ``wce_percent`` = 100·wce / 2^(2·bits); ``ep_percent`` = 100 ·
        share of pairs with d ≠ 0; ``mse`` = mean d²; ``mre_percent`` = 100 · mean over NZ of
        |d| / |exact|; ``wcre_percent`` = 100 · max over NZ of |d| / |exact|;
        ``mean_error`` = mean d (the bias) and ``std_error`` its (population) standard
        deviation. Computed once, exactly in integers where the sums allow, else in float64.

        Returns:
            A new dict of those ten floats.
        """
        if self._stats is None:
            self._stats = compute_error_stats(self._table, self._bits, self._signed)
        return dict(self._stats)

    def error_grid(self) -> np.ndarray:
        """The error distance ``approx - exact`` for every operand pair.

        Returns:
            int64 array of shape ``(2^bits, 2^bits)``, indexed like :attr:`table`.
        """
        return self._table.astype(np.int64) - exact_table(self._bits, self._signed)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, bits, signed, fingerprint, provenance, error stats.

        Returns:
            A new dict.
        """
        return {
            "name": self._name,
            "kind": "integer",
            "bits": self._bits,
            "signed": self._signed,
            "min_value": self.min_value,
            "max_value": self.max_value,
            "fingerprint": self._fingerprint,
            "provenance": self.provenance,
            "error_stats": self.error_stats(),
        }

    # ------------------------------------------------------------------ builders
    @classmethod
    def exact(cls, bits: int, signed: bool, *, name: str | None = None) -> IntMultiplier:
        """The exact ``bits``-bit multiplier.

        Args:
            bits: Operand width, 2..12.
            signed: Two's complement (else unsigned).
            name: Report name (default ``int<bits>`` or ``uint<bits>``).

        Returns:
            An IntMultiplier whose every product is exact.

        Raises:
            MultiplierError: invalid ``bits``.
        """
        bits = check_int_bits(bits)
        default = f"{'int' if signed else 'uint'}{bits}"
        return cls(
            name or default,
            bits,
            signed,
            exact_table(bits, bool(signed)),
            provenance={"builder": "builtin", "design": "exact", "description": "exact product"},
        )

    @classmethod
    def from_python(
        cls,
        fn: Callable[..., Any],
        bits: int,
        signed: bool,
        *,
        name: str | None = None,
        vectorized: bool | None = None,
    ) -> IntMultiplier:
        """Build a multiplier from a Python functional model of the circuit.

        See :func:`approxsim.multipliers.intbuild.int_from_python`.
        """
        from approxsim.multipliers.intbuild import int_from_python

        return int_from_python(fn, bits, signed, name=name, vectorized=vectorized)

    @classmethod
    def from_lut(
        cls,
        lut: Any,
        *,
        signed: bool,
        bits: int | None = None,
        name: str | None = None,
    ) -> IntMultiplier:
        """Build a multiplier from a product table (array, tensor) or a LUT file.

        See :func:`approxsim.multipliers.intbuild.int_from_lut` (array layouts, TFApprox's
        binary ``uint16`` files).
        """
        from approxsim.multipliers.intbuild import int_from_lut

        return int_from_lut(lut, signed=signed, bits=bits, name=name)

    @classmethod
    def from_c(
        cls,
        source: str | Path,
        function: str,
        bits: int = 8,
        signed: bool = False,
        **options: Any,
    ) -> IntMultiplier:
        """Build a multiplier from a C/C++ functional model (any integer types).

        The product is the low ``2·bits`` bits of the return value, two's complement when
        ``signed``; the function's first parameter is the first operand, whatever its name.
        See :func:`approxsim.multipliers.intc.int_from_c` for the options (``language``,
        ``compiler``, ``flags``, ``name``, ``time_limit``, ``cache_results``).
        """
        from approxsim.multipliers.intc import int_from_c

        return int_from_c(source, function, bits, signed, **options)

    @classmethod
    def from_evoapprox(cls, path: str | Path, **options: Any) -> IntMultiplier:
        """Load an EvoApproxLib C model, checking its table against its header metrics.

        ``bits`` and ``signed`` come from the function name (``mul8u_…``, ``mul8s_…``). See
        :func:`approxsim.multipliers.evoapprox.from_evoapprox` for the options.
        """
        from approxsim.multipliers.evoapprox import from_evoapprox

        return from_evoapprox(path, **options)

    def save(self, path: str | Path, *, overwrite: bool = True, inputs: Any = ()) -> Path:
        """Save the multiplier (table, bits, signedness, provenance) to an ``.npz`` file.

        Args:
            path: The file to write.
            overwrite: Replace an existing file (``False``: refuse it).
            inputs: Files never to write over, whatever ``overwrite`` says.

        Returns:
            The path written.

        Raises:
            OutputExistsError: ``path`` exists (without ``overwrite``) or is one of ``inputs``.
        """
        from approxsim.multipliers.storage import save_int_multiplier

        return save_int_multiplier(self, path, overwrite=overwrite, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path) -> IntMultiplier:
        """Load a multiplier written by :meth:`save`, verifying its fingerprint.

        See :func:`approxsim.multipliers.storage.load_int_multiplier`.
        """
        from approxsim.multipliers.storage import load_int_multiplier

        return load_int_multiplier(path)


def _rebuild(
    name: str, bits: int, signed: bool, table: np.ndarray, provenance: dict[str, Any]
) -> IntMultiplier:
    return IntMultiplier(name, bits, signed, table, provenance=provenance)


def operand_values(bits: int, signed: bool) -> np.ndarray:
    """All operand values of a ``bits``-bit port in table order (ascending), as int64.

    Args:
        bits: Operand width.
        signed: Two's complement (else unsigned).

    Returns:
        1-D int64 array of length ``2^bits``.
    """
    lo, hi = operand_range(bits, signed)
    return np.arange(lo, hi + 1, dtype=np.int64)


def exact_table(bits: int, signed: bool) -> np.ndarray:
    """The exact products of every operand pair, int64 ``(2^bits, 2^bits)``.

    Args:
        bits: Operand width.
        signed: Two's complement (else unsigned).

    Returns:
        ``v[:, None] * v[None, :]`` for the ascending operand values ``v``.
    """
    v = operand_values(bits, signed)
    return v[:, None] * v[None, :]


def compute_error_stats(table: np.ndarray, bits: int, signed: bool) -> dict[str, float]:
    """EvoApproxLib's error metrics of ``table`` (see :meth:`IntMultiplier.error_stats`).

    Args:
        table: Integer product table ``(2^bits, 2^bits)``.
        bits: Operand width.
        signed: Two's complement (else unsigned).

    Returns:
        A dict with ``mae``, ``mae_percent``, ``wce``, ``wce_percent``, ``ep_percent``,
        ``mse``, ``mre_percent``, ``wcre_percent``, ``mean_error``, ``std_error``.
    """
    exact = exact_table(bits, signed)
    d = table.astype(np.int64) - exact
    absd = np.abs(d)
    count = d.size
    scale = float(1 << (2 * bits))
    # |d| < 2^(2·bits) and there are 2^(2·bits) pairs: these sums are exact in int64.
    sum_abs = int(absd.sum())
    sum_d = int(d.sum())
    # Σd² can pass 2^63 from 11 bits on; one row fits in int64, Python ints add the rows.
    sum_sq = sum(int(np.dot(row, row)) for row in d) if bits > 10 else int((d * d).sum())
    mean = sum_d / count
    # The variance from exact integer sums: no cancellation in floating point.
    var = (count * sum_sq - sum_d * sum_d) / (count * count)
    nz = exact != 0
    rel = absd[nz] / np.abs(exact[nz]).astype(np.float64)
    wce = int(absd.max())
    return {
        "mae": sum_abs / count,
        "mae_percent": 100.0 * (sum_abs / count) / scale,
        "wce": float(wce),
        "wce_percent": 100.0 * wce / scale,
        "ep_percent": 100.0 * int(np.count_nonzero(d)) / count,
        "mse": sum_sq / count,
        "mre_percent": 100.0 * float(rel.mean()) if rel.size else 0.0,
        "wcre_percent": 100.0 * float(rel.max()) if rel.size else 0.0,
        "mean_error": mean,
        "std_error": float(np.sqrt(var)),
    }
