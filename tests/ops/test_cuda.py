"""The compiled GPU path (Triton on CUDA) against the CPU reference; skipped without a GPU.

Run on a GPU machine with ``scripts/gpu_check.sh`` (which also benchmarks). Products must be
bit-identical to the CPU specification; sums obey the accumulation bound of DESIGN §2.
"""

from __future__ import annotations

import pytest
import torch

import approxsim
from approxsim.multipliers.numformat import lut_product

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FAMILIES = ["bf16", "bf16_trunc", "mitchell7", "mbm7", "trunc3", "mitchell11"]
EPS32 = torch.finfo(torch.float32).eps


def _mult(name: str) -> approxsim.Multiplier:
    return approxsim.get_multiplier(name)


@pytest.mark.parametrize("family", FAMILIES)
def test_mul_bit_exact_on_gpu(family: str) -> None:
    m = _mult(family)
    g = torch.Generator().manual_seed(1)
    bits = torch.randint(-(2**31), 2**31 - 1, (2, 1 << 16), generator=g, dtype=torch.int64)
    a, b = bits.to(torch.int32).view(torch.float32)
    want = lut_product(a, b, m.lut_bits(), m.mantissa_bits, m.rounding)
    got = approxsim.mul(a.cuda(), b.cuda(), m).cpu()
    same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
    assert bool(same.all())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 33, 65, 17), (1, 257, 300, 129)])
def test_matmul_on_gpu_matches_products(family: str, shape: tuple[int, int, int, int]) -> None:
    nb, r, k, n = shape
    m = _mult(family)
    a = torch.randn(nb, r, k) * 4
    b = torch.randn(nb, k, n)
    prods = lut_product(
        a[..., :, :, None], b[..., None, :, :], m.lut_bits(), m.mantissa_bits, m.rounding
    ).double()
    got = approxsim.matmul(a.cuda(), b.cuda(), m).cpu().double()
    bound = 4 * EPS32 * k * prods.abs().sum(-2)
    assert bool(((got - prods.sum(-2)).abs() <= bound).all())


def test_gradients_on_gpu_match_cpu() -> None:
    a = torch.randn(3, 40, 24, requires_grad=True)
    w = torch.randn(24, 16, requires_grad=True)
    out = approxsim.matmul(a, w, "mbm7")
    g = torch.randn_like(out)
    out.backward(g)
    ac = a.detach().cuda().requires_grad_()
    wc = w.detach().cuda().requires_grad_()
    approxsim.matmul(ac, wc, "mbm7").backward(g.cuda())
    for cpu, gpu in ((a.grad, ac.grad), (w.grad, wc.grad)):
        assert torch.allclose(cpu, gpu.cpu(), rtol=1e-5, atol=1e-5)


def test_converted_conv_model_trains_on_gpu() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    )
    amodel = approxsim.convert_model(model, "mitchell7").cuda()
    opt = torch.optim.SGD(amodel.parameters(), lr=0.01)
    x = torch.randn(4, 3, 8, 8, device="cuda")
    loss = amodel(x).logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss).item()
