"""Tile sizes shared by the CPU kernels' row gather (DESIGN §4).

Both the compiled and the Numba kernel build a table ``V`` of ``k_tile · 2^M · n_tile`` floats
per tile of B; keeping it within a share of a core's L2 cache is what makes the row gather
fast. The k tile is balanced so the last tile of a reduction is (almost) full.
"""

from __future__ import annotations

__all__ = ["V_TILE_BYTES", "balanced_k_tile"]

#: Target size of one V tile in bytes (a share of the per-core L2 cache).
V_TILE_BYTES = 1 << 20


def balanced_k_tile(k: int, n_tile: int, mantissa_bits: int) -> int:
    """The k tile that keeps one V tile near :data:`V_TILE_BYTES`, balanced.

    Args:
        k: Length of the reduction.
        n_tile: Columns per V tile.
        mantissa_bits: M (V has ``2^M`` rows per k).

    Returns:
        A k tile in ``[1, k]`` such that ``ceil(k / k_tile)`` tiles are (almost) equally full.
    """
    k_max = max(1, min(k, V_TILE_BYTES // (4 * (1 << mantissa_bits) * n_tile)))
    n_kt = -(-k // k_max)
    return -(-k // n_kt)
