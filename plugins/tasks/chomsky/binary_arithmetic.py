"""Binary addition and multiplication (context-sensitive), little-endian."""

from __future__ import annotations

import random

from lengen.task import Task


def little_endian(value: int, width: int = 0) -> list[str]:
    """Bits of `value`, least significant first, zero-padded to `width` (no padding at 0)."""
    return list(format(value, "b").zfill(width)[::-1]) if width or value else []


class _BinaryOperation(Task):
    """`n OP m` in little-endian binary; the result without trailing (most significant) zeros.

    The operand widths split `length - 1` uniformly (each >= 1); each operand is uniform in
    1 .. 2^width - 1, zero-padded to its width. Lengths 1 and 2 are degenerate in the paper, so the
    minimum length is 3.
    """

    symbols = ("0", "1", "+", "*")
    min_length = 3
    operator = ""

    def apply(self, left: int, right: int) -> int:
        raise NotImplementedError

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        left_width = rng.randint(1, length - 2)
        right_width = length - 1 - left_width
        left = rng.randint(1, 2**left_width - 1)
        right = rng.randint(1, 2**right_width - 1)
        inputs = [
            *little_endian(left, left_width),
            self.operator,
            *little_endian(right, right_width),
        ]
        return inputs, little_endian(self.apply(left, right))


class BinaryAddition(_BinaryOperation):
    """Add two little-endian binary numbers (Delétang et al. 2023, CS).

    Input: `n + m`, `length` symbols in all, operands little-endian; target: n + m little-endian
    without trailing zeros. Default split: train 3..40, test 41..500.
    """

    operator = "+"

    def apply(self, left: int, right: int) -> int:
        return left + right


class BinaryMultiplication(_BinaryOperation):
    """Multiply two little-endian binary numbers (Delétang et al. 2023, CS).

    Input: `n * m`, `length` symbols in all, operands little-endian; target: n * m little-endian
    without trailing zeros. Default split: train 3..40, test 41..500.
    """

    operator = "*"

    def apply(self, left: int, right: int) -> int:
        return left * right
