"""Randomized positions in training, wrapping any encoding (Ruoss et al. 2023; Giraffe)."""

from __future__ import annotations

import torch

from lengen.positional import ModelDims, PositionalEncoding, PositionOutOfRange
from lengen_plugins.positional_encodings.rope import RoPE


class _PositionWrapper(PositionalEncoding):
    """Forwards every hook to `encoding`; subclasses change the positions in training only.

    The decoder calls `transform_positions` once per forward, so every hook of the wrapped
    encoding (embed, rotate, score_bias) and every layer sees the same positions. Randomness comes
    from torch's global RNG (seeded by Lightning's `seed_everything`). In evaluation mode the
    positions pass through unchanged.
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
        self.is_relative = encoding.is_relative  # in evaluation mode, positions are unchanged

    def _random_positions(self, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform_positions(self, positions: torch.Tensor) -> torch.Tensor:
        positions = self.encoding.transform_positions(positions)
        return self._random_positions(positions) if self.training else positions

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.encoding.bind(dims)

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

    def contextual_bias(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return self.encoding.contextual_bias(query, key)

    @property
    def has_contextual_bias(self) -> bool:
        return self.encoding.has_contextual_bias


class RandomizedPositions(_PositionWrapper):
    """Randomized positions: a sorted random subset of [0, max_position) in training (Ruoss et al.).

    Ruoss, Delétang, Genewein, Grau-Moya, Csordás, Bennani, Legg, Veness 2023, "Randomized
    Positional Encodings Boost Length Generalization of Transformers" (ACL). In training, each row
    draws n distinct positions uniformly from [0, max_position), sorts them, and position p of the
    input is replaced by the p-th smallest (n = 1 + the largest input position), so order and
    offsets keep their meaning. In evaluation the ordinary positions are used. max_position should
    exceed the longest evaluation length, so every tested position was seen in training.

    Args:
        encoding: the wrapped encoding (any plugin, e.g. RoPE or ALiBi); None means RoPE().
        max_position: L_max, the exclusive upper end of the random positions (2048 in the paper).
    """

    def __init__(
        self, encoding: PositionalEncoding | None = None, max_position: int = 2048
    ) -> None:
        super().__init__(encoding)
        if max_position < 1:
            raise ValueError(f"RandomizedPositions: max_position={max_position} must be >= 1")
        self.max_position = max_position

    def _random_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) int positions >= 0 -> (B, T) int64 positions: each row's sorted random subset."""
        needed = max(int(positions.max()), 0) + 1
        if needed > self.max_position:
            raise PositionOutOfRange(
                f"RandomizedPositions: a training sequence needs {needed} distinct positions but "
                f"max_position={self.max_position}; raise max_position to at least {needed}"
            )
        batch = positions.shape[0]
        keys = torch.rand(batch, self.max_position, device=positions.device)  # (B, L_max)
        subset = keys.argsort(dim=1)[:, :needed].sort(dim=1).values  # (B, n) sorted, distinct
        return subset.gather(1, positions.long().clamp(min=0))  # (B, T); pads (< 0) take 0


class GiraffeRandomizedPositions(_PositionWrapper):
    """Giraffe's randomized positions: cumulative random increments rescaled to the length.

    Pal et al. 2023, "Giraffe: Adventures in Expanding Context Lengths in LLMs", section 3 and the
    authors' release. In training, a row of T tokens gets the real-valued positions
    t_k = u_1 + ... + u_k with u ~ Uniform(0, 2) (mean 1), and if t_T exceeds T all are scaled by
    T / t_T, so they stay in (0, T]. Positions are float32, so the wrapped encoding must accept
    real positions (the RoPE family, ALiBi, Sinusoidal, Kerple, FIRE; not Learned or T5Bias).
    Positions derived per row from the input positions: position p takes t_(p+1).

    Args:
        encoding: the wrapped encoding; None means RoPE().
    """

    def _random_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) int positions >= 0 -> (B, T) float32 positions in (0, max + 1]."""
        length = max(int(positions.max()), 0) + 1
        increments = 2 * torch.rand(positions.shape[0], length, device=positions.device)
        cumulative = increments.cumsum(dim=1)  # (B, n)
        cumulative = cumulative * (length / cumulative[:, -1:].clamp(min=length))
        return cumulative.gather(1, positions.long().clamp(min=0))  # (B, T); pads (< 0) take 0
