"""Attention sinks with a rolling window (StreamingLLM) and LM-Infinite's Lambda-shaped mask."""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding
from lengen_plugins.positional_encodings.pairwise import PairwiseWrapper, pair_grid


def _require_ints(name: str, **values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {key}={value!r}; accepted: an integer >= 1")


class AttentionSinks(PairwiseWrapper):
    """StreamingLLM: the first tokens (sinks) plus a rolling window, positions within the cache.

    Xiao, Tian, Chen, Han, Lewis 2024, "Efficient Streaming Language Models with Attention
    Sinks" (ICLR); reference implementation mit-han-lab/streaming-llm (`kv_cache.py`'s
    StartRecentKVCache and `pos_shift/modify_llama.py`). A query at position q sees the
    S = `sink_tokens` first keys and the R = `window` most recent ones, itself included (the
    reference's cache of start_size + recent_size after `evict_for_space`); the rest are hidden.
    Positions are those within that cache: a window key keeps its distance q - p, a sink key p
    (hidden from the window) gets min(q, S + R - 1) - p, the query being the cache's last entry.
    Two views of the wrapped encoding, picked per pair: the natural positions, and the query at
    min(q, S + R - 1). Every query sees its own window, which is the reference decoding one
    token at a time; the reference evicts keys from memory, here they are kept and masked, so
    outputs match but memory is not saved. Not relative (sinks are the first positions).

    Args:
        encoding: the wrapped encoding; None means RoPE().
        sink_tokens: S (the reference's start_size, 4).
        window: R, recent tokens seen, the query included (the reference's recent_size).
    """

    is_relative = False

    def __init__(
        self, encoding: PositionalEncoding | None = None, sink_tokens: int = 4, window: int = 2000
    ) -> None:
        super().__init__(encoding)
        _require_ints("AttentionSinks", sink_tokens=sink_tokens, window=window)
        self.sink_tokens = sink_tokens
        self.window = window

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Around RoPE and ALiBi, with a window the suite's sequences overflow."""
        from lengen_plugins.positional_encodings.alibi import ALiBi

        return (cls(sink_tokens=2, window=5), cls(ALiBi(), sink_tokens=1, window=4))

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        query_grid, key_grid = pair_grid(query_positions, key_positions)
        in_window = (query_grid - key_grid) < self.window  # (B, 1, Tq, Tk)
        visible = in_window | (key_grid < self.sink_tokens)
        natural = self.view(query, key, query_positions, key_positions)  # (B, nh, Tq, Tk)
        cache_query = query_positions.clamp(max=self.sink_tokens + self.window - 1)
        sinks = self.view(query, key, cache_query, key_positions)
        scores = torch.where(in_window, natural, sinks)
        return scores.masked_fill(~visible, float("-inf"))


class LMInfinite(PairwiseWrapper):
    """LM-Infinite: a Lambda-shaped mask (start tokens plus a local window), distances capped.

    Han, Wang, Peng, Xiong, Chen, Ji, Wang 2024, "LM-Infinite: Zero-Shot Extreme Length
    Generalization for Large Language Models" (NAACL); reference implementation
    Glaciohound/LM-Infinite (`models/llama.py`, `models/lambda_attention.py`). A query at q sees
    a key at p if p < n_global (the global branch) or q - p < n_local (the local branch); the
    distance of a visible pair is min(q - p, limit), the ceiling, computed as in the reference
    by a second view with the query at `limit` and the key at 0. The reference's defaults
    (`utils/arguments.py`): n_local 2048, n_global 100, and limit = n_local
    (`convert_llama_model`); n_local is meant to be the pretraining length. Not relative.

    Args:
        encoding: the wrapped encoding; None means RoPE().
        local_window: n_local.
        global_tokens: n_global, the first tokens every query sees.
        distance_limit: the ceiling; None means local_window.
    """

    is_relative = False

    def __init__(
        self,
        encoding: PositionalEncoding | None = None,
        local_window: int = 2048,
        global_tokens: int = 100,
        distance_limit: int | None = None,
    ) -> None:
        super().__init__(encoding)
        if distance_limit is None:
            distance_limit = local_window
        _require_ints(
            "LMInfinite",
            local_window=local_window,
            global_tokens=global_tokens,
            distance_limit=distance_limit,
        )
        self.local_window = local_window
        self.global_tokens = global_tokens
        self.distance_limit = distance_limit

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Around RoPE and ALiBi, with a window the suite's sequences overflow."""
        from lengen_plugins.positional_encodings.alibi import ALiBi

        return (
            cls(local_window=5, global_tokens=2),
            cls(ALiBi(), local_window=6, global_tokens=1, distance_limit=4),
        )

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        query_grid, key_grid = pair_grid(query_positions, key_positions)
        distance = query_grid - key_grid  # (B, 1, Tq, Tk)
        visible = (key_grid < self.global_tokens) | (distance < self.local_window)
        natural = self.view(query, key, query_positions, key_positions)  # (B, nh, Tq, Tk)
        ceiling = self.view(
            query,
            key,
            torch.full_like(query_positions, self.distance_limit),
            torch.zeros_like(key_positions),
        )
        scores = torch.where(distance < self.distance_limit, natural, ceiling)
        return scores.masked_fill(~visible, float("-inf"))
