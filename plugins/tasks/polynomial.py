"""Polynomial evaluation: the value of a polynomial at a point, modulo 10."""

from __future__ import annotations

import random

from lengen.task import Task
from lengen_plugins.tasks.scratchpad import ScratchpadFormat, Step, number


class PolynomialEvaluation(ScratchpadFormat, Task):
    """Evaluate a polynomial of `length` terms at x, modulo `modulus` (Kazemnejad et al. 2023).

    Input: `x = v ;` then `length` terms `c * x ^ d` joined by `+`, with v and c uniform in
    -max_value..max_value and d uniform in 0..max_degree (the paper's generator, e.g. coefficients
    -3..3, degrees 0..3); target: the polynomial's value at v modulo `modulus` (a digit, Python's
    non-negative modulo). The length is the number of terms.

    With `scratchpad`, one step per term before `<ans>` and the answer: input `c * x ^ d`;
    computation `c * v ^ d = c * v^d`; output `c v^d`; intermediate variables: the running sum
    modulo `modulus`; remaining input: the terms not yet evaluated.

    Args:
        modulus: 10 in the paper.
        max_value: bound of the coefficients and of x.
        max_degree: largest exponent.
        scratchpad: put a scratchpad before the answer; `scratchpad_<part>` switches each part.
    """

    def __init__(
        self,
        modulus: int = 10,
        max_value: int = 3,
        max_degree: int = 3,
        scratchpad: bool = False,
        scratchpad_input: bool = True,
        scratchpad_computation: bool = True,
        scratchpad_output: bool = True,
        scratchpad_intermediate: bool = True,
        scratchpad_remaining: bool = True,
    ) -> None:
        if not 2 <= modulus <= 10:
            raise ValueError(f"PolynomialEvaluation: modulus={modulus} must be in 2..10")
        if max_value < 1 or max_degree < 0:
            raise ValueError(
                f"PolynomialEvaluation: need max_value >= 1 and max_degree >= 0, got "
                f"{max_value} and {max_degree}"
            )
        self.modulus, self.max_value, self.max_degree = modulus, max_value, max_degree
        self.set_scratchpad(
            scratchpad,
            scratchpad_input=scratchpad_input,
            scratchpad_computation=scratchpad_computation,
            scratchpad_output=scratchpad_output,
            scratchpad_intermediate=scratchpad_intermediate,
            scratchpad_remaining=scratchpad_remaining,
        )

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.scratchpad_symbols((*"0123456789", "-", "+", "*", "^", "x", "=", ";"))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        x = rng.randint(-self.max_value, self.max_value)
        terms = [
            (rng.randint(-self.max_value, self.max_value), rng.randint(0, self.max_degree))
            for _ in range(length)
        ]
        written = [[*number(c), "*", "x", "^", *number(d)] for c, d in terms]
        inputs = ["x", "=", *number(x), ";"]
        for index, term in enumerate(written):
            inputs += ["+", *term] if index else term
        steps, total = [], 0
        for index, (c, d) in enumerate(terms):
            total = (total + c * x**d) % self.modulus
            remaining = []
            for term in written[index + 1 :]:
                remaining += ["+", *term] if remaining else term
            steps.append(
                Step(
                    input=written[index],
                    computation=[
                        *number(c),
                        "*",
                        *number(x),
                        "^",
                        *number(d),
                        "=",
                        *number(c),
                        "*",
                        *number(x**d),
                    ],
                    output=number(c * x**d),
                    intermediate=number(total),
                    remaining=remaining,
                )
            )
        return inputs, self.target_with_scratchpad(steps, [str(total)])
