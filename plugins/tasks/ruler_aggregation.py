"""RULER's aggregation tasks: common-words and frequent-words extraction."""

from __future__ import annotations

import functools
import random

from lengen_plugins.tasks.retrieval import ByteTask, to_symbols
from lengen_plugins.tasks.ruler_common import (
    ANSWER_SEPARATOR,
    check_count,
    distinct,
    pseudo_word,
)


@functools.cache
def zeta(alpha: float, terms: int = 100_000) -> float:
    """Riemann zeta(alpha) for alpha > 1: the partial sum plus its integral tail estimate."""
    return sum(k**-alpha for k in range(1, terms + 1)) + terms ** (1 - alpha) / (alpha - 1)


def numbered_bytes(words: list[str]) -> int:
    """Bytes of `1. w1 2. w2 ...` (independent of the words' order)."""
    return sum(len(f"{i + 1}. {word}") for i, word in enumerate(words)) + max(len(words) - 1, 0)


class RulerCommonWords(ByteTask):
    """List the words repeated most often in a numbered word list (Hsieh et al. 2024, RULER,
    common words extraction, CWE; NVIDIA/RULER scripts/data/synthetic/common_words_extraction.py).

    The input (exactly `length` bytes; spaces pad the start) is RULER's numbered list
    `1. w 2. w ...` in random order, holding `num_common` words `common_repeats` times each and as
    many other words `uncommon_repeats` times as fit, then
    `What are the {num_common} most common words in the list above? Answer: `. Target: the
    common words in order of first appearance, joined by `,`; score with StringMatchAll.

    Toy-scale defaults: RULER uses 10 common words x 30 (6 below 4K tokens) and 3 repeats of each
    uncommon one; an item here is ~10 bytes, so 3 common words x 4 and uncommon words once fit a
    few hundred bytes. Words are pseudo-words of `word_letters` lower-case letters.

    Args:
        num_common, common_repeats, uncommon_repeats: RULER's num_cw, freq_cw, freq_ucw.
        word_letters: letters per word.
    """

    def __init__(
        self,
        num_common: int = 3,
        common_repeats: int = 4,
        uncommon_repeats: int = 1,
        word_letters: int = 5,
    ) -> None:
        name = "RulerCommonWords"
        self.num_common = check_count(name, "num_common", num_common, 1, 50)
        self.common_repeats = check_count(name, "common_repeats", common_repeats, 2, 100)
        self.uncommon_repeats = check_count(
            name, "uncommon_repeats", uncommon_repeats, 1, common_repeats - 1
        )
        self.word_letters = check_count(name, "word_letters", word_letters, 3, 12)

    def _question(self) -> bytes:
        return (
            f"\nWhat are the {self.num_common} most common words in the list above? Answer: "
        ).encode()

    @property
    def min_length(self) -> int:
        words = ["x" * self.word_letters] * (self.num_common * self.common_repeats)
        return numbered_bytes(words) + len(self._question())

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        room = length - len(self._question())
        letters = self.word_letters
        common = distinct(lambda r: pseudo_word(letters, r), self.num_common, rng)
        items = common * self.common_repeats
        uncommon: list[str] = []
        while True:  # every word has `letters` letters, so the size grows predictably
            grown = items + ["x" * letters] * self.uncommon_repeats
            if numbered_bytes(grown) > room:
                break
            uncommon += distinct(lambda r: pseudo_word(letters, r), 1, rng, set(common + uncommon))
            items = items + uncommon[-1:] * self.uncommon_repeats
        rng.shuffle(items)
        text = " ".join(f"{i + 1}. {word}" for i, word in enumerate(items)).encode()
        context = b" " * (room - len(text)) + text + self._question()
        order = sorted(common, key=items.index)
        return to_symbols(context), list(ANSWER_SEPARATOR.join(order))


class RulerFrequentWords(ByteTask):
    """Name the three most frequent coded words (Hsieh et al. 2024, RULER, frequent words
    extraction, FWE; NVIDIA/RULER scripts/data/synthetic/freq_words_extraction.py).

    RULER's rule: a vocabulary of random coded words of `word_letters` lower-case letters, ranked
    at random; the word of rank k appears int(N k^-alpha / zeta(alpha)) times (a Zipf law); the
    rank-1 word is the noise `...`; the answer is ranks 2-4. The words are shuffled and joined by
    spaces; N is the largest count that fits `length` bytes (spaces pad the start) and puts rank 4
    strictly above rank 5, so the answer is unique. The question is
    `What are the three most frequently appeared coded words above? Answer: `. Target: ranks 2-4,
    most frequent first, joined by `,`; score with StringMatchAll. The vocabulary holds
    max(5, room // 50) words (RULER: max_seq_length // 50). Lengths where no N works are
    rejected (below min_length).

    Args:
        alpha: the Zipf exponent (RULER: 2.0).
        word_letters: letters per coded word (RULER: 6).
    """

    def __init__(self, alpha: float = 2.0, word_letters: int = 6) -> None:
        if isinstance(alpha, bool) or not 1.0 < float(alpha) <= 10.0:
            raise ValueError(f"RulerFrequentWords: alpha={alpha!r} must be in (1, 10]")
        self.alpha = float(alpha)
        self.word_letters = check_count("RulerFrequentWords", "word_letters", word_letters, 3, 12)

    QUESTION = b"\nWhat are the three most frequently appeared coded words above? Answer: "

    def _counts(self, num_words: int, vocab_size: int) -> list[int]:
        norm = zeta(self.alpha)
        return [int(num_words * k**-self.alpha / norm) for k in range(1, vocab_size + 1)]

    def _plan(self, room: int) -> list[int] | None:
        """Counts per rank for the largest N that fits `room` and puts rank 4 strictly above
        rank 5 (else ranks 2-4 would not be the unique answer); None if no N does."""
        vocab_size = max(5, room // 50)
        sizes = [3] + [self.word_letters] * (vocab_size - 1)  # "..." then coded words

        def text_bytes(counts: list[int]) -> int:
            return sum(c * s for c, s in zip(counts, sizes)) + max(sum(counts) - 1, 0)

        low, high = 0, room  # the bytes grow with N: binary search for the largest N that fits
        while low < high:
            mid = (low + high + 1) // 2
            if text_bytes(self._counts(mid, vocab_size)) <= room:
                low = mid
            else:
                high = mid - 1
        for num_words in range(low, 0, -1):  # the largest N that also ranks 2-4 apart
            counts = self._counts(num_words, vocab_size)
            if counts[3] > counts[4]:
                return counts
        return None

    @property
    def min_length(self) -> int:
        for length in range(len(self.QUESTION) + 1, 100_000):
            if self._plan(length - len(self.QUESTION)) is not None:
                return length
        raise ValueError("RulerFrequentWords: no length up to 100000 works")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        room = length - len(self.QUESTION)
        counts = self._plan(room)
        if counts is None:
            raise ValueError(f"RulerFrequentWords: {length} bytes cannot rank 3 words apart")
        vocab = ["..."] + distinct(
            lambda r: pseudo_word(self.word_letters, r), len(counts) - 1, rng
        )
        words = [word for word, count in zip(vocab, counts) for _ in range(count)]
        rng.shuffle(words)
        text = " ".join(words).encode()
        context = b" " * (room - len(text)) + text + self.QUESTION
        return to_symbols(context), list(ANSWER_SEPARATOR.join(vocab[1:4]))
