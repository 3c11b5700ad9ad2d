"""ApproxConv1d/2d: exact geometry vs torch; approximate products vs patches cut by hand."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
import torch
from nn_reference import assert_sum_close, conv2d_grads_ref, conv2d_ref, same_padding
from torch import nn

from approxsim.nn import ApproxConv1d, ApproxConv2d
from approxsim.nn import functional as AF
from approxsim.ops import PassMultipliers, _scratch
from approxsim.ops import conv as lowering

# (constructor kwargs, input shape); kernel sizes and input sizes kept tiny.
CONV2D_CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "stride2": (
        dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
        (2, 4, 7, 6),
    ),
    "same_dilation2": (
        dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", dilation=2),
        (2, 4, 6, 7),
    ),
    "same_even_kernel": (
        dict(in_channels=3, out_channels=4, kernel_size=(2, 4), padding="same"),
        (2, 3, 5, 6),
    ),
    "groups2": (
        dict(in_channels=4, out_channels=6, kernel_size=(3, 2), padding=(1, 0), groups=2),
        (2, 4, 5, 6),
    ),
    "depthwise": (
        dict(in_channels=4, out_channels=8, kernel_size=3, padding=1, groups=4),
        (2, 4, 5, 5),
    ),
    "reflect": (
        dict(in_channels=3, out_channels=5, kernel_size=3, padding=1, padding_mode="reflect"),
        (2, 3, 5, 6),
    ),
    "circular": (
        dict(
            in_channels=3,
            out_channels=5,
            kernel_size=3,
            padding=(1, 2),
            stride=(1, 2),
            padding_mode="circular",
        ),
        (2, 3, 5, 6),
    ),
    "replicate_groups": (
        dict(
            in_channels=4,
            out_channels=4,
            kernel_size=2,
            padding=1,
            groups=2,
            padding_mode="replicate",
        ),
        (1, 4, 4, 5),
    ),
    "valid_nobias": (
        dict(in_channels=3, out_channels=4, kernel_size=3, padding="valid", bias=False),
        (2, 3, 5, 5),
    ),
    "unbatched": (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 5, 5)),
    "wide_groups_dilated": (  # 16 channels per group: the channels-last patch gather
        dict(in_channels=32, out_channels=4, kernel_size=3, stride=2, dilation=2, groups=2),
        (1, 32, 8, 7),
    ),
}

CONV1D_CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "stride2": (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1), (2, 3, 9)),
    "depthwise_same_circular": (
        dict(
            in_channels=4,
            out_channels=4,
            kernel_size=3,
            padding="same",
            dilation=2,
            groups=4,
            padding_mode="circular",
        ),
        (2, 4, 8),
    ),
    "same_even_reflect": (
        dict(in_channels=2, out_channels=4, kernel_size=4, padding="same", padding_mode="reflect"),
        (2, 2, 9),
    ),
    "groups2_unbatched": (dict(in_channels=4, out_channels=2, kernel_size=2, groups=2), (4, 7)),
}


def _pads(conv: nn.Module) -> list[tuple[int, int]]:
    """(before, after) per spatial dim, computed from the layer's settings."""
    if conv.padding == "same":
        return same_padding(conv.kernel_size, conv.dilation)
    if conv.padding == "valid":
        return [(0, 0)] * len(conv.kernel_size)
    return [(p, p) for p in conv.padding]


def _as_2d(conv: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Everything conv2d_ref needs, with 1-D convolutions lifted to height 1."""
    w = conv.weight.detach()
    pads = _pads(conv)
    if isinstance(conv, nn.Conv1d):
        return dict(
            x=x.unsqueeze(-2),
            weight=w.unsqueeze(-2),
            stride=(1, conv.stride[0]),
            pads=[(0, 0), pads[0]],
            dilation=(1, conv.dilation[0]),
        )
    return dict(x=x, weight=w, stride=conv.stride, pads=pads, dilation=conv.dilation)


def _make(kind: str, case: str, **kw: Any) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """(torch conv, approximate twin sharing its Parameters, input)."""
    cases, torch_cls, approx_cls = (
        (CONV2D_CASES, nn.Conv2d, ApproxConv2d)
        if kind == "2d"
        else (CONV1D_CASES, nn.Conv1d, ApproxConv1d)
    )
    args, shape = cases[case]
    torch.manual_seed(zlib.crc32(case.encode()))
    ref = torch_cls(**args)
    approx = approx_cls.from_float(ref, **kw)
    return ref, approx, torch.randn(shape)


ALL_CASES = [("2d", c) for c in CONV2D_CASES] + [("1d", c) for c in CONV1D_CASES]


@pytest.fixture(params=["windows", "windows-torch", "slices"])
def patch_gather(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each way of gathering the patch matrix, whatever the channel count:
    Aᵀ from the (C, N, H, W) input by the compiled kernel or by torch operations (its GPU and
    torch.compile form), or A from a channels-last copy."""
    monkeypatch.setattr(
        lowering, "_SLICE_MIN_CHANNELS", 1 if request.param == "slices" else 1 << 30
    )
    if request.param != "windows":
        monkeypatch.setattr(lowering, "_native_kernels", lambda x: None)
    return str(request.param)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kind,case", ALL_CASES)
def test_fp32_layer_equals_torch(kind: str, case: str) -> None:
    ref, approx, x = _make(kind, case, multiplier="fp32")
    assert isinstance(approx, type(ref))
    torch.testing.assert_close(approx(x), ref(x), rtol=0, atol=0)


@pytest.mark.usefixtures("patch_gather")
@pytest.mark.parametrize("kind,case", ALL_CASES)
def test_im2col_geometry_with_exact_products(kind: str, case: str) -> None:
    """The im2col path itself, with exact products in one pass and approximate in another."""
    # Exact forward (approximate gradients force the im2col path).
    ref, approx, x = _make(kind, case, multiplier=PassMultipliers("fp32", "mitchell7", "fp32"))
    xa = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    out = approx(xa)
    torch.testing.assert_close(out, ref(xr), rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    w_grad_approx = ref.weight.grad.clone()  # shared Parameter: grads accumulate here
    ref.weight.grad = None
    ref(xr).backward(g)
    torch.testing.assert_close(w_grad_approx, ref.weight.grad, rtol=1e-5, atol=1e-5)
    # Exact backward passes, approximate forward: gradients are torch's (linear in g).
    ref.weight.grad = None
    approx.multiplier = PassMultipliers("mitchell7", "fp32", "fp32")
    xa.grad = None
    approx(xa).backward(g)
    w_grad_approx = ref.weight.grad.clone()
    ref.weight.grad = None
    xr.grad = None
    ref(xr).backward(g)
    torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w_grad_approx, ref.weight.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("patch_gather")
@pytest.mark.parametrize("name", ["mitchell7", "mbm7", "bf16"])
@pytest.mark.parametrize("kind,case", ALL_CASES)
def test_forward_matches_patch_products(kind: str, case: str, name: str) -> None:
    ref, approx, x = _make(kind, case, multiplier=name)
    got = approx(x)
    batched = x.dim() == (4 if kind == "2d" else 3)
    xb = x if batched else x.unsqueeze(0)
    geo = _as_2d(ref, xb)
    bias = None if ref.bias is None else ref.bias.detach()
    exact, absum, k = conv2d_ref(
        bias=bias, groups=ref.groups, padding_mode=ref.padding_mode, name=name, **geo
    )
    if kind == "1d":
        exact, absum = exact.squeeze(-2), absum.squeeze(-2)
    if not batched:
        exact, absum = exact[0], absum[0]
    assert_sum_close(got, exact, absum, k, f"{case}/{name}")
    assert not torch.allclose(got, ref(x), atol=1e-6), "no approximation happened"


@pytest.mark.usefixtures("patch_gather")
@pytest.mark.parametrize(
    "kind,case",
    [("2d", "stride2"), ("2d", "groups2"), ("2d", "circular"), ("1d", "same_even_reflect")],
)
def test_gradients_match_patch_products(kind: str, case: str) -> None:
    passes = PassMultipliers("mitchell7", grad_input="mbm7", grad_weight="bf16")
    ref, approx, x = _make(kind, case, multiplier=passes)
    xa = x.clone().requires_grad_(True)
    out = approx(xa)
    g = torch.randn_like(out)
    out.backward(g)
    geo = _as_2d(ref, x)
    g2 = g.unsqueeze(-2) if kind == "1d" else g
    refs = conv2d_grads_ref(
        grad_out=g2,
        groups=ref.groups,
        padding_mode=ref.padding_mode,
        name_gi="mbm7",
        name_gw="bf16",
        **geo,
    )
    gx_ex, gx_ab, kx = refs["input"]
    gw_ex, gw_ab, kw = refs["weight"]
    if kind == "1d":
        gx_ex, gx_ab, gw_ex, gw_ab = (t.squeeze(-2) for t in (gx_ex, gx_ab, gw_ex, gw_ab))
    assert_sum_close(xa.grad, gx_ex, gx_ab, kx, "grad_input")
    assert_sum_close(ref.weight.grad, gw_ex, gw_ab, kw, "grad_weight")


def test_batch_chunking_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    ref, approx, x = _make("2d", "groups2", multiplier="mitchell7")
    whole = approx(x)
    monkeypatch.setattr(lowering, "UNFOLD_CHUNK_BYTES", 1)  # one sample per chunk
    torch.testing.assert_close(approx(x), whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["stride2", "groups2", "depthwise"])
def test_inference_patches_recycled_match_autograd_path(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without autograd nothing keeps the patches after the GEMM, so the next call reuses
    # their recycled block: results must equal the autograd path's, and a later call (other
    # input, other size, chunked batch) must not disturb an earlier result.
    ref, approx, x = _make("2d", case, multiplier="mitchell7")
    if lowering._native_kernels(x) is None:
        pytest.skip("the compiled CPU kernel is not in use")
    monkeypatch.setattr(_scratch, "RECYCLE_MIN_BYTES", 0)  # these patches are tiny
    monkeypatch.setattr(_scratch, "_RECYCLED", [])
    with_grad = approx(x)
    assert with_grad.requires_grad
    with torch.no_grad():
        first = approx(x)
        kept = first.clone()
        blocks = len(_scratch._RECYCLED)
        approx(x)
        assert blocks >= 1 and len(_scratch._RECYCLED) == blocks  # the path was taken: reused
        approx(torch.randn(3, *x.shape[1:]))
        monkeypatch.setattr(lowering, "UNFOLD_CHUNK_BYTES", 1)  # one sample per chunk
        chunked = approx(x)
    torch.testing.assert_close(first, with_grad.detach(), rtol=0, atol=0)
    torch.testing.assert_close(first, kept, rtol=0, atol=0)
    torch.testing.assert_close(chunked, first, rtol=1e-6, atol=1e-6)


def test_from_float_to_float_round_trip() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding="valid", groups=2, bias=False, padding_mode="zeros")
    approx = ApproxConv2d.from_float(conv, "mitchell7")
    assert approx.weight is conv.weight and approx.bias is None
    assert (approx.stride, approx.groups, approx.padding) == (
        conv.stride,
        conv.groups,
        conv.padding,
    )
    assert "multiplier=mitchell7" in repr(approx)
    back = approx.to_float()
    assert type(back) is nn.Conv2d and back.weight is conv.weight
    c1 = nn.Conv1d(2, 3, 3, padding="same", padding_mode="reflect")
    a1 = ApproxConv1d.from_float(c1, "bf16")
    assert a1.weight is c1.weight and a1.bias is c1.bias and a1.padding_mode == "reflect"
    assert type(a1.to_float()) is nn.Conv1d
    assert approx.state_dict().keys() == conv.state_dict().keys()
    with pytest.raises(TypeError, match="Conv2d"):
        ApproxConv2d.from_float(c1, "bf16")


def test_errors_say_what_is_wrong() -> None:
    conv = ApproxConv2d(4, 6, 3, multiplier="mitchell7")
    with pytest.raises(RuntimeError, match="4 channels"):
        conv(torch.randn(1, 3, 5, 5))
    with pytest.raises(RuntimeError, match="smaller than the dilated kernel"):
        conv(torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match="padding_mode"):
        AF.conv2d(torch.randn(1, 4, 5, 5), conv.weight, multiplier="mitchell7", padding_mode="edge")


def _training_grads(conv: ApproxConv2d, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Forward every input first (all graphs alive at once), then each backward pass: the
    input and weight gradients, in order."""
    outs = []
    for x in xs:
        x.grad = None
        outs.append(conv(x))
    grads = []
    for x, y in zip(xs, outs, strict=True):
        conv.weight.grad = None
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        assert x.grad is not None and conv.weight.grad is not None
        grads += [x.grad.clone(), conv.weight.grad.clone()]
    return grads


def test_training_patches_recycled_only_when_free(monkeypatch: pytest.MonkeyPatch) -> None:
    # In training the patch matrix (kept by autograd until backward) and its gradient come
    # from recycled memory. Two graphs alive at once must not share it; a later step reuses
    # it; every gradient equals the one computed with fresh memory, bit for bit.
    torch.manual_seed(0)
    conv = ApproxConv2d(16, 8, 3, padding=1, bias=False, multiplier="mitchell7")
    xs = [torch.randn(8, 16, 32, 32, requires_grad=True) for _ in range(2)]
    if lowering._native_kernels(xs[0]) is None:
        pytest.skip("the compiled CPU kernel is not in use")
    assert 16 * 9 * 8 * 32 * 32 * 4 >= _scratch.RECYCLE_MIN_BYTES  # the patches qualify
    monkeypatch.setattr(_scratch, "_RECYCLED", [])
    first = _training_grads(conv, xs)
    kept = len(_scratch._RECYCLED)
    assert kept >= 2  # two patch matrices alive at once, each its own block
    again = _training_grads(conv, xs)
    assert len(_scratch._RECYCLED) == kept  # the second step reused them
    monkeypatch.setattr(_scratch, "RECYCLE_MIN_BYTES", 1 << 62)  # fresh memory everywhere
    fresh = _training_grads(conv, xs)
    for got, want in zip(first + again, fresh + fresh, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bias_gradient_is_torchs_broadcast_add_bit_for_bit() -> None:
    """The bias is added as torch adds a broadcast bias, so its gradient sums in torch's order:
    a reordered sum (a faster add over rows of repeated biases, tried once) changed the bits of
    the bias gradient and made training runs diverge from earlier ones."""
    g = torch.Generator().manual_seed(3)
    conv = ApproxConv2d(1, 6, 5, padding=2, multiplier="mitchell7")
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = conv(x)
    up = torch.randn(y.shape, generator=g).contiguous(memory_format=torch.channels_last)
    (got,) = torch.autograd.grad(y, conv.bias, up)
    plain = AF.conv2d(x, conv.weight, None, padding=2, multiplier="mitchell7")
    bias = conv.bias.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad(plain + bias.reshape(1, -1, 1, 1), bias, up)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
