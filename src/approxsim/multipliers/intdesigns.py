"""Built-in approximate integer multipliers, generated from their published descriptions.

Every design is an *unsigned core* on ``bits``-bit magnitudes; its signed version is the
sign-magnitude wrapper around the same core (``sign(a)·sign(b) · core(|a|, |b|)``; the
magnitude of ``-2^(bits-1)`` still fits the ``bits``-bit core), saturated to the
``2·bits``-bit signed product range (only a design that rounds magnitudes up, DRUM with a
small ``k``, ever reaches past it, at ``(-2^(bits-1))²``). Partial product ``a_i·b_j``
is bit ``i`` of the first operand times bit ``j`` of the second, weight ``2^(i+j)``; the
array's rows are the second operand's bits.

Families (names end in ``_u<bits>`` or ``_s<bits>``):

* ``uint<bits>`` / ``int<bits>``: exact.
* ``drum<k>``: DRUM-k, the dynamic range unbiased multiplier (Hashemi, Bahar and Reda,
  ICCAD 2015). An operand below ``2^k`` is used as is; otherwise its ``k`` bits from the
  leading one down are kept, the lowest kept bit is forced to 1 (which centres the error of
  the dropped bits, making the product nearly unbiased) and the dropped bits are zero. The two
  approximated operands are multiplied exactly.
* ``trunc<t>``: the ``t`` least significant partial-product columns (weights ``2^0`` to
  ``2^(t-1)``) are left out of the array; no compensation constant.
* ``mitchell``: Mitchell's logarithmic multiplier (1962) on integers: ``log2 x ≈ k + f/2^k``
  for ``x = 2^k + f``; the two approximate logarithms are added and the antilogarithm is taken
  the same piecewise-linear way. ``mitchell<w>`` first truncates each fraction ``f/2^k`` to
  ``w`` bits (a ``w``-bit log datapath); plain ``mitchell`` keeps all ``bits - 1``.
  Zero times anything is 0.
* ``bam_h<h>v<v>``: the broken-array multiplier (Mahdiani et al., 2010): the carry-save cells
  above the horizontal break line (partial products of the ``h`` lowest bits of the second
  operand) and right of the vertical break line (columns below ``2^v``) are omitted.
  ``bam_h0v<t>`` is ``trunc<t>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from approxsim.multipliers.core import MultiplierError
from approxsim.multipliers.integer import (
    MAX_INT_BITS,
    MIN_INT_BITS,
    IntMultiplier,
    check_int_bits,
    operand_values,
    product_range,
)

__all__ = [
    "LISTED_DESIGNS",
    "DESIGN_FAMILIES",
    "parse_design_name",
    "design_table",
    "build_design",
    "drum_core",
    "trunc_core",
    "bam_core",
    "mitchell_core",
]

Core = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: One line per family: the name pattern and what it is (``approxsim multipliers list``).
DESIGN_FAMILIES: dict[str, str] = {
    "uint<b> / int<b>": "exact b-bit multiplier",
    "drum<k>_{u,s}<b>": "DRUM-k (Hashemi et al. 2015), k = 2..b-1",
    "trunc<t>_{u,s}<b>": "t low partial-product columns dropped, t = 1..2b-1",
    "mitchell_{u,s}<b>": "Mitchell's logarithmic multiplier (1962)",
    "mitchell<w>_{u,s}<b>": "Mitchell with w-bit log fractions, w = 1..b-1",
    "bam_h<h>v<v>_{u,s}<b>": (
        "broken-array multiplier (Mahdiani et al. 2010), h = 0..b-1, v = 0..2b-1"
    ),
}

#: The designs ``list_int_multipliers()`` shows: 8-bit, spanning small to large errors. Any
#: other parameter or width (2..12 bits) is built on demand from its name.
LISTED_DESIGNS: tuple[str, ...] = tuple(
    f"{base}_{s}8"
    for s in ("u", "s")
    for base in (
        "drum3",
        "drum4",
        "drum5",
        "drum6",
        "trunc4",
        "trunc6",
        "trunc8",
        "mitchell",
        "mitchell3",
        "bam_h2v6",
        "bam_h3v8",
        "bam_h4v9",
    )
) + ("uint8", "int8")


def _bit_length(x: np.ndarray, bits: int) -> np.ndarray:
    """Position of the leading one plus one (0 for 0), for values below ``2^bits``."""
    n = np.zeros_like(x)
    for j in range(bits):
        n += (x >> j) > 0
    return n


def drum_core(k: int, bits: int) -> Core:
    """DRUM-k on ``bits``-bit unsigned operands (see the module docstring).

    Args:
        k: Bits kept per operand, 2..bits-1.
        bits: Operand width.

    Returns:
        A function of two int64 arrays of magnitudes returning their int64 products.
    """

    def approx(x: np.ndarray) -> np.ndarray:
        shift = np.maximum(_bit_length(x, bits) - k, 0)
        kept = x >> shift
        # Force the lowest kept bit to 1 only where bits were dropped.
        kept = np.where(shift > 0, kept | 1, kept)
        return kept << shift

    return lambda a, b: approx(a) * approx(b)


def bam_core(h: int, v: int, bits: int) -> Core:
    """Broken-array multiplier: partial products kept iff ``j >= h`` and ``i + j >= v``.

    Args:
        h: Horizontal break: rows (bits of the second operand) below ``h`` are omitted.
        v: Vertical break: columns of weight below ``2^v`` are omitted.
        bits: Operand width.

    Returns:
        A function of two int64 arrays of magnitudes returning their int64 products.
    """

    def core(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.int64)
        for j in range(h, bits):
            # Row j is a·2^j where b has bit j; its cells in columns below v are omitted.
            row = ((a << j) >> v) << v
            out += row * ((b >> j) & 1)
        return out

    return core


def trunc_core(t: int, bits: int) -> Core:
    """The array multiplier without its ``t`` least significant partial-product columns.

    Args:
        t: Columns dropped, 1..2·bits-1.
        bits: Operand width.

    Returns:
        A function of two int64 arrays of magnitudes returning their int64 products.
    """
    return bam_core(0, t, bits)


def mitchell_core(w: int, bits: int) -> Core:
    """Mitchell's logarithmic multiplier with ``w``-bit fractions (see the module docstring).

    Args:
        w: Fraction bits of each approximate logarithm, 1..bits-1 (``bits - 1``: exact
            fractions, Mitchell's original).
        bits: Operand width.

    Returns:
        A function of two int64 arrays of magnitudes returning their int64 products.
    """

    def log_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # x = 2^k + f; the fraction f/2^k truncated to w bits clears f's bits below 2^(k-w).
        k = np.maximum(_bit_length(x, bits) - 1, 0)
        s = np.maximum(k - w, 0)
        return k, ((x - (1 << k)) >> s) << s

    def core(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ka, fa = log_parts(a)
        kb, fb = log_parts(b)
        # 2^(ka+kb)·(xa + xb), an integer since each fraction has at most k bits.
        s = (fa << kb) + (fb << ka)
        whole = 1 << (ka + kb)
        out = np.where(s < whole, whole + s, 2 * s)
        return np.where((a == 0) | (b == 0), 0, out)

    return core


_NAME = re.compile(
    r"(?:(?P<exact>u?int)(?P<ebits>\d+)"
    r"|(?P<family>drum|trunc|mitchell|bam_h)(?P<p1>\d*)(?:v(?P<p2>\d+))?_(?P<s>[us])(?P<bits>\d+))"
)


def parse_design_name(name: str) -> tuple[str, tuple[int, ...], int, bool] | None:
    """Split a built-in design name into ``(family, parameters, bits, signed)``.

    Args:
        name: A name such as ``"drum4_u8"``, ``"bam_h2v6_s8"``, ``"int8"``.

    Returns:
        The parts, or ``None`` when ``name`` does not follow a family's pattern (parameter
        ranges are checked by :func:`design_table`).
    """
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    if m.group("exact"):
        return "exact", (), int(m.group("ebits")), m.group("exact") == "int"
    family = m.group("family")
    p1, p2 = m.group("p1"), m.group("p2")
    bits, signed = int(m.group("bits")), m.group("s") == "s"
    if family == "bam_h":
        if not p1 or p2 is None:
            return None
        return "bam", (int(p1), int(p2)), bits, signed
    if p2 is not None:
        return None
    if family == "mitchell":
        return family, ((int(p1),) if p1 else ()), bits, signed
    if not p1:
        return None
    return family, (int(p1),), bits, signed


def _core(family: str, params: tuple[int, ...], bits: int) -> Core:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise MultiplierError(f"{family}: {what} (for {bits}-bit operands)")

    if family == "exact":
        return lambda a, b: a * b
    if family == "drum":
        need(2 <= params[0] <= bits - 1, f"k must be from 2 to {bits - 1}, got {params[0]}")
        return drum_core(params[0], bits)
    if family == "trunc":
        need(1 <= params[0] <= 2 * bits - 1, f"t must be from 1 to {2 * bits - 1}")
        return trunc_core(params[0], bits)
    if family == "mitchell":
        w = params[0] if params else bits - 1
        need(1 <= w <= bits - 1, f"w must be from 1 to {bits - 1}, got {w}")
        return mitchell_core(w, bits)
    if family == "bam":
        h, v = params
        need(0 <= h <= bits - 1 and 0 <= v <= 2 * bits - 1, "h must be 0..bits-1, v 0..2·bits-1")
        need(h + v > 0, "bam_h0v0 is the exact multiplier; name it uint<bits>/int<bits>")
        return bam_core(h, v, bits)
    raise MultiplierError(f"unknown integer design family {family!r}")


def design_table(family: str, params: tuple[int, ...], bits: int, signed: bool) -> np.ndarray:
    """The product table of a built-in design.

    Args:
        family: ``"exact"``, ``"drum"``, ``"trunc"``, ``"mitchell"`` or ``"bam"``.
        params: The family's parameters (``(k,)``, ``(t,)``, ``()`` or ``(w,)``, ``(h, v)``).
        bits: Operand width, 2..12.
        signed: Sign-magnitude around the unsigned core (else the core itself).

    Returns:
        int64 table ``(2^bits, 2^bits)`` in :class:`IntMultiplier` layout.

    Raises:
        MultiplierError: an unknown family, or parameters out of range.
    """
    bits = check_int_bits(bits)
    core = _core(family, params, bits)
    v = operand_values(bits, signed)
    a, b = v[:, None], v[None, :]
    if not signed:
        return core(a, b)
    out = np.sign(a) * np.sign(b) * core(np.abs(a), np.abs(b))
    # A design that rounds magnitudes up (DRUM with small k) can push (-2^(bits-1))² past
    # the largest 2·bits-bit signed product; it saturates there rather than wrapping to a
    # product of the wrong sign.
    lo, hi = product_range(bits, True)
    return np.clip(out, lo, hi)


def build_design(name: str) -> IntMultiplier:
    """Build the built-in design called ``name`` (``"drum4_u8"``, ``"int8"``...).

    Args:
        name: A built-in design name (see the module docstring for the families).

    Returns:
        The multiplier, with the family and parameters in its provenance.

    Raises:
        MultiplierError: ``name`` follows no family's pattern, or its parameters or width
            are out of range.
    """
    parsed = parse_design_name(name)
    if parsed is None:
        raise MultiplierError(
            f"{name!r} is not a built-in integer design name; the families are "
            + "; ".join(DESIGN_FAMILIES)
        )
    family, params, bits, signed = parsed
    if not MIN_INT_BITS <= bits <= MAX_INT_BITS:
        raise MultiplierError(
            f"{name!r}: integer designs exist for {MIN_INT_BITS} to {MAX_INT_BITS} bits"
        )
    try:
        table = design_table(family, params, bits, signed)
    except MultiplierError as exc:
        raise MultiplierError(f"{name!r}: {exc}") from None
    prov = {
        "builder": "builtin",
        "design": family,
        "parameters": list(params),
        "description": _DESCRIPTIONS[family]
        + (" (sign-magnitude around the unsigned core)" if signed and family != "exact" else ""),
    }
    return IntMultiplier(name, bits, signed, table, provenance=prov)


_DESCRIPTIONS = {
    "exact": "exact product",
    "drum": "DRUM-k dynamic range unbiased multiplier (Hashemi et al. 2015)",
    "trunc": "array multiplier without its t low partial-product columns",
    "mitchell": "Mitchell's logarithmic multiplier (1962)",
    "bam": "broken-array multiplier (Mahdiani et al. 2010)",
}
