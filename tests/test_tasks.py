"""Task plugins: deterministic by seed, requested lengths, targets checked independently."""

from __future__ import annotations

import random

import pytest

from lengen.plugins import GROUPS, discover
from lengen.task import BOS, EOS, SEP
from lengen_plugins.tasks.addition import Addition
from lengen_plugins.tasks.copy import Copy
from lengen_plugins.tasks.parity import Parity
from lengen_plugins.tasks.reverse import Reverse
from lengen_plugins.tasks.sorting import Sorting
from lengen_plugins.tasks.summation import Summation

TASKS = [
    Copy(),
    Reverse(),
    Addition(),
    Addition(reverse_digits=True),
    Parity(),
    Sorting(),
    Summation(),
]


def decoded(task, example) -> tuple[list[str], list[str]]:
    """Strip BOS/SEP/EOS and map ids back to symbols."""
    assert example.prompt[0] == BOS and example.prompt[-1] == SEP and example.target[-1] == EOS
    return task.decode(example.prompt[1:-1]), task.decode(example.target[:-1])


@pytest.mark.parametrize("task", TASKS, ids=lambda task: repr(task.identity()))
def test_deterministic_by_seed_and_lengths_honoured(task):
    for length in (1, 3, 17, 64):
        first = [task.make_example(length, random.Random(f"s-{length}")) for _ in range(1)]
        again = [task.make_example(length, random.Random(f"s-{length}")) for _ in range(1)]
        assert first == again
        examples = [task.make_example(length, random.Random(seed)) for seed in range(20)]
        assert len({tuple(example.prompt) for example in examples}) > 1  # the seed matters
        for example in examples:
            inputs, _ = decoded(task, example)
            assert example.length == length
            expected = 2 * length + 1 if isinstance(task, Addition) else length
            assert len(inputs) == expected


def test_copy_reverse_sorting_targets():
    rng = random.Random(0)
    for _ in range(50):
        length = rng.randint(1, 40)
        for task, reference in (
            (Copy(), lambda xs: xs),
            (Reverse(), lambda xs: xs[::-1]),
            (Sorting(num_symbols=7), lambda xs: sorted(xs, key=int)),
        ):
            inputs, target = decoded(task, task.make_example(length, rng))
            assert target == reference(inputs)


def test_parity_and_summation_targets():
    rng = random.Random(1)
    for _ in range(100):
        length = rng.randint(1, 50)
        bits, parity = decoded(Parity(), Parity().make_example(length, rng))
        assert parity == [str(sum(int(bit) for bit in bits) % 2)]
        task = Summation(modulus=7)
        digits, total = decoded(task, task.make_example(length, rng))
        assert all(0 <= int(d) < 7 for d in digits)
        assert total == [str(sum(int(d) for d in digits) % 7)]


@pytest.mark.parametrize("reverse_digits", [False, True])
def test_addition_against_python_ints(reverse_digits):
    task = Addition(reverse_digits=reverse_digits)
    rng = random.Random(2)
    carries = 0
    for _ in range(200):
        length = rng.randint(1, 30)
        inputs, target = decoded(task, task.make_example(length, rng))
        order = -1 if reverse_digits else 1
        a = "".join(inputs[:length][::order])
        b = "".join(inputs[length + 1 :][::order])
        assert inputs[length] == "+" and len(a) == len(b) == length
        assert int("".join(target[::order])) == int(a) + int(b)
        assert len(target) == length + 1
        carries += "".join(target[::order])[0] == "1"
    assert carries > 0  # the final carry occurs and is written


def test_every_task_plugin_is_registered():
    names = {name for name, plugin in discover(GROUPS["tasks"]).items() if plugin.error is None}
    assert {"Copy", "Reverse", "Addition", "Parity", "Sorting", "Summation"} <= names


def test_bad_task_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="num_symbols=1 must be >= 2"):
        Copy(num_symbols=1)
    with pytest.raises(ValueError, match="needs length >= 1, got 0"):
        Copy().make_example(0, random.Random(0))
