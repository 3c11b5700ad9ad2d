"""Turning a functional model into a LUT multiplier: grid evaluation and the decomposability check.

A *model* here is any function mapping two float32 numpy arrays to their float32 products
(a wrapped Python function or a compiled C model). :func:`build_from_model` evaluates it on
the M-bit mantissa grid with both exponents 0 to get the LUT, then checks on random operands
spread over the exponent range that the model really is ``sign ⊕ exponent-sum ⊕ LUT`` —
the condition under which the LUT simulation is bit-identical to the model (DESIGN §2).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from approxsim.multipliers.core import (
    Multiplier,
    MultiplierError,
    check_mantissa_bits,
    check_rounding,
    validate_lut,
)
from approxsim.multipliers.numformat import lut_product, operand_index

__all__ = [
    "NotDecomposableError",
    "evaluate_grid",
    "grid_operands",
    "check_operands",
    "compare_with_lut",
    "BatchModel",
    "check_decomposable",
    "build_from_model",
    "python_provenance",
    "DecomposabilityReport",
    "check_sample_count",
    "lut_and_report",
    "multiplier_from_report",
]

Model = Callable[[np.ndarray, np.ndarray], np.ndarray]


@runtime_checkable
class BatchModel(Protocol):
    """A model that evaluates several operand sets in one go (a compiled C model: one child
    process for the grid and the check together), naming each for its error messages."""

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The products of ``a`` and ``b`` (float32 arrays of equal shape)."""

    def evaluate_many(self, jobs: Sequence[tuple[np.ndarray, np.ndarray, str]]) -> list[np.ndarray]:
        """The products of each ``(a, b, what)``, in order; ``what`` names the set in errors."""


class NotDecomposableError(MultiplierError):
    """The model's products are not ``sign ⊕ exponent sum ⊕ f(mantissas)`` at M bits."""


def evaluate_grid(model: Model, mantissa_bits: int) -> np.ndarray:
    """Evaluate ``model(1.i, 1.j)`` over the full M-bit grid (both exponents 0).

    Returns:
        The float32 LUT of shape ``(2^M, 2^M)``; row ``i`` is operand A.
    """
    n = 1 << mantissa_bits
    a, b = grid_operands(mantissa_bits)
    return np.asarray(model(a, b)).reshape(n, n)


def grid_operands(mantissa_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The operand pairs of the M-bit grid, row-major (operand A is the row).

    Args:
        mantissa_bits: M.

    Returns:
        Two float32 arrays of ``4^M`` operands ``1.i`` and ``1.j`` (both exponents 0).
    """
    n = 1 << mantissa_bits
    idx = np.arange(n, dtype=np.uint32)
    ops = ((np.uint32(127) << np.uint32(23)) | (idx << np.uint32(23 - mantissa_bits))).view(
        np.float32
    )
    return np.repeat(ops, n), np.tile(ops, n)


class DecomposabilityReport(dict):
    """Result of :func:`check_decomposable` (a dict, JSON-serializable)."""


def _sample_operands(
    count: int, mantissa_bits: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random normal operand pairs whose products stay well inside the float32 range.

    Biased exponents are drawn from [67, 187] (2^-60 .. 2^60), so ``ea + eb`` is at most
    2^±120 and even a LUT value near 4 cannot reach the overflow or underflow edge. Fractions
    are random in all 23 bits, so the bits below M (truncated or rounded away) are exercised.
    A quarter of the pairs use exponent 0 with random low bits, and the grid corners are
    always included.
    """
    sign = rng.integers(0, 2, size=(2, count), dtype=np.uint32) << np.uint32(31)
    expo = rng.integers(67, 188, size=(2, count), dtype=np.uint32)
    expo[:, : count // 4] = 127
    frac = rng.integers(0, 1 << 23, size=(2, count), dtype=np.uint32)
    n = 1 << mantissa_bits
    corners = np.array([0, n - 1, n // 2, 1 % n], dtype=np.uint32) << np.uint32(23 - mantissa_bits)
    k = min(len(corners) ** 2, count)
    cf = np.stack(np.meshgrid(corners, corners, indexing="ij")).reshape(2, -1)[:, :k]
    frac[:, -k:] = cf
    sign[:, -k:] = 0
    expo[:, -k:] = 127
    bits = sign | (expo << np.uint32(23)) | frac
    fl = bits.view(np.float32)
    return np.ascontiguousarray(fl[0]), np.ascontiguousarray(fl[1])


def check_decomposable(
    model: Model,
    lut: np.ndarray,
    mantissa_bits: int,
    rounding: str,
    *,
    samples: int = 65536,
    seed: int = 0,
) -> DecomposabilityReport:
    """Compare the model with the LUT product, bit for bit, on random operand pairs.

    Pairs whose LUT product would not be a normal float away from the range edges are skipped
    (the DESIGN §2 edge rules apply there, not the model's).

    Returns:
        A report with ``samples`` (pairs compared), ``mismatches``, ``mismatch_rate`` and,
        when there are mismatches, ``example`` (the first counter-example as hex bit
        patterns and values).
    """
    a, b = check_operands(samples, mantissa_bits, seed)
    return compare_with_lut(a, b, np.asarray(model(a, b)), lut, mantissa_bits, rounding, seed)


def check_operands(samples: int, mantissa_bits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The random operand pairs :func:`check_decomposable` evaluates the model on.

    Args:
        samples: Pairs asked for (at least 16 are drawn).
        mantissa_bits: M (the grid corners are among the pairs).
        seed: Seed of the draw.

    Returns:
        Two float32 arrays of ``max(samples, 16)`` operands.
    """
    rng = np.random.default_rng(seed)
    return _sample_operands(max(int(samples), 16), mantissa_bits, rng)


def compare_with_lut(
    a: np.ndarray,
    b: np.ndarray,
    got: np.ndarray,
    lut: np.ndarray,
    mantissa_bits: int,
    rounding: str,
    seed: int,
) -> DecomposabilityReport:
    """The decomposability report of the model's products ``got`` of the pairs ``(a, b)``.

    Args:
        a: First operands (:func:`check_operands`).
        b: Second operands.
        got: The model's products of them.
        lut: The validated LUT.
        mantissa_bits: M.
        rounding: Input rounding of the LUT product.
        seed: Seed of the pairs (recorded in the report).

    Returns:
        As :func:`check_decomposable`.
    """
    lut_bits = torch.from_numpy(lut.reshape(-1).view(np.int32).copy())
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    expected = lut_product(ta, tb, lut_bits, mantissa_bits, rounding).numpy()
    # Only judge pairs whose operands survive input rounding as finite normals.
    ea = operand_index(ta.view(torch.int32), mantissa_bits, rounding)
    eb = operand_index(tb.view(torch.int32), mantissa_bits, rounding)
    usable = ~(ea[2] | ea[3] | ea[4] | eb[2] | eb[3] | eb[4]).numpy()
    got_bits = got.view(np.uint32)
    exp_bits = expected.view(np.uint32)
    bad = usable & (got_bits != exp_bits)
    n_used = int(usable.sum())
    report = DecomposabilityReport(
        samples=n_used,
        mismatches=int(bad.sum()),
        mismatch_rate=float(bad.sum()) / max(n_used, 1),
        seed=int(seed),
    )
    if bad.any():
        k = int(np.argmax(bad))
        report["example"] = {
            "a": float(a[k]),
            "b": float(b[k]),
            "a_hex": f"0x{a.view(np.uint32)[k]:08x}",
            "b_hex": f"0x{b.view(np.uint32)[k]:08x}",
            "model": float(got[k]),
            "model_hex": f"0x{got_bits[k]:08x}",
            "lut_product": float(expected[k]),
            "lut_product_hex": f"0x{exp_bits[k]:08x}",
        }
    return report


def mismatch_message(label: str, report: DecomposabilityReport, mantissa_bits: int) -> str:
    """The error text for a model that failed the check."""
    ex = report["example"]
    return (
        f"{label} is not decomposable at mantissa_bits={mantissa_bits}: its products differ "
        f"from sign xor, exponent sum and an M-bit mantissa LUT on {report['mismatches']} of "
        f"{report['samples']} random operand pairs ({100 * report['mismatch_rate']:.3g}%). "
        f"Counter-example: model({ex['a']!r} [{ex['a_hex']}], {ex['b']!r} [{ex['b_hex']}]) = "
        f"{ex['model']!r} [{ex['model_hex']}], LUT product {ex['lut_product']!r} "
        f"[{ex['lut_product_hex']}]. If the model looks at more fraction bits, raise "
        "mantissa_bits; if it rounds its inputs, pass rounding='nearest'; to use it anyway, "
        "pass accept_mismatch=True (the mismatch rate is recorded in the multiplier's "
        "provenance)."
    )


def build_from_model(
    model: Model,
    mantissa_bits: int,
    *,
    name: str,
    rounding: str = "truncate",
    accept_mismatch: bool = False,
    check_samples: int = 65536,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
    label: str | None = None,
) -> Multiplier:
    """Evaluate ``model`` on the grid, check decomposability, and return the Multiplier.

    Raises:
        MultiplierError: bad M or rounding, or LUT values that are not positive normal floats.
        NotDecomposableError: the check failed and ``accept_mismatch`` is False.
    """
    mantissa_bits = check_mantissa_bits(mantissa_bits)
    rounding = check_rounding(rounding)
    check_samples = check_sample_count(check_samples)
    lut, report = lut_and_report(
        model, mantissa_bits, rounding, check_samples=check_samples, seed=seed, label=label or name
    )
    return multiplier_from_report(
        name,
        mantissa_bits,
        lut,
        rounding,
        report,
        provenance or {},
        accept_mismatch=accept_mismatch,
        label=label or name,
    )


def check_sample_count(check_samples: Any) -> int:
    """Validate the number of random pairs of the decomposability check."""
    if isinstance(check_samples, bool) or not isinstance(check_samples, int) or check_samples < 1:
        raise MultiplierError(f"check_samples must be a positive integer, got {check_samples!r}")
    return check_samples


def lut_and_report(
    model: Model, mantissa_bits: int, rounding: str, *, check_samples: int, seed: int, label: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Evaluate ``model`` on the grid (validated LUT) and run the decomposability check.

    Raises:
        MultiplierError: LUT values that are not positive normal floats.
    """
    if not isinstance(model, BatchModel):
        lut = validate_lut(
            evaluate_grid(model, mantissa_bits), mantissa_bits, what=f"the LUT of {label}"
        )
        report = check_decomposable(
            model, lut, mantissa_bits, rounding, samples=check_samples, seed=seed
        )
        return lut, dict(report)
    # One evaluation of both operand sets: a compiled model starts one child process, not two.
    n = 1 << mantissa_bits
    ga, gb = grid_operands(mantissa_bits)
    sa, sb = check_operands(check_samples, mantissa_bits, seed)
    grid, got = model.evaluate_many(
        [
            (ga, gb, f"the {n}x{n} grid"),
            (sa, sb, f"the {sa.size} random operand pairs of the decomposability check"),
        ]
    )
    lut = validate_lut(grid.reshape(n, n), mantissa_bits, what=f"the LUT of {label}")
    report = compare_with_lut(sa, sb, got, lut, mantissa_bits, rounding, seed)
    return lut, dict(report)


def multiplier_from_report(
    name: str,
    mantissa_bits: int,
    lut: np.ndarray,
    rounding: str,
    report: dict[str, Any],
    provenance: dict[str, Any],
    *,
    accept_mismatch: bool,
    label: str,
) -> Multiplier:
    """The Multiplier of a checked LUT, with the check's report in its provenance.

    Raises:
        NotDecomposableError: the check found mismatches and ``accept_mismatch`` is False.
    """
    if report["mismatches"] and not accept_mismatch:
        raise NotDecomposableError(
            mismatch_message(label, DecomposabilityReport(report), mantissa_bits)
        )
    prov = dict(provenance)
    prov["decomposability"] = dict(report)
    prov["accepted_mismatch"] = bool(report["mismatches"])
    prov["mantissa_bits"] = mantissa_bits
    prov["rounding"] = rounding
    return Multiplier(name, mantissa_bits, lut, rounding=rounding, provenance=prov)


def python_provenance(fn: Callable[..., Any]) -> dict[str, Any]:
    """Builder, qualified name and (when available) a hash of a Python model's source."""
    prov: dict[str, Any] = {
        "builder": "python",
        "function": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
    }
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = None
    if src is not None:
        prov["source_sha256"] = hashlib.sha256(src.encode()).hexdigest()
    return prov
