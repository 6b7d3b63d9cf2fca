"""Odds first (context-sensitive): the symbols at odd positions, then those at even positions."""

from __future__ import annotations

import random

from lengen.task import Task


class OddsFirst(Task):
    """Reorder a binary string: positions 1, 3, 5, ... then 2, 4, 6, ... (Delétang et al. 2023, CS).

    Positions count from 1, so `x1 x2 x3 x4 -> x1 x3 x2 x4`, as in the paper's definition and
    examples (`00110101 -> 0100 0111`, `110 -> 10 1`). Input: `length` bits; target: the same bits
    reordered. Default split: train 1..40, test 41..500.
    """

    symbols = ("0", "1")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        bits = [rng.choice("01") for _ in range(length)]
        return bits, bits[0::2] + bits[1::2]
