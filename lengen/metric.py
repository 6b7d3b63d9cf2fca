"""The interface of a metric plugin: a per-example score averaged per length bucket.

States are sums and counts per bucket, reduced by summation, so the metric is correct under DDP.
A bucket that saw no example is NaN in `compute()` (never 0) and is left out when logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torchmetrics import Metric


@dataclass
class EvalBatch:
    """A batch of task examples laid out for teacher forcing (all tensors on one device).

    input_ids: (B, T) `BOS input SEP target` right-padded with PAD;
    labels: (B, T) next tokens, -100 except at target and EOS positions;
    targets: (B, max target length) `target EOS` tokens, PAD after each row's own target;
    prompt_lengths: (B,) tokens of `BOS input SEP`; target_lengths: (B,) tokens of `target EOS`;
    lengths: (B,) the requested task length (the bucket).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    prompt_lengths: torch.Tensor
    target_lengths: torch.Tensor
    lengths: torch.Tensor


class LengthMetric(Metric):
    """Mean of `score` per length bucket. Subclasses implement `score`.

    Set `requires_generation = True` to receive greedy generations laid out like `batch.targets`:
    (B, max target length) token ids, PAD after each row's own `target_lengths` tokens.
    """

    requires_generation = False
    # True for a metric that reads token ids as bytes (id = 4 + byte, lengen's byte-level tasks);
    # such a metric cannot score a `transformers` tokenizer's ids (LengenModule.setup).
    byte_level = False
    full_state_update = False
    higher_is_better = True

    def __init__(self, max_length: int = 4096) -> None:
        super().__init__()
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"{type(self).__name__}: max_length={max_length!r} must be >= 1")
        self.max_length = max_length
        self.add_state("total", torch.zeros(max_length + 1, dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros(max_length + 1, dtype=torch.float64), "sum")

    @property
    def name(self) -> str:
        """Snake-case name used in logged tags, e.g. ExactMatch -> exact_match."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def accepts(self, batch) -> bool:
        """Whether this metric scores `batch`; by default task batches (EvalBatch) only."""
        return isinstance(batch, EvalBatch)

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return per-example (values, weights), each (B,); the bucket mean is weighted."""
        raise NotImplementedError

    def update(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> None:
        if int(batch.lengths.max()) > self.max_length:
            raise ValueError(
                f"{type(self).__name__} keeps buckets up to length {self.max_length}, got "
                f"{int(batch.lengths.max())}; raise its max_length"
            )
        values, weights = self.score(batch, logits, generated)
        lengths = batch.lengths.to(self.total.device)
        self.total.index_add_(0, lengths, (values * weights).to(self.total.dtype))
        self.count.index_add_(0, lengths, weights.to(self.count.dtype))

    def compute(self) -> torch.Tensor:
        """(max_length + 1,) bucket means, NaN where the bucket is empty."""
        return torch.where(self.count > 0, self.total / self.count.clamp(min=1e-300), torch.nan)


def bucket_values(values: torch.Tensor) -> dict[int, float]:
    """The non-empty buckets of a `compute()` result as {length: value}."""
    return {int(i): float(values[i]) for i in torch.nonzero(~values.isnan()).flatten()}


class BatchWeightedMean(Metric):
    """Mean of per-batch values weighted by their rows, over all ranks (the evaluation loss).

    The value Lightning's epoch-level `self.log(..., batch_size=B)` reports on one process, but as
    a metric: `compute()` synchronises over ranks also on a rank that saw no batch. NaN values
    propagate (a diverged model's loss is NaN, not dropped). `compute()` -> (2,): mean and rows.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("rows", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, value: torch.Tensor, rows: int) -> None:
        self.total += value.detach().to(self.total.dtype) * rows
        self.rows += rows

    def compute(self) -> torch.Tensor:
        return torch.stack([self.total / self.rows, self.rows])  # mean NaN when rows == 0
