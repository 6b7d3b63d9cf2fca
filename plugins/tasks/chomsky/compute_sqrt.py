"""Compute square root (context-sensitive): the integer square root of a binary number."""

from __future__ import annotations

import math
import random

from lengen.task import Task


class ComputeSqrt(Task):
    """floor(sqrt(n)) of a big-endian binary number (Delétang et al. 2023, CS).

    Input: n uniform in 1 .. 2^length - 1, written with exactly `length` bits (big-endian, leading
    zeros); target: floor(sqrt(n)) with exactly ceil(length / 2) bits. Default split: train 1..40,
    test 41..500.
    """

    symbols = ("0", "1")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        number = rng.randint(1, 2**length - 1)
        root = math.isqrt(number)
        return list(format(number, "b").zfill(length)), list(
            format(root, "b").zfill(math.ceil(length / 2))
        )
