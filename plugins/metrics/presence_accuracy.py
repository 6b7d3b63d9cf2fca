"""Presence accuracy: the answer appears somewhere in the greedy generation, per length bucket."""

from __future__ import annotations

import torch

from lengen.metric import EvalBatch, LengthMetric


class PresenceAccuracy(LengthMetric):
    """Fraction of examples whose greedy generation contains the answer (Abacus AI, WikiQA).

    The answer is the target without its EOS: `targets[i, : target_lengths[i] - 1]`. An example
    counts as correct when those tokens occur as a contiguous run anywhere in its generated row
    (everything before the row's PAD tail). lengen's module generates as many tokens as the target
    holds (answer + EOS), so there is one token of slack: the answer may start at the first or the
    second generated token, and a missing or wrong EOS is not penalised. A generator that returns
    wider rows is searched over their whole width.
    """

    requires_generation = True

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        present = torch.zeros(len(generated), dtype=torch.float64, device=generated.device)
        for row, (tokens, target, target_length) in enumerate(
            zip(generated, batch.targets, batch.target_lengths)
        ):
            answer = target[: int(target_length) - 1]  # (n,)
            if len(answer) == 0:
                present[row] = 1.0
            elif len(answer) <= len(tokens):
                windows = tokens.unfold(0, len(answer), 1)  # (W - n + 1, n)
                present[row] = float((windows == answer).all(dim=1).any())
        return present, torch.ones_like(present)
