"""Reverse string (deterministic context-free): a binary string backwards."""

from __future__ import annotations

import random

from lengen.task import Task


class ReverseString(Task):
    """Reverse a binary string (Delétang et al. 2023, DCF).

    Input: `length` bits; target: the bits in reverse order. Default split: train 1..40, test
    41..500.
    """

    symbols = ("0", "1")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        bits = [rng.choice("01") for _ in range(length)]
        return bits, bits[::-1]
