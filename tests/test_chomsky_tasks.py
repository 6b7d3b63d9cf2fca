"""Chomsky-hierarchy tasks: targets recomputed from the decoded input with plain Python."""

from __future__ import annotations

import math
import random

import pytest

from lengen.plugins import GROUPS, discover
from lengen.task import BOS, EOS, SEP
from lengen_plugins.tasks.chomsky.binary_arithmetic import BinaryAddition, BinaryMultiplication
from lengen_plugins.tasks.chomsky.bucket_sort import BucketSort
from lengen_plugins.tasks.chomsky.compute_sqrt import ComputeSqrt
from lengen_plugins.tasks.chomsky.cycle_navigation import CycleNavigation
from lengen_plugins.tasks.chomsky.duplicate_string import DuplicateString
from lengen_plugins.tasks.chomsky.even_pairs import EvenPairs
from lengen_plugins.tasks.chomsky.missing_duplicate import MissingDuplicate
from lengen_plugins.tasks.chomsky.modular_arithmetic import ModularArithmetic
from lengen_plugins.tasks.chomsky.modular_arithmetic_brackets import ModularArithmeticBrackets
from lengen_plugins.tasks.chomsky.odds_first import OddsFirst
from lengen_plugins.tasks.chomsky.parity_check import ParityCheck
from lengen_plugins.tasks.chomsky.reverse_string import ReverseString
from lengen_plugins.tasks.chomsky.solve_equation import SolveEquation
from lengen_plugins.tasks.chomsky.stack_manipulation import StackManipulation

TASKS = [
    EvenPairs(),
    ParityCheck(),
    CycleNavigation(),
    ModularArithmetic(),
    StackManipulation(),
    ReverseString(),
    ModularArithmeticBrackets(),
    ModularArithmeticBrackets(multiplication=True),
    SolveEquation(),
    DuplicateString(),
    MissingDuplicate(),
    OddsFirst(),
    BinaryAddition(),
    BinaryMultiplication(),
    ComputeSqrt(),
    BucketSort(),
]


def samples(task, lengths=(3, 4, 7, 12, 41, 60), per_length=25, seed=0):
    """(length, input symbols, target symbols) decoded from make_example's token ids."""
    rng = random.Random(seed)
    for length in lengths:
        for _ in range(per_length):
            example = task.make_example(length, rng)
            assert example.prompt[0] == BOS and example.prompt[-1] == SEP
            assert example.target[-1] == EOS
            yield length, task.decode(example.prompt[1:-1]), task.decode(example.target[:-1])


@pytest.mark.parametrize("task", TASKS, ids=lambda task: type(task).__name__)
def test_deterministic_and_lengths_honoured(task):
    for length in (4, 8, 41):  # length 3 of binary addition has one instance: 1+1
        first = task.make_example(length, random.Random(f"seed-{length}"))
        assert first == task.make_example(length, random.Random(f"seed-{length}"))
        prompts = {tuple(task.make_example(length, random.Random(s)).prompt) for s in range(20)}
        assert len(prompts) > 1
    for length, inputs, _ in samples(task):
        # ModularArithmetic writes odd-length expressions (the paper's rule for even lengths).
        odd = length if length % 2 else length - 1
        assert len(inputs) == (odd if isinstance(task, ModularArithmetic) else length)


def test_regular_tasks():
    for _, inputs, target in samples(EvenPairs()):
        pairs = sum(
            1 for i in range(len(inputs) - 1) if inputs[i : i + 2] in (["a", "b"], ["b", "a"])
        )
        assert target == ["0" if pairs % 2 == 0 else "1"]
    for _, inputs, target in samples(ParityCheck()):
        assert target == [str(inputs.count("b") % 2)]
    for _, moves, target in samples(CycleNavigation(cycle_length=7)):
        position = 0
        for move in moves:
            position = (position + int(move)) % 7
        assert target == [f"p{position}"]
    seen = set()
    for _, expression, target in samples(ModularArithmetic()):
        seen.update(expression[1::2])
        # Python's own precedence on the infix string, then mod 5.
        assert target == [str(eval("".join(expression)) % 5)]
    assert seen == {"+", "-", "*"}


def test_stack_manipulation_by_simulation():
    empty = 0
    for _, inputs, target in samples(StackManipulation()):
        split = next((i for i, s in enumerate(inputs) if s.startswith(("P",))), len(inputs))
        stack = inputs[:split]
        assert stack and all(s in "01" for s in stack)
        for action in inputs[split:]:
            assert action in ("POP", "PUSH0", "PUSH1")
            if action == "POP":
                stack = stack[:-1]
            else:
                stack = stack + [action[4]]
        assert target == list(reversed(stack))
        empty += not target
    assert empty > 0  # POP on an empty stack happens and gives an empty target


def test_bracket_arithmetic_and_equations():
    for _, expression, target in samples(ModularArithmeticBrackets(multiplication=True)):
        assert target == [str(eval("".join(expression)) % 5)]
    for _, inputs, target in samples(SolveEquation()):
        assert inputs.count("x") == 1 and inputs[-2] == "="
        solutions = [
            d
            for d in range(5)
            if eval("".join(inputs[:-2]).replace("x", str(d))) % 5 == int(inputs[-1])
        ]
        assert solutions == [int(target[0])]  # + and - only: the solution is unique


def test_string_tasks():
    for _, bits, target in samples(ReverseString()):
        assert target == bits[::-1]
    for _, bits, target in samples(DuplicateString()):
        assert target == bits * 2
    for _, bits, target in samples(OddsFirst()):
        assert target == [b for i, b in enumerate(bits, 1) if i % 2] + [
            b for i, b in enumerate(bits, 1) if not i % 2
        ]
    for _, values, target in samples(BucketSort(num_symbols=4)):
        assert target == sorted(values, key=int) and set(values) <= set("0123")
    for length, inputs, target in samples(MissingDuplicate()):
        half = length // 2
        assert inputs.count("_") == 1 and inputs[2 * half :] == ["#"] * (length % 2)
        hole = inputs.index("_")
        other = hole + half if hole < half else hole - half
        assert target == [inputs[other]]


def test_binary_arithmetic_against_python_ints():
    for task, operator, combine in (
        (BinaryAddition(), "+", lambda a, b: a + b),
        (BinaryMultiplication(), "*", lambda a, b: a * b),
    ):
        for _, inputs, target in samples(task):
            text = "".join(inputs)
            left, right = text.split(operator)
            value = combine(int(left[::-1], 2), int(right[::-1], 2))
            assert "".join(target) == bin(value)[2:][::-1]
    for length, bits, target in samples(ComputeSqrt()):
        assert int("".join(target), 2) == math.isqrt(int("".join(bits), 2))
        assert len(target) == math.ceil(length / 2)


def test_chomsky_plugins_are_registered():
    names = {name for name, plugin in discover(GROUPS["tasks"]).items() if plugin.error is None}
    assert {type(task).__name__ for task in TASKS} <= names
    assert len({type(task).__name__ for task in TASKS}) == 15


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="modulus=11 must be in 2..10"):
        ModularArithmetic(modulus=11)
    with pytest.raises(ValueError, match="needs length >= 3, got 2"):
        BinaryAddition().make_example(2, random.Random(0))
