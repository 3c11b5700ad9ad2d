"""Statistics of Monte Carlo accuracies: mean, spread, low percentiles, confidence intervals.

* The mean's interval is a percentile bootstrap (resampling the chips, seeded).
* A percentile's interval is the distribution-free order-statistic interval: with ``n``
  chips, the number of chips at or below the true ``q``-quantile is ``Binomial(n, q)``, so
  ``[x_(l), x_(u)]`` (order statistics, 1-based) covers it with probability at least
  ``F(u-1) - F(l-1)``; ``l`` and ``u`` are chosen to leave at most ``α/2`` on each side. When
  even ``x_(1)`` leaves more than ``α/2`` below (``(1-q)^n > α/2``: e.g. the 1st percentile
  of fewer than 367 chips at 95%), the sample cannot bound the quantile from below and the
  lower end is ``None``; likewise for the upper end.
* Point estimates of percentiles use linear interpolation between order statistics
  (``numpy.quantile``'s default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from approxsim.cim.device import CIMError

__all__ = ["summarize", "quantile_interval", "bootstrap_mean_interval", "CI_METHODS"]

#: How the intervals of :func:`summarize` are computed (recorded in every result file).
CI_METHODS = {
    "mean": "percentile bootstrap over chips",
    "percentiles": "distribution-free order-statistic interval (binomial), equal tails",
}


def _binom_cdf(n: int, p: float) -> np.ndarray:
    """``F(k) = P(Binomial(n, p) <= k)`` for ``k = 0..n``."""
    k = np.arange(n + 1)
    if p <= 0:
        return np.ones(n + 1)
    if p >= 1:
        out = np.zeros(n + 1)
        out[-1] = 1.0
        return out
    logc = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    logpmf = logc + k * math.log(p) + (n - k) * math.log1p(-p)
    return np.minimum(np.cumsum(np.exp(logpmf)), 1.0)


def quantile_interval(
    values: Sequence[float], q: float, confidence: float = 0.95
) -> tuple[float | None, float | None, float]:
    """Order-statistic confidence interval for the ``q``-quantile.

    Args:
        values: The samples.
        q: Quantile in (0, 1).
        confidence: Nominal coverage in (0, 1).

    Returns:
        ``(lower, upper, coverage)``: sample values (``None`` where the sample is too small to
        bound that side) and the interval's exact binomial coverage (a lower bound on the
        true coverage for any distribution).

    Raises:
        CIMError: empty values or ``q`` / ``confidence`` outside (0, 1).
    """
    if not 0 < q < 1 or not 0 < confidence < 1:
        raise CIMError(f"q and confidence must lie in (0, 1), got q={q}, confidence={confidence}")
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = int(x.size)
    if n == 0:
        raise CIMError("no samples to compute a quantile interval from")
    half = (1.0 - confidence) / 2.0
    cdf = _binom_cdf(n, q)  # cdf[j] = P(B <= j)
    # lower order statistic l (1-based): largest l with P(B <= l-1) <= half.
    ok_l = np.nonzero(cdf[:n] <= half)[0]
    l_idx = int(ok_l[-1]) + 1 if ok_l.size else None
    # upper order statistic u: smallest u with P(B <= u-1) >= 1 - half.
    ok_u = np.nonzero(cdf[:n] >= 1.0 - half)[0]
    u_idx = int(ok_u[0]) + 1 if ok_u.size else None
    lo_mass = cdf[l_idx - 1] if l_idx is not None else 0.0
    hi_mass = cdf[u_idx - 1] if u_idx is not None else 1.0
    return (
        float(x[l_idx - 1]) if l_idx is not None else None,
        float(x[u_idx - 1]) if u_idx is not None else None,
        float(hi_mass - lo_mass),
    )


def bootstrap_mean_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean (seeded, reproducible)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise CIMError("no samples to bootstrap")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    half = (1.0 - confidence) / 2.0
    return float(np.quantile(means, half)), float(np.quantile(means, 1.0 - half))


def summarize(
    values: Sequence[float],
    *,
    percentiles: Sequence[float] = (1.0, 5.0),
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean, std, min, median, max and low percentiles of ``values`` with intervals.

    Args:
        values: Per-chip accuracies.
        percentiles: Percentiles (in %) to report, e.g. ``(1, 5)``.
        confidence: Coverage of the intervals.
        resamples: Bootstrap resamples for the mean.
        seed: Bootstrap seed.

    Returns:
        ``samples``, ``mean``, ``std`` (``n-1`` denominator), ``min``, ``median``, ``max``,
        ``mean_ci`` ``[lo, hi]``, ``p<k>`` and ``p<k>_ci`` ``[lo|None, hi|None]`` per
        percentile, ``p<k>_ci_coverage``, ``confidence``, ``ci_methods``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise CIMError("no samples to summarize")
    out: dict[str, Any] = {
        "samples": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "median": float(np.median(x)),
        "max": float(x.max()),
        "mean_ci": list(bootstrap_mean_interval(x.tolist(), confidence, resamples, seed)),
    }
    for pct in percentiles:
        key = f"p{pct:g}"
        out[key] = float(np.quantile(x, pct / 100.0))
        lo, hi, cov = quantile_interval(x.tolist(), pct / 100.0, confidence)
        out[f"{key}_ci"] = [lo, hi]
        out[f"{key}_ci_coverage"] = cov
    out["confidence"] = confidence
    out["ci_methods"] = dict(CI_METHODS)
    return out
