"""Parity: whether a bit string holds an odd number of ones."""

from __future__ import annotations

import random

from lengen.task import Task


class Parity(Task):
    """Parity of `length` random bits (Kazemnejad et al. 2023; Delétang et al. 2023).

    Input: `length` bits, each 0 or 1 with probability 1/2; target: one symbol, "1" if the number
    of ones is odd, else "0".
    """

    symbols = ("0", "1")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        bits = [rng.choice(self.symbols) for _ in range(length)]
        return bits, [str(bits.count("1") % 2)]
