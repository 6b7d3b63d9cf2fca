"""CoPE: contextual position encoding, positions counted by gates on the query-key content."""

from __future__ import annotations

import math

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding


class CoPE(PositionalEncoding):
    """CoPE: p_ij = sum_{t=j..i} sigmoid(q_i.k_t), bias q_i.e[p_ij] interpolated (Golovneva et al.).

    Golovneva, Wang, Weston, Sukhbaatar 2024, "Contextual Position Encoding: Learning to Count
    What's Important". For query i and key j <= i, with gates g_it = sigmoid(q_i.k_t / sqrt(hs)),
    the position is p_ij = sum_{t=j}^{i} g_it, a real number in (0, i - j + 1], clamped to
    npos_max - 1. With learned position embeddings e[0 .. npos_max - 1] (head_dim each, zeros at
    init as in the paper), the bias added to the scaled score is interpolated between integers:

        (p - floor p) * q_i.e[ceil p] + (1 - (p - floor p)) * q_i.e[floor p].

    Positions come from content, not from indices: the integer positions are not used at all,
    so a shift changes nothing. Unlike the paper, one embedding table serves every layer and head
    (the encoding is one module shared by the decoder's layers). Cost: a (B, nh, T, T) bias per
    layer, computed from q and k through `contextual_bias`. Padded keys get gate 0.

    Reference: facebookresearch/RAM, projects/cope/src/cope/context_position.py (commit
    5420e20124c73746a3d63f784928cc60e1e051e9). The bias equals the reference run with
    `--cope-nodiv` (position logits added after the 1/sqrt(hs) scaling); its default adds them
    before and so divides them by sqrt(hs) too, which rescales the learned embeddings by
    sqrt(hs) (same function class, different learning dynamics). The reference's default
    npos_max is the block size + 1; here 64. Caching is supported: a cached query's gates are
    those of the full forward, since gates of query i only involve keys up to i.

    Args:
        npos_max: number of position embeddings; larger counted positions share the last one.
    """

    is_relative = True

    def __init__(self, npos_max: int = 64) -> None:
        super().__init__()
        if npos_max < 2:
            raise ValueError(f"CoPE: npos_max={npos_max} must be >= 2")
        self.npos_max = npos_max

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.position_embeddings = nn.Parameter(torch.zeros(dims.head_dim, self.npos_max))

    def contextual_bias(
        self, query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, nh, Tq, hs) query, (B, nh, Tk, hs) key -> (B, nh, Tq, Tk) float32 bias.

        Queries are the last Tq of the Tk positions; keys after a query get no gate and bias 0.
        key_mask: (B, Tk) bool, False on padding: padded keys get gate 0, so they are not counted
        (as the authors' code multiplies the gates by its attention mask).
        """
        dtype = torch.promote_types(torch.float32, query.dtype)
        query, key = query.to(dtype), key.to(dtype)
        query_len, key_len = query.shape[-2], key.shape[-2]
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, nh, Tq, Tk)
        future = torch.ones(query_len, key_len, dtype=torch.bool, device=query.device).triu(
            key_len - query_len + 1
        )
        gates = torch.sigmoid(scores).masked_fill(future, 0.0)  # (B, nh, Tq, Tk)
        if key_mask is not None:
            gates = gates * key_mask[:, None, None, :].to(dtype)  # padded keys count 0
        positions = gates.flip(-1).cumsum(-1).flip(-1)  # p_ij = sum_{t >= j} g_it, (B, nh, Tq, Tk)
        positions = positions.clamp(max=self.npos_max - 1)
        logits = query @ self.position_embeddings.to(dtype)  # (B, nh, Tq, npos_max): q_i.e[n]
        floor = positions.floor()
        weight = positions - floor  # in [0, 1)
        at_floor = logits.gather(-1, floor.long())
        at_ceil = logits.gather(-1, positions.ceil().long())
        bias = weight * at_ceil + (1 - weight) * at_floor
        return bias.masked_fill(future, 0.0)
