"""The base of every encoding that wraps another: forwards each hook to the wrapped encoding.

Subclasses change what they need: the positions (RandomizedPositions, PositionCoupling) or the
scores per query-key pair (`PairwiseWrapper`: Self-Extend, ReRoPE, ...).
"""

from __future__ import annotations

import torch

from lengen.positional import ModelDims, PositionalEncoding
from lengen_plugins.positional_encodings.rope import RoPE


class EncodingWrapper(PositionalEncoding):
    """Forwards every hook and class-level property to `encoding` (None means RoPE()).

    The class-level properties (`is_relative`, `supports_kv_cache`, `checked_dtypes`, `has_*`)
    are read from the wrapped instance, so a wrapper around an encoding that cannot cache (e.g.
    `XPos(centre=True)`) cannot cache either. Token-derived positions (Abacus) pass through, or
    come from the subclass when it overrides `token_positions`.
    """

    def __init__(self, encoding: PositionalEncoding | None = None) -> None:
        super().__init__()
        if encoding is None:
            encoding = RoPE()
        if not isinstance(encoding, PositionalEncoding):
            raise ValueError(
                f"{type(self).__name__}: encoding must be a PositionalEncoding, "
                f"not {type(encoding).__name__}"
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

    def token_positions(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.encoding.token_positions(input_ids, mask)

    @property
    def has_token_positions(self) -> bool:
        overridden = type(self).token_positions is not EncodingWrapper.token_positions
        return overridden or self.encoding.has_token_positions

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

    def contextual_bias(
        self, query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.encoding.contextual_bias(query, key, key_mask=key_mask)

    @property
    def has_contextual_bias(self) -> bool:
        return self.encoding.has_contextual_bias

    @property
    def flex_score_mod(self) -> bool:
        return self.encoding.flex_score_mod

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        return self.encoding.pairwise_scores(query, key, query_positions, key_positions)

    @property
    def has_pairwise_scores(self) -> bool:
        return self.encoding.has_pairwise_scores
