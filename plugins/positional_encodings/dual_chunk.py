"""Dual Chunk Attention: positions within chunks, three views by chunk distance (An et al.)."""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding
from lengen_plugins.positional_encodings.pairwise import PairwiseWrapper, pair_grid


class DualChunkAttention(PairwiseWrapper):
    """Dual Chunk Attention (DCA): every position is taken within its chunk of s tokens.

    An, Huang, Zhang, Gong, Qiu, Zhou, Kong 2024, "Training-Free Long-Context Scaling of Large
    Language Models" (ICML); reference implementation HKUNLP/ChunkLlama
    (`chunkllama_attn_replace.py`). Keys sit at p mod s. A query at q, with q' = q mod s, takes
    one of three positions depending on how many chunks separate it from the key:
    - intra-chunk (same chunk): q', so the distance is the true q - p;
    - successive chunk (the previous one): min(q' + s, s + w), with w the local window, so the
      nearest keys of the previous chunk keep distances close to the true ones;
    - inter-chunk (further back): min(2s - 1, s + w), a constant (the successive position of the
      chunk's last query, as in the reference; s + w unless w >= s).
    No distance exceeds s + w. The reference derives s + w = 3L/4 and w = L/16 from the
    pretraining length L (`replace_with_chunkllama`): these are the defaults here from
    `training_length`. Three views of the wrapped encoding are picked per pair (the reference
    runs one attention pass per view and merges them by log-sum-exp, the same softmax). Not
    relative: chunks start at position 0.

    Args:
        encoding: the wrapped encoding; None means RoPE().
        training_length: L, for the defaults of chunk_size and local_window.
        chunk_size: s, tokens per chunk; None means 3L/4 - L/16.
        local_window: w; None means L/16.
    """

    is_relative = False

    def __init__(
        self,
        encoding: PositionalEncoding | None = None,
        training_length: int = 4096,
        chunk_size: int | None = None,
        local_window: int | None = None,
    ) -> None:
        super().__init__(encoding)
        if local_window is None:
            local_window = training_length // 16
        if chunk_size is None:
            chunk_size = training_length * 3 // 4 - local_window
        for name, value, low in (("chunk_size", chunk_size, 1), ("local_window", local_window, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"DualChunkAttention: {name}={value!r}; accepted: an integer >= {low} "
                    f"(training_length={training_length!r} sets the defaults)"
                )
        self.chunk_size = chunk_size
        self.local_window = local_window

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Around RoPE and ALiBi, with chunks short enough for the suite's sequences."""
        from lengen_plugins.positional_encodings.alibi import ALiBi

        return (cls(chunk_size=5, local_window=2), cls(ALiBi(), chunk_size=4, local_window=1))

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        size, window = self.chunk_size, self.local_window
        query_in_chunk = query_positions % size  # (B, Tq)
        key_in_chunk = key_positions % size  # (B, Tk)
        intra = self.view(query, key, query_in_chunk, key_in_chunk)  # (B, nh, Tq, Tk)
        successive_query = torch.clamp(query_in_chunk + size, max=size + window)
        successive = self.view(query, key, successive_query, key_in_chunk)
        inter_query = torch.full_like(query_in_chunk, min(2 * size - 1, size + window))
        inter = self.view(query, key, inter_query, key_in_chunk)
        query_chunk, key_chunk = pair_grid(query_positions // size, key_positions // size)
        chunks_apart = query_chunk - key_chunk  # (B, 1, Tq, Tk)
        return torch.where(
            chunks_apart == 0, intra, torch.where(chunks_apart == 1, successive, inter)
        )
