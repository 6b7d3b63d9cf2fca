"""Parity: whether a bit string holds an odd number of ones."""

from __future__ import annotations

import random

from lengen.task import Task
from lengen_plugins.tasks.scratchpad import ScratchpadFormat, Step


class Parity(ScratchpadFormat, Task):
    """Parity of `length` random bits (Kazemnejad et al. 2023; Delétang et al. 2023).

    Input: `length` bits, each 0 or 1 with probability 1/2; target: one symbol, "1" if the number
    of ones is odd, else "0".

    With `scratchpad`, one step per bit b before `<ans>` and the answer: input `b`; computation
    `p + b = t` (p the parity so far); output `t mod 2`; intermediate variables: the new parity;
    remaining input: the bits not yet read.

    Args:
        scratchpad: put a scratchpad before the answer; `scratchpad_<part>` switches each part.
    """

    def __init__(
        self,
        scratchpad: bool = False,
        scratchpad_input: bool = True,
        scratchpad_computation: bool = True,
        scratchpad_output: bool = True,
        scratchpad_intermediate: bool = True,
        scratchpad_remaining: bool = True,
    ) -> None:
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
        return self.scratchpad_symbols(("0", "1"))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        bits = [rng.choice("01") for _ in range(length)]
        steps, parity = [], 0
        for index, bit in enumerate(bits):
            total = parity + int(bit)
            steps.append(
                Step(
                    input=[bit],
                    computation=[str(parity), "+", bit, "=", str(total)],
                    output=[str(total % 2)],
                    intermediate=[str(total % 2)],
                    remaining=bits[index + 1 :],
                )
            )
            parity = total % 2
        return bits, self.target_with_scratchpad(steps, [str(parity)])
