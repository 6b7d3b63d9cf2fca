"""Learned absolute position embeddings (a trained table added to the token embeddings)."""

from __future__ import annotations

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding, PositionOutOfRange


class Learned(PositionalEncoding):
    """Learned absolute position table added to the token embeddings (GPT-style APE).

    Vaswani et al. 2017 ("learned positional embeddings"), as used in GPT-2. A table
    `nn.Embedding(max_length, d_model)`, initialised normal(0, 0.02), is built in `bind`; the row of
    each integer position is added to its token embedding: (B, T, C) + (B, T, C).

    Positions 0 .. max_length - 1 can be encoded; anything larger has no row and is rejected by
    `check_positions` with a `PositionOutOfRange` error before any lookup.

    Args:
        max_length: number of rows of the table (the number of positions it can encode).
    """

    def __init__(self, max_length: int = 1024) -> None:
        super().__init__()
        if max_length < 1:
            raise ValueError(f"Learned: max_length={max_length} must be >= 1 (rows of the table)")
        self.max_length = max_length

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.table = nn.Embedding(self.max_length, dims.d_model)
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)

    def check_positions(self, max_position: int) -> None:
        if max_position >= self.max_length:
            raise PositionOutOfRange(
                f"Learned position table has {self.max_length} rows (positions 0.."
                f"{self.max_length - 1}) but position {max_position} was requested (sequence "
                f"length {max_position + 1}); raise max_length to at least {max_position + 1}"
            )

    def embed(self, token_embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T, C) token embeddings, (B, T) int positions -> (B, T, C)."""
        return token_embeddings + self.table(positions)  # (B, T, C)
