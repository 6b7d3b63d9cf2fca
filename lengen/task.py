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

    def __setattr__(self, name: str, value) -> None:
        if not name.startswith("_"):  # a constructor argument changed: drop what derives from it
            self.__dict__.pop("_symbol_table_cache", None)
            self.__dict__.pop("_min_length_cache", None)
        super().__setattr__(name, value)

    def _min_length(self) -> int:
        """`min_length`, computed once per instance: a subclass may compute it in a property
        that searches (RulerFrequentWords: about 20 ms), and every example checks it. Dropped,
        like the symbol table, when a public attribute is set."""
        cached = self.__dict__.get("_min_length_cache")
        if cached is None:
            cached = self.__dict__["_min_length_cache"] = self.min_length
        return cached

    def _symbol_cache(self) -> tuple[tuple[str, ...], dict[str, int]]:
        """(symbols, symbol -> token id), built on first use and kept on the instance.

        Subclasses often compute `symbols` in a property (a new tuple per access), and encoding
        used to search it per token. Setting a public attribute (a constructor argument) drops
        the cache, so it is rebuilt; it lives in a private attribute, which `identity` leaves out.
        """
        cache = self.__dict__.get("_symbol_table_cache")
        if cache is None:
            symbols = tuple(self.symbols)
            ids: dict[str, int] = {}
            for index, symbol in enumerate(symbols):
                ids.setdefault(symbol, len(SPECIAL_TOKENS) + index)  # first match, as tuple.index
            cache = (symbols, ids)
            self.__dict__["_symbol_table_cache"] = cache
        return cache

    @property
    def symbol_table(self) -> tuple[str, ...]:
        """The task's symbols as a tuple, computed once per instance (see `_symbol_cache`)."""
        return self._symbol_cache()[0]

    @property
    def vocab(self) -> tuple[str, ...]:
        return SPECIAL_TOKENS + self.symbol_table

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, symbols: list[str]) -> list[int]:
        """Symbols -> token ids (shared specials first, then the task's symbols)."""
        ids = self._symbol_cache()[1]
        try:
            return [ids[symbol] for symbol in symbols]
        except KeyError as error:  # the same error type as the former `tuple.index` search
            name = type(self).__name__
            raise ValueError(f"{error.args[0]!r} is not a symbol of {name}") from None

    def decode(self, token_ids: list[int]) -> list[str]:
        vocab = self.vocab
        return [vocab[i] for i in token_ids]

    def to_text(self, symbols: list[str]) -> str:
        """Symbols as one readable string (predictions.jsonl, `lengen.generate`): space-separated
        here; text tasks join their bytes instead."""
        return " ".join(symbols)

    def from_text(self, text: str) -> list[str]:
        """The inverse of `to_text`: a prompt typed as a string -> symbols."""
        return text.split()

    def make_example(self, length: int, rng: random.Random) -> Example:
        min_length = self._min_length()
        if length < min_length:
            raise ValueError(f"{type(self).__name__} needs length >= {min_length}, got {length}")
        inputs, target = self.generate(length, rng)
        return Example(
            prompt=[BOS, *self.encode(inputs), SEP],
            target=[*self.encode(target), EOS],
            length=length,
        )

    def _arguments(self) -> dict:
        """The constructor arguments: the instance's public attributes (private caches left out)."""
        return {name: value for name, value in vars(self).items() if not name.startswith("_")}

    def identity(self) -> dict:
        """The task's class and arguments, as plain data (cache keys, results.json)."""
        class_path = f"{type(self).__module__}.{type(self).__qualname__}"
        return {"class_path": class_path, **self._arguments()}
