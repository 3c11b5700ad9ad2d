"""The pieces both attention twins share (``approxsim.nn._attention_common``), through both."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from approxsim.multipliers.integer import IntMultiplier
from approxsim.nn import ApproxMultiheadAttention
from approxsim.nn._attention_common import masked_softmax, per_head_padding_mask, split_heads
from approxsim.nn.quant import QuantConfig
from approxsim.nn.quant_attention import QuantMultiheadAttention
from approxsim.nn.quant_layers import calibrate

INT8 = IntMultiplier.exact(8, True)


Twin = ApproxMultiheadAttention | QuantMultiheadAttention


def _twin(kind: str, torch_mha: nn.MultiheadAttention) -> Twin:
    if kind == "approx":
        return ApproxMultiheadAttention.from_float(torch_mha, "mitchell7")
    return QuantMultiheadAttention.from_float(torch_mha, INT8, QuantConfig())


def _calibrated(kind: str, torch_mha: nn.MultiheadAttention, *inputs: torch.Tensor) -> Twin:
    layer = _twin(kind, torch_mha)
    if kind == "quant":
        calibrate(layer, [0], forward=lambda m, _: m(*inputs))
    return layer.eval()


def test_masked_softmax_zeroes_dead_rows_and_their_gradients() -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 4, 5)
    scores[0, 1] = float("-inf")  # a query that may attend to no key
    scores[2, 3, :2] = float("-inf")  # a partly masked row stays an ordinary softmax
    scores.requires_grad_(True)
    probs = masked_softmax(scores)
    live = torch.ones(3, 4, dtype=torch.bool)
    live[0, 1] = False
    assert torch.equal(probs[0, 1], torch.zeros(5))
    assert torch.equal(probs[live], torch.softmax(scores.detach(), dim=-1)[live])
    probs.backward(torch.randn(3, 4, 5))
    assert scores.grad is not None
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[0, 1], torch.zeros(5))


def test_split_heads_and_padding_mask_layouts() -> None:
    x = torch.arange(3 * 2 * 6, dtype=torch.float32).reshape(3, 2, 6)  # (S, N, H·hd), H=3
    heads = split_heads(x, 2, 3, 2)
    assert heads.shape == (6, 3, 2)
    for n in range(2):
        for h in range(3):
            assert torch.equal(heads[n * 3 + h], x[:, n, h * 2 : (h + 1) * 2])
    mask = torch.tensor([[0.0, -1.0, -2.0, -3.0], [4.0, 5.0, 6.0, 7.0]])
    per_head = per_head_padding_mask(mask, 2, 3, 4)
    assert per_head.shape == (6, 1, 4)
    for n in range(2):
        for h in range(3):
            assert torch.equal(per_head[n * 3 + h, 0], mask[n])


@pytest.mark.parametrize("kind", ["approx", "quant"])
def test_batch_first_and_unbatched_are_the_sequence_first_computation(kind: str) -> None:
    torch.manual_seed(1)
    seq = nn.MultiheadAttention(4, 2, kdim=3, vdim=5)
    first = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, batch_first=True)
    first.load_state_dict(seq.state_dict())
    q, k, v = torch.randn(3, 2, 4), torch.randn(6, 2, 3), torch.randn(6, 2, 5)
    kpm = torch.tensor([[False, True, False, False, True, False]] * 2)
    layer = _calibrated(kind, seq, q, k, v)
    out, weights = layer(q, k, v, key_padding_mask=kpm)
    twin = _twin(kind, first).eval()
    twin.load_state_dict(layer.state_dict())  # the same observer ranges for the quantized one
    bf_out, bf_weights = twin(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                              key_padding_mask=kpm)  # fmt: skip
    assert torch.equal(bf_out, out.transpose(0, 1))
    assert bf_weights is not None and weights is not None
    assert torch.equal(bf_weights, weights)
    one, one_w = layer(q[:, 0], k[:, 0], v[:, 0], key_padding_mask=kpm[0])
    ref, ref_w = layer(q[:, :1], k[:, :1], v[:, :1], key_padding_mask=kpm[:1])
    assert one.shape == (3, 4) and one_w is not None and ref_w is not None
    torch.testing.assert_close(one, ref[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(one_w, ref_w[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["approx", "quant"])
def test_fully_padded_sequence_gets_zero_weights_and_zero_gradients(kind: str) -> None:
    # The quantized layer used to zero the NaN weights after the softmax: its forward was
    # right, but the NaN came back in the backward pass into every projection gradient.
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    x = torch.randn(2, 3, 4)
    kpm = torch.tensor([[False, True, False], [True, True, True]])  # sequence 1: all padding
    layer = _calibrated(kind, mha, x, x, x)
    layer.train()
    xg = x.clone().requires_grad_(True)
    out, weights = layer(xg, xg, xg, key_padding_mask=kpm)
    assert weights is not None
    assert torch.equal(weights[1], torch.zeros(3, 3))
    out.sum().backward()
    assert xg.grad is not None
    assert torch.isfinite(xg.grad).all()
    assert torch.equal(xg.grad[1], torch.zeros(3, 4))  # nothing of it reaches the output
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", ["approx", "quant"])
def test_to_float_and_from_float_share_the_parameters(kind: str) -> None:
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, bias=False, batch_first=True)
    layer = _twin(kind, mha)
    back = layer.to_float()
    assert type(back) is nn.MultiheadAttention
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj"):
        assert getattr(back, name) is getattr(mha, name) is getattr(layer, name)
    assert back.in_proj_bias is None and back.batch_first and (back.kdim, back.vdim) == (3, 5)
    assert back.state_dict().keys() == mha.state_dict().keys()
    with pytest.raises(TypeError, match=f"{type(layer).__name__}.from_float expects"):
        if kind == "approx":
            ApproxMultiheadAttention.from_float(nn.Linear(4, 4), "mitchell7")  # type: ignore[arg-type]
        else:
            QuantMultiheadAttention.from_float(nn.Linear(4, 4), INT8)  # type: ignore[arg-type]


def test_reprs_name_layout_and_arithmetic() -> None:
    mha = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, batch_first=True)
    approx = repr(_twin("approx", mha))
    assert "embed_dim=4, num_heads=2, kdim=3, vdim=5, batch_first=True, multiplier=" in approx
    quant = repr(_twin("quant", mha))
    assert "embed_dim=4, num_heads=2, batch_first=True, " in quant
