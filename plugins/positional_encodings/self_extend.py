"""Self-Extend: a neighbour window plus grouped (floor-divided) positions (Jin et al. 2024)."""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding
from lengen_plugins.positional_encodings.pairwise import PairwiseWrapper, pair_grid


class SelfExtend(PairwiseWrapper):
    """Self-Extend: exact positions within a neighbour window, grouped positions beyond it.

    Jin, Han, Yang, Jiang, Liu, Chang, Chen, Hu 2024, "LLM Maybe LongLM: Self-Extend LLM Context
    Window Without Tuning" (ICML); reference implementation datamllab/LongLM
    (`self_extend_patch/`). For a query at position q and a key at p with d = q - p:
    - neighbour attention (d < W, the neighbour window): the natural positions q and p;
    - grouped attention (d >= W): the key at floor(p / G) and the query at
      floor(q / G) + W - floor(W / G), the shift that makes the two regions meet (at d = W the
      grouped distance is about W, not W / G).
    Two views of the wrapped encoding, picked per pair (the reference merges two attention
    passes the same way). Distances stay below W + (n - W) / G, so the window of a model
    trained on L positions extends to about (L - W) G + W. Not relative (floor(q / G) depends
    on where the sequence starts). The reference's non-flash path shifts by W - W / G (true
    division); with W a multiple of G, as in its examples, both agree. The reference's optional
    query scaling (`scale_base` L: max(1, log_L(p + 1))) is
    `LogLengthScaling(SelfExtend(...), training_length=L, floor_at_one=True)`.

    Args:
        encoding: the wrapped encoding; None means RoPE() (ALiBi works too: its bias is taken
            at the grouped positions).
        group_size: G (the reference's group_size_1; 8 by default there).
        window: W, the neighbour window (the reference's group_size_2; 1024 by default there).
    """

    is_relative = False

    def __init__(
        self, encoding: PositionalEncoding | None = None, group_size: int = 8, window: int = 1024
    ) -> None:
        super().__init__(encoding)
        for name, value in (("group_size", group_size), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SelfExtend: {name}={value!r}; accepted: an integer >= 1")
        self.group_size = group_size
        self.window = window

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Around RoPE and ALiBi, with groups and a window the suite's sequences cross."""
        from lengen_plugins.positional_encodings.alibi import ALiBi

        return (cls(group_size=3, window=6), cls(ALiBi(), group_size=2, window=4))

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        query_grid, key_grid = pair_grid(query_positions, key_positions)
        neighbour = (query_grid - key_grid) < self.window  # (B, 1, Tq, Tk)
        natural = self.view(query, key, query_positions, key_positions)  # (B, nh, Tq, Tk)
        shift = self.window - self.window // self.group_size
        grouped = self.view(
            query,
            key,
            query_positions // self.group_size + shift,
            key_positions // self.group_size,
        )
        return torch.where(neighbour, natural, grouped)
