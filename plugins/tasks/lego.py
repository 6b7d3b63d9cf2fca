"""LEGO: resolve the sign of a variable through a shuffled chain of assignments."""

from __future__ import annotations

import random
import string

from lengen.task import Task


class Lego(Task):
    """Learning Equality and Group Operations (Zhang et al. 2022), as in Kazemnejad et al. 2023.

    A chain of `length` variables v1 .. vn is defined by clauses `v1 = s 1` and
    `v_i = s v_{i-1}` with random signs s in {+, -}; the clauses are shuffled, joined by `,`, and
    followed by `? v_k` for a uniformly chosen k. Target: the value of v_k, `+ 1` or `- 1`. The
    length is the number of clauses. Variables are distinct letters, so length <= num_variables.

    Args:
        num_variables: size of the variable alphabet (letters a.. ; at most 26).
    """

    def __init__(self, num_variables: int = 26) -> None:
        if not 2 <= num_variables <= 26:
            raise ValueError(f"Lego: num_variables={num_variables} must be in 2..26")
        self.num_variables = num_variables

    @property
    def symbols(self) -> tuple[str, ...]:
        return (*string.ascii_lowercase[: self.num_variables], "=", "+", "-", "1", ",", "?")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        if length > self.num_variables:
            raise ValueError(
                f"Lego: length {length} needs as many variables; num_variables={self.num_variables}"
            )
        names = rng.sample(string.ascii_lowercase[: self.num_variables], length)
        clauses, values, previous = [], {}, "1"
        for name in names:
            sign = rng.choice("+-")
            value = 1 if previous == "1" else values[previous]
            values[name] = value if sign == "+" else -value
            clauses.append([name, "=", sign, previous])
            previous = name
        rng.shuffle(clauses)
        query = rng.choice(names)
        inputs = [
            symbol
            for index, clause in enumerate(clauses)
            for symbol in ([","] if index else []) + clause
        ]
        return [*inputs, "?", query], ["+" if values[query] > 0 else "-", "1"]
