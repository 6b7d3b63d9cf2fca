"""Duplicate string (context-sensitive): a binary string written twice."""

from __future__ import annotations

import random

from lengen.task import Task


class DuplicateString(Task):
    """Write a binary string twice, `w -> ww` (Delétang et al. 2023, CS).

    Input: `length` bits; target: the same bits twice (2 x length symbols). Default split: train
    1..40, test 41..500.
    """

    symbols = ("0", "1")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        bits = [rng.choice("01") for _ in range(length)]
        return bits, bits + bits
