"""Copy: repeat the input sequence."""

from __future__ import annotations

import random

from lengen.task import Task


class Copy(Task):
    """Copy a random sequence of `length` symbols (Kazemnejad et al. 2023).

    Input: `length` symbols drawn uniformly from an alphabet of `num_symbols`; target: the same.

    Args:
        num_symbols: alphabet size (symbols are named s0, s1, ...).
    """

    def __init__(self, num_symbols: int = 10) -> None:
        if num_symbols < 2:
            raise ValueError(f"{type(self).__name__}: num_symbols={num_symbols} must be >= 2")
        self.num_symbols = num_symbols

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.num_symbols))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        symbols = self.symbol_table  # one tuple, not one per drawn symbol
        # rng.choice(symbols) without its per-call wrapper: the same draws (the quickstart's
        # hot loop; tests/test_perf_paths.py checks the stream against rng.choice).
        draw, count = rng._randbelow, len(symbols)
        inputs = [symbols[draw(count)] for _ in range(length)]
        return inputs, list(inputs)
