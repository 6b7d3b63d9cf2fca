"""RULER's needle-in-a-haystack: single, multi-key, multi-value and multi-query."""

from __future__ import annotations

import random
import uuid

from lengen_plugins.tasks.retrieval import ByteTask, check_location, needle_offset, to_symbols
from lengen_plugins.tasks.ruler_common import (
    ANSWER_SEPARATOR,
    check_choice,
    check_count,
    distinct,
    haystack_text,
    insert_all,
    pseudo_word,
)

NEEDLE_TYPES = ("numbers", "words", "uuids")


class RulerNIAH(ByteTask):
    """Find every value of the asked key(s) (Hsieh et al. 2024, RULER, NIAH; NVIDIA/RULER
    scripts/data/synthetic/niah.py).

    Needles are RULER's sentence `One of the special magic {value_type} for {key} is: {value}.`,
    each on its own line, inserted at random byte offsets inside `location` of the haystack;
    the input (exactly `length` bytes) ends with the question
    `What are all the special magic {value_type} for {query}? Answer: `, where query is the
    asked key, or several keys written `k1, k2, and k3` (RULER's wording). Target: all values of
    the asked keys (in the question's order), each key's values in the order they appear in the
    context, joined by `,`; score with StringMatchAll (RULER's metric for NIAH) or
    StringMatchPart. RULER lists a key's values in creation order, and its needle shuffle is
    the same permutation in every example (a fixed seed), so that order is a fixed function of
    the context order. Here needles sit at independent random offsets, where creation order
    could not be read from the input: context order keeps a trained model's target a function of
    its input. Scoring is order-free either way.

    RULER's variants are argument settings (configs/tasks/ruler_niah_*.yaml): single
    (num_keys=1), multi-key (num_keys=4: three distractor keys), multi-value (num_values=4),
    multi-query (num_queries=4); haystack "needle" fills the context with distractor needles of
    other keys (RULER's niah_multikey_2/3). num_keys is raised to num_queries, as RULER does.

    Toy-scale defaults: values are 7-digit numbers (RULER's), keys 2 pseudo-words of 4 letters
    joined by `-` (RULER: adjective-noun), so a needle is about 60 bytes.

    Args:
        num_keys, num_values, num_queries: RULER's num_needle_k / _v / _q.
        key_type, value_type: "numbers" (value_digits digits), "words" or "uuids".
        haystack: "noise" (RULER's repeated sentences), "essay" (the embedded corpus) or "needle".
        location: where needles go, for `lengen heatmap`: "start", "middle", "end" or "any".
        value_digits: digits of a "numbers" needle (RULER: 7).
    """

    def __init__(
        self,
        num_keys: int = 1,
        num_values: int = 1,
        num_queries: int = 1,
        key_type: str = "words",
        value_type: str = "numbers",
        haystack: str = "noise",
        location: str = "any",
        value_digits: int = 7,
    ) -> None:
        name = "RulerNIAH"
        self.num_queries = check_count(name, "num_queries", num_queries, 1, 64)
        self.num_keys = max(check_count(name, "num_keys", num_keys, 1, 64), num_queries)
        self.num_values = check_count(name, "num_values", num_values, 1, 64)
        self.key_type = check_choice(name, "key_type", key_type, NEEDLE_TYPES)
        self.value_type = check_choice(name, "value_type", value_type, NEEDLE_TYPES)
        self.haystack = check_choice(name, "haystack", haystack, ("noise", "essay", "needle"))
        self.location = check_location(name, location)
        self.value_digits = check_count(name, "value_digits", value_digits, 1, 20)

    def _random(self, kind: str, rng: random.Random) -> str:
        if kind == "numbers":
            return str(rng.randrange(10 ** (self.value_digits - 1), 10**self.value_digits))
        if kind == "words":
            return f"{pseudo_word(4, rng)}-{pseudo_word(4, rng)}"
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def _needle(self, key: str, value: str) -> bytes:
        return f"\nOne of the special magic {self.value_type} for {key} is: {value}.\n".encode()

    def _question(self, keys: list[str]) -> bytes:
        query = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + ", and " + keys[-1]
        return f"\nWhat are all the special magic {self.value_type} for {query}? Answer: ".encode()

    def _sizes(self) -> tuple[int, int]:
        """Bytes of one needle and of the question (every instance of a type has equal sizes)."""
        rng = random.Random(0)
        keys = [self._random(self.key_type, rng) for _ in range(self.num_queries)]
        return len(self._needle(keys[0], self._random(self.value_type, rng))), len(
            self._question(keys)
        )

    @property
    def min_length(self) -> int:
        needle, question = self._sizes()
        return needle * self.num_keys * self.num_values + question

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        keys = distinct(lambda r: self._random(self.key_type, r), self.num_keys, rng)
        values = distinct(
            lambda r: self._random(self.value_type, r), self.num_keys * self.num_values, rng
        )
        needles = [
            (keys[k], values[k * self.num_values + v])
            for k in range(self.num_keys)
            for v in range(self.num_values)
        ]
        asked = sorted(rng.sample(range(self.num_keys), self.num_queries))
        question = self._question([keys[k] for k in asked])
        needle_bytes = b"".join(self._needle(key, value) for key, value in needles)
        room = length - len(needle_bytes) - len(question)
        if self.haystack == "needle":
            text = self._needle_haystack(room, set(keys), set(values), rng)
        else:
            text = haystack_text(self.haystack, room, rng)
        offsets = [needle_offset(room, self.location, rng) for _ in needles]
        if self.haystack == "needle":  # between distractor needles, not inside one
            size, _ = self._sizes()
            pad = room % size  # newlines before the distractors (_needle_haystack)
            offsets = [at if at <= pad else pad + (at - pad) // size * size for at in offsets]
        pieces = [(at, self._needle(key, value)) for at, (key, value) in zip(offsets, needles)]
        context = insert_all(text, pieces) + question
        # Each asked key's values in context order (equal offsets keep the needles' order).
        in_context_order = sorted(range(len(needles)), key=lambda i: (offsets[i], i))
        answers = [values[i] for k in asked for i in in_context_order if i // self.num_values == k]
        return to_symbols(context), list(ANSWER_SEPARATOR.join(answers))

    def _needle_haystack(
        self, room: int, keys: set[str], values: set[str], rng: random.Random
    ) -> bytes:
        """Distractor needles with fresh keys and values, newline padding at the start."""
        per_needle, _ = self._sizes()
        count = room // per_needle
        other_keys = distinct(lambda r: self._random(self.key_type, r), count, rng, keys)
        other_values = distinct(lambda r: self._random(self.value_type, r), count, rng, values)
        lines = b"".join(self._needle(k, v) for k, v in zip(other_keys, other_values))
        return b"\n" * (room - len(lines)) + lines
