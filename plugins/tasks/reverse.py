"""Reverse: the input sequence backwards."""

from __future__ import annotations

import random

from lengen_plugins.tasks.copy import Copy


class Reverse(Copy):
    """Reverse a random sequence of `length` symbols (Kazemnejad et al. 2023).

    Input: `length` symbols drawn uniformly from an alphabet of `num_symbols`; target: the input
    in reverse order.

    Args:
        num_symbols: alphabet size (symbols are named s0, s1, ...).
    """

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        inputs, _ = super().generate(length, rng)
        return inputs, inputs[::-1]
