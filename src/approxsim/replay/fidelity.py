"""How far each sampler's per-draw distribution is from exact PER, on fixed priority vectors.

For a fixed vector of TD errors every sampler's per-draw distribution ``P`` is computed
exactly (:meth:`~approxsim.replay.base.Sampler.distribution`: the AM sampler enumerates its
query levels), and compared with exact PER's ``P*(i) = p_i^alpha / sum_j p_j^alpha``:

* ``tv`` — total-variation distance ``1/2 sum |P - P*|``;
* ``top1`` / ``top10`` — mass on the 1% / 10% of entries with the largest priorities (PER's own
  values are in the ``per`` row);
* ``never`` — expected share of entries never drawn in ``M`` draws, ``mean_i (1 - P_i)^M``;
* ``exponent`` — the effective exponent: least-squares slope of ``log P`` against ``log p``
  (PER's is ``alpha``; uniform's 0).

Monte Carlo checks (:func:`monte_carlo_tv`) report their noise floor: the TV that exact i.i.d.
draws from the same distribution show at the same number of draws.

Priority vectors: half-normal, exponential and log-normal TD errors
(:func:`synthetic_td_errors`), or TD errors saved by a DQN run (:func:`load_td_errors`: a
``.pt`` holding a 1-D tensor, or a ``.npy``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from approxsim.errors import ApproxsimError
from approxsim.replay.base import Sampler
from approxsim.replay.samplers import make_sampler

__all__ = [
    "FidelityError",
    "SYNTHETIC_VECTORS",
    "synthetic_td_errors",
    "load_td_errors",
    "filled_sampler",
    "fidelity_metrics",
    "monte_carlo_tv",
    "am_configs",
    "fidelity_table",
]

#: Synthetic TD-error distributions (each with unit scale).
SYNTHETIC_VECTORS = ("half-normal", "exponential", "log-normal")


class FidelityError(ApproxsimError, ValueError):
    """A priority vector cannot be made or read (the message names the value or file)."""


def synthetic_td_errors(kind: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` TD errors of a named distribution: ``|N(0,1)|``, ``Exp(1)`` or ``exp(N(0,1))``.

    Args:
        kind: One of :data:`SYNTHETIC_VECTORS`.
        n: Entries (``>= 1``).
        seed: Seed of the draw.

    Returns:
        float64 ``[n]`` non-negative values.

    Raises:
        FidelityError: an unknown kind or ``n < 1``.
    """
    if n < 1:
        raise FidelityError(f"a priority vector needs at least 1 entry, got n={n}")
    g = torch.Generator().manual_seed(seed)
    if kind == "half-normal":
        return torch.randn(n, generator=g, dtype=torch.float64).abs()
    if kind == "exponential":
        return torch.empty(n, dtype=torch.float64).exponential_(1.0, generator=g)
    if kind == "log-normal":
        return torch.randn(n, generator=g, dtype=torch.float64).exp()
    raise FidelityError(
        f"unknown priority vector {kind!r}; choose one of {', '.join(SYNTHETIC_VECTORS)}"
    )


def load_td_errors(path: str | os.PathLike[str]) -> torch.Tensor:
    """TD errors saved by a run: a ``.pt`` file holding a 1-D tensor (or a dict with one
    1-D tensor under ``"td_errors"`` or ``"priorities"``), or a ``.npy`` file.

    Args:
        path: The file.

    Returns:
        float64 ``[n]`` absolute values.

    Raises:
        FidelityError: the file is missing, not one of those formats, not 1-D, empty or not
            finite.
    """
    p = Path(path)
    if not p.is_file():
        raise FidelityError(f"priority file {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            import numpy as np

            data: Any = torch.from_numpy(np.load(p, allow_pickle=False))
        else:
            data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear error
        raise FidelityError(f"cannot read priority file {p.name}: {exc}") from None
    if isinstance(data, dict):
        found = [data[k] for k in ("td_errors", "priorities") if k in data]
        data = found[0] if found else None
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or data.numel() == 0:
        raise FidelityError(
            f"{p.name} must hold a non-empty 1-D tensor of TD errors (or a dict with one under "
            "'td_errors' or 'priorities')"
        )
    values = data.detach().to(torch.float64).abs()
    if not bool(torch.isfinite(values).all()):
        raise FidelityError(f"{p.name} holds non-finite TD errors")
    return values


def filled_sampler(name: str, td_errors: torch.Tensor, **options: Any) -> Sampler:
    """A sampler whose buffer is full and whose priorities are ``|td| + eps``.

    Args:
        name: A sampler name.
        td_errors: float ``[n]``.
        **options: Passed to :func:`~approxsim.replay.make_sampler`.

    Returns:
        The sampler.
    """
    s = make_sampler(name, td_errors.numel(), **options)
    idx = torch.arange(td_errors.numel(), device=s.device)
    s.insert(idx)
    s.update(idx, td_errors)
    return s


def fidelity_metrics(
    prob: torch.Tensor, priorities: torch.Tensor, alpha: float, draws: int
) -> dict[str, float]:
    """The fidelity numbers of one distribution against exact PER.

    Args:
        prob: float64 ``[n]`` per-draw probabilities.
        priorities: float64 ``[n]`` priorities ``p`` (> 0).
        alpha: PER's exponent.
        draws: M for the never-sampled share.

    Returns:
        ``tv``, ``top1``, ``top10``, ``never``, ``exponent``.
    """
    prob = prob.to(torch.float64).cpu()
    p = priorities.to(torch.float64).cpu()
    v = p.pow(alpha)
    exact = v / v.sum()
    order = torch.argsort(p, descending=True, stable=True)
    n = p.numel()
    top1 = order[: max(1, round(0.01 * n))]
    top10 = order[: max(1, round(0.10 * n))]
    never = float((1 - prob).clamp_min(0).pow(draws).mean())
    return {
        "tv": 0.5 * float((prob - exact).abs().sum()),
        "top1": float(prob[top1].sum()),
        "top10": float(prob[top10].sum()),
        "never": never,
        "exponent": _slope(p, prob),
    }


def _slope(p: torch.Tensor, prob: torch.Tensor) -> float:
    """Least-squares slope of log prob against log p over entries with both positive."""
    keep = (p > 0) & (prob > 0)
    x, y = p[keep].log(), prob[keep].log()
    x = x - x.mean()
    denom = float((x * x).sum())
    return float((x * (y - y.mean())).sum()) / denom if denom > 0 else float("nan")


def _tv(counts: torch.Tensor, prob: torch.Tensor) -> float:
    return 0.5 * float((counts / counts.sum() - prob).abs().sum())


def monte_carlo_tv(
    sampler: Sampler, draws: int, *, batch: int = 256, seed: int = 0
) -> tuple[float, float]:
    """Check a sampler's analytic distribution by drawing from it.

    Args:
        sampler: A filled sampler.
        draws: Total draws (in batches of ``batch``; the buffer must hold ``batch``).
        batch: Draws per ``sample`` call.
        seed: Seed of the draws.

    Returns:
        ``(tv, floor)``: the TV between the empirical and the analytic distribution, and the
        noise floor — the TV of as many exact i.i.d. draws from the analytic distribution.
    """
    prob = sampler.distribution().cpu()
    g = torch.Generator(device=sampler.device).manual_seed(seed)
    counts = torch.zeros(prob.numel(), dtype=torch.float64)
    for _ in range(max(1, draws // batch)):
        b = sampler.sample(batch, beta=0.0, generator=g)
        counts += torch.bincount(b.indices.cpu(), minlength=prob.numel()).to(torch.float64)
    total = int(counts.sum())
    g_ref = torch.Generator().manual_seed(seed + 1)
    ref = torch.multinomial(prob, total, replacement=True, generator=g_ref)
    floor = _tv(torch.bincount(ref, minlength=prob.numel()).to(torch.float64), prob)
    return _tv(counts, prob), floor


def am_configs(
    bits: Iterable[int] = (4, 5, 6, 7, 8),
    levels: Iterable[str] = ("linear", "log"),
    queries: Iterable[str] = ("uniform", "size_biased"),
    k: int = 32,
    radius: int = 1,
) -> list[tuple[str, dict[str, Any]]]:
    """The AM sampler settings of the fidelity table: (name, options) for knn and radius
    search under every combination of query rule, level scale and bits."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name, query, scale, b in itertools.product(
        ("amper-knn", "amper-fr"), queries, levels, bits
    ):
        extra = {"k": k} if name == "amper-knn" else {"radius": radius}
        out.append((name, {"query": query, "levels": scale, "bits": b, **extra}))
    return out


def fidelity_table(
    vectors: dict[str, torch.Tensor],
    configs: Sequence[tuple[str, dict[str, Any]]],
    *,
    alpha: float = 0.6,
    draws: int = 100_000,
    mc_draws: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Fidelity rows for every vector: ``uniform``, exact PER and each AM setting.

    Args:
        vectors: Name -> TD errors.
        configs: (sampler name, options) of the AM rows (:func:`am_configs`).
        alpha: PER's exponent (all samplers use it).
        draws: M for the never-sampled share.
        mc_draws: When > 0, each AM row is also checked by that many Monte Carlo draws
            (columns ``mc_tv`` and ``mc_floor``).
        progress: Called with 1 after each row.

    Returns:
        One dict per row: ``vector``, ``sampler``, the options, and the numbers of
        :func:`fidelity_metrics`.
    """
    rows: list[dict[str, Any]] = []
    for vname, td in vectors.items():
        plain: list[tuple[str, dict[str, Any]]] = [("uniform", {}), ("per-sumtree", {})]
        for name, opts in [*plain, *configs]:
            s = filled_sampler(name, td, alpha=alpha, **opts)
            row: dict[str, Any] = {"vector": vname, "n": td.numel(), "sampler": name}
            row.update(
                {key: opts.get(key, "") for key in ("query", "levels", "bits", "k", "radius")}
            )
            row.update(fidelity_metrics(s.distribution(), s.priorities(), alpha, draws))
            if mc_draws > 0 and name.startswith("amper"):
                row["mc_tv"], row["mc_floor"] = monte_carlo_tv(
                    s, mc_draws, batch=min(256, td.numel())
                )
            rows.append(row)
            if progress is not None:
                progress(1)
    return rows
