"""Parity check (regular): whether a string holds an even number of b's."""

from __future__ import annotations

import random

from lengen.task import Task


class ParityCheck(Task):
    """Parity of the number of `b`s in a string over {a, b} (Delétang et al. 2023, regular).

    Input: `length` symbols from {a, b}; target: "0" if the count of `b` is even, else "1".
    Default split: train 1..40, test 41..500.
    """

    symbols = ("a", "b", "0", "1")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        string = [rng.choice("ab") for _ in range(length)]
        return string, [str(string.count("b") % 2)]
