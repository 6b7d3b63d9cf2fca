"""PCFG SET: nested string-edit functions (the productivity split of Hupkes et al. 2020)."""

from __future__ import annotations

import random
import string

from lengen.task import Task

UNARY = {
    "copy": lambda x: x,
    "reverse": lambda x: x[::-1],
    "shift": lambda x: x[1:] + x[:1],
    "echo": lambda x: x + x[-1:],
    "swap_first_last": lambda x: x[-1:] + x[1:-1] + x[:1] if len(x) > 1 else x,
    "repeat": lambda x: x + x,
}
BINARY = {
    "append": lambda x, y: x + y,
    "prepend": lambda x, y: y + x,
    "remove_first": lambda x, y: y,
    "remove_second": lambda x, y: x,
}


class Pcfg(Task):
    """PCFG SET (Hupkes et al. 2020, "Compositionality decomposed") at a toy scale.

    The input is a prefix expression of exactly `length` functions over strings of letters, binary
    arguments separated by `,` (e.g. `append reverse A B , repeat C`); the target is its value
    (`B A C C`). Functions: copy, reverse, shift (first letter to the end), echo (repeat the last
    letter), swap_first_last, repeat (the whole string twice); append, prepend, remove_first,
    remove_second. Leaves are 1..max_leaf_length letters from an alphabet of `num_letters`; an
    expression whose value exceeds `max_output_length` letters is redrawn. The length is the number
    of functions, as in the productivity split. Default split (productivity): train on 1..8
    functions, test on 9 and more.

    Args:
        num_letters: alphabet size (A, B, ...; at most 26; PCFG SET has 520).
        max_leaf_length: longest leaf string (PCFG SET: 5).
        max_output_length: longest accepted value.
    """

    def __init__(
        self, num_letters: int = 26, max_leaf_length: int = 3, max_output_length: int = 64
    ) -> None:
        if not 2 <= num_letters <= 26:
            raise ValueError(f"Pcfg: num_letters={num_letters} must be in 2..26")
        if max_leaf_length < 1 or max_output_length < max_leaf_length:
            raise ValueError(
                f"Pcfg: need 1 <= max_leaf_length <= max_output_length, got {max_leaf_length} "
                f"and {max_output_length}"
            )
        self.num_letters = num_letters
        self.max_leaf_length = max_leaf_length
        self.max_output_length = max_output_length

    @property
    def letters(self) -> str:
        return string.ascii_uppercase[: self.num_letters]

    @property
    def symbols(self) -> tuple[str, ...]:
        return (*self.letters, *UNARY, *BINARY, ",")

    def _expression(self, num_functions: int, rng: random.Random) -> tuple[list[str], list[str]]:
        """(tokens, value) of a random expression with exactly `num_functions` functions."""
        if num_functions == 0:
            leaf = [rng.choice(self.letters) for _ in range(rng.randint(1, self.max_leaf_length))]
            return leaf, leaf
        name = rng.choice((*UNARY, *BINARY))
        if name in UNARY:
            tokens, value = self._expression(num_functions - 1, rng)
            return [name, *tokens], UNARY[name](value)
        left_functions = rng.randint(0, num_functions - 1)
        left, left_value = self._expression(left_functions, rng)
        right, right_value = self._expression(num_functions - 1 - left_functions, rng)
        return [name, *left, ",", *right], BINARY[name](left_value, right_value)

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        for _ in range(1000):
            tokens, value = self._expression(length, rng)
            if len(value) <= self.max_output_length:
                return tokens, value
        raise ValueError(
            f"Pcfg: no expression of {length} functions with a value of at most "
            f"{self.max_output_length} letters in 1000 draws; raise max_output_length"
        )
