"""Modular arithmetic with brackets (deterministic context-free)."""

from __future__ import annotations

import random

from lengen.task import Task


def random_expression(
    length: int, modulus: int, multiplication: bool, rng: random.Random
) -> tuple[list[str], int]:
    """A bracketed expression of exactly `length` symbols and its value modulo `modulus`.

    The grammar of Delétang et al. 2023: lengths 1-4 are d, -d, (d), (-d); a longer expression is
    `(left op right)` with the left part's length uniform in 1..length-4.
    """
    digit = rng.randrange(modulus)
    if length == 1:
        return [str(digit)], digit
    if length == 2:
        return ["-", str(digit)], -digit % modulus
    if length == 3:
        return ["(", str(digit), ")"], digit
    if length == 4:
        return ["(", "-", str(digit), ")"], -digit % modulus
    left_length = rng.randint(1, length - 4)
    left, left_value = random_expression(left_length, modulus, multiplication, rng)
    right, right_value = random_expression(length - 3 - left_length, modulus, multiplication, rng)
    operator = rng.choice("+-*" if multiplication else "+-")
    value = {
        "+": left_value + right_value,
        "-": left_value - right_value,
        "*": left_value * right_value,
    }[operator]
    return ["(", *left, operator, *right, ")"], value % modulus


class ModularArithmeticBrackets(Task):
    """Reduce a bracketed expression modulo `modulus` (Delétang et al. 2023, DCF).

    Input: an expression of exactly `length` symbols over digits 0..modulus-1, +, -, (optionally
    *), brackets, with unary minus; target: its value modulo `modulus`. Default split: train
    1..40, test 41..500.

    Args:
        modulus: 5 in the paper.
        multiplication: also use `*` (the paper's default uses + and - only).
    """

    def __init__(self, modulus: int = 5, multiplication: bool = False) -> None:
        if not 2 <= modulus <= 10:
            raise ValueError(f"ModularArithmeticBrackets: modulus={modulus} must be in 2..10")
        self.modulus = modulus
        self.multiplication = multiplication

    @property
    def symbols(self) -> tuple[str, ...]:
        return (*(str(i) for i in range(self.modulus)), "+", "-", "*", "(", ")")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        expression, value = random_expression(length, self.modulus, self.multiplication, rng)
        return expression, [str(value)]
