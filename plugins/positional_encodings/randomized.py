"""Randomized positions, wrapping any encoding (Ruoss et al. 2023; Giraffe)."""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding, PositionOutOfRange
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.wrapper import EncodingWrapper
from lengen_plugins.positional_encodings.xpos import XPos


class _PositionWrapper(EncodingWrapper):
    """A wrapper that changes the positions (`_random_positions`); every hook is forwarded.

    The decoder calls `transform_positions` once per forward, so every hook of the wrapped
    encoding (embed, rotate, score_bias) and every layer sees the same positions. Randomness comes
    from torch's global RNG (seeded by Lightning's `seed_everything`). Positions are random in
    training; in evaluation they pass through unchanged unless `_random_in_eval` says otherwise.
    """

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """For the contract suite: around RoPE, and around an encoding that cannot cache."""
        return (cls(RoPE()), cls(XPos(centre=True)))

    @property
    def _random_in_eval(self) -> bool:
        """True when evaluation positions are random too (then nothing can be cached)."""
        return False

    @property
    def supports_kv_cache(self) -> bool:
        return self.encoding.supports_kv_cache and not self._random_in_eval

    def _random_positions(self, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform_positions(self, positions: torch.Tensor) -> torch.Tensor:
        positions = self.encoding.transform_positions(positions)
        if self.training or self._random_in_eval:
            return self._random_positions(positions)
        return positions


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
