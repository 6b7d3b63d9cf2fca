"""Summation: the sum of a list of digits modulo a base."""

from __future__ import annotations

import random

from lengen.task import Task
from lengen_plugins.tasks.scratchpad import ScratchpadFormat, Step, number


class Summation(ScratchpadFormat, Task):
    """Sum of `length` random digits modulo `modulus` (Kazemnejad et al. 2023).

    Input: `length` digits drawn uniformly from 0 .. modulus - 1; target: one symbol, their sum
    modulo `modulus`.

    With `scratchpad`, one step per input digit d before `<ans>` and the answer: input `d`;
    computation `s + d = t` (s the running sum); output `t mod modulus`; intermediate variables:
    the new running sum; remaining input: the digits not yet added.

    Args:
        modulus: the base of the digits and of the sum (10 in the paper).
        scratchpad: put a scratchpad before the answer; `scratchpad_<part>` switches each part.
    """

    def __init__(
        self,
        modulus: int = 10,
        scratchpad: bool = False,
        scratchpad_input: bool = True,
        scratchpad_computation: bool = True,
        scratchpad_output: bool = True,
        scratchpad_intermediate: bool = True,
        scratchpad_remaining: bool = True,
    ) -> None:
        if modulus < 2:
            raise ValueError(f"Summation: modulus={modulus} must be >= 2")
        self.modulus = modulus
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
        return self.scratchpad_symbols(tuple(str(i) for i in range(self.modulus)))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        digits = [rng.randrange(self.modulus) for _ in range(length)]
        steps, total = [], 0
        for index, digit in enumerate(digits):
            new_total = (total + digit) % self.modulus
            steps.append(
                Step(
                    input=number(digit),
                    computation=[*number(total), "+", *number(digit), "=", *number(total + digit)],
                    output=number(new_total),
                    intermediate=number(new_total),
                    remaining=[s for d in digits[index + 1 :] for s in number(d)],
                )
            )
            total = new_total
        inputs = [str(d) for d in digits]
        return inputs, self.target_with_scratchpad(steps, [str(total)])
