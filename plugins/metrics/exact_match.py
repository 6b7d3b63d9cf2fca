"""Exact-match sequence accuracy of greedy generation, per length bucket."""

from __future__ import annotations

import torch

from lengen.metric import EvalBatch, LengthMetric


class ExactMatch(LengthMetric):
    """Fraction of examples whose greedy generation equals the whole target (EOS included)."""

    requires_generation = True

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        correct = (generated == batch.targets).all(dim=1)
        return correct.double(), torch.ones_like(correct, dtype=torch.float64)
