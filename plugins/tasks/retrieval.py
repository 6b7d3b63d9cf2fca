"""Shared parts of the long-context retrieval tasks: byte-level symbols, real-text filler, and
where in the context the needle goes.

The symbols are the 256 byte values, each as a one-character string (chr(byte)); the length of an
instance is its number of input bytes (tokens), so a model sees `length + 2` prompt tokens (BOS,
input, SEP) and then generates the answer. The filler is the running interpreter's own
standard-library source (lengen.data.text.stdlib_source_files): real text on every machine, no
download; a different Python version gives different (equally valid) filler.
"""

from __future__ import annotations

import functools
import random

from lengen.task import SPECIAL_TOKENS, Task

# Where the needle starts, as a fraction of the room it can start in (Abacus AI's WikiQA: the
# first 10%, the bulk / middle, the last 10% of the document).
LOCATIONS = {"start": (0.0, 0.1), "middle": (0.45, 0.55), "end": (0.9, 1.0), "any": (0.0, 1.0)}


@functools.cache
def stdlib_corpus() -> bytes:
    """The standard library's .py files, concatenated in sorted order (read once per process)."""
    from lengen.data.text import stdlib_source_files  # imports lightning: only when needed

    return b"\n".join(path.read_bytes() for path in stdlib_source_files())


def to_symbols(text: bytes) -> list[str]:
    """Bytes -> one-character symbols (latin-1 maps byte b to chr(b))."""
    return list(text.decode("latin-1"))


def to_bytes(symbols: list[str]) -> bytes:
    return "".join(symbols).encode("latin-1")


def filler(num_bytes: int, rng: random.Random) -> bytes:
    """`num_bytes` consecutive bytes of the corpus from a random offset."""
    corpus = stdlib_corpus()
    start = rng.randrange(len(corpus) - num_bytes) if num_bytes else 0
    return corpus[start : start + num_bytes]


def check_location(task: str, location: str) -> str:
    if location not in LOCATIONS:
        raise ValueError(
            f"{task}: location={location!r}; accepted: {', '.join(repr(k) for k in LOCATIONS)}"
        )
    return location


def needle_offset(room: int, location: str, rng: random.Random) -> int:
    """An offset in 0..room inside the location's fraction of the room."""
    low, high = LOCATIONS[location]
    return rng.randint(round(low * room), round(high * room))


class ByteTask(Task):
    """A task over the 256 byte values; `encode` maps chr(b) to its id in one step."""

    symbols = tuple(chr(byte) for byte in range(256))

    def encode(self, symbols: list[str]) -> list[int]:
        offset = len(SPECIAL_TOKENS)
        return [offset + ord(symbol) for symbol in symbols]

    def to_text(self, symbols: list[str]) -> str:
        """The bytes as UTF-8 text (an invalid sequence becomes U+FFFD); a special token's name
        (`<eos>`) is ASCII, so it passes through as written."""
        return to_bytes(symbols).decode("utf-8", errors="replace")

    def from_text(self, text: str) -> list[str]:
        """A string -> its UTF-8 bytes as symbols."""
        return to_symbols(text.encode("utf-8"))
