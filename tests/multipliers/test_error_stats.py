"""Multiplier.error_stats() and relative_error_grid() against an independent computation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from mult_reference import FAMILIES, lut_bits_grid

import approxsim

KEYS = ("mean_rel_error", "mean_abs_rel_error", "max_abs_rel_error", "std_rel_error", "bias")


def _independent_stats(family: str, m: int) -> dict[str, float]:
    """Error statistics of the scalar model's LUT relative to the exact grid products."""
    n = 1 << m
    approx = lut_bits_grid(FAMILIES[family], m).view(np.float32).astype(np.float64)
    ops = 1.0 + np.arange(n) / n
    exact = np.outer(ops, ops)
    rel = (approx - exact) / exact
    mean = rel.sum() / rel.size
    return {
        "mean_rel_error": mean,
        "mean_abs_rel_error": np.abs(rel).sum() / rel.size,
        "max_abs_rel_error": np.abs(rel).max(),
        "min_rel_error": rel.min(),
        "max_rel_error": rel.max(),
        "std_rel_error": np.sqrt(((rel - mean) ** 2).sum() / rel.size),
        "bias": (approx - exact).sum() / rel.size,
    }


@pytest.mark.parametrize("name", ["mitchell7", "mbm7", "trunc7", "bf16", "fp32", "mitchell3"])
def test_error_stats_has_the_documented_keys(name: str) -> None:
    stats = approxsim.get_multiplier(name).error_stats()
    for key in (*KEYS, "min_rel_error", "max_rel_error", "rms_rel_error", "grid_points"):
        assert isinstance(stats[key], float), key


@pytest.mark.parametrize("name", ["mitchell7", "mbm7", "mitchell4", "mbm5"])
def test_error_stats_match_independent_computation(name: str) -> None:
    family, m = name.rstrip("0123456789"), int(name.lstrip("abcdefghijklmnopqrstuvwxyz"))
    stats = approxsim.get_multiplier(name).error_stats()
    want = _independent_stats(family, m)
    for key, value in want.items():
        assert stats[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key
    assert stats["grid_points"] == float(4**m)
    assert stats["rms_rel_error"] == pytest.approx(
        np.sqrt(want["std_rel_error"] ** 2 + want["mean_rel_error"] ** 2), rel=1e-9
    )


def test_mbm_is_less_biased_than_mitchell() -> None:
    """The point of MBM: a smaller mean error than Mitchell at the same width."""
    mit = approxsim.get_multiplier("mitchell7").error_stats()
    mbm = approxsim.get_multiplier("mbm7").error_stats()
    assert abs(mbm["mean_rel_error"]) < abs(mit["mean_rel_error"])
    assert mit["mean_rel_error"] < 0


@pytest.mark.parametrize("m", [1, 2, 3, 5, 7, 8])
def test_mitchell_never_overestimates_and_worst_is_minus_one_ninth(m: int) -> None:
    mult = approxsim.get_multiplier(f"mitchell{m}")
    stats = mult.error_stats()
    assert stats["max_rel_error"] == 0.0
    worst = float(Fraction(2, 1) / Fraction(9, 4) - 1)  # (1.5 · 1.5 ≈ 2) / 2.25 − 1 = −1/9
    assert stats["min_rel_error"] == pytest.approx(worst, rel=1e-12)
    assert stats["max_abs_rel_error"] == pytest.approx(1 / 9, rel=1e-12)
    grid = mult.relative_error_grid()
    assert grid.shape == (1 << m, 1 << m)
    assert grid.dtype == np.float64
    half = 1 << (m - 1)
    assert np.unravel_index(np.argmin(grid), grid.shape) == (half, half)
    assert (grid <= 0).all()


@pytest.mark.parametrize("m", [1, 4, 7, 11])
def test_trunc_has_zero_error(m: int) -> None:
    mult = approxsim.get_multiplier(f"trunc{m}")
    stats = mult.error_stats()
    for key in (*KEYS, "min_rel_error", "max_rel_error", "rms_rel_error"):
        assert stats[key] == 0.0, key
    assert not mult.relative_error_grid().any()


def test_fp32_error_stats_are_zero() -> None:
    stats = approxsim.get_multiplier("fp32").error_stats()
    assert stats
    assert all(v == 0.0 for v in stats.values())
    with pytest.raises(approxsim.MultiplierError):
        approxsim.get_multiplier("fp32").relative_error_grid()


def test_bf16_trunc_error_is_never_positive_and_bf16_is_two_sided() -> None:
    trunc = approxsim.get_multiplier("bf16_trunc").error_stats()
    near = approxsim.get_multiplier("bf16").error_stats()
    assert trunc["max_rel_error"] == 0.0 and trunc["min_rel_error"] < 0
    assert near["max_rel_error"] > 0 > near["min_rel_error"]
    assert near["max_abs_rel_error"] <= 2.0**-8  # half an ulp at 7 fraction bits
