"""Polynomial evaluation, LEGO, SCAN, PCFG and the scratchpad formats: independent references."""

from __future__ import annotations

import random

import pytest

from lengen.plugins import GROUPS, discover
from lengen.task import BOS, EOS, SEP
from lengen_plugins.tasks.addition import Addition
from lengen_plugins.tasks.lego import Lego
from lengen_plugins.tasks.parity import Parity
from lengen_plugins.tasks.pcfg import Pcfg
from lengen_plugins.tasks.polynomial import PolynomialEvaluation
from lengen_plugins.tasks.scan import Scan
from lengen_plugins.tasks.summation import Summation

PARTS = ("input", "computation", "output", "intermediate", "remaining")
MARKER = {"input": "<in>", "computation": "<comp>", "output": "<out>", "intermediate": "<vars>"}
MARKER["remaining"] = "<rest>"


def samples(task, lengths, per_length=20, seed=0):
    rng = random.Random(seed)
    for length in lengths:
        for _ in range(per_length):
            example = task.make_example(length, rng)
            assert example.prompt[0] == BOS and example.prompt[-1] == SEP
            assert example.target[-1] == EOS
            yield length, task.decode(example.prompt[1:-1]), task.decode(example.target[:-1])


@pytest.mark.parametrize(
    "task, lengths, measure",
    [
        (PolynomialEvaluation(), (1, 5, 12), lambda inputs, target: inputs.count("^")),
        (Lego(), (1, 6, 20), lambda inputs, target: inputs.count("=")),
        (Scan(), (1, 9, 22, 24, 48), lambda inputs, target: len(target)),
        (Pcfg(), (1, 4, 8, 12), lambda inputs, target: sum(len(s) > 1 for s in inputs)),
    ],
    ids=lambda x: type(x).__name__ if not callable(x) and not isinstance(x, tuple) else "",
)
def test_deterministic_and_lengths_honoured(task, lengths, measure):
    for length in lengths:
        first = task.make_example(length, random.Random(f"seed-{length}"))
        assert first == task.make_example(length, random.Random(f"seed-{length}"))
    for length, inputs, target in samples(task, lengths):
        assert measure(inputs, target) == length


def test_polynomial_against_python_eval():
    task = PolynomialEvaluation()
    degrees = set()
    for _, inputs, target in samples(task, (1, 3, 8, 20)):
        assert inputs[:2] == ["x", "="] and ";" in inputs
        x = int("".join(inputs[2 : inputs.index(";")]))
        body = "".join(inputs[inputs.index(";") + 1 :]).replace("^", "**")
        degrees.update(int(s) for i, s in enumerate(inputs) if i and inputs[i - 1] == "^")
        assert target == [str(eval(body, {"x": x}) % 10)]
    assert degrees == {0, 1, 2, 3}


def test_lego_by_resolving_clauses():
    for length, inputs, target in samples(Lego(), (1, 2, 7, 26)):
        assert inputs[-2] == "?"
        clauses = "".join(inputs[:-2]).split(",")
        definitions = {clause[0]: (clause[2], clause[3]) for clause in clauses}
        assert len(definitions) == length  # distinct variables

        name, sign_product = inputs[-1], 1
        for _ in range(length):  # follow the chain down to the constant
            sign, source = definitions[name]
            sign_product *= 1 if sign == "+" else -1
            if source == "1":
                break
            name = source
        else:
            raise AssertionError("the clauses do not end in a constant")

        assert target == ["+" if sign_product > 0 else "-", "1"]


def interpret_scan(words: list[str]) -> list[str]:
    """Lake & Baroni's interpretation functions, applied by parsing the command."""
    for conjunction in ("and", "after"):
        if conjunction in words:
            i = words.index(conjunction)
            first, second = interpret_scan(words[:i]), interpret_scan(words[i + 1 :])
            return first + second if conjunction == "and" else second + first
    if words[-1] in ("twice", "thrice"):
        return interpret_scan(words[:-1]) * (2 if words[-1] == "twice" else 3)
    action = [] if words[0] == "turn" else ["I_" + words[0].upper()]
    if len(words) == 1:
        return action
    turn = ["I_TURN_" + words[-1].upper()]
    if words[1] == "opposite":
        return turn + turn + action
    if words[1] == "around":
        return (turn + action) * 4
    return turn + action


def test_scan_against_the_interpretation_functions():
    task = Scan()
    for _, words, actions in samples(task, (1, 2, 5, 13, 22, 24, 30, 48)):
        assert actions == interpret_scan(words)
    with pytest.raises(ValueError, match="no command has 23 actions"):
        task.make_example(23, random.Random(0))


def evaluate_pcfg(tokens: list[str]) -> list[str]:
    """Recursive-descent parse of the prefix expression, then the PCFG SET functions."""
    unary = {
        "copy": lambda x: x,
        "reverse": lambda x: list(reversed(x)),
        "shift": lambda x: x[1:] + [x[0]],
        "echo": lambda x: x + [x[-1]],
        "swap_first_last": lambda x: [x[-1]] + x[1:-1] + [x[0]] if len(x) > 1 else x,
        "repeat": lambda x: x * 2,
    }
    binary = {
        "append": lambda x, y: x + y,
        "prepend": lambda x, y: y + x,
        "remove_first": lambda x, y: y,
        "remove_second": lambda x, y: x,
    }
    position = 0

    def parse():
        nonlocal position
        token = tokens[position]
        position += 1
        if token in unary:
            return unary[token](parse())
        if token in binary:
            left = parse()
            assert tokens[position] == ","
            position += 1
            return binary[token](left, parse())
        leaf = [token]
        while position < len(tokens) and len(tokens[position]) == 1 and tokens[position] != ",":
            leaf.append(tokens[position])
            position += 1
        return leaf

    value = parse()
    assert position == len(tokens)
    return value


def test_pcfg_against_an_independent_parser():
    task = Pcfg(num_letters=8, max_output_length=40)
    used = set()
    for _, tokens, target in samples(task, (1, 2, 5, 9, 14)):
        used.update(t for t in tokens if len(t) > 1)
        assert target == evaluate_pcfg(tokens) and len(target) <= 40
    assert len(used) == 10  # every function occurs


def parse_scratchpad(target: list[str]) -> tuple[list[dict[str, list[str]]], list[str]]:
    """Split `steps <ans> answer` into steps {part: symbols} and the answer."""
    answer_at = target.index("<ans>")
    steps, step, part = [], {}, None
    for symbol in target[:answer_at] + [";"]:
        if symbol == ";":
            steps.append(step)
            step, part = {}, None
        elif symbol in MARKER.values():
            part = next(name for name, marker in MARKER.items() if marker == symbol)
            step[part] = []
        else:
            step[part].append(symbol)
    return steps, target[answer_at + 1 :]


def test_addition_scratchpad_columns_and_carries():
    task = Addition(scratchpad=True)
    for length, inputs, target in samples(task, (1, 4, 9)):
        a, b = "".join(inputs[:length]), "".join(inputs[length + 1 :])
        steps, answer = parse_scratchpad(target)
        assert int("".join(answer)) == int(a) + int(b) and len(steps) == length
        carry = 0
        for column, step in zip(range(length - 1, -1, -1), steps):
            x, y = int(a[column]), int(b[column])
            assert step["input"] == [a[column], b[column]]
            assert "".join(step["computation"]) == f"{x}+{y}+{carry}={x + y + carry}"
            assert step["output"] == [str((x + y + carry) % 10)]
            carry = (x + y + carry) // 10
            assert step["intermediate"] == [str(carry)]
            assert "".join(step["remaining"]) == f"{a[:column]}+{b[:column]}"
        # The sum's digits are the step outputs (reversed) after the final carry.
        assert "".join(answer) == str(carry) + "".join(s["output"][0] for s in reversed(steps))


@pytest.mark.parametrize("task_class", [Addition, Summation, Parity, PolynomialEvaluation])
def test_scratchpad_parts_switch_independently(task_class):
    for dropped in PARTS:
        flags = {f"scratchpad_{part}": part != dropped for part in PARTS}
        task = task_class(scratchpad=True, **flags)
        for _, _, target in samples(task, (3, 6), per_length=5):
            assert MARKER[dropped] not in target
            steps, _ = parse_scratchpad(target)
            assert all(set(step) == set(PARTS) - {dropped} for step in steps)
    with pytest.raises(ValueError, match="needs at least one scratchpad part"):
        task_class(scratchpad=True, **{f"scratchpad_{part}": False for part in PARTS})


def test_running_values_of_summation_parity_and_polynomial_scratchpads():
    for _, digits, target in samples(Summation(modulus=7, scratchpad=True), (1, 5, 11)):
        steps, answer = parse_scratchpad(target)
        running = [sum(int(d) for d in digits[: i + 1]) % 7 for i in range(len(digits))]
        assert [int("".join(s["intermediate"])) for s in steps] == running
        assert answer == [str(running[-1])]
        assert [s["remaining"] for s in steps] == [digits[i + 1 :] for i in range(len(digits))]
    for _, bits, target in samples(Parity(scratchpad=True), (1, 5, 11)):
        steps, answer = parse_scratchpad(target)
        assert [s["intermediate"] for s in steps] == [
            [str(bits[: i + 1].count("1") % 2)] for i in range(len(bits))
        ]
        assert answer == [str(bits.count("1") % 2)]
    for _, inputs, target in samples(PolynomialEvaluation(scratchpad=True), (1, 4, 9)):
        x = int("".join(inputs[2 : inputs.index(";")]))
        terms = "".join(inputs[inputs.index(";") + 1 :]).replace("^", "**").split("+")
        steps, answer = parse_scratchpad(target)
        for i, step in enumerate(steps):
            assert int("".join(step["output"])) == eval(terms[i], {"x": x})
            partial = sum(eval(term, {"x": x}) for term in terms[: i + 1]) % 10
            assert step["intermediate"] == list(str(partial))
        assert answer == [str(eval("+".join(terms), {"x": x}) % 10)]


def test_plugins_are_registered_and_bad_arguments_rejected():
    names = {name for name, plugin in discover(GROUPS["tasks"]).items() if plugin.error is None}
    assert {"PolynomialEvaluation", "Lego", "Scan", "Pcfg"} <= names
    with pytest.raises(ValueError, match="length 27 needs as many variables"):
        Lego().make_example(27, random.Random(0))
    with pytest.raises(ValueError, match="num_letters=30 must be in 2..26"):
        Pcfg(num_letters=30)
