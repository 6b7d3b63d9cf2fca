"""The base class of the per-pair methods, a wrapper (`EncodingWrapper`) that adds the
per-pair hook (`PositionalEncoding.pairwise_scores`) for methods that give one key different
positions for different queries (ReRoPE, Self-Extend, Dual Chunk Attention, attention sinks,
LM-Infinite). They compute "views" with the wrapped encoding's own `pairwise_scores` (its
per-token path, unless it is pairwise too) at per-token positions and pick one view per pair.
"""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding
from lengen_plugins.positional_encodings.wrapper import EncodingWrapper


class PairwiseWrapper(EncodingWrapper):
    """Base of the per-pair methods: `pairwise_scores` picks a view of `encoding` per pair.

    The wrapped encoding's score bias is part of each view (`view`), so the decoder must not add
    it at the natural positions: `has_score_bias` is False and `has_pairwise_scores` True.
    Encodings with a contextual bias (CoPE) are refused: their bias is computed from q and k
    after `rotate` and cannot be re-derived per view or per pair.
    """

    def __init__(self, encoding: PositionalEncoding | None = None) -> None:
        super().__init__(encoding)
        if self.encoding.has_contextual_bias:
            raise ValueError(
                f"{type(self).__name__}: cannot wrap {type(self.encoding).__name__} (a contextual "
                "bias computed from q and k); accepted: encodings with rotate, score_bias or "
                "pairwise_scores hooks"
            )

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
