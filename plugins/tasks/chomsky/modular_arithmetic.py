"""Modular arithmetic (regular): the value of a bracket-free expression modulo a small number."""

from __future__ import annotations

import random

from lengen.task import Task


def evaluate_mod(numbers: list[int], operators: list[str], modulus: int) -> int:
    """Evaluate n0 op0 n1 op1 ... with * before + and -, modulo `modulus`."""
    total, term, sign = 0, numbers[0], 1
    for operator, number in zip(operators, numbers[1:]):
        if operator == "*":
            term *= number
        else:
            total += sign * term
            term, sign = number, 1 if operator == "+" else -1
    return (total + sign * term) % modulus


class ModularArithmetic(Task):
    """Reduce `n op n op ... n` modulo `modulus` (Delétang et al. 2023, regular).

    Input: numbers in 0..modulus-1 alternating with operators from {+, -, *}, multiplication
    binding tighter; target: the value modulo `modulus`. The input length is odd: as in the paper,
    an even requested length gives an expression of `length - 1` symbols. Default split: train
    1..40, test 41..500.

    Args:
        modulus: 5 in the paper.
    """

    def __init__(self, modulus: int = 5) -> None:
        if not 2 <= modulus <= 10:
            raise ValueError(f"ModularArithmetic: modulus={modulus} must be in 2..10")
        self.modulus = modulus

    @property
    def symbols(self) -> tuple[str, ...]:
        return (*(str(i) for i in range(self.modulus)), "+", "-", "*")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        num_numbers = (length - 1) // 2 + 1 if length % 2 else length // 2
        numbers = [rng.randrange(self.modulus) for _ in range(num_numbers)]
        operators = [rng.choice("+-*") for _ in range(num_numbers - 1)]
        expression = [str(numbers[0])]
        for operator, number in zip(operators, numbers[1:]):
            expression += [operator, str(number)]
        return expression, [str(evaluate_mod(numbers, operators, self.modulus))]
