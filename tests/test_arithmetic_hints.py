"""Reversed-digit addition / multiplication with index hints, checked by parsing the symbols
back into numbers with the test's own reader and recomputing the sum / product."""

from __future__ import annotations

import random
import string

import pytest

from lengen.task import EOS
from lengen_plugins.tasks.addition import Addition
from lengen_plugins.tasks.multiplication import DecimalMultiplication

LETTERS = string.ascii_lowercase + string.ascii_uppercase


def read(symbols: list[str], hinted: bool, reversed_order: bool) -> tuple[int, list[int]]:
    """(value, hint index per significance 10^k) of a written number."""
    if hinted:
        assert len(symbols) % 2 == 0
        hints, digits = symbols[0::2], symbols[1::2]
        assert all(h in LETTERS for h in hints) and all(d.isdigit() for d in digits)
    else:
        hints, digits = [], symbols
    by_significance = digits if reversed_order else digits[::-1]
    value = sum(int(d) * 10**k for k, d in enumerate(by_significance))
    hint_of = hints if reversed_order else hints[::-1]
    return value, [LETTERS.index(h) for h in hint_of]


def split(symbols: list[str], operator: str) -> tuple[list[str], list[str]]:
    at = symbols.index(operator)
    return symbols[:at], symbols[at + 1 :]


CASES = [
    (Addition, dict(reverse_digits=True), "+", lambda a, b: a + b),
    (Addition, dict(reverse_digits=True, index_hints=True), "+", lambda a, b: a + b),
    (Addition, dict(reverse_digits=False, index_hints=True), "+", lambda a, b: a + b),
    (DecimalMultiplication, dict(), "*", lambda a, b: a * b),
    (DecimalMultiplication, dict(index_hints=True), "*", lambda a, b: a * b),
    (DecimalMultiplication, dict(second_digits=2, index_hints=True), "*", lambda a, b: a * b),
    (DecimalMultiplication, dict(reverse_digits=False, second_digits=3), "*", lambda a, b: a * b),
]


@pytest.mark.parametrize("task_class, arguments, operator, op", CASES)
def test_answer_and_hints_recomputed_from_the_digits(task_class, arguments, operator, op):
    task = task_class(**arguments)
    hinted = arguments.get("index_hints", False)
    reversed_order = arguments.get("reverse_digits", task_class is DecimalMultiplication)
    rng = random.Random(7)
    for length in (1, 2, 5, 12, 20):
        for _ in range(20):
            inputs, target = task.generate(length, rng)
            left, right = split(inputs, operator)
            a, a_hints = read(left, hinted, reversed_order)
            b, b_hints = read(right, hinted, reversed_order)
            answer, answer_hints = read(target, hinted, reversed_order)
            assert answer == op(a, b)
            width = (hinted + 1) * length
            assert len(left) == width  # exactly `length` digits, leading zeros kept
            second = arguments.get("second_digits", 0) or length
            answer_digits = length + 1 if operator == "+" else length + second
            assert len(right) == (hinted + 1) * (second if operator == "*" else length)
            assert len(target) == (hinted + 1) * answer_digits
            if hinted:  # consecutive letters by significance, shared by operands and answer
                start = answer_hints[0]
                assert answer_hints == list(range(start, start + answer_digits))
                assert a_hints == answer_hints[: len(a_hints)]
                assert b_hints == answer_hints[: len(b_hints)]


def test_the_papers_example_in_both_orders():
    # 54 + 37 = 91 with hints starting at `a`. Zhou et al. letter the standard order left to right
    # (a5b4+a3b7 -> a9b1); lengen letters by significance (the sum has a carry digit more), so
    # the standard order reads b5a4+b3a7 -> c0b9a1 and the reversed one a4b5+a7b3 -> a1b9c0.
    class Fixed(random.Random):
        def randrange(self, stop):
            return self.values.pop(0)

    rng = Fixed()
    rng.values = [54, 37]
    task = Addition(index_hints=True, random_hint_offset=False)
    inputs, target = task.generate(2, rng)
    assert "".join(inputs) == "b5a4+b3a7" and "".join(target) == "c0b9a1"
    rng.values = [54, 37]
    task = Addition(index_hints=True, random_hint_offset=False, reverse_digits=True)
    inputs, target = task.generate(2, rng)
    assert "".join(inputs) == "a4b5+a7b3" and "".join(target) == "a1b9c0"


def test_random_hint_offset_reaches_the_whole_alphabet():
    task = Addition(reverse_digits=True, index_hints=True, num_hints=12)
    rng = random.Random(0)
    starts = {LETTERS.index(task.generate(3, rng)[1][0]) for _ in range(400)}
    assert starts == set(range(12 - 4 + 1))  # 4 answer digits: starts 0..8
    fixed = Addition(reverse_digits=True, index_hints=True, random_hint_offset=False)
    assert {fixed.generate(3, rng)[1][0] for _ in range(20)} == {"a"}


@pytest.mark.parametrize(
    "task", [Addition(index_hints=True), DecimalMultiplication(index_hints=True, second_digits=2)]
)
def test_deterministic_per_seed_and_in_vocab(task):
    for length in (1, 7, 15):
        first = task.make_example(length, random.Random(f"s{length}"))
        assert first == task.make_example(length, random.Random(f"s{length}"))
        assert first.target[-1] == EOS
        assert all(4 <= i < task.vocab_size for i in first.prompt[1:-1] + first.target[:-1])


def test_hints_off_keeps_the_plain_format():
    rng_a, rng_b = random.Random(3), random.Random(3)
    plain, hinted_off = Addition(reverse_digits=True), Addition(reverse_digits=True, num_hints=5)
    assert plain.symbols == hinted_off.symbols == tuple("0123456789+")
    for _ in range(10):
        assert plain.generate(6, rng_a) == hinted_off.generate(6, rng_b)


def test_bad_arguments_and_too_long_instances_are_rejected():
    with pytest.raises(ValueError, match="index_hints and scratchpad"):
        Addition(index_hints=True, scratchpad=True)
    with pytest.raises(ValueError, match="num_hints=60"):
        Addition(index_hints=True, num_hints=60)
    with pytest.raises(ValueError, match="second_digits"):
        DecimalMultiplication(second_digits=-1)
    with pytest.raises(ValueError, match="need 11 hints, only num_hints=10"):
        Addition(index_hints=True, num_hints=10).generate(10, random.Random(0))
