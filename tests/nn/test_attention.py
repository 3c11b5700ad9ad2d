"""Approximate attention: SDPA and ApproxMultiheadAttention against torch and explicit sums."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from nn_reference import EPS, assert_sum_close, assert_within, products, sum_ref
from torch import nn

import approxsim
from approxsim.nn import ApproxMultiheadAttention
from approxsim.nn import functional as AF
from approxsim.ops import resolve_passes

FP32 = resolve_passes("fp32")


def _masks(lq: int, ls: int) -> dict[str, dict[str, Any]]:
    g = torch.Generator().manual_seed(7)
    keep = torch.rand(2, 1, lq, ls, generator=g) > 0.3
    keep[..., 0] = True  # every query keeps a key (torch's MHA gives NaN otherwise)
    additive = torch.randn(lq, ls, generator=g)
    return {
        "none": {},
        "bool": {"attn_mask": keep},
        "float": {"attn_mask": additive},
        "causal": {"is_causal": True},
        "scale": {"scale": 0.3, "attn_mask": additive},
    }


def _qkv(lq: int = 5, ls: int = 6, e: int = 8, ev: int = 4, requires_grad: bool = False):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 3, lq, e, generator=g)
    k = torch.randn(2, 3, ls, e, generator=g)
    v = torch.randn(2, 3, ls, ev, generator=g)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


@pytest.mark.parametrize("mask", list(_masks(5, 6)))
def test_explicit_path_with_exact_products_equals_torch(mask: str) -> None:
    kwargs = _masks(5, 6)[mask]
    q, k, v = _qkv(requires_grad=True)
    q2, k2, v2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out, _ = AF._attention(
        q,
        k,
        v,
        kwargs.get("attn_mask"),
        0.0,
        kwargs.get("is_causal", False),
        kwargs.get("scale"),
        FP32,
    )
    ref = F.scaled_dot_product_attention(q2, k2, v2, **kwargs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)
    # The public function with "fp32" is torch's own.
    assert torch.equal(
        AF.scaled_dot_product_attention(q2, k2, v2, **kwargs, multiplier="fp32"), ref
    )


def test_fully_masked_rows_give_zeros_like_torch() -> None:
    q, k, v = _qkv(requires_grad=True)
    keep = torch.ones(5, 6, dtype=torch.bool)
    keep[2] = False
    out = AF.scaled_dot_product_attention(q, k, v, keep, multiplier="mitchell7")
    assert torch.equal(out[..., 2, :], torch.zeros_like(out[..., 2, :]))
    ref = F.scaled_dot_product_attention(q, k, v, keep)
    assert torch.equal(ref[..., 2, :], torch.zeros_like(ref[..., 2, :]))
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


def test_causal_and_mask_together_are_refused_like_torch() -> None:
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="not both"):
        AF.scaled_dot_product_attention(
            q, k, v, torch.ones(5, 6, dtype=torch.bool), is_causal=True, multiplier="mitchell7"
        )


def test_gqa_repeats_heads() -> None:
    q = torch.randn(1, 4, 3, 8)
    k = torch.randn(1, 2, 5, 8)
    v = torch.randn(1, 2, 5, 8)
    got = AF._attention(q, k, v, None, 0.0, False, None, FP32, enable_gqa=True)[0]
    ref = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mitchell7", "mbm7", "bf16"])
@pytest.mark.parametrize("mask", ["bool", "float", "causal", "scale"])
def test_approximate_sdpa_matches_explicit_products(name: str, mask: str) -> None:
    """Stage by stage: scores = Σ q⊗k (then softmax), output = Σ probs⊗v, products by LUT."""
    kwargs = _masks(5, 6)[mask]
    q, k, v = _qkv()
    passes = resolve_passes(name)
    out, probs = AF._attention(
        q,
        k,
        v,
        kwargs.get("attn_mask"),
        0.0,
        kwargs.get("is_causal", False),
        kwargs.get("scale"),
        passes,
    )
    assert torch.equal(out, AF.scaled_dot_product_attention(q, k, v, **kwargs, multiplier=name))
    scale = kwargs.get("scale", 1 / math.sqrt(q.shape[-1]))
    qf, kf, vf = (t.reshape(6, t.shape[-2], t.shape[-1]) for t in (q, k, v))
    pf = probs.reshape(6, 5, 6)
    for bh in range(6):
        # Stage 1: scores with operand A = Q, operand B = Kᵀ.
        s, s_abs, kk = sum_ref(products(qf[bh], kf[bh].t().contiguous(), name), 1)
        delta = (4 * EPS * kk * s_abs + EPS * s.abs()) * scale  # bound on the score error
        s = s * scale
        b, h = divmod(bh, 3)
        if kwargs.get("is_causal"):
            s = s.masked_fill(~torch.ones(5, 6, dtype=torch.bool).tril(), float("-inf"))
        m = kwargs.get("attn_mask")
        if m is not None:
            m = m[b, 0] if m.dim() == 4 else m
            s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.double()
        p_ref = torch.softmax(s, dim=-1)
        # A perturbation δ of the scores moves each probability by at most p·(e^{2δ} - 1).
        d = delta.max(dim=-1, keepdim=True).values
        assert_within(pf[bh], p_ref, p_ref * (torch.exp(2 * d) - 1 + 16 * EPS), "probs")
        # Stage 2: output with operand A = the layer's probabilities, operand B = V.
        o, o_abs, kk = sum_ref(products(pf[bh], vf[bh], name), 1)
        assert_sum_close(out.reshape(6, 5, -1)[bh], o, o_abs, kk, "probs·V")
    exact = F.scaled_dot_product_attention(q, k, v, **kwargs)
    assert not torch.allclose(out, exact, atol=1e-5), "no approximation happened"


# ---------------------------------------------------------------------------- multi-head
MHA_CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "batch_first": {"batch_first": True},
    "kdim_vdim": {"kdim": 6, "vdim": 5},
    "bias_kv_zero_attn": {"add_bias_kv": True, "add_zero_attn": True},
    "no_bias": {"bias": False, "batch_first": True},
}

CALLS: dict[str, dict[str, Any]] = {
    "weights_avg": {},
    "weights_per_head": {"average_attn_weights": False},
    "no_weights": {"need_weights": False},
    "kpm": {"key_padding_mask": "kpm"},
    "bool_mask": {"attn_mask": "bool"},
    "float_mask_kpm_no_weights": {
        "attn_mask": "float",
        "key_padding_mask": "kpm",
        "need_weights": False,
    },
    "mask3d": {"attn_mask": "3d"},
    "causal_no_weights": {"attn_mask": "causal", "is_causal": True, "need_weights": False},
    "causal_weights": {"attn_mask": "causal", "is_causal": True},
}


def _mha_inputs(cfg: dict[str, Any], call: dict[str, Any], self_attn: bool, batched: bool = True):
    e, heads, n, lq = 8, 2, 3, 4
    ls = lq if self_attn else 5
    g = torch.Generator().manual_seed(11)
    kdim, vdim = cfg.get("kdim", e), cfg.get("vdim", e)

    def seq(length: int, dim: int) -> torch.Tensor:
        if not batched:
            return torch.randn(length, dim, generator=g)
        shape = (n, length, dim) if cfg.get("batch_first") else (length, n, dim)
        return torch.randn(shape, generator=g)

    q = seq(lq, e)
    if self_attn and kdim == e and vdim == e:
        k = v = q
    else:
        k, v = seq(ls, kdim), seq(ls, vdim)
    kw = dict(call)
    if kw.get("key_padding_mask") == "kpm":
        kpm = torch.zeros(n, ls, dtype=torch.bool)
        kpm[0, -2:] = True
        kpm[2, 1] = True
        kw["key_padding_mask"] = kpm if batched else kpm[0]
    mask = kw.get("attn_mask")
    if mask == "bool":
        m = torch.rand(lq, ls, generator=g) > 0.6
        m[:, 0] = False
        kw["attn_mask"] = m
    elif mask == "float":
        kw["attn_mask"] = torch.randn(lq, ls, generator=g)
    elif mask == "3d":
        kw["attn_mask"] = torch.randn((n if batched else 1) * heads, lq, ls, generator=g)
    elif mask == "causal":
        kw["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(lq)
    return q, k, v, kw


# A causal mask needs square self-attention (no kdim/vdim, no extra bias/zero key).
MHA_CASES = [
    (cfg, call)
    for cfg in MHA_CONFIGS
    for call in CALLS
    if "causal" not in call or cfg in ("plain", "batch_first", "no_bias")
]


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("cfg,call", MHA_CASES)
def test_mha_fp32_equals_torch(cfg: str, call: str) -> None:
    config, call_kw = MHA_CONFIGS[cfg], CALLS[call]
    torch.manual_seed(5)
    ref = nn.MultiheadAttention(8, 2, **config)
    with torch.no_grad():  # non-zero biases so that they are tested
        for p in ref.parameters():
            if p.dim() == 1:
                p.normal_()
    approx = ApproxMultiheadAttention.from_float(ref, "fp32")
    q, k, v, kw = _mha_inputs(config, call_kw, self_attn="causal" in call or cfg == "plain")
    out_r, w_r = ref(q, k, v, **kw)
    out_a, w_a = approx(q, k, v, **kw)
    torch.testing.assert_close(out_a, out_r, rtol=1e-5, atol=1e-5)
    if w_r is None:
        assert w_a is None
    else:
        torch.testing.assert_close(w_a, w_r, rtol=1e-5, atol=1e-6)
    grads_r = torch.autograd.grad(out_r.square().sum(), list(ref.parameters()))
    grads_a = torch.autograd.grad(out_a.square().sum(), list(ref.parameters()))
    for gr, ga in zip(grads_r, grads_a, strict=True):
        torch.testing.assert_close(ga, gr, rtol=1e-4, atol=1e-5)


def test_mha_unbatched_and_dropout_match_torch() -> None:
    torch.manual_seed(6)
    ref = nn.MultiheadAttention(8, 2, dropout=0.3)
    approx = ApproxMultiheadAttention.from_float(ref, "fp32")
    q, k, v, kw = _mha_inputs({}, {"key_padding_mask": "kpm"}, self_attn=False, batched=False)
    ref.eval()
    approx.eval()
    out_r, w_r = ref(q, k, v, **kw)
    out_a, w_a = approx(q, k, v, **kw)
    torch.testing.assert_close(out_a, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w_a, w_r, rtol=1e-5, atol=1e-6)
    # Training mode: the same dropout draws (same RNG calls) give the same result.
    ref.train()
    approx.train()
    q, k, v, kw = _mha_inputs({}, {}, self_attn=False)
    torch.manual_seed(9)
    out_r, w_r = ref(q, k, v)
    torch.manual_seed(9)
    out_a, w_a = approx(q, k, v)
    torch.testing.assert_close(out_a, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w_a, w_r, rtol=1e-5, atol=1e-6)


def _explicit_mha(mha: nn.MultiheadAttention, q, k, v, kpm, mask, m: str):
    """Batch-first MHA written out with approxsim.matmul (operand A = activation side)."""
    e, h = mha.embed_dim, mha.num_heads
    hd = e // h
    wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    qp = approxsim.matmul(q, wq.t(), m) + bq
    kp = approxsim.matmul(k, wk.t(), m) + bk
    vp = approxsim.matmul(v, wv.t(), m) + bv
    n, lq, ls = q.shape[0], q.shape[1], k.shape[1]
    qh = qp.reshape(n, lq, h, hd).transpose(1, 2)
    kh = kp.reshape(n, ls, h, hd).transpose(1, 2)
    vh = vp.reshape(n, ls, h, hd).transpose(1, 2)
    scores = approxsim.matmul(qh, kh.transpose(-1, -2), m) / math.sqrt(hd)
    scores = (
        scores + mask + torch.zeros(n, 1, 1, ls).masked_fill(kpm[:, None, None, :], float("-inf"))
    )
    probs = scores.softmax(-1)
    o = approxsim.matmul(probs, vh, m).transpose(1, 2).reshape(n, lq, e)
    return approxsim.matmul(o, mha.out_proj.weight.t(), m) + mha.out_proj.bias, probs


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_approximate_equals_explicit_computation(need_weights: bool) -> None:
    torch.manual_seed(8)
    mha = ApproxMultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True, multiplier="mitchell7")
    with torch.no_grad():
        mha.in_proj_bias.normal_()
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 5, 6), torch.randn(3, 5, 5)
    kpm = torch.zeros(3, 5, dtype=torch.bool)
    kpm[1, :2] = True
    mask = torch.randn(4, 5)
    out, w = mha(
        q,
        k,
        v,
        key_padding_mask=kpm,
        attn_mask=mask,
        need_weights=need_weights,
        average_attn_weights=False,
    )
    ref, probs = _explicit_mha(mha, q, k, v, kpm, mask, "mitchell7")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    if need_weights:
        torch.testing.assert_close(w, probs, rtol=1e-4, atol=1e-6)
    exact = nn.MultiheadAttention.forward(mha, q, k, v, key_padding_mask=kpm, attn_mask=mask)[0]
    assert not torch.allclose(out, exact, atol=1e-4), "no approximation happened"


def test_mha_never_takes_the_native_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    ref = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    approx = ApproxMultiheadAttention.from_float(ref, "mitchell7").eval()
    x = torch.randn(2, 4, 8)
    with torch.no_grad():
        exact = ref(x, x, x)[0]

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("native fast path taken")

    monkeypatch.setattr(torch, "_native_multi_head_attention", boom)
    with torch.no_grad():
        with pytest.raises(AssertionError, match="fast path"):
            ref(x, x, x)  # the plain module does take it under these conditions
        out = approx(x, x, x)[0]
    assert not torch.allclose(out, exact, atol=1e-4)
    torch.testing.assert_close(out, approx.train()(x, x, x)[0].detach(), rtol=1e-6, atol=1e-6)


def test_mha_from_float_to_float_and_state_dict() -> None:
    ref = nn.MultiheadAttention(8, 2, kdim=6, vdim=4, add_bias_kv=True, batch_first=True)
    approx = ApproxMultiheadAttention.from_float(ref, "bf16")
    for name in (
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "in_proj_bias",
        "bias_k",
        "bias_v",
    ):
        assert getattr(approx, name) is getattr(ref, name)
    assert approx.in_proj_weight is None and approx.out_proj is ref.out_proj
    assert list(approx.state_dict()) == list(ref.state_dict())
    back = approx.to_float()
    assert type(back) is nn.MultiheadAttention and back.q_proj_weight is ref.q_proj_weight
    assert "multiplier=bf16" in repr(approx)
    fresh = ApproxMultiheadAttention(8, 2, kdim=6, vdim=4, add_bias_kv=True, multiplier="bf16")
    fresh.load_state_dict(ref.state_dict())
    with pytest.raises(TypeError, match="MultiheadAttention"):
        ApproxMultiheadAttention.from_float(nn.Linear(2, 2), "bf16")  # type: ignore[arg-type]
