"""Every benchmark test starts in the default environment a user gets: no variable that says
how OpenMP threads wait, so native settings can be named (a test that needs one sets it)."""

from __future__ import annotations

import pytest

from approxsim.bench.native import WAIT_VARIABLES


@pytest.fixture(autouse=True)
def default_wait_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove ``OMP_WAIT_POLICY`` and its kin for the test."""
    for name in WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
