"""Mean next-token loss per position in the window, on language-model evaluation batches."""

from __future__ import annotations

import torch

from lengen.metric import EvalBatch, LengthMetric
from lengen_plugins.metrics.perplexity import token_nll


class PositionLoss(LengthMetric):
    """Cross-entropy (nats) of the prediction made at each position 0..T-1, averaged over windows.

    Buckets are positions, not lengths. It shows the sequence-length off-by-one: a model trained on
    windows of n_ctx tokens (n_ctx - 1 inputs) never trains position n_ctx - 1, whose loss stands
    out when evaluated on full n_ctx inputs. `context_length`: count only windows of that
    evaluation context length (None = every window). Lower is better.
    """

    higher_is_better = False

    def __init__(self, max_length: int = 4096, context_length: int | None = None) -> None:
        super().__init__(max_length)
        if context_length is not None and context_length < 1:
            raise ValueError(f"PositionLoss: context_length={context_length} must be >= 1 or null")
        self.context_length = context_length

    def accepts(self, batch) -> bool:
        return not isinstance(batch, EvalBatch) and getattr(batch, "lengths", None) is not None

    def update(self, batch, logits: torch.Tensor, generated: torch.Tensor | None) -> None:
        nll, scored = token_nll(logits, batch.labels)  # (B, T)
        if self.context_length is not None:
            keep = (batch.lengths == self.context_length)[:, None]  # (B, 1)
            nll, scored = nll * keep, scored & keep
        width = nll.shape[1]
        if width > self.max_length + 1:
            raise ValueError(
                f"PositionLoss keeps positions up to {self.max_length}, got windows of {width}; "
                "raise its max_length"
            )
        self.total[:width] += nll.sum(dim=0).to(self.total.device)
        self.count[:width] += scored.sum(dim=0).to(self.count)
