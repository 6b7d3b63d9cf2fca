"""The interface of a task plugin: (input, target) symbol sequences for a requested length.

A task names its symbols; token ids are shared specials first, then the task's symbols. An example
is laid out as `BOS input SEP target EOS`; the loss and the metrics see only `target EOS`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PAD, BOS, SEP, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<sep>", "<eos>")


@dataclass(frozen=True)
class Example:
    """One example as token ids; `length` is the requested length (the evaluation bucket)."""

    prompt: list[int]  # BOS input SEP
    target: list[int]  # target EOS
    length: int


class Task:
    """Base class of task plugins. Subclasses set `symbols` and implement `generate`.

    Constructor arguments must be plain values (ints, floats, strings, bools) stored as attributes
    of the same name: they identify the task in the evaluation-set cache.
    """

    symbols: tuple[str, ...] = ()
    min_length: int = 1

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        """Return (input symbols, target symbols) for an instance of the requested `length`."""
        raise NotImplementedError

    @property
    def vocab(self) -> tuple[str, ...]:
        return SPECIAL_TOKENS + tuple(self.symbols)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, symbols: list[str]) -> list[int]:
        offset = len(SPECIAL_TOKENS)
        return [offset + self.symbols.index(symbol) for symbol in symbols]

    def decode(self, token_ids: list[int]) -> list[str]:
        return [self.vocab[i] for i in token_ids]

    def make_example(self, length: int, rng: random.Random) -> Example:
        if length < self.min_length:
            raise ValueError(
                f"{type(self).__name__} needs length >= {self.min_length}, got {length}"
            )
        inputs, target = self.generate(length, rng)
        return Example(
            prompt=[BOS, *self.encode(inputs), SEP],
            target=[*self.encode(target), EOS],
            length=length,
        )

    def identity(self) -> dict:
        """The task's class and arguments, as plain data (cache keys, results.json)."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", **vars(self)}
