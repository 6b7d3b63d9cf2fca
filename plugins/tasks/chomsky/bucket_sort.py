"""Bucket sort (context-sensitive): a string over a small ordered alphabet, sorted."""

from __future__ import annotations

import random

from lengen.task import Task


class BucketSort(Task):
    """Sort `length` symbols from an alphabet of `num_symbols` (Delétang et al. 2023, CS).

    Input: symbols drawn uniformly from 0..num_symbols-1; target: the same symbols in ascending
    order. Default split: train 1..40, test 41..500.

    Args:
        num_symbols: 5 in the paper.
    """

    def __init__(self, num_symbols: int = 5) -> None:
        if not 2 <= num_symbols <= 10:
            raise ValueError(f"BucketSort: num_symbols={num_symbols} must be in 2..10")
        self.num_symbols = num_symbols

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.num_symbols))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        values = [str(rng.randrange(self.num_symbols)) for _ in range(length)]
        return values, sorted(values)
