"""DampedALiBi: a linear distance penalty that grows only up to a cap (an additive score bias)."""

from __future__ import annotations

import torch

from lengen.positional import ModelDims, PositionalEncoding


class DampedALiBi(PositionalEncoding):
    """ALiBi-like bias -slope_h * min(distance, cap): heads stop penalising past `cap` tokens.

    Args:
        cap: the distance (tokens) beyond which the penalty stays constant.
    """

    is_relative = True  # the bias depends on query - key only (the contract suite checks it)

    def __init__(self, cap: int = 64) -> None:
        super().__init__()
        self.cap = cap

    def bind(self, dims: ModelDims) -> None:
        """Sizes arrive here, not in the constructor: one slope per head, 2^-1 ... 2^-n_head."""
        super().bind(dims)
        slopes = 2.0 ** -torch.arange(1, dims.n_head + 1, dtype=torch.float32)
        self.register_buffer("slopes", slopes, persistent=False)

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        """Broadcastable int tensors (head, query position, key position) -> the bias."""
        distance = (query_position - key_position).clamp(min=0, max=self.cap)
        return -self.slopes[head] * distance
