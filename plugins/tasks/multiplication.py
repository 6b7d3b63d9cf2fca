"""Decimal multiplication in the reversed format of the arithmetic length-generalization papers."""

from __future__ import annotations

import random

from lengen.task import Task
from lengen_plugins.tasks.index_hints import HINT_SYMBOLS, check_num_hints, hint_run, with_hints


class DecimalMultiplication(Task):
    """Multiply a `length`-digit number by a `second_digits`-digit one (decimal).

    The setups of McLeish et al. 2024 ("Transformers Can Do Arithmetic with the Right
    Embeddings", Abacus: N x N multiplication, operands and product least significant digit first)
    and Cho et al. 2024 ("Position Coupling", N x 2 multiplication with reversed product). The
    length is the number of digits of the first operand; the second has `second_digits` digits
    (0: as many as the first). Operands are uniform over [0, 10^digits), written with leading
    zeros; the product is written with exactly length + second digits, so the target length
    depends only on the requested length. Input: `a * b`; target: the product.

    With `reverse_digits` (default) operands and product are written least significant digit
    first. With `index_hints` every digit is preceded by the hint of its significance
    (lengen_plugins.tasks.index_hints; Zhou et al. 2024 used hints for addition, lengen applies
    the same rule, hint k = significance 10^k, to multiplication).

    Args:
        second_digits: digits of the second operand; 0 = same as the first (Abacus N x N).
        reverse_digits: least significant digit first.
        index_hints: put a hint symbol before every digit.
        num_hints: size of the hint alphabet (1..52); the product needs that many hints.
        random_hint_offset: start each instance's hints at a random place in the alphabet.
    """

    def __init__(
        self,
        second_digits: int = 0,
        reverse_digits: bool = True,
        index_hints: bool = False,
        num_hints: int = 52,
        random_hint_offset: bool = True,
    ) -> None:
        if isinstance(second_digits, bool) or not 0 <= second_digits <= 50:
            raise ValueError(f"DecimalMultiplication: second_digits={second_digits!r} not in 0..50")
        self.second_digits = second_digits
        self.reverse_digits = reverse_digits
        self.index_hints = index_hints
        self.num_hints = check_num_hints("DecimalMultiplication", num_hints)
        self.random_hint_offset = random_hint_offset

    @property
    def symbols(self) -> tuple[str, ...]:
        hints = HINT_SYMBOLS[: self.num_hints] if self.index_hints else ()
        return (*"0123456789", "*", *hints)

    def _digits(self, value: int, width: int) -> list[str]:
        digits = list(str(value).zfill(width))
        return digits[::-1] if self.reverse_digits else digits

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        second = self.second_digits or length
        a, b = rng.randrange(10**length), rng.randrange(10**second)
        a_digits, b_digits = self._digits(a, length), self._digits(b, second)
        product = self._digits(a * b, length + second)
        if self.index_hints:
            hints = hint_run(length + second, self.num_hints, self.random_hint_offset, rng)
            a_digits = with_hints(a_digits, hints, self.reverse_digits)
            b_digits = with_hints(b_digits, hints, self.reverse_digits)
            product = with_hints(product, hints, self.reverse_digits)
        return [*a_digits, "*", *b_digits], product
