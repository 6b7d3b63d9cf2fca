"""Addition: the decimal sum of two multi-digit numbers."""

from __future__ import annotations

import random

from lengen.task import Task
from lengen_plugins.tasks.index_hints import HINT_SYMBOLS, check_num_hints, hint_run, with_hints
from lengen_plugins.tasks.scratchpad import ScratchpadFormat, Step, number


class Addition(ScratchpadFormat, Task):
    """Add two random `length`-digit decimal numbers (Kazemnejad et al. 2023).

    The length is the number of digits of each operand; operands are uniform over
    [0, 10^length), written with leading zeros to exactly `length` digits. Input:
    `a_digits + b_digits`; target: the sum written with `length + 1` digits (a leading 0 when there
    is no final carry), so the target length depends only on the requested length.

    With `scratchpad`, the target is one step per column, least significant first, then `<ans>`
    and the sum (see lengen_plugins.tasks.scratchpad): input `a_i b_i`; computation
    `a_i + b_i + carry = s`; output `s mod 10`; intermediate variables: the new carry; remaining
    input: the digits of a and b not yet added, `a_rest + b_rest`.

    With `reverse_digits` this is the reversed format of the Abacus embeddings (McLeish et al.
    2024, "Transformers Can Do Arithmetic with the Right Embeddings": operands and sum least
    significant digit first) and, with zero-padded equal-length operands, of position coupling
    (Cho et al. 2024, "Position Coupling: Improving Length Generalization of Arithmetic
    Transformers Using Task Structure"). With `index_hints` every digit is preceded by its index
    hint (Zhou et al. 2024, see lengen_plugins.tasks.index_hints), e.g. reversed 54+37:
    `a4b5+a7b3` -> `a1b9c0`. Index hints and the scratchpad are exclusive.

    Args:
        reverse_digits: write operands and sum least-significant digit first, the order in which
            the carry propagates (an easier format used in several length-generalization studies).
        scratchpad: put a scratchpad before the answer; `scratchpad_<part>` switches each part.
        index_hints: put a hint symbol before every digit of the operands and the sum.
        num_hints: size of the hint alphabet (1..52); instances need length + 1 <= num_hints.
        random_hint_offset: start each instance's hints at a random place in the alphabet.
    """

    def __init__(
        self,
        reverse_digits: bool = False,
        scratchpad: bool = False,
        scratchpad_input: bool = True,
        scratchpad_computation: bool = True,
        scratchpad_output: bool = True,
        scratchpad_intermediate: bool = True,
        scratchpad_remaining: bool = True,
        index_hints: bool = False,
        num_hints: int = 52,
        random_hint_offset: bool = True,
    ) -> None:
        if index_hints and scratchpad:
            raise ValueError("Addition: index_hints and scratchpad cannot be combined")
        self.reverse_digits = reverse_digits
        self.index_hints = index_hints
        self.num_hints = check_num_hints("Addition", num_hints)
        self.random_hint_offset = random_hint_offset
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
        hints = HINT_SYMBOLS[: self.num_hints] if self.index_hints else ()
        return self.scratchpad_symbols((*"0123456789", "+", *hints))

    def _digits(self, value: int, width: int) -> list[str]:
        digits = list(str(value).zfill(width))
        return digits[::-1] if self.reverse_digits else digits

    def _steps(self, a: int, b: int, length: int) -> list[Step]:
        a_digits, b_digits = str(a).zfill(length), str(b).zfill(length)
        steps, carry = [], 0
        for column in range(length - 1, -1, -1):
            x, y = int(a_digits[column]), int(b_digits[column])
            total = x + y + carry
            remaining = [*self._rest(a_digits[:column]), "+", *self._rest(b_digits[:column])]
            steps.append(
                Step(
                    input=[str(x), str(y)],
                    computation=[str(x), "+", str(y), "+", str(carry), "=", *number(total)],
                    output=[str(total % 10)],
                    intermediate=[str(total // 10)],
                    remaining=remaining,
                )
            )
            carry = total // 10
        return steps

    def _rest(self, digits: str) -> list[str]:
        return list(digits[::-1] if self.reverse_digits else digits)

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        a, b = rng.randrange(10**length), rng.randrange(10**length)
        inputs = [*self._digits(a, length), "+", *self._digits(b, length)]
        answer = self._digits(a + b, length + 1)
        if self.index_hints:
            hints = hint_run(length + 1, self.num_hints, self.random_hint_offset, rng)
            a_part = with_hints(self._digits(a, length), hints, self.reverse_digits)
            b_part = with_hints(self._digits(b, length), hints, self.reverse_digits)
            return [*a_part, "+", *b_part], with_hints(answer, hints, self.reverse_digits)
        steps = self._steps(a, b, length) if self.scratchpad else []
        return inputs, self.target_with_scratchpad(steps, answer)
