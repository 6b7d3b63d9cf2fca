"""Shared parts of the RULER tasks (Hsieh et al. 2024, "RULER: What's the Real Context Size of
Your Long-Context Language Models?"; reference code NVIDIA/RULER, scripts/data/synthetic).

lengen is byte-level at toy scale: an instance's length is its number of input bytes (tokens),
typically 256-4096, where RULER's are 4K-128K subword tokens. So the prompts keep RULER's needle
and statement formats but drop its instruction preamble and shorten its question (the preamble
alone would fill a 128-byte context), and the random words are pseudo-words of lowercase letters
(RULER draws English words from the `wonderwords` lists, which lengen cannot download).
A target holding several answers joins them with `,` (ANSWER_SEPARATOR); the metrics
StringMatchAll / StringMatchPart split it there (RULER's string_match_all / string_match_part).
"""

from __future__ import annotations

import random
import string

from lengen_plugins.tasks.retrieval import filler

# RULER's "noise" haystack: one sentence block repeated (scripts/data/synthetic/niah.py).
NOISE = b"The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
ANSWER_SEPARATOR = ","
HAYSTACKS = ("noise", "essay")


def check_choice(task: str, name: str, value: str, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(
            f"{task}: {name}={value!r}; accepted: {', '.join(repr(a) for a in accepted)}"
        )
    return value


def check_count(task: str, name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{task}: {name}={value!r} must be an integer in {low}..{high}")
    return value


def haystack_text(kind: str, num_bytes: int, rng: random.Random) -> bytes:
    """`num_bytes` of haystack: "noise" repeats RULER's noise block (lines joined by a newline,
    cut at `num_bytes`); "essay" is consecutive bytes of the embedded standard-library corpus
    (lengen's stand-in for RULER's Paul Graham essays; lengen_plugins.tasks.retrieval.filler)."""
    if kind == "essay":
        return filler(num_bytes, rng)
    repeats = num_bytes // (len(NOISE) + 1) + 1
    return (b"\n".join([NOISE] * repeats))[:num_bytes]


def pseudo_word(letters: int, rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=letters))


def distinct(make, count: int, rng: random.Random, avoid: set[str] = frozenset()) -> list[str]:
    """`count` distinct values of `make(rng)`, none in `avoid`."""
    seen, out = set(avoid), []
    while len(out) < count:
        value = make(rng)
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


def insert_all(text: bytes, pieces: list[tuple[int, bytes]]) -> bytes:
    """Insert each (offset in the original `text`, bytes); equal offsets keep the given order."""
    out, last = [], 0
    for offset, piece in sorted(pieces, key=lambda item: item[0]):
        out += [text[last:offset], piece]
        last = offset
    return b"".join(out) + text[last:]
