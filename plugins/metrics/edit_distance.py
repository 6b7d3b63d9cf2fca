"""Normalised Levenshtein distance between greedy generation and target, per length bucket."""

from __future__ import annotations

import torch

from lengen.metric import EvalBatch, LengthMetric
from lengen.task import EOS


def levenshtein(
    first: torch.Tensor,
    first_lengths: torch.Tensor,
    second: torch.Tensor,
    second_lengths: torch.Tensor,
) -> torch.Tensor:
    """Edit distance (insert, delete, substitute: cost 1 each) of each row pair, batched.

    first: (B, N) and second: (B, M) token ids, each row valid up to its length; returns (B,).
    One DP row per token of `first`; the insertion chain along a row is a running minimum:
    D[i, j] = min_k<=j (E[i, k] + j - k) with E the deletion/substitution candidates.
    """
    batch, width = second.shape
    columns = torch.arange(width + 1, device=second.device)  # (M + 1,)
    previous = columns.expand(batch, width + 1).clone()  # D[0, j] = j
    distance = previous.gather(1, second_lengths[:, None]).squeeze(1)  # rows with N = 0
    for i in range(1, first.shape[1] + 1):
        substitute = previous[:, :-1] + (first[:, i - 1, None] != second).long()  # (B, M)
        delete = previous[:, 1:] + 1  # (B, M)
        candidates = torch.cat(
            [torch.full((batch, 1), i, device=second.device), torch.minimum(substitute, delete)],
            dim=1,
        )  # (B, M + 1)
        current = (candidates - columns).cummin(dim=1).values + columns
        at_end = first_lengths == i
        distance = torch.where(
            at_end, current.gather(1, second_lengths[:, None]).squeeze(1), distance
        )
        previous = current
    return distance


class EditDistance(LengthMetric):
    """Levenshtein distance / max(len(generation), len(target)), 0 = identical, 1 = all wrong.

    The generation is cut after its first EOS (a model that stops early is charged the missing
    tokens as deletions); target and generation include the EOS token. Lower is better.
    """

    requires_generation = True
    higher_is_better = False

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = generated.shape[1]
        steps = torch.arange(width, device=generated.device)
        is_eos = (generated == EOS) & (steps < batch.target_lengths[:, None])
        first_eos = torch.where(is_eos, steps, width).min(dim=1).values  # (B,)
        generated_lengths = torch.minimum(first_eos + 1, batch.target_lengths)
        distance = levenshtein(generated, generated_lengths, batch.targets, batch.target_lengths)
        normaliser = torch.maximum(generated_lengths, batch.target_lengths).clamp(min=1)
        values = distance.double() / normaliser.double()
        return values, torch.ones_like(values)
