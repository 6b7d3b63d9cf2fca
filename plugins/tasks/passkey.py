"""Passkey retrieval: a number hidden in real-text filler, asked for at the end."""

from __future__ import annotations

import random

from lengen_plugins.tasks.retrieval import (
    ByteTask,
    check_location,
    filler,
    needle_offset,
    to_symbols,
)

QUESTION = b"\nWhat is the pass key? The pass key is "


class Passkey(ByteTask):
    """Find the pass key in a long context (Mohtashami & Jaggi 2023, landmark attention).

    Input (bytes, exactly `length` of them): standard-library source text with the needle
    `The pass key is N. Remember it. N is the pass key.` inserted at a random offset inside
    `location`, then the question `What is the pass key? The pass key is `. Target: the
    `num_digits` digits of N (first digit non-zero). The length is the context length in bytes
    (= tokens); lengths below `min_length` (needle + question) are rejected. Evaluate with
    PresenceAccuracy or ExactMatch, one run per location, and `lengen heatmap`.

    Args:
        num_digits: digits of the pass key (5 in Mohtashami & Jaggi).
        location: where the needle starts: "start" (first 10% of the context), "middle"
            (45%-55%), "end" (last 10%) or "any".
    """

    def __init__(self, num_digits: int = 5, location: str = "any") -> None:
        if not 1 <= num_digits <= 20:
            raise ValueError(f"Passkey: num_digits={num_digits} must be in 1..20")
        self.num_digits = num_digits
        self.location = check_location("Passkey", location)

    def _needle(self, key: str) -> bytes:
        return f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n".encode()

    @property
    def min_length(self) -> int:
        return len(self._needle("0" * self.num_digits)) + len(QUESTION)

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        key = str(rng.randrange(10 ** (self.num_digits - 1), 10**self.num_digits))
        needle = self._needle(key)
        haystack = filler(length - len(needle) - len(QUESTION), rng)
        at = needle_offset(len(haystack), self.location, rng)
        context = haystack[:at] + needle + haystack[at:] + QUESTION
        return to_symbols(context), list(key)
