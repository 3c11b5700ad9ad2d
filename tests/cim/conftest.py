"""Shared fixtures of the CIM tests: one torch thread, a tiny trained classifier, a tiny
Fashion-MNIST-named IDX dataset and a checkpoint trained on it by ``approxsim train``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from approxsim.data import write_banded_mnist  # noqa: E402

N_TRAIN, N_TEST = 96, 64


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is faster and steadier on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_blobs(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Three Gaussian classes in 8 dimensions (separable, but not by a wide margin)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0, 0, 0, 1, 0, 0, 0], [0, 2.0, 0, 0, 0, 1, 0, 0],
                            [0, 0, 2.0, 0, 0, 0, 1, 0]])  # fmt: skip
    y = torch.randint(0, 3, (n,), generator=g)
    x = centers[y] + 0.7 * torch.randn(n, 8, generator=g)
    return x, y


@pytest.fixture(scope="session")
def blobs() -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(attack split, held-out split)`` of the blob data."""
    return make_blobs(400, 1), make_blobs(400, 2)


@pytest.fixture(scope="session")
def trained_mlp(blobs: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]) -> nn.Module:
    """An 8-32-3 MLP trained on the blobs (about 95% accurate)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = make_blobs(1000, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    write_banded_mnist(root, N_TRAIN, N_TEST)
    return root


@pytest.fixture(scope="session")
def std_run(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> Path:
    """A LeNet-300-100 run folder written by ``approxsim train`` (2 epochs, 96 images)."""
    from approxsim.training import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "standard"
    train(
        TrainConfig(
            out,
            model="lenet300100",
            dataset="fashion-mnist",
            data_dir=fashion_dir,
            epochs=2,
            batch_size=32,
            progress=False,
            threads=1,
        )
    )
    return out
