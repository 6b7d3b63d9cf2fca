"""Teacher-forced next-token accuracy on target tokens, per length bucket."""

from __future__ import annotations

import torch

from lengen.metric import EvalBatch, LengthMetric


class TokenAccuracy(LengthMetric):
    """Fraction of target tokens (EOS included) predicted correctly under teacher forcing."""

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scored = batch.labels != -100  # (B, T)
        correct = (logits.argmax(dim=-1) == batch.labels) & scored
        tokens = scored.sum(dim=1).double()
        # Per-example accuracy weighted by its token count: the bucket mean is correct / total.
        return correct.sum(dim=1).double() / tokens.clamp(min=1), tokens
