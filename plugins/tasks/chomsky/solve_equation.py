"""Solve equation (deterministic context-free): the unknown of a linear modular equation."""

from __future__ import annotations

import random

from lengen.task import Task
from lengen_plugins.tasks.chomsky.modular_arithmetic_brackets import random_expression


class SolveEquation(Task):
    """Find x in `expression(x) = value` modulo `modulus` (Delétang et al. 2023, DCF).

    A bracketed expression of `length - 2` symbols (as in ModularArithmeticBrackets, with + and -
    only, so x is unique) has one of its digits replaced by `x`; the input is the expression, `=`
    and its value; the target is the replaced digit. Default split: train 3..40 (the paper's
    lengths 1-2 are degenerate), test 41..500.

    Args:
        modulus: 5 in the paper.
    """

    min_length = 3

    def __init__(self, modulus: int = 5) -> None:
        if not 2 <= modulus <= 10:
            raise ValueError(f"SolveEquation: modulus={modulus} must be in 2..10")
        self.modulus = modulus

    @property
    def symbols(self) -> tuple[str, ...]:
        return (*(str(i) for i in range(self.modulus)), "+", "-", "(", ")", "x", "=")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        expression, value = random_expression(length - 2, self.modulus, False, rng)
        digit_positions = [i for i, symbol in enumerate(expression) if symbol.isdigit()]
        position = rng.choice(digit_positions)
        solution = expression[position]
        expression[position] = "x"
        return [*expression, "=", str(value)], [solution]
