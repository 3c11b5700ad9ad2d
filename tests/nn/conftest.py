"""Shared setup of the layer and converter tests: one intra-op thread, the ``compile`` marker."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Numba's OpenMP threads busy-wait after each parallel kernel and starve torch's thread on a
# 2-core runner (tiny matmuls ran ~25x slower). Passive waiting must be set before the OpenMP
# runtime loads, i.e. before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "compile: runs torch.compile (slow on a cold cache; deselect with -m 'not compile')",
    )


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread() -> Iterator[None]:
    """Small tensors: one intra-op thread is faster and steadier on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
