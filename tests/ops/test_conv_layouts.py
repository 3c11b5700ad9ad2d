"""Convolution lowering and the input's memory layout (approxsim.ops.conv).

A channels-last input (what an approximate convolution puts out, so what every later layer of
a CNN gets) is copied to ``(C, N, H, W)`` before the compiled im2col, and its gradient comes
back channels-last; a batch split into chunks joins its chunks' gradients in one copy. These
check that none of it changes a bit of the outputs or gradients, whatever the geometry,
groups, chunking or padding mode, and that the gradient's layout follows the input's.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from approxsim.nn import ApproxConv2d
from approxsim.ops import PassMultipliers, conv_out_size, im2col_conv2d
from approxsim.ops import conv as lowering
from approxsim.ops.matmul import DOUBLE_BACKWARD_ERROR

APPROX = PassMultipliers("mitchell7")

#: (kh, kw, sh, sw, dh, dw, ph, pw)
GEOMETRIES = [
    (3, 3, 1, 1, 1, 1, 1, 1),
    (3, 2, 2, 3, 1, 2, 1, 0),
    (5, 5, 1, 1, 1, 1, 2, 2),
    (1, 1, 2, 2, 1, 1, 0, 0),
]

CL = torch.channels_last


def _needs_kernel() -> None:
    if lowering._native_kernels(torch.zeros(1)) is None:
        pytest.skip("no compiled kernel on this machine")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns of ``t`` in logical order (tells -0.0 from 0.0)."""
    return t.detach().contiguous().view(torch.int32)


def _run(x0: torch.Tensor, w0: torch.Tensor, up: torch.Tensor, geometry: tuple[int, ...],
         groups: int) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Output, raw input gradient and weight gradient of the lowering."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    x = x0.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    w = w0.detach().clone().requires_grad_()
    y = im2col_conv2d(x, w, (sh, sw), (ph, pw), (dh, dw), groups, APPROX)
    gx, gw = torch.autograd.grad(y, (x, w), up)
    return y, gx, gw


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_channels_last_input_gives_the_same_bits(
    geometry: tuple[int, ...], groups: int, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channels-last and contiguous inputs, the compiled patches and the torch form of them:
    one set of bits, for whole and for chunked batches."""
    _needs_kernel()
    g = torch.Generator().manual_seed(sum(geometry) + groups)
    x = torch.randn(5, 4, 9, 11, generator=g)
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    ho, wo = conv_out_size(9, kh, sh, dh, ph), conv_out_size(11, kw, sw, dw, pw)
    w = torch.randn(6, 4 // groups, kh, kw, generator=g)
    up = torch.randn(5, 6, ho, wo, generator=g)
    if chunked:  # (chunks are separate GEMMs, whose sums may differ from the whole one's)
        monkeypatch.setattr(lowering, "UNFOLD_CHUNK_BYTES", 3000)  # several chunks
    want = _run(x, w, up, geometry, groups)
    got = _run(x.contiguous(memory_format=CL), w, up, geometry, groups)
    for mine, theirs in zip(got, want, strict=True):
        assert torch.equal(_bits(mine), _bits(theirs))
    monkeypatch.setattr(lowering, "_native_kernels", lambda x: None)  # the torch form
    torch_form = _run(x.contiguous(memory_format=CL), w, up, geometry, groups)
    for mine, theirs in zip(torch_form, want, strict=True):
        assert torch.equal(_bits(mine), _bits(theirs))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_input_gradient_comes_back_in_the_inputs_layout(
    layout: str, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_kernel()
    if chunked:
        monkeypatch.setattr(lowering, "UNFOLD_CHUNK_BYTES", 3000)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 8, 8, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    w = torch.randn(5, 3, 3, 3, generator=g)
    up = torch.randn(4, 5, 8, 8, generator=g)
    _, gx, _ = _run(x, w, up, (3, 3, 1, 1, 1, 1, 1, 1), 1)
    if layout == "channels_last":
        assert gx.is_contiguous(memory_format=CL) and not gx.is_contiguous()
    else:
        assert gx.is_contiguous()


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_layer_with_channels_last_input_gives_the_same_bits(padding_mode: str) -> None:
    """The layer (bias, padding modes, a stride) on both memory layouts of its input."""
    _needs_kernel()
    torch.manual_seed(3)
    layer = ApproxConv2d(6, 8, 3, stride=(1, 2), padding=1, padding_mode=padding_mode,
                         multiplier="mitchell7")  # fmt: skip
    x0 = torch.randn(3, 6, 7, 9)
    results: list[tuple[torch.Tensor, ...]] = []
    for x in (x0, x0.contiguous(memory_format=CL)):
        xr = x.clone(memory_format=torch.preserve_format).requires_grad_()
        y = layer(xr)
        up = torch.arange(y.numel(), dtype=torch.float32).reshape(y.shape).sin()
        grads = torch.autograd.grad(y, (xr, layer.weight, layer.bias), up)
        results.append((y, *grads))
    for mine, theirs in zip(results[1], results[0], strict=True):
        assert torch.equal(_bits(mine), _bits(theirs))


def test_channels_last_input_second_derivative_is_refused() -> None:
    """With ``create_graph`` the gradient stays connected through the layout copy, so a second
    derivative reaches the approximate product's refusal."""
    _needs_kernel()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 6, 6, generator=g).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(4, 3, 3, 3, generator=g)
    y = im2col_conv2d(x, w, (1, 1), (1, 1), (1, 1), 1, APPROX)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    plain: Any = torch.autograd.grad(
        im2col_conv2d(x, w, (1, 1), (1, 1), (1, 1), 1, APPROX).sum(), x
    )[0]
    assert torch.equal(_bits(gx), _bits(plain))
    with pytest.raises(RuntimeError) as exc:
        torch.autograd.grad(gx.sum(), x)
    assert str(exc.value) == DOUBLE_BACKWARD_ERROR


@pytest.mark.parametrize("shape", [(8, 8), (19, 13), (3, 40, 17), (100, 9)])
def test_transposed_copy_keeps_every_bit(shape: tuple[int, ...]) -> None:
    """The kernel's blocked transpose (8x8 register blocks on AVX2, 16x16 on AVX-512, scalar
    edges) moves every float bit for bit, -0.0 and NaN payloads included."""
    _needs_kernel()
    from approxsim.ops import _cpu_layout

    x = torch.randn(*shape)
    x.view(-1)[::7] = -0.0
    x.view(-1)[3::11] = float("nan")
    got = _cpu_layout.transposed_copy(x)
    assert torch.equal(_bits(got), _bits(x.transpose(-2, -1)))
