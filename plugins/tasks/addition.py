"""Addition: the decimal sum of two multi-digit numbers."""

from __future__ import annotations

import random

from lengen.task import Task


class Addition(Task):
    """Add two random `length`-digit decimal numbers (Kazemnejad et al. 2023).

    The length is the number of digits of each operand; operands are uniform over
    [0, 10^length), written with leading zeros to exactly `length` digits. Input:
    `a_digits + b_digits`; target: the sum written with `length + 1` digits (a leading 0 when there
    is no final carry), so the target length depends only on the requested length.

    Args:
        reverse_digits: write operands and sum least-significant digit first, the order in which
            the carry propagates (an easier format used in several length-generalization studies).
    """

    symbols = (*"0123456789", "+")

    def __init__(self, reverse_digits: bool = False) -> None:
        self.reverse_digits = reverse_digits

    def _digits(self, value: int, width: int) -> list[str]:
        digits = list(str(value).zfill(width))
        return digits[::-1] if self.reverse_digits else digits

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        a, b = rng.randrange(10**length), rng.randrange(10**length)
        inputs = [*self._digits(a, length), "+", *self._digits(b, length)]
        return inputs, self._digits(a + b, length + 1)
