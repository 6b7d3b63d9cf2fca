"""Randomized positions, wrapping any encoding (Ruoss et al. 2023; Giraffe)."""

from __future__ import annotations

import torch

from lengen.positional import ModelDims, PositionalEncoding, PositionOutOfRange
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.xpos import XPos


class _PositionWrapper(PositionalEncoding):
    """Forwards every hook and every class-level property to `encoding`; changes the positions.

    The decoder calls `transform_positions` once per forward, so every hook of the wrapped
    encoding (embed, rotate, score_bias) and every layer sees the same positions. Randomness comes
    from torch's global RNG (seeded by Lightning's `seed_everything`). Positions are random in
    training; in evaluation they pass through unchanged unless `_random_in_eval` says otherwise.

    The class-level properties of `PositionalEncoding` (`is_relative`, `supports_kv_cache`,
    `checked_dtypes`) are read from the wrapped instance, so a wrapper around an encoding that
    cannot cache (e.g. `XPos(centre=True)`) cannot cache either.
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

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """For the contract suite: around RoPE, and around an encoding that cannot cache."""
        return (cls(RoPE()), cls(XPos(centre=True)))

    @property
    def _random_in_eval(self) -> bool:
        """True when evaluation positions are random too (then nothing can be cached)."""
        return False

    @property
    def is_relative(self) -> bool:
        return self.encoding.is_relative

    @property
    def supports_kv_cache(self) -> bool:
        return self.encoding.supports_kv_cache and not self._random_in_eval

    @property
    def checked_dtypes(self) -> tuple[torch.dtype, ...]:
        return self.encoding.checked_dtypes

    def _random_positions(self, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def has_token_positions(self) -> bool:
        """True when a subclass computes token positions, or the wrapped encoding does."""
        overridden = type(self).token_positions is not _PositionWrapper.token_positions
        return overridden or self.encoding.has_token_positions

    def token_positions(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The wrapped encoding's positions from the tokens (e.g. Abacus); then transformed."""
        return self.encoding.token_positions(input_ids, mask)

    def transform_positions(self, positions: torch.Tensor) -> torch.Tensor:
        positions = self.encoding.transform_positions(positions)
        if self.training or self._random_in_eval:
            return self._random_positions(positions)
        return positions

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

    def contextual_bias(
        self, query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.encoding.contextual_bias(query, key, key_mask=key_mask)

    @property
    def has_contextual_bias(self) -> bool:
        return self.encoding.has_contextual_bias

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        return self.encoding.pairwise_scores(query, key, query_positions, key_positions)

    @property
    def has_pairwise_scores(self) -> bool:
        return self.encoding.has_pairwise_scores


EVAL_POSITIONS = ("random", "ordered")
PER = ("batch", "row")


class RandomizedPositions(_PositionWrapper):
    """Randomized positions: a sorted random subset of [0, max_position) (Ruoss et al. 2023).

    Ruoss, Delétang, Genewein, Grau-Moya, Csordás, Bennani, Legg, Veness 2023, "Randomized
    Positional Encodings Boost Length Generalization of Transformers" (ACL). A forward draws
    n distinct positions uniformly from [0, max_position), sorts them, and position p of the input
    is replaced by the p-th smallest (n = 1 + the largest input position), so order and offsets
    keep their meaning. max_position should exceed the longest evaluation length.

    Defaults follow the authors' code (google-deepmind/randomized_positional_encodings: the model
    draws its positions in every call, `range_evaluation.py` included, and
    `noisy_fixed_positional_encodings` draws one subset of shape (sequence_length,) for the whole
    batch):
      eval_positions: "random" (default, the reference) draws in evaluation too, so test
        distances come from the training distribution; "ordered" uses 0..n-1 in evaluation.
        With "random", evaluation outputs are random (a fresh draw per forward, also per step of
        greedy generation) and `supports_kv_cache` is False.
      per: "batch" (default, the reference) draws one subset shared by every row of the batch;
        "row" draws one per row.
    One draw per forward serves every layer (the reference's absolute variants draw once too; its
    randomized RoPE draws anew in each attention layer). Around a bias encoding (ALiBi, T5) the
    positions are randomized; the reference's noisy ALiBi and relative encodings instead sample
    sorted random distances.

    Args:
        encoding: the wrapped encoding (any plugin, e.g. RoPE or ALiBi); None means RoPE().
        max_position: L_max, the exclusive upper end of the random positions (2048 in the paper).
        eval_positions: "random" or "ordered" (see above).
        per: "batch" or "row" (see above).
    """

    def __init__(
        self,
        encoding: PositionalEncoding | None = None,
        max_position: int = 2048,
        eval_positions: str = "random",
        per: str = "batch",
    ) -> None:
        super().__init__(encoding)
        if max_position < 1:
            raise ValueError(f"RandomizedPositions: max_position={max_position} must be >= 1")
        if eval_positions not in EVAL_POSITIONS:
            raise ValueError(
                f"RandomizedPositions: eval_positions={eval_positions!r}; accepted: "
                f"{', '.join(EVAL_POSITIONS)}"
            )
        if per not in PER:
            raise ValueError(f"RandomizedPositions: per={per!r}; accepted: {', '.join(PER)}")
        self.max_position = max_position
        self.eval_positions = eval_positions
        self.per = per

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """For the contract suite: ordered evaluation (its checks need deterministic outputs)."""
        return (
            cls(RoPE(), eval_positions="ordered"),
            cls(XPos(centre=True), eval_positions="ordered"),  # cannot cache
        )

    @property
    def _random_in_eval(self) -> bool:
        return self.eval_positions == "random"

    def _random_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) int positions >= 0 -> (B, T) int64 positions: a sorted random subset's."""
        needed = max(int(positions.max()), 0) + 1
        if needed > self.max_position:
            raise PositionOutOfRange(
                f"RandomizedPositions: a sequence needs {needed} distinct positions but "
                f"max_position={self.max_position}; raise max_position to at least {needed}"
            )
        draws = positions.shape[0] if self.per == "row" else 1
        keys = torch.rand(draws, self.max_position, device=positions.device)  # (B or 1, L_max)
        subset = keys.argsort(dim=1)[:, :needed].sort(dim=1).values  # (B or 1, n) sorted
        subset = subset.expand(positions.shape[0], needed)  # (B, n)
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
