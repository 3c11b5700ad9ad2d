"""Convolution lowering (approxsim.ops.conv): patch matrices, their adjoints and chunking.

The layers' own tests (tests/nn/test_conv.py) check approximate convolutions against products
computed one by one; these check the lowering itself: the compiled im2col/col2im against the
torch form, and the whole lowering with exact products against torch's convolution.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from approxsim.ops import PassMultipliers, conv_out_size, im2col_conv2d
from approxsim.ops import conv as lowering

EXACT = PassMultipliers("fp32")

#: (kh, kw, sh, sw, dh, dw, ph, pw)
GEOMETRIES = [
    (5, 5, 1, 1, 1, 1, 2, 2),
    (3, 2, 2, 3, 1, 2, 1, 0),
    (3, 3, 1, 1, 2, 2, 3, 1),
    (1, 1, 2, 2, 1, 1, 0, 0),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_native_patches_equal_the_torch_form(geometry: tuple[int, ...]) -> None:
    """The compiled im2col/col2im and the torch form: same patches, same input gradient."""
    if lowering._native_kernels(torch.zeros(1)) is None:
        pytest.skip("no compiled kernel on this machine")
    g = torch.Generator().manual_seed(sum(geometry))
    x = torch.randn(5, 3, 9, 11, generator=g).transpose(0, 1)  # (C, N, H, W) view, as in conv
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    native = lowering._PatchesT.apply(xa, geometry)
    torch_form = lowering._patches_t_torch(xb, geometry)
    assert torch.equal(native, torch_form)
    upstream = torch.randn(native.shape, generator=g)
    native.backward(upstream)
    torch_form.backward(upstream)
    assert xa.grad is not None and xb.grad is not None
    assert torch.equal(xa.grad, xb.grad)


@pytest.mark.parametrize("path", ["patches", "slices"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_lowering_with_exact_products_is_torchs_convolution(
    geometry: tuple[int, ...], groups: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each patch path (transposed patches; windows of a channels-last copy) and chunking."""
    if path == "slices":
        monkeypatch.setattr(lowering, "_SLICE_MIN_CHANNELS", 1)
        monkeypatch.setattr(lowering, "_native_kernels", lambda x: None)
    monkeypatch.setattr(lowering, "UNFOLD_CHUNK_BYTES", 4000)  # several chunks
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 9, 11, generator=g, requires_grad=True)
    w = torch.randn(6, 4 // groups, kh, kw, generator=g, requires_grad=True)
    got = im2col_conv2d(x, w, (sh, sw), (ph, pw), (dh, dw), groups, EXACT)
    want = F.conv2d(x, w, None, (sh, sw), (ph, pw), (dh, dw), groups)
    assert got.shape == want.shape
    assert got.shape[2:] == (conv_out_size(9, kh, sh, dh, ph), conv_out_size(11, kw, sw, dw, pw))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(want.shape, generator=g)
    grads = torch.autograd.grad(got, (x, w), upstream)
    torch_grads = torch.autograd.grad(want, (x, w), upstream)
    for mine, theirs in zip(grads, torch_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_kernel_larger_than_the_input_says_so() -> None:
    with pytest.raises(RuntimeError, match="smaller than the dilated kernel"):
        im2col_conv2d(
            torch.randn(1, 2, 3, 3), torch.randn(2, 2, 5, 5), (1, 1), (0, 0), (1, 1), 1, EXACT
        )
