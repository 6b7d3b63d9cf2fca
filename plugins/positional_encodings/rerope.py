"""ReRoPE and Leaky ReRoPE: distances beyond a window clamped (or compressed) (Su 2023)."""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding
from lengen_plugins.positional_encodings.pairwise import PairwiseWrapper, pair_grid


class LeakyReRoPE(PairwiseWrapper):
    """Leaky ReRoPE: distance d as is below a window w, w + (d - w) / k beyond it (Su 2023).

    Su 2023, "Rectified Rotary Position Embeddings" (https://kexue.fm/archives/9708); reference
    implementation bojone/rerope (`leaky_rerope_patch.py`). The pair of query position q and
    key position p gets the distance d = q - p if d < w, else w + (d - w) / k, so no distance
    seen by the model exceeds w + (n - w) / k. As in the reference, two views of the wrapped
    encoding are computed and picked per pair: the natural positions, and the query at
    q / k + w (1 - 1/k) with the key at p / k (real-valued positions, so the wrapped encoding
    must accept them: the RoPE family, ALiBi). Su's patches also scale queries by
    max(1, log_L(n)); stack `LogLengthScaling(training_length=L, floor_at_one=true)` for that.
    Relative if the wrapped encoding is (RoPE, ALiBi).

    Args:
        encoding: the wrapped encoding; None means RoPE().
        window: w, in positions (512 in the reference).
        scale: k > 1, the compression beyond the window (16 in the reference).
    """

    def __init__(
        self, encoding: PositionalEncoding | None = None, window: int = 512, scale: float = 16.0
    ) -> None:
        super().__init__(encoding)
        name = type(self).__name__
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"{name}: window={window!r}; accepted: an integer >= 1")
        is_number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
        if name == "LeakyReRoPE" and not (is_number and scale > 1):
            raise ValueError(f"{name}: scale={scale!r}; accepted: a number > 1")
        self.window = window
        self.scale = scale  # None for ReRoPE (the limit of an infinite scale)

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Around RoPE and ALiBi, with a window the suite's short sequences cross."""
        from lengen_plugins.positional_encodings.alibi import ALiBi

        return (cls(window=4, scale=3.0), cls(ALiBi(), window=4, scale=3.0))

    def _far_positions(
        self, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of the view beyond the window: query - key = w + (q - p - w) / k."""
        dtype = torch.float64
        query = query_positions.to(dtype) / self.scale + self.window * (1 - 1 / self.scale)
        return query, key_positions.to(dtype) / self.scale

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        query_grid, key_grid = pair_grid(query_positions, key_positions)
        near = (query_grid - key_grid) < self.window  # (B, 1, Tq, Tk)
        natural = self.view(query, key, query_positions, key_positions)  # (B, nh, Tq, Tk)
        far = self.view(query, key, *self._far_positions(query_positions, key_positions))
        return torch.where(near, natural, far)


class ReRoPE(LeakyReRoPE):
    """ReRoPE: relative distances beyond a window w are clamped to w (Su 2023).

    Su 2023, "Rectified Rotary Position Embeddings" (https://kexue.fm/archives/9708); reference
    implementation bojone/rerope (`rerope_patch.py`): the pair of query position q and key
    position p gets the distance min(q - p, w), the limit k -> infinity of Leaky ReRoPE. Two
    views of the wrapped encoding are picked per pair: the natural positions, and the query at
    w with the key at 0. Relative if the wrapped encoding is (RoPE, ALiBi).

    Args:
        encoding: the wrapped encoding; None means RoPE().
        window: w, in positions (512 in the reference).
    """

    def __init__(self, encoding: PositionalEncoding | None = None, window: int = 512) -> None:
        super().__init__(encoding, window=window, scale=None)

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        from lengen_plugins.positional_encodings.alibi import ALiBi

        return (cls(window=4), cls(ALiBi(), window=4))

    def _far_positions(self, query_positions, key_positions):
        return torch.full_like(query_positions, self.window), torch.zeros_like(key_positions)
