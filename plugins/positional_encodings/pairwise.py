"""Wrappers that reuse another encoding: the shared forwarding, and the per-pair base class.

`EncodingWrapper` forwards every hook to the wrapped encoding; `PairwiseWrapper` adds the
per-pair hook (`PositionalEncoding.pairwise_scores`) for methods that give one key different
positions for different queries (ReRoPE, Self-Extend, Dual Chunk Attention, attention sinks,
LM-Infinite). They compute "views" with the wrapped encoding's own `pairwise_scores` (its
per-token path, unless it is pairwise too) at per-token positions and pick one view per pair.
"""

from __future__ import annotations

import torch

from lengen.positional import ModelDims, PositionalEncoding


def _default_encoding() -> PositionalEncoding:
    from lengen_plugins.positional_encodings.rope import RoPE

    return RoPE()


class EncodingWrapper(PositionalEncoding):
    """Forwards every hook and class-level property to `encoding` (None means RoPE()).

    Encodings with a contextual bias (CoPE) are refused: their bias is computed from q and k
    after `rotate` and cannot be re-derived per view or per pair.
    """

    def __init__(self, encoding: PositionalEncoding | None = None) -> None:
        super().__init__()
        if encoding is None:
            encoding = _default_encoding()
        name = type(self).__name__
        if not isinstance(encoding, PositionalEncoding):
            raise ValueError(
                f"{name}: encoding must be a PositionalEncoding, not {type(encoding).__name__}"
            )
        if encoding.has_contextual_bias:
            raise ValueError(
                f"{name}: cannot wrap {type(encoding).__name__} (a contextual bias computed from "
                "q and k); accepted: encodings with rotate, score_bias or pairwise_scores hooks"
            )
        self.encoding = encoding

    @property
    def is_relative(self) -> bool:
        return self.encoding.is_relative

    @property
    def supports_kv_cache(self) -> bool:
        return self.encoding.supports_kv_cache

    @property
    def checked_dtypes(self) -> tuple[torch.dtype, ...]:
        return self.encoding.checked_dtypes

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.encoding.bind(dims)

    def transform_positions(self, positions: torch.Tensor) -> torch.Tensor:
        return self.encoding.transform_positions(positions)

    def check_positions(self, max_position: int) -> None:
        self.encoding.check_positions(max_position)

    def schedulable_values(self) -> dict[str, torch.Tensor]:
        return self.encoding.schedulable_values()

    def embed(self, token_embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.encoding.embed(token_embeddings, positions)

    def rotate(self, query, key, query_positions, key_positions):
        return self.encoding.rotate(query, key, query_positions, key_positions)

    def score_bias(self, head, query_position, key_position) -> torch.Tensor:
        return self.encoding.score_bias(head, query_position, key_position)

    @property
    def has_score_bias(self) -> bool:
        return self.encoding.has_score_bias

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        return self.encoding.pairwise_scores(query, key, query_positions, key_positions)

    @property
    def has_pairwise_scores(self) -> bool:
        return self.encoding.has_pairwise_scores


class PairwiseWrapper(EncodingWrapper):
    """Base of the per-pair methods: `pairwise_scores` picks a view of `encoding` per pair.

    The wrapped encoding's score bias is part of each view (`view`), so the decoder must not add
    it at the natural positions: `has_score_bias` is False and `has_pairwise_scores` True.
    """

    @property
    def has_score_bias(self) -> bool:
        return False

    @property
    def has_pairwise_scores(self) -> bool:
        return True

    def view(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> torch.Tensor:
        """The wrapped encoding's (B, nh, Tq, Tk) scores with queries and keys at these positions.

        (B, Tq) and (B, Tk) positions, int or real; each is broadcast to the batch.
        """
        batch = query.shape[0]
        query_positions = query_positions.expand(batch, query.shape[2])
        key_positions = key_positions.expand(batch, key.shape[2])
        return self.encoding.pairwise_scores(query, key, query_positions, key_positions)


def pair_grid(
    query_positions: torch.Tensor, key_positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Tq), (B, Tk) positions -> (B, 1, Tq, 1) query and (B, 1, 1, Tk) key positions."""
    return query_positions[:, None, :, None], key_positions[:, None, None, :]
