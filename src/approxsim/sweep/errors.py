"""The errors of :mod:`approxsim.sweep`."""

from __future__ import annotations

from approxsim.errors import ApproxsimError

__all__ = ["SweepError", "SweepSpecError"]


class SweepError(ApproxsimError, RuntimeError):
    """A sweep cannot run or be reported (its folder, its state file, an executor)."""


class SweepSpecError(SweepError, ValueError):
    """A sweep spec is refused before anything runs; the message names the key or point."""
