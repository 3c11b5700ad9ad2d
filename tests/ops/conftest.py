"""Fixtures shared by the kernel tests."""

from __future__ import annotations

from typing import Any

import pytest

from approxsim.ops import _cpu_native


@pytest.fixture
def lib(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The compiled float kernel, splitting even small problems across threads."""
    monkeypatch.delenv("APPROXSIM_CPU_KERNEL", raising=False)
    monkeypatch.setattr(_cpu_native, "ONE_THREAD_NS", 0)
    loaded = _cpu_native.load()
    if loaded is None:
        pytest.skip("no compiled kernel on this machine")
    return loaded
