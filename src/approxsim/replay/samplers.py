"""The sampler registry: :func:`make_sampler` builds any sampler by name.

Names (:data:`SAMPLER_NAMES`): ``uniform``; exact PER as ``per-sumtree``, ``per-cumsum``,
``per-multinomial``; the associative-memory emulation as ``amper-knn`` (k nearest levels) and
``amper-fr`` (fixed radius).
"""

from __future__ import annotations

from typing import Any

import torch

from approxsim.replay.base import Sampler, SamplerError

__all__ = ["SAMPLER_NAMES", "EXACT_SAMPLERS", "AM_SAMPLERS", "make_sampler"]

#: Every sampler :func:`make_sampler` builds.
SAMPLER_NAMES = ("uniform", "per-sumtree", "per-cumsum", "per-multinomial", "amper-knn", "amper-fr")
#: The exact PER samplers.
EXACT_SAMPLERS = ("per-sumtree", "per-cumsum", "per-multinomial")
#: The associative-memory samplers.
AM_SAMPLERS = ("amper-knn", "amper-fr")


def make_sampler(
    name: str,
    capacity: int,
    *,
    alpha: float = 0.6,
    eps: float = 1e-6,
    device: str | torch.device = "cpu",
    is_weights: str = "per",
    **options: Any,
) -> Sampler:
    """Build a replay sampler by name.

    Args:
        name: One of :data:`SAMPLER_NAMES`.
        capacity: Slots of the ring buffer.
        alpha: Priority exponent (``>= 0``).
        eps: Added to ``|td|`` in updates (``>= 0``).
        device: Device of the priorities and the drawn indices.
        is_weights: ``"none"``, ``"per"`` or ``"sampler"`` (see
            :data:`approxsim.replay.base.IS_WEIGHT_MODES`).
        **options: Sampler-specific options: ``stratified`` (``per-sumtree``); ``bits``,
            ``levels``, ``k`` (``amper-knn``), ``radius`` (``amper-fr``), ``query``, ``csp``
            (``amper-*``; see :class:`approxsim.replay.am.AMSampler`).

    Returns:
        The sampler.

    Raises:
        SamplerError: an unknown name or option, or a bad value.
    """
    common: dict[str, Any] = {
        "alpha": alpha,
        "eps": eps,
        "device": device,
        "is_weights": is_weights,
    }
    cls, allowed = _lookup(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = f"; {name} takes {', '.join(allowed)}" if allowed else f"; {name} takes none"
        raise SamplerError(f"unknown option(s) {', '.join(unknown)} for sampler {name!r}{hint}")
    if name in AM_SAMPLERS:
        options = {"search": "knn" if name == "amper-knn" else "radius", **options}
    return cls(capacity, **common, **options)  # type: ignore[no-any-return]


def _lookup(name: str) -> tuple[Any, tuple[str, ...]]:
    from approxsim.replay.per import CumsumSampler, MultinomialSampler, SumTreeSampler
    from approxsim.replay.uniform import UniformSampler

    if name in AM_SAMPLERS:
        from approxsim.replay.am import AMSampler

        am_common = ("bits", "levels", "query", "csp")
        return AMSampler, (*am_common, "k" if name == "amper-knn" else "radius")
    table: dict[str, tuple[Any, tuple[str, ...]]] = {
        "uniform": (UniformSampler, ()),
        "per-sumtree": (SumTreeSampler, ("stratified",)),
        "per-cumsum": (CumsumSampler, ()),
        "per-multinomial": (MultinomialSampler, ()),
    }
    if name not in table:
        raise SamplerError(
            f"unknown replay sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}"
        )
    return table[name]
