"""A slow, independent reference of the quantized layers for the tests.

Quantize with the documented formulas, look every code product up one at a time in the
multiplier's own table (sign-magnitude composed here from the unsigned table, not from the
library's derived table), sum in Python integers, dequantize. Tiny shapes only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from approxsim.multipliers.integer import IntMultiplier, product_range


def noisy_multiplier(bits: int, signed: bool, seed: int, spread: int = 40) -> IntMultiplier:
    """An asymmetric approximate multiplier: exact products plus a fixed random error."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    v = torch.arange(lo, hi + 1, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-spread, spread + 1, (v.numel(), v.numel()), generator=g)
    plo, phi = product_range(bits, signed)
    table = (v[:, None] * v[None, :] + noise).clamp(plo, phi)
    return IntMultiplier(f"noisy{bits}{'s' if signed else 'u'}", bits, signed, table)


def code_range(kind: str, bits: int) -> tuple[int, int]:
    """(qmin, qmax) of a mapping."""
    if kind == "affine":
        return 0, (1 << bits) - 1
    if kind == "symmetric":
        return -((1 << (bits - 1)) - 1), (1 << (bits - 1)) - 1
    return -((1 << bits) - 1), (1 << bits) - 1


def params(lo: Tensor, hi: Tensor, kind: str, bits: int) -> tuple[Tensor, Tensor]:
    """Scale (float32) and zero point (int64) of a range, as docs/quantization.md states."""
    qmin, qmax = code_range(kind, bits)
    lo, hi = lo.float(), hi.float()
    if kind == "affine":
        lo = torch.minimum(lo, torch.zeros_like(lo))
        hi = torch.maximum(hi, torch.zeros_like(hi))
        scale = (hi - lo) / float(qmax - qmin)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        zp = torch.round(qmin - lo / scale).clamp(qmin, qmax).long()
        return scale, zp
    scale = torch.maximum(lo.abs(), hi.abs()) / float(qmax)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return scale, torch.zeros_like(scale, dtype=torch.int64)


def quantize(x: Tensor, scale: Tensor, zp: Tensor, kind: str, bits: int) -> Tensor:
    """int64 codes."""
    qmin, qmax = code_range(kind, bits)
    return (torch.round(x.float() / scale) + zp).clamp(qmin, qmax).long()


def product_fn(mult: IntMultiplier, kind: str) -> Callable[[int, int], int]:
    """f(a, b) for codes a (row operand) and b."""
    t = mult.table.tolist()
    mn = mult.min_value
    if kind == "sign-magnitude":

        def f(a: int, b: int) -> int:
            s = (-1 if a < 0 else 1) * (-1 if b < 0 else 1)
            return s * t[abs(a)][abs(b)]

        return f
    return lambda a, b: t[a - mn][b - mn]


def weight_params(w: Tensor, kind: str, bits: int, per_channel: bool) -> tuple[Tensor, Tensor]:
    """Per-output-channel (or per-tensor) scale and zero point, shape (O,)."""
    if per_channel:
        flat = w.detach().reshape(w.shape[0], -1)
        return params(flat.amin(1), flat.amax(1), kind, bits)
    s, z = params(w.detach().min(), w.detach().max(), kind, bits)
    return s.expand(w.shape[0]), z.expand(w.shape[0])


def dot(
    f: Callable[[int, int], int], qa: list[int], qb: list[int], za: int, zb: int, kind: str
) -> int:
    """Σ (qa - za)(qb - zb) with only qa·qb through the table (zero points exact)."""
    if kind == "affine":
        return sum(f(a, b) - za * b - zb * a + za * zb for a, b in zip(qa, qb, strict=True))
    return sum(f(a, b) for a, b in zip(qa, qb, strict=True))


def dequant(acc: int, sa: Tensor, sb: Tensor) -> float:
    """float64 scaling, then one rounding to float32."""
    return float(torch.tensor(acc * (float(sa) * float(sb)), dtype=torch.float32))


def ref_linear(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    act: tuple[Tensor, Tensor],
    mult: IntMultiplier,
    kind: str,
    bits: int,
    per_channel: bool,
) -> Tensor:
    """Reference of QuantLinear on a 2-D input."""
    f = product_fn(mult, kind)
    sa, za = params(act[0], act[1], kind, bits)
    sb, zb = weight_params(w, kind, bits, per_channel)
    qx = quantize(x, sa, za, kind, bits).tolist()
    qw = quantize(w, sb[:, None], zb[:, None], kind, bits).tolist()
    out = torch.zeros(x.shape[0], w.shape[0])
    for r in range(x.shape[0]):
        for o in range(w.shape[0]):
            acc = dot(f, qx[r], qw[o], int(za), int(zb[o]), kind)
            out[r, o] = dequant(acc, sa, sb[o])
    return out + b if b is not None else out


def ref_conv2d(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    stride: int,
    pad: tuple[int, int, int, int],
    dilation: int,
    groups: int,
    padding_mode: str,
    act: tuple[Tensor, Tensor],
    mult: IntMultiplier,
    kind: str,
    bits: int,
    per_channel: bool,
) -> Tensor:
    """Reference of QuantConv2d on ``(N, C, H, W)``; ``pad`` in F.pad order."""
    f = product_fn(mult, kind)
    sa, za = params(act[0], act[1], kind, bits)
    sb, zb = weight_params(w, kind, bits, per_channel)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    xp = F.pad(x, pad, mode=mode) if any(pad) else x
    qx = quantize(xp, sa, za, kind, bits).tolist()
    qw = quantize(w, sb.view(-1, 1, 1, 1), zb.view(-1, 1, 1, 1), kind, bits).tolist()
    n, _, hp, wp = xp.shape
    o, cg, kh, kw = w.shape
    ho = (hp - dilation * (kh - 1) - 1) // stride + 1
    wo = (wp - dilation * (kw - 1) - 1) // stride + 1
    out = torch.zeros(n, o, ho, wo)
    for ni in range(n):
        for oc in range(o):
            g = oc // (o // groups)
            for i in range(ho):
                for j in range(wo):
                    qa, qb = [], []
                    for c in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                qa.append(
                                    qx[ni][g * cg + c][i * stride + u * dilation][
                                        j * stride + v * dilation
                                    ]
                                )
                                qb.append(qw[oc][c][u][v])
                    acc = dot(f, qa, qb, int(za), int(zb[oc]), kind)
                    out[ni, oc, i, j] = dequant(acc, sa, sb[oc])
    if b is not None:
        out = out + b.view(1, -1, 1, 1)
    return out
