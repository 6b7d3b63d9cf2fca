"""Summary scores of a per-length accuracy curve: in-range mean, extrapolation score, effective
length.

Plain functions, not torchmetrics: they summarise the per-length values *after* evaluation (the
bucket means of a `LengthMetric`), so they are used where results are written (results.json) and
compared (`lengen report`). They apply to higher-is-better fractions (exact match, accuracy).
"""

from __future__ import annotations

import math


def _finite(per_length: dict[int, float]) -> dict[int, float]:
    return {length: value for length, value in per_length.items() if not math.isnan(value)}


def extrapolation_score(per_length: dict[int, float], train_max_length: int | None) -> float:
    """Mean value over the evaluated lengths beyond `train_max_length`; NaN when there are none.

    Kazemnejad et al. 2023 (NeurIPS) score length generalization on the lengths longer than any
    seen in training only; this is that mean, unweighted across lengths.
    """
    if train_max_length is None:
        return math.nan
    beyond = [value for length, value in _finite(per_length).items() if length > train_max_length]
    return sum(beyond) / len(beyond) if beyond else math.nan


def in_range_score(per_length: dict[int, float], train_max_length: int | None) -> float:
    """Mean value over the evaluated lengths up to `train_max_length` (the training range); NaN
    when there are none or the training range is unknown."""
    if train_max_length is None:
        return math.nan
    inside = [value for length, value in _finite(per_length).items() if length <= train_max_length]
    return sum(inside) / len(inside) if inside else math.nan


def effective_length(per_length: dict[int, float], threshold: float = 0.5) -> int:
    """The longest evaluated length up to which every evaluated length scores >= `threshold`.

    Lengths are walked in increasing order and the walk stops at the first one below the threshold,
    so a curve that dips and recovers does not count past the dip. 0 when even the shortest
    evaluated length is below the threshold (or nothing was evaluated).
    """
    longest = 0
    for length, value in sorted(_finite(per_length).items()):
        if value < threshold:
            break
        longest = length
    return longest


def summarise(
    per_length: dict[int, float], train_max_length: int | None, threshold: float = 0.5
) -> dict[str, float | int | None]:
    """The scores as a JSON-ready dict (NaN becomes None): `in_range` (mean over the training
    range), `extrapolation_score` (mean beyond it), `effective_length`, `threshold`."""
    score = extrapolation_score(per_length, train_max_length)
    inside = in_range_score(per_length, train_max_length)
    return {
        "in_range": None if math.isnan(inside) else inside,
        "extrapolation_score": None if math.isnan(score) else score,
        "effective_length": effective_length(per_length, threshold),
        "threshold": threshold,
    }
