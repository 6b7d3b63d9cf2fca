"""Perplexity of the labelled tokens per length bucket (evaluation context length on text)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lengen.metric import EvalBatch, LengthMetric


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, V) logits, (B, T) labels (-100 = not scored) -> per-token NLL in nats and its mask."""
    scored = labels != -100  # (B, T)
    nll = F.cross_entropy(
        logits.float().flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none"
    ).view_as(labels)  # (B, T)
    return nll.double() * scored, scored


class Perplexity(LengthMetric):
    """exp(mean NLL per scored token) per bucket, the mean taken over all tokens of the bucket.

    On language-model evaluation batches the bucket is the evaluation context length (Press et
    al. 2022 report perplexity as the evaluation length grows); on task batches it is the task
    length and the scored tokens are `target EOS`. Lower is better.
    """

    higher_is_better = False

    def accepts(self, batch) -> bool:
        return getattr(batch, "lengths", None) is not None

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nll, scored = token_nll(logits, batch.labels)
        tokens = scored.sum(dim=1).double()
        return nll.sum(dim=1) / tokens.clamp(min=1), tokens

    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute())  # NaN stays NaN for an empty bucket
