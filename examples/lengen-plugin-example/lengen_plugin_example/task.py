"""Increment: add one to a decimal number (the carry travels the whole length)."""

from __future__ import annotations

import random

from lengen.task import Task


class Increment(Task):
    """Input: `length` digits, most significant first; target: the number plus one.

    Args:
        reverse: write both numbers least significant digit first (the carry is then local to
            the order of generation).
    """

    symbols = tuple("0123456789")
    min_length = 1

    def __init__(self, reverse: bool = False) -> None:
        self.reverse = reverse  # an attribute of the same name: part of the cache key

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        digits = [rng.choice(self.symbols) for _ in range(length)]
        result = list(str(int("".join(digits)) + 1).zfill(length))
        if self.reverse:
            return digits[::-1], result[::-1]
        return digits, result
