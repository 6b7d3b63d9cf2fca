"""Missing duplicate (context-sensitive): the symbol hidden in a duplicated string."""

from __future__ import annotations

import random

from lengen.task import Task


class MissingDuplicate(Task):
    """Recover the hidden symbol of `ww` (Delétang et al. 2023, CS: missing duplicate string).

    A random binary string w of `length // 2` bits is written twice; one position of `ww` is
    replaced by `_`; an odd length is padded with one `#` at the end. Target: the hidden bit.
    Default split: train 2..40 (length 1 is degenerate in the paper), test 41..500.
    """

    symbols = ("0", "1", "_", "#")
    min_length = 2

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        half = [rng.choice("01") for _ in range(length // 2)]
        doubled = half + half
        position = rng.randrange(len(doubled))
        hidden = doubled[position]
        doubled[position] = "_"
        return doubled + ["#"] * (length % 2), [hidden]
