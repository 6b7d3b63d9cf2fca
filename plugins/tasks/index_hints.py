"""Index hints for the arithmetic tasks (Zhou et al. 2024, "What Algorithms can Transformers
Learn? A Study in Length Generalization", ICLR 2024, section 5).

Each digit is preceded by a hint symbol naming its significance, and digits of the same
significance share the hint in every operand and in the answer, so a model can find the digits
to combine by matching hints (an induction-head lookup) instead of counting positions. Y. Zhou et
al. 2024 ("Transformers Can Achieve Length Generalization But Not Robustly") combine the same
hints with the reversed format. The example `54+37>91` -> `a5b4+a3b7>a9b1` is recalled, not
checked: neither paper's text could be retrieved (unverified). What was checked is the authors'
released code (apple/ml-np-rasp, examples/test_add.py `format_prompt` and examples/add.py
`next_tok_addition`): both operands are zero-padded on the left to one more digit than the longer
one, hint i (counted from the left, 0, 1, ...) precedes the i-th digit of each operand, and the
answer repeats the same hint per column (forward order from the first hint, reversed order from
the last); only the answer is reversed there, never the operands. With its hint tokens -100,
-101, ... written a, b, ..., 54+37 reads `a0b5c4+a0b3c7=`: the hints of a column are equal, as
in lengen's rule below, but lengen adds no extra leading zero. lengen writes the hint
symbols as the letters a-z then A-Z (at most 52 hints, so at most 52 answer digits).

Format chosen here (the paper's recipe, as lengen applies it): the hints of an instance are a run
of consecutive hint symbols starting at a random offset in the hint alphabet (the paper samples
the run at random so that every hint is trained, also those only long test instances reach);
hint k of the run marks the digit of significance 10^k wherever it appears. With
`random_hint_offset=False` the run always starts at `a`. In the reversed format this letters the
digits left to right as in the paper (54+37 reversed: `a4b5+a7b3` -> `a1b9c0`); in the standard
order the letters run right to left (`b5a4+b3a7` -> `c0b9a1`), because the sum has one digit more
than the operands and only lettering by significance keeps the hints of a column equal.
"""

from __future__ import annotations

import random
import string

HINT_SYMBOLS = tuple(string.ascii_lowercase + string.ascii_uppercase)


def check_num_hints(task: str, num_hints: int) -> int:
    if isinstance(num_hints, bool) or not 1 <= num_hints <= len(HINT_SYMBOLS):
        raise ValueError(f"{task}: num_hints={num_hints!r} must be in 1..{len(HINT_SYMBOLS)}")
    return num_hints


def hint_run(num_digits: int, num_hints: int, random_offset: bool, rng: random.Random) -> list[str]:
    """`num_digits` consecutive hint symbols; hint k marks significance 10^k."""
    if num_digits > num_hints:
        raise ValueError(
            f"index hints: {num_digits} digits need {num_digits} hints, only num_hints={num_hints}"
        )
    start = rng.randint(0, num_hints - num_digits) if random_offset else 0
    return list(HINT_SYMBOLS[start : start + num_digits])


def with_hints(digits: list[str], hints: list[str], reversed_order: bool) -> list[str]:
    """Interleave hint and digit, hint first. `digits` are written most significant first unless
    `reversed_order`; `hints[k]` belongs to the digit of significance 10^k."""
    significance = range(len(digits)) if reversed_order else range(len(digits) - 1, -1, -1)
    out: list[str] = []
    for digit, k in zip(digits, significance):
        out += [hints[k], digit]
    return out
