"""Causal self-attention kernels: the fused SDPA path and the plain reference kept for tests.

Both take (B, nh, T, hs) query/key/value and an optional additive bias (B, nh, T, T) that is added
to the scaled scores q.k/sqrt(hs) before the causal mask and the softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "reference")


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Fused attention; without a bias it keeps the fused causal kernel (`is_causal=True`)."""
    if bias is None:
        return F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout_p, is_causal=True
        )
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
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, nh, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    scores = causal_bias(scores)
    weights = torch.softmax(scores.float(), dim=-1).to(value.dtype)
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
