"""RULER's string-match scores: the fraction (all) or any (part) of the references generated."""

from __future__ import annotations

import torch

from lengen.metric import EvalBatch, LengthMetric
from lengen.task import SPECIAL_TOKENS


def _byte_id(character: str) -> int:
    """Token id of a one-byte character in a byte-level task (lengen_plugins.tasks.retrieval)."""
    return len(SPECIAL_TOKENS) + ord(character)


def _lower(tokens: torch.Tensor) -> torch.Tensor:
    """Byte-task ids of A-Z mapped to a-z (RULER compares lower-cased strings)."""
    upper = (tokens >= _byte_id("A")) & (tokens <= _byte_id("Z"))
    return torch.where(upper, tokens + 32, tokens)


def contains(haystack: torch.Tensor, needle: torch.Tensor) -> bool:
    """Whether the 1-D `needle` occurs as a contiguous run in the 1-D `haystack`."""
    if len(needle) == 0:
        return True
    if len(needle) > len(haystack):
        return False
    windows = haystack.unfold(0, len(needle), 1)  # (W - n + 1, n)
    return bool((windows == needle).all(dim=1).any())


class StringMatchAll(LengthMetric):
    """RULER's string_match_all (Hsieh et al. 2024; NVIDIA/RULER scripts/eval/synthetic/
    constants.py): per example, the fraction of references that occur in the generation,
    averaged per length bucket (a fraction in [0, 1], where RULER reports percent).

    The references are the answer (target without EOS) split at `separator`, the byte the RULER
    tasks join their answers with (`,`; a byte-level task's token id is 4 + byte). A target
    without the separator is one reference (then, case aside, this equals PresenceAccuracy). With
    `ignore_case` (RULER lower-cases both sides) the bytes A-Z count as a-z. lengen generates as
    many tokens as the target holds, so all references fit only when they are generated
    back to back, in any order.
    """

    requires_generation = True
    byte_level = True  # the separator and A-Z are found as byte ids
    match = "all"

    def __init__(self, separator: str = ",", ignore_case: bool = True, max_length: int = 4096):
        super().__init__(max_length=max_length)
        if not isinstance(separator, str) or len(separator) != 1 or ord(separator) > 255:
            raise ValueError(f"{type(self).__name__}: separator={separator!r} must be one byte")
        self.separator = separator
        self.ignore_case = ignore_case

    def references(self, answer: torch.Tensor) -> list[torch.Tensor]:
        """The answer's tokens split at the separator (empty pieces dropped)."""
        cuts = [-1, *torch.nonzero(answer == _byte_id(self.separator)).flatten().tolist()]
        cuts.append(len(answer))
        pieces = [answer[a + 1 : b] for a, b in zip(cuts, cuts[1:])]
        return [piece for piece in pieces if len(piece)] or [answer]

    def score(
        self, batch: EvalBatch, logits: torch.Tensor, generated: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        values = torch.zeros(len(generated), dtype=torch.float64, device=generated.device)
        for row, (tokens, target, target_length) in enumerate(
            zip(generated, batch.targets, batch.target_lengths)
        ):
            answer = target[: int(target_length) - 1]  # (n,) without EOS
            if self.ignore_case:
                tokens, answer = _lower(tokens), _lower(answer)
            found = [contains(tokens, reference) for reference in self.references(answer)]
            values[row] = sum(found) / len(found) if self.match == "all" else float(any(found))
        return values, torch.ones_like(values)


class StringMatchPart(StringMatchAll):
    """RULER's string_match_part: 1 when any reference occurs in the generation, else 0
    (RULER's QA metric); references as in StringMatchAll."""

    match = "part"
