"""Sorting: the input digits in ascending order."""

from __future__ import annotations

import random

from lengen.task import Task


class Sorting(Task):
    """Sort a random sequence of `length` symbols in ascending order (Kazemnejad et al. 2023).

    Input: `length` symbols drawn uniformly (with repetition) from an ordered alphabet of
    `num_symbols`; target: the same multiset in ascending order.

    Args:
        num_symbols: alphabet size; symbols are the numbers 0 .. num_symbols - 1, ordered as such.
    """

    def __init__(self, num_symbols: int = 10) -> None:
        if num_symbols < 2:
            raise ValueError(f"Sorting: num_symbols={num_symbols} must be >= 2")
        self.num_symbols = num_symbols

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.num_symbols))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        values = [rng.randrange(self.num_symbols) for _ in range(length)]
        return [str(v) for v in values], [str(v) for v in sorted(values)]
