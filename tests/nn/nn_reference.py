"""Independent reference computations for the layer tests.

Everything here is written from the definitions, not from approxsim.nn: patches are cut out by
slicing (no F.unfold), groups are looped over, and every product comes from
``lut_products_ref`` (the per-product specification), summed in float64. Sums are compared with
the accumulation-order bound ``|Δ| ≤ 4·eps32·K·Σ|products|``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import approxsim
from approxsim.multipliers.numformat import ROUNDINGS
from approxsim.ops.reference import lut_products_ref

EPS = torch.finfo(torch.float32).eps


def products(a: Tensor, b: Tensor, name: str) -> Tensor:
    """P[r, k, n] = a[r, k] ⊗ b[k, n] for 2-D ``a`` (R, K) and ``b`` (K, N)."""
    m = approxsim.get_multiplier(name)
    lut = m.lut_bits()
    return lut_products_ref(a[None], b[None], lut, m.mantissa_bits, ROUNDINGS.index(m.rounding))[0]


def sum_ref(prods: Tensor, dim: int) -> tuple[Tensor, Tensor, int]:
    """(exact float64 sum, float64 sum of |products|, K) over ``dim``."""
    p = prods.double()
    return p.sum(dim), p.abs().sum(dim), prods.shape[dim]


def assert_within(got: Tensor, exact: Tensor, bound: Tensor, what: str = "") -> None:
    """Elementwise |got - exact| ≤ bound (bound in float64, a tiny floor for exact zeros)."""
    assert got.shape == exact.shape, (what, got.shape, exact.shape)
    diff = (got.double() - exact).abs()
    ok = diff <= bound + 1e-30
    assert bool(ok.all()), f"{what}: max excess {float((diff - bound)[~ok].max()):.3g}"


def assert_sum_close(got: Tensor, exact: Tensor, absum: Tensor, k: int, what: str = "") -> None:
    """The accumulation bound 4·eps·K·Σ|P| (plus one rounding of the result)."""
    bound = 4 * EPS * max(k, 1) * absum + EPS * exact.abs()
    assert_within(got, exact, bound, what)


# ---------------------------------------------------------------------------- convolution
def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> list[tuple[int, int]]:
    """torch's padding='same': total d·(k-1), the odd one after."""
    return [
        (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
        for k, d in zip(kernel, dilation, strict=True)
    ]


def pad2d(x: Tensor, pads: list[tuple[int, int]], mode: str) -> Tensor:
    """Pad (N, C, H, W) with [(top, bottom), (left, right)]."""
    (t, b), (lft, r) = pads
    return F.pad(x, (lft, r, t, b), mode="constant" if mode == "zeros" else mode)


def patches2d(
    xp: Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[Tensor, int, int]:
    """Patches of a padded (N, C, H, W) input by slicing: (N, Ho, Wo, C, kh·kw), Ho, Wo."""
    n, c, h, w = xp.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (w - dw * (kw - 1) - 1) // sw + 1
    taps = []
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            taps.append(
                xp[:, :, r0 : r0 + sh * (ho - 1) + 1 : sh, c0 : c0 + sw * (wo - 1) + 1 : sw]
            )
    p = torch.stack(taps, dim=2)  # (N, C, kh·kw, Ho, Wo)
    return p.permute(0, 3, 4, 1, 2), ho, wo


def conv2d_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    pads: list[tuple[int, int]],
    dilation: tuple[int, int],
    groups: int,
    padding_mode: str,
    name: str,
) -> tuple[Tensor, Tensor, int]:
    """(exact output, Σ|P| per output, K) of an approximate 2-D convolution, float64."""
    xp = pad2d(x, pads, padding_mode)
    o, cg, kh, kw = weight.shape
    og = o // groups
    p, ho, wo = patches2d(xp, (kh, kw), stride, dilation)
    n = x.shape[0]
    exact, absum = [], []
    for g in range(groups):
        a = p[..., g * cg : (g + 1) * cg, :].reshape(n * ho * wo, cg * kh * kw)
        b = weight[g * og : (g + 1) * og].reshape(og, cg * kh * kw).t()
        s, sa, k = sum_ref(products(a, b, name), 1)
        exact.append(s)
        absum.append(sa)
    ex = torch.cat(exact, 1).reshape(n, ho, wo, o).permute(0, 3, 1, 2)
    ab = torch.cat(absum, 1).reshape(n, ho, wo, o).permute(0, 3, 1, 2)
    if bias is not None:
        ex = ex + bias.double().view(1, -1, 1, 1)
        ab = ab + bias.double().abs().view(1, -1, 1, 1)
    return ex, ab, k


def conv2d_grads_ref(
    x: Tensor,
    weight: Tensor,
    grad_out: Tensor,
    stride: tuple[int, int],
    pads: list[tuple[int, int]],
    dilation: tuple[int, int],
    groups: int,
    padding_mode: str,
    name_gi: str,
    name_gw: str,
) -> dict[str, tuple[Tensor, Tensor, int]]:
    """Reference gradients: weight grad = Σ_rows colsᵀ ⊗ grad; input grad = col2im(grad ⊗ Wᵀ).

    col2im is the exact (float64) adjoint of the slicing patch extraction, via autograd.
    """
    o, cg, kh, kw = weight.shape
    og = o // groups
    n = x.shape[0]
    p, ho, wo = patches2d(pad2d(x, pads, padding_mode), (kh, kw), stride, dilation)
    x64 = x.double().requires_grad_(True)
    p64, _, _ = patches2d(pad2d(x64, pads, padding_mode), (kh, kw), stride, dilation)
    gw_ex, gw_ab, dcols_ex, dcols_ab = [], [], [], []
    for g in range(groups):
        kk = cg * kh * kw
        a = p[..., g * cg : (g + 1) * cg, :].reshape(n * ho * wo, kk)
        b = weight[g * og : (g + 1) * og].reshape(og, kk).t()
        gg = grad_out[:, g * og : (g + 1) * og].permute(0, 2, 3, 1).reshape(n * ho * wo, og)
        s, sa, rows = sum_ref(products(a.t().contiguous(), gg, name_gw), 1)  # (K, Og)
        gw_ex.append(s.t().reshape(og, cg, kh, kw))
        gw_ab.append(sa.t().reshape(og, cg, kh, kw))
        s, sa, _ = sum_ref(products(gg, b.t().contiguous(), name_gi), 1)  # (R, K)
        dcols_ex.append(s.reshape(n, ho, wo, cg, kh * kw))
        dcols_ab.append(sa.reshape(n, ho, wo, cg, kh * kw))
    dcols_ex_t = torch.cat(dcols_ex, 3)
    dcols_ab_t = torch.cat(dcols_ab, 3)
    (gx_ex,) = torch.autograd.grad((p64 * dcols_ex_t).sum(), x64)
    x64b = x.double().requires_grad_(True)
    p64b, _, _ = patches2d(pad2d(x64b, pads, padding_mode), (kh, kw), stride, dilation)
    (gx_ab,) = torch.autograd.grad((p64b * dcols_ab_t).sum(), x64b)
    return {
        "weight": (torch.cat(gw_ex), torch.cat(gw_ab), rows),
        "input": (gx_ex, gx_ab.abs(), og + 2 * kh * kw),
    }
