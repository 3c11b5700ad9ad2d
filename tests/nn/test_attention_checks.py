"""Both attention layers refuse the same bad inputs with the same one-line messages.

The checks live once in ``approxsim.nn._attention_common``; the quantized layer used to run
into reshape errors (or silently accept integer masks and ``is_causal`` without a mask).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from approxsim.multipliers.integer import IntMultiplier
from approxsim.nn import ApproxMultiheadAttention
from approxsim.nn.quant import QuantConfig
from approxsim.nn.quant_attention import QuantMultiheadAttention
from approxsim.nn.quant_layers import calibrate

Twin = ApproxMultiheadAttention | QuantMultiheadAttention
KINDS = ["approx", "quant"]


def _setup(kind: str, kdim: int | None = None) -> tuple[Twin, Tensor, Tensor]:
    """An eval-mode twin of a seeded ``MultiheadAttention(8, 2)``, a query ``(4, 2, 8)`` and
    a key/value ``(5, 2, kdim)`` (the quantized one calibrated on them)."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim)
    q, k = torch.randn(4, 2, 8), torch.randn(5, 2, kdim or 8)
    layer: Twin
    if kind == "approx":
        layer = ApproxMultiheadAttention.from_float(mha, "mitchell7")
    else:
        layer = QuantMultiheadAttention.from_float(mha, IntMultiplier.exact(8, True), QuantConfig())
        calibrate(layer, [0], forward=lambda m, _: m(q, k, k))
    return layer.eval(), q, k


def _bool(*shape: int) -> Tensor:
    return torch.zeros(shape, dtype=torch.bool)


Call = Callable[[Twin, Tensor, Tensor], object]

# name -> (call, exception, the whole message)
BAD: dict[str, tuple[Call, type[Exception], str]] = {
    "4d_query": (
        lambda m, q, k: m(q[None], k[None], k[None]),
        RuntimeError,
        "query must be 3-D (batched) or 2-D (unbatched), got 4-D; note that batch_first is "
        "handled by the module, not by this function",
    ),
    "1d_query": (
        lambda m, q, k: m(q[0, 0], k[0, 0], k[0, 0]),
        RuntimeError,
        "query must be 3-D (batched) or 2-D (unbatched), got 1-D; note that batch_first is "
        "handled by the module, not by this function",
    ),
    "2d_key_for_3d_query": (
        lambda m, q, k: m(q, k[:, 0], k),
        RuntimeError,
        "for batched (3-D) query, key and value must be 3-D too, got 2-D and 3-D",
    ),
    "3d_value_for_2d_query": (
        lambda m, q, k: m(q[:, 0], k[:, 0], k),
        RuntimeError,
        "for unbatched (2-D) query, key and value must be 2-D too, got 2-D and 3-D",
    ),
    "wrong_embed_dim": (
        lambda m, q, k: m(q[..., :6], k[..., :6], k[..., :6]),
        RuntimeError,
        "expected embedding dimension 8, got 6",
    ),
    "key_value_lengths_differ": (
        lambda m, q, k: m(q, k, k[:3]),
        RuntimeError,
        "key shape (5, 2, 8) does not match value shape (3, 2, 8)",
    ),
    "padding_mask_wrong_length": (
        lambda m, q, k: m(q, k, k, key_padding_mask=_bool(2, 4)),
        RuntimeError,
        "key_padding_mask should have shape (2, 5), got (2, 4)",
    ),
    "padding_mask_1d_for_batched": (
        lambda m, q, k: m(q, k, k, key_padding_mask=_bool(5)),
        RuntimeError,
        "for batched (3-D) query, key_padding_mask must be 2-D (batch, source), got 1-D",
    ),
    "padding_mask_2d_for_unbatched": (
        lambda m, q, k: m(q[:, 0], k[:, 0], k[:, 0], key_padding_mask=_bool(1, 5)),
        RuntimeError,
        "for unbatched (2-D) query, key_padding_mask must be 1-D (source), got 2-D",
    ),
    "padding_mask_int": (
        lambda m, q, k: m(q, k, k, key_padding_mask=torch.zeros(2, 5, dtype=torch.int64)),
        TypeError,
        "only bool and floating-point key_padding_mask are supported, got torch.int64",
    ),
    "attn_mask_int": (
        lambda m, q, k: m(q, k, k, attn_mask=torch.zeros(4, 5, dtype=torch.int32)),
        TypeError,
        "only bool and floating-point attn_mask are supported, got torch.int32",
    ),
    "attn_mask_uint8": (
        lambda m, q, k: m(q, k, k, attn_mask=torch.zeros(4, 5, dtype=torch.uint8)),
        TypeError,
        "only bool and floating-point attn_mask are supported, got torch.uint8",
    ),
    "attn_mask_4d": (
        lambda m, q, k: m(q, k, k, attn_mask=_bool(1, 1, 4, 5)),
        RuntimeError,
        "attn_mask must be 2-D or 3-D, got 4-D",
    ),
    "attn_mask_2d_wrong": (
        lambda m, q, k: m(q, k, k, attn_mask=_bool(4, 4)),
        RuntimeError,
        "the 2-D attn_mask has shape (4, 4) but should be (4, 5)",
    ),
    "attn_mask_3d_wrong": (
        lambda m, q, k: m(q, k, k, attn_mask=_bool(2, 4, 5)),
        RuntimeError,
        "the 3-D attn_mask has shape (2, 4, 5) but should be (4, 4, 5)",
    ),
    "attn_mask_3d_wrong_unbatched": (
        lambda m, q, k: m(q[:, 0], k[:, 0], k[:, 0], attn_mask=_bool(4, 4, 5)),
        RuntimeError,
        "for unbatched input a 3-D attn_mask must have shape (2, 4, 5), got (4, 4, 5)",
    ),
    "causal_without_mask": (
        lambda m, q, k: m(q, q, q, is_causal=True),
        RuntimeError,
        "is_causal=True needs attn_mask (the causal mask) as well, as in torch; build it "
        "with nn.Transformer.generate_square_subsequent_mask",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_are_refused_with_the_same_message(kind: str, case: str) -> None:
    layer, q, k = _setup(kind)
    call, error, message = BAD[case]
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(layer, q, k)


@pytest.mark.parametrize("kind", KINDS)
def test_separate_projections_need_key_and_value_of_one_length(kind: str) -> None:
    layer, q, k = _setup(kind, kdim=6)
    with pytest.raises(
        RuntimeError,
        match=re.escape("key's sequence and batch dims (5, 2) do not match value's (3, 2)"),
    ):
        layer(q, k, k[:3])


@pytest.mark.parametrize("kind", ["approx", "quant"])
def test_batch_sizes_that_differ_are_refused(kind: str) -> None:
    layer, q, k = _setup(kind)
    with pytest.raises(
        RuntimeError, match="^query has batch size 2 but key and value have 1 and 1$"
    ):
        layer(q, k[:, :1], k[:, :1])


def _as_float(mask: Tensor) -> Tensor:
    return torch.zeros(mask.shape).masked_fill(mask, float("-inf"))


# Outputs of the seeded setup with the 2-D bool attn_mask and key_padding_mask of
# test_bool_and_float_masks_give_the_results_of_before, computed before the checks moved
# into the common module: query 0 of the output, and the weights of sequence 1, query 2.
BEFORE = {
    "approx": (
        [0.16611862, 0.10489750, 0.10076904, 0.04432678, 0.25415039, -0.04493713,
         -0.16155243, 0.16800690, -0.17937469, -0.24305725, -0.07409668, 0.19255066,
         -0.28196716, 0.18084717, 0.24728012, -0.24649048],
        [0.31714416, 0.35341376, 0.32944202, 0.0, 0.0],
    ),
    "quant": (
        [0.18310128, 0.12648791, 0.10316554, 0.05584086, 0.29027873, -0.05175802,
         -0.17753176, 0.18871719, -0.18081786, -0.25017145, -0.06202417, 0.22736512,
         -0.29503959, 0.22125427, 0.23673274, -0.25145638],
        [0.31598252, 0.35218227, 0.33183521, 0.0, 0.0],
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_bool_and_float_masks_give_the_results_of_before(kind: str) -> None:
    layer, q, k = _setup(kind)
    am = _bool(4, 5)
    am[0, 1] = am[2, 3] = True
    kpm = _bool(2, 5)
    kpm[1, 4] = True
    out, weights = layer(q, k, k, attn_mask=am, key_padding_mask=kpm)
    assert weights is not None
    out_ref, weights_ref = BEFORE[kind]
    torch.testing.assert_close(out[0].flatten(), torch.tensor(out_ref), rtol=0, atol=1e-5)
    torch.testing.assert_close(weights[1, 2], torch.tensor(weights_ref), rtol=0, atol=1e-5)
    f_out, f_weights = layer(q, k, k, attn_mask=_as_float(am), key_padding_mask=_as_float(kpm))
    assert torch.equal(f_out, out) and f_weights is not None and torch.equal(f_weights, weights)
    # per-head 3-D masks and unbatched inputs take the same two mask forms
    am3 = torch.rand(4, 4, 5) > 0.7
    out3, _ = layer(q, k, k, attn_mask=am3, need_weights=False)
    assert torch.equal(layer(q, k, k, attn_mask=_as_float(am3), need_weights=False)[0], out3)
    one, _ = layer(q[:, 1], k[:, 1], k[:, 1], attn_mask=am, key_padding_mask=kpm[1])
    one_f, _ = layer(q[:, 1], k[:, 1], k[:, 1], attn_mask=_as_float(am),
                     key_padding_mask=_as_float(kpm[1]))  # fmt: skip
    assert torch.equal(one_f, one)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_is_causal_is_a_hint_about_the_given_mask(kind: str, need_weights: bool) -> None:
    layer, q, _ = _setup(kind)
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    ref, _ = layer(q, q, q, attn_mask=causal, need_weights=need_weights)
    out, _ = layer(q, q, q, attn_mask=causal, is_causal=True, need_weights=need_weights)
    assert torch.equal(out, ref)
    # As in torch, the hint is trusted where it can be (no weights, no padding mask): the
    # causal mask is applied and the given one is not looked at; otherwise the given mask
    # does the masking.
    none = _bool(4, 4)
    hinted, _ = layer(q, q, q, attn_mask=none, is_causal=True, need_weights=need_weights)
    plain, _ = layer(q, q, q, attn_mask=none, need_weights=need_weights)
    assert torch.equal(hinted, ref if not need_weights else plain)
    assert not torch.equal(ref, plain)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_first_checks_dims_before_moving_the_batch(kind: str) -> None:
    # The batch dim used to be moved first, so a 1-D key failed inside transpose.
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    layer: Twin
    if kind == "approx":
        layer = ApproxMultiheadAttention.from_float(mha, "mitchell7")
    else:
        layer = QuantMultiheadAttention.from_float(mha, IntMultiplier.exact(8, True), QuantConfig())
    q = torch.randn(2, 4, 8)
    with pytest.raises(
        RuntimeError,
        match=re.escape("for batched (3-D) query, key and value must be 3-D too, got 1-D and 3-D"),
    ):
        layer(q, q[0, 0], q)
