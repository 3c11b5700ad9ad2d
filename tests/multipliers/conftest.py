"""Shared fixtures for the multiplier tests.

Every test gets its own approxsim cache directory (``APPROXSIM_CACHE_DIR``) so no test reads
or writes the user's real cache, and no test sees another's entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty approxsim cache for this test (also redirects XDG_CACHE_HOME)."""
    root = tmp_path / "approxsim-cache"
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return root


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread() -> Iterator[None]:
    """Run these small-tensor tests on one intra-op thread (restored afterwards).

    Results do not depend on the thread count; on a busy 2-core runner, torch's thread
    fan-out made each 65k-element LUT product ~50x slower than a single thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache directory for module-scoped fixtures that build C models once per module."""
    root = tmp_path_factory.mktemp("module-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APPROXSIM_CACHE_DIR", str(root))
        mp.setenv("XDG_CACHE_HOME", str(root / "xdg"))
        yield root
