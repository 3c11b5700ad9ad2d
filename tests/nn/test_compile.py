"""A converted model trains under ``torch.compile(fullgraph=True)`` on CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from approxsim.convert import convert_model


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),  # its input gradient runs the patches' backward
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


@pytest.mark.compile
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_converted_model_trains_under_compile_fullgraph() -> None:
    model = convert_model(_model(), "mitchell7")
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, 8, 8, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        for net, o in ((compiled, opt), (eager, opt_e)):
            o.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            o.step()
            losses.append(loss.item())
    compiled_losses, eager_losses = losses[0::2], losses[1::2]
    assert all(torch.isfinite(torch.tensor(compiled_losses)))
    assert compiled_losses[-1] < compiled_losses[0]  # it learns
    # Same custom ops, same products: compiled and eager training agree.
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    for p, q in zip(model.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
