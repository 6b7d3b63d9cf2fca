"""Needle question answering on real text, with the "altered numeric" variant."""

from __future__ import annotations

import functools
import random
import re

from lengen_plugins.tasks.retrieval import (
    ByteTask,
    check_location,
    filler,
    needle_offset,
    stdlib_corpus,
    to_symbols,
)

# A module-level integer constant of the standard library, e.g. `MAXLINE = 8192`.
CONSTANT = re.compile(rb"^([A-Z][A-Z0-9_]{2,23}) = ([1-9][0-9]{1,5})[ \t]*$", re.MULTILINE)


@functools.cache
def stdlib_constants() -> tuple[tuple[str, str], ...]:
    """(name, value) of the corpus's integer constants whose name has one value everywhere."""
    values: dict[str, set[str]] = {}
    for match in CONSTANT.finditer(stdlib_corpus()):
        values.setdefault(match.group(1).decode(), set()).add(match.group(2).decode())
    return tuple(sorted((name, next(iter(v))) for name, v in values.items() if len(v) == 1))


def altered_value(value: str, rng: random.Random) -> str:
    """A different number (Abacus AI's AltQA rule): a year 1000-2100 moves by 1-10 either way;
    any other number becomes a random number with the same count of digits."""
    number = int(value)
    if 1000 <= number <= 2100:
        return str(number + rng.choice([d for d in range(-10, 11) if d]))
    while True:
        other = str(rng.randrange(10 ** (len(value) - 1), 10 ** len(value)))
        if other != value:
            return other


class NeedleQA(ByteTask):
    """Answer a question about a fact placed at a chosen depth of a long context.

    The needle is a real line of the standard library, a module constant `NAME = VALUE` (e.g.
    `MAXLINE = 8192`), placed inside `location` of standard-library filler that does not mention
    NAME; the context ends with the question `What is the value of NAME? NAME = `. Target: VALUE.
    Input: exactly `length` bytes. This follows Abacus AI's WikiQA (free-form QA, the answer in the
    first 10%, the middle or the last 10% of the document, scored by presence accuracy).

    With `altered`, VALUE and every occurrence of it in the context are replaced by a different
    number (a year 1000-2100 by one within +-10, any other number by one with as many digits), so a
    model that memorised the standard library (lengen's default language-model corpus) answers
    wrongly unless it reads the context: Abacus AI's Altered Numeric QA.

    Args:
        location: "start" (first 10%), "middle" (45%-55%), "end" (last 10%) or "any".
        altered: replace the answer number as described above.
    """

    min_length = 128

    def __init__(self, location: str = "any", altered: bool = False) -> None:
        self.location = check_location("NeedleQA", location)
        self.altered = altered

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        constants = stdlib_constants()
        for _ in range(100):
            name, value = rng.choice(constants)
            needle = f"\n{name} = {value}\n".encode()
            question = f"\nWhat is the value of {name}? {name} = ".encode()
            room = length - len(needle) - len(question)
            if room < 0:
                continue
            haystack = filler(room, rng)
            if name.encode() in haystack:
                continue  # the context must hold the fact once, in the needle
            at = needle_offset(room, self.location, rng)
            context = haystack[:at] + needle + haystack[at:] + question
            if self.altered:
                new_value = altered_value(value, rng)
                pattern = rb"(?<![0-9])" + value.encode() + rb"(?![0-9])"
                context = re.sub(pattern, new_value.encode(), context)
                # Replacing can change the byte count when a year crosses a digit boundary;
                # keep the exact length by trimming or padding the filler's start.
                context = context[max(0, len(context) - length) :].rjust(length, b" ")
                value = new_value
            return to_symbols(context), list(value)
        raise ValueError(f"NeedleQA: no needle fits a context of {length} bytes")
