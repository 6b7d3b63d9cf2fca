"""Summation: the sum of a list of digits modulo a base."""

from __future__ import annotations

import random

from lengen.task import Task


class Summation(Task):
    """Sum of `length` random digits modulo `modulus` (Kazemnejad et al. 2023).

    Input: `length` digits drawn uniformly from 0 .. modulus - 1; target: one symbol, their sum
    modulo `modulus`.

    Args:
        modulus: the base of the digits and of the sum (10 in the paper).
    """

    def __init__(self, modulus: int = 10) -> None:
        if modulus < 2:
            raise ValueError(f"Summation: modulus={modulus} must be >= 2")
        self.modulus = modulus

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.modulus))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        digits = [rng.randrange(self.modulus) for _ in range(length)]
        return [str(d) for d in digits], [str(sum(digits) % self.modulus)]
