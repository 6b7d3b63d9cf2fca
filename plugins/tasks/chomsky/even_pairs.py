"""Even pairs (regular): whether a string has an even number of unequal neighbours."""

from __future__ import annotations

import random

from lengen.task import Task


class EvenPairs(Task):
    """Is the number of `ab` and `ba` pairs even? (Delétang et al. 2023, regular).

    Input: `length` symbols from {a, b}; target: "0" if the count of unequal adjacent pairs is even,
    else "1" (equivalently: "0" iff the first and last symbols agree). Default split: train 1..40,
    test 41..500.
    """

    symbols = ("a", "b", "0", "1")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        string = [rng.choice("ab") for _ in range(length)]
        unequal = sum(left != right for left, right in zip(string, string[1:]))
        return string, [str(unequal % 2)]
