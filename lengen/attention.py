"""Causal self-attention kernels: fused SDPA, FlexAttention, and the plain reference for tests.

Every backend is a callable `(query, key, value, bias, dropout_p) -> (B, nh, Tq, hs)` with
(B, nh, Tq, hs) queries and (B, nh, Tk, hs) keys/values, Tq <= Tk: the queries are the last Tq of
the Tk positions (cached decoding), so query i sees keys <= i + Tk - Tq.

`bias` is what the decoder built once per forward for the chosen backend and shares by all layers:
- sdpa / reference: None (no encoding bias, no padding: the fused causal kernel), or an additive
  float tensor broadcastable to (B, nh, Tq, Tk) added to the scaled scores q.k/sqrt(hs) before the
  causal mask and the softmax (padded keys carry -inf there);
- flex: a `FlexScore` (the encoding's `score_bias` as a `score_mod` and a causal block mask).

An encoding with per-pair scores (`PositionalEncoding.pairwise_scores`: ReRoPE, Self-Extend, ...)
takes `pairwise_attention` instead, whatever the backend: its scores are materialised.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "flex", "reference")


def select_backend(requested: str, has_score_bias: bool, device: torch.device) -> str:
    """Resolve "auto": FlexAttention on CUDA for an encoding with a score bias, else SDPA."""
    if requested != "auto":
        return requested
    return "flex" if has_score_bias and device.type == "cuda" else "sdpa"


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Fused attention; without a bias it keeps the fused causal kernel (`is_causal=True`)."""
    query_len, key_len = query.shape[-2], key.shape[-2]
    if bias is None and query_len == key_len:
        return F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout_p, is_causal=True
        )
    if bias is None and query_len == 1:  # one new token attends to every cached key
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p)
    if bias is None:  # is_causal aligns top-left; cached decoding needs bottom-right
        bias = query.new_zeros(query_len, key_len)
    bias = bias.to(query.dtype)  # (B or 1, nh or 1, Tq, Tk)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=causal_bias(bias), dropout_p=dropout_p
    )


def reference_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q.k^T / sqrt(hs) + bias + causal mask) v, written out step by step."""
    if isinstance(bias, FlexScore):
        bias = bias.dense()
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, nh, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    scores = causal_bias(scores)
    compute_dtype = torch.promote_types(scores.dtype, torch.float32)  # float64 stays float64
    weights = torch.softmax(scores, dim=-1, dtype=compute_dtype).to(value.dtype)
    weights = F.dropout(weights, p=dropout_p)
    return weights @ value  # (B, nh, Tq, hs)


def causal_bias(bias: torch.Tensor) -> torch.Tensor:
    """Add -inf above the diagonal of a (..., Tq, Tk) score bias.

    Queries are the last Tq of the Tk positions (cached decoding): query i sees keys <= i + Tk - Tq.
    """
    query_len, key_len = bias.shape[-2:]
    future = torch.ones(query_len, key_len, dtype=torch.bool, device=bias.device).triu(
        key_len - query_len + 1
    )
    return bias.masked_fill(future, float("-inf"))


def padding_bias(key_mask: torch.Tensor, query_len: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, Tk) bool mask of real keys -> (B, 1, Tq, Tk) additive bias, -inf on padded keys.

    A padded query still sees itself, so no row is all -inf (its output is garbage, never NaN).
    """
    key_len = key_mask.shape[1]
    key_index = torch.arange(key_len, device=key_mask.device)
    query_index = torch.arange(query_len, device=key_mask.device) + key_len - query_len
    own_position = query_index[:, None] == key_index  # (Tq, Tk)
    visible = key_mask[:, None, None, :] | own_position  # (B, 1, Tq, Tk)
    bias = torch.zeros(visible.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~visible, float("-inf"))


@dataclass
class FlexScore:
    """What the flex backend needs: the encoding's bias as a `score_mod` plus a block mask.

    `score_mod` indexes the (B, Tq) / (B, Tk) positions, so offsets, padding and cached decoding
    work as in the other backends; learned bias parameters receive gradients through it.
    """

    score_mod: Callable | None
    block_mask: object
    dense: Callable[[], torch.Tensor]  # the same bias materialised (B, nh, Tq, Tk), for recorders


def flex_score(
    bias_fn: Callable | None,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_mask: torch.Tensor | None,
    n_head: int,
    dense: Callable[[], torch.Tensor],
) -> FlexScore:
    """Build the score_mod and the causal (and key padding) block mask for one forward.

    bias_fn: `encoding.score_bias(head, query_position, key_position)` or None (no bias).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    batch, query_len = query_positions.shape
    key_len = key_positions.shape[1]
    offset = key_len - query_len
    score_mod = None
    if bias_fn is not None:

        def score_mod(score, b, h, q_idx, kv_idx):
            bias = bias_fn(h, query_positions[b, q_idx], key_positions[b, kv_idx])
            return score + bias.to(score.dtype)

    if key_mask is None:

        def mask_mod(b, h, q_idx, kv_idx):
            return q_idx + offset >= kv_idx

        mask_batch = None
    else:

        def mask_mod(b, h, q_idx, kv_idx):
            causal = q_idx + offset >= kv_idx
            return causal & (key_mask[b, kv_idx] | (q_idx + offset == kv_idx))

        mask_batch = batch
    block_mask = create_block_mask(
        mask_mod, mask_batch, None, query_len, key_len, device=query_positions.device
    )
    return FlexScore(score_mod, block_mask, dense)


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention_backend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: FlexScore,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """FlexAttention with the encoding's score_mod and a causal block mask.

    Compiled (fused) on CUDA. On CPU, torch 2.13 runs FlexAttention forward only and unfused
    (eager), which the tests use to check it against the reference; CPU training uses SDPA.
    """
    from torch.nn.attention.flex_attention import flex_attention

    if dropout_p:
        raise ValueError("attention='flex' does not support dropout; use attention='sdpa'")
    kernel = _compiled_flex_attention() if query.device.type == "cuda" else flex_attention
    return kernel(query, key, value, score_mod=bias.score_mod, block_mask=bias.block_mask)


def pairwise_attention(
    encoding,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    bias=None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(encoding.pairwise_scores + bias + causal mask) v, for per-pair encodings.

    The one path for encodings that override `PositionalEncoding.pairwise_scores` (ReRoPE,
    Self-Extend, ...): their scores are materialised (B, nh, Tq, Tk), whatever the backend.
    (B, nh, Tq, hs) un-rotated query, (B, nh, Tk, hs) un-rotated key and value, (B, Tq) and
    (B, Tk) positions; `bias` is the decoder's padding bias in any backend's format (or None).
    """
    if isinstance(bias, FlexScore):
        bias = bias.dense()
    scores = encoding.pairwise_scores(query, key, query_positions, key_positions)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    scores = causal_bias(scores)  # (B, nh, Tq, Tk)
    compute_dtype = torch.promote_types(scores.dtype, torch.float32)
    weights = torch.softmax(scores, dim=-1, dtype=compute_dtype).to(value.dtype)
    weights = F.dropout(weights, p=dropout_p)
    return weights @ value  # (B, nh, Tq, hs)


KERNELS = {
    "sdpa": sdpa_attention,
    "flex": flex_attention_backend,
    "reference": reference_attention,
}
