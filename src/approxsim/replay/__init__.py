"""Prioritized experience replay on exact and associative-memory hardware.

Samplers over a ring buffer of priorities, all built by :func:`make_sampler`:

* ``uniform`` — every filled slot equally likely;
* ``per-sumtree``, ``per-cumsum``, ``per-multinomial`` — exact PER, ``P(i) ∝ p_i^alpha``
  (Schaul et al., ICLR 2016), three ways;
* ``amper-knn``, ``amper-fr`` — an emulation of AMPER (Li, Kazemi, Laguna, Hu, ICCAD 2022,
  arXiv 2207.07791): priorities quantised to ``2^bits`` levels in a TCAM, a query level, a
  k-nearest or fixed-radius search building a candidate set, uniform picks from it. The paper's
  exact rules are not public; the options name the readings (:mod:`approxsim.replay.am`).

Example::

    s = make_sampler("per-sumtree", 10_000)
    s.insert(torch.arange(128))
    batch = s.sample(32, beta=0.4)
    s.update(batch.indices, td_errors)

:mod:`approxsim.replay.fidelity` compares the samplers' exact per-draw distributions.
"""

from __future__ import annotations

from approxsim.replay.base import IS_WEIGHT_MODES, SampleBatch, Sampler, SamplerError
from approxsim.replay.samplers import AM_SAMPLERS, EXACT_SAMPLERS, SAMPLER_NAMES, make_sampler

__all__ = [
    "make_sampler",
    "Sampler",
    "SampleBatch",
    "SamplerError",
    "SAMPLER_NAMES",
    "EXACT_SAMPLERS",
    "AM_SAMPLERS",
    "IS_WEIGHT_MODES",
]
