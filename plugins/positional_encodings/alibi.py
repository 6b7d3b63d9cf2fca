"""ALiBi: attention scores penalised linearly with distance, one slope per head."""

from __future__ import annotations

import math

import torch

from lengen.positional import PositionalEncoding


def alibi_slopes(n_head: int) -> list[float]:
    """The per-head slopes of Press et al. 2022, head 0 first.

    For n_head a power of two: the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8).
    Otherwise, with m the largest power of two <= n_head: the m slopes for m heads, followed by
    every other slope (indices 0, 2, 4, ...) of the 2m-head sequence for the n_head - m others.
    """
    if n_head < 1:
        raise ValueError(f"alibi_slopes: n_head={n_head} must be >= 1")

    def power_of_two_slopes(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    m = 2 ** math.floor(math.log2(n_head))
    if m == n_head:
        return power_of_two_slopes(n_head)
    return power_of_two_slopes(m) + power_of_two_slopes(2 * m)[0::2][: n_head - m]


def alibi_slope(head: torch.Tensor, n_head: int) -> torch.Tensor:
    """`alibi_slopes(n_head)[head]` for an int tensor `head`, computed elementwise in float32.

    As 2^exponent with the exponent of `alibi_slopes`: equal to the float32 slopes or 1 ulp off
    (`exp2` of a fractional exponent; tested for 1-64 heads). Built from `head` alone (no
    tensor made from a list), so the bias lowers into a compiled FlexAttention `score_mod`.
    """
    m = 2 ** math.floor(math.log2(n_head))
    head = head.to(torch.float32)
    first = -8.0 * (head + 1) / m  # heads 0 .. m-1: the m-head sequence
    rest = -8.0 * (2 * (head - m) + 1) / (2 * m)  # then every other slope of the 2m-head one
    return torch.exp2(torch.where(head < m, first, rest))


class ALiBi(PositionalEncoding):
    """ALiBi: a fixed linear distance penalty per head added to the attention scores (Press et al.).

    Press, Smith, Lewis 2022, "Train Short, Test Long: Attention with Linear Biases Enables Input
    Length Extrapolation" (ICLR). The bias added to the scaled score of query position q and key
    position k in head h is `-slope[h] * (q - k)`: a key d positions in the past costs slope * d
    (in score units); keys in the future are masked by the decoder. Slopes from `alibi_slopes`.
    No parameters and no hyperparameters.

    The slopes are computed in float32 from the head index at each call (`alibi_slope`) rather
    than kept as a floating buffer, so `model.to(torch.bfloat16)` cannot round them.
    """

    is_relative = True

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        """Broadcastable int tensors (head, q, k) -> float32 bias of their broadcast shape."""
        distance = (query_position - key_position).to(torch.float32)  # > 0 for past keys
        return -alibi_slope(head, self.dims.n_head) * distance
