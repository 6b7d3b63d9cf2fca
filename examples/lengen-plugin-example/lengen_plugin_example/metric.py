"""FirstTokenAccuracy: whether greedy generation gets the first target token right."""

from __future__ import annotations

import torch

from lengen.metric import EvalBatch, LengthMetric


class FirstTokenAccuracy(LengthMetric):
    """Fraction of examples whose first generated token equals the first target token."""

    requires_generation = True  # `generated` is (B, max target length), laid out like targets

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) values and (B,) weights; lengen averages them per length bucket."""
        correct = generated[:, 0] == batch.targets[:, 0]
        return correct.double(), torch.ones_like(correct, dtype=torch.float64)
