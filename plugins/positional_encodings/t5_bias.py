"""T5 relative position bias: a learned scalar per (head, bucket of relative distance)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """T5's causal (unidirectional) bucketing of `relative_position = key - query`, elementwise.

    Raffel et al. 2020 (T5), as in Mesh TensorFlow / Hugging Face with `bidirectional=False`.
    Only the distance into the past counts: n = max(query - key, 0), so keys in the future (which
    the causal mask removes anyway) share bucket 0 with n = 0. Distances n < num_buckets // 2 get a
    bucket each; larger ones are spread logarithmically over the remaining buckets up to
    `max_distance`, and everything from there on saturates at bucket num_buckets - 1.

    int tensor of any shape -> int64 tensor of the same shape with values in [0, num_buckets).
    """
    distance = torch.clamp(-relative_position, min=0)  # n = max(q - k, 0)
    max_exact = num_buckets // 2
    is_exact = distance < max_exact
    # The log is taken in float32 like the published code; clamping keeps log(0) out of it.
    ratio = distance.clamp(min=max_exact).float() / max_exact
    log_bucket = (
        max_exact
        + (torch.log(ratio) / math.log(max_distance / max_exact) * (num_buckets - max_exact)).long()
    )
    log_bucket = torch.clamp(log_bucket, max=num_buckets - 1)
    return torch.where(is_exact, distance, log_bucket)


class T5Bias(PositionalEncoding):
    """T5 relative bias: a learned scalar per head and log-bucketed distance (Raffel et al. 2020).

    Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
    Transformer" (T5), causal variant. The bias added to the scaled score of query position q and
    key position k in head h is `table[relative_position_bucket(k - q), h]`, with `table` an
    `nn.Embedding(num_buckets, n_head)` built in `bind` and initialised normal(0, 0.02) like the
    decoder's other weights (small, but not zero, so every head starts out slightly different).
    Unlike the original T5, the table is not shared between layers by the encoding itself: the
    decoder builds the bias once per forward and every layer uses it, which amounts to the same.

    Args:
        num_buckets: number of buckets (rows of the table); the first num_buckets // 2 are exact.
        max_distance: distance from which every key falls into the last bucket.
    """

    is_relative = True

    def __init__(self, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        if num_buckets < 2:
            raise ValueError(f"T5Bias: num_buckets={num_buckets} must be >= 2")
        if max_distance <= num_buckets // 2:
            raise ValueError(
                f"T5Bias: max_distance={max_distance} must be > num_buckets // 2 = "
                f"{num_buckets // 2} (the last exact distance)"
            )
        self.num_buckets = num_buckets
        self.max_distance = max_distance

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.table = nn.Embedding(self.num_buckets, dims.n_head)
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        """Broadcastable int tensors (head, q, k) -> bias of their broadcast shape (table dtype)."""
        bucket = relative_position_bucket(
            key_position - query_position, self.num_buckets, self.max_distance
        )
        # Plain tensor indexing, so it broadcasts and also works as a FlexAttention score_mod.
        return self.table.weight[bucket, head]
