"""Long-context retrieval tasks and PresenceAccuracy, checked by parsing the generated text."""

from __future__ import annotations

import functools
import random
import re

import pytest
import torch

from lengen.data.text import stdlib_source_files
from lengen.metric import EvalBatch
from lengen.plugins import GROUPS, discover
from lengen.task import BOS, EOS, PAD, SEP
from lengen_plugins.metrics.presence_accuracy import PresenceAccuracy
from lengen_plugins.tasks.line_retrieval import LineRetrieval
from lengen_plugins.tasks.needle_qa import NeedleQA
from lengen_plugins.tasks.passkey import Passkey

FRACTIONS = {"start": (0.0, 0.1), "middle": (0.45, 0.55), "end": (0.9, 1.0), "any": (0.0, 1.0)}


def text_samples(task, lengths=(160, 300, 1000), per_length=8, seed=0):
    """(length, context text, answer text) decoded from token ids back to bytes."""
    rng = random.Random(seed)
    for length in lengths:
        for _ in range(per_length):
            example = task.make_example(length, rng)
            assert example.prompt[0] == BOS and example.prompt[-1] == SEP
            assert example.target[-1] == EOS
            context = bytes(i - 4 for i in example.prompt[1:-1]).decode("latin-1")
            answer = bytes(i - 4 for i in example.target[:-1]).decode("latin-1")
            yield length, context, answer


@pytest.mark.parametrize("location", ["start", "middle", "end", "any"])
def test_passkey(location):
    task = Passkey(location=location)
    low, high = FRACTIONS[location]
    for length, context, answer in text_samples(task):
        assert len(context) == length
        keys = re.findall(r"The pass key is (\d+)\. Remember it\. (\d+) is the pass key\.", context)
        assert len(keys) == 1 and keys[0][0] == keys[0][1] == answer and len(answer) == 5
        assert context.endswith("\nWhat is the pass key? The pass key is ")
        needle = f"\nThe pass key is {answer}. Remember it. {answer} is the pass key.\n"
        room = length - len(needle) - len("\nWhat is the pass key? The pass key is ")
        start = context.index(needle)
        assert low * room - 1 <= start <= high * room + 1


@functools.cache
def original_constants() -> dict[str, set[str]]:
    """NAME = digits lines of the standard library, read here with a regex of the test's own."""
    found: dict[str, set[str]] = {}
    for path in stdlib_source_files():
        for line in path.read_text(encoding="latin-1").splitlines():
            match = re.fullmatch(r"([A-Z][A-Z0-9_]+) = (\d+)\s*", line)
            if match:
                found.setdefault(match.group(1), set()).add(match.group(2))
    return found


@pytest.mark.parametrize("altered", [False, True])
@pytest.mark.parametrize("location", ["start", "middle", "end"])
def test_needle_qa(location, altered):
    originals = original_constants()
    task = NeedleQA(location=location, altered=altered)
    low, high = FRACTIONS[location]
    changed = 0
    for length, context, answer in text_samples(task, lengths=(200, 600, 1500)):
        assert len(context) == length
        name = re.search(r"\nWhat is the value of (\w+)\? (\w+) = $", context).group(1)
        assert context.count(name) == 3  # the needle's name and the question's two
        needle = f"\n{name} = {answer}\n"
        assert context.count(needle) == 1
        start = context.index(needle)
        room = length - len(needle) - len(f"\nWhat is the value of {name}? {name} = ")
        assert low * room - 1 <= start <= high * room + 1
        (original,) = originals[name]
        if not altered:
            assert answer == original
            continue
        changed += answer != original
        assert re.search(rf"(?<!\d){original}(?!\d)", context) is None
        if 1000 <= int(original) <= 2100:
            assert 1 <= abs(int(answer) - int(original)) <= 10
        else:
            assert len(answer) == len(original) and answer != original
    assert not altered or changed > 0


@pytest.mark.parametrize("location", ["start", "middle", "end"])
def test_line_retrieval(location):
    task = LineRetrieval(location=location)
    low, high = FRACTIONS[location]
    for length, context, answer in text_samples(task, lengths=(300, 1200)):
        assert len(context) == length
        lines = re.findall(r"line (\d{4}): (\d{5})\n", context)
        table = dict(lines)
        assert len(table) == len(lines) > 5  # distinct labels
        asked = re.search(r"What is in line (\d{4})\? line \1: $", context).group(1)
        assert answer == table[asked]
        index = [label for label, _ in lines].index(asked) / (len(lines) - 1)
        assert low - 1 / len(lines) <= index <= high + 1 / len(lines)


def test_retrieval_determinism_errors_and_registration():
    for task in (Passkey(), NeedleQA(altered=True), LineRetrieval()):
        assert task.make_example(500, random.Random(3)) == task.make_example(500, random.Random(3))
        assert task.make_example(500, random.Random(3)) != task.make_example(500, random.Random(4))
        assert task.vocab_size == 260
    with pytest.raises(ValueError, match="location='deep'; accepted: 'start', 'middle'"):
        Passkey(location="deep")
    with pytest.raises(ValueError, match="needs length >= 99, got 50"):
        Passkey().make_example(50, random.Random(0))
    names = {name for name, plugin in discover(GROUPS["tasks"]).items() if plugin.error is None}
    assert {"Passkey", "NeedleQA", "LineRetrieval"} <= names
    assert discover(GROUPS["metrics"])["PresenceAccuracy"].error is None


def test_presence_accuracy_against_a_plain_search():
    rng = random.Random(5)
    metric = PresenceAccuracy(max_length=64)
    expected: dict[int, list[float]] = {}
    for _ in range(30):
        batch_size, width = 6, rng.randint(2, 7)
        target_lengths = [rng.randint(1, width) for _ in range(batch_size)]
        targets = torch.full((batch_size, width), PAD)
        generated = torch.full((batch_size, width), PAD)
        lengths = [rng.choice([10, 20, 40]) for _ in range(batch_size)]
        for row, n in enumerate(target_lengths):
            answer = [rng.randint(4, 7) for _ in range(n - 1)]
            targets[row, :n] = torch.tensor(answer + [EOS])
            # Half the rows: the answer shifted by up to one token; else random tokens.
            if rng.random() < 0.5:
                shift = rng.randint(0, 1) if n < width else 0
                row_tokens = [rng.randint(4, 7)] * shift + answer + [EOS]
            else:
                row_tokens = [rng.randint(4, 7) for _ in range(n)]
            generated[row, : len(row_tokens[:width])] = torch.tensor(row_tokens[:width])
            haystack = ",".join(map(str, generated[row].tolist())) + ","
            needle = ",".join(map(str, answer)) + ","
            present = needle == "," or ("," + haystack).find("," + needle) >= 0
            expected.setdefault(lengths[row], []).append(float(present))
        batch = EvalBatch(
            input_ids=torch.zeros(batch_size, 1, dtype=torch.long),
            labels=torch.zeros(batch_size, 1, dtype=torch.long),
            targets=targets,
            prompt_lengths=torch.ones(batch_size, dtype=torch.long),
            target_lengths=torch.tensor(target_lengths),
            lengths=torch.tensor(lengths),
        )
        metric.update(batch, torch.zeros(batch_size, 1, 8), generated)
    values = metric.compute()
    for length, hits in expected.items():
        assert values[length].item() == pytest.approx(sum(hits) / len(hits))
    assert 0 < values[10].item() < 1
