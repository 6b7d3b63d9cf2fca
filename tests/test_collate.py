"""`collate_examples` (one flat list per field, one copy into a tensor) against a plain reference
that fills each position from its definition, on fresh random examples of mixed lengths."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lengen.data.tasks import TrainingStream, collate_examples
from lengen.task import PAD, Example

IGNORE = -100  # torch.nn.functional.cross_entropy's default ignore_index


def reference_collate(examples: list[Example]) -> dict[str, list[list[int]] | list[int]]:
    """Position by position, from the layout's definition (lengen/metric.py EvalBatch):
    input j = token j of `prompt + target` (the last token never is an input), PAD after;
    label j = token j + 1 where that token is in `target`, else IGNORE;
    targets = `target`, PAD after."""
    sequences = [example.prompt + example.target for example in examples]
    width = max(len(sequence) for sequence in sequences) - 1
    target_width = max(len(example.target) for example in examples)
    input_ids, labels, targets = [], [], []
    for example, sequence in zip(examples, sequences):
        input_ids.append([sequence[j] if j < len(sequence) - 1 else PAD for j in range(width)])
        labels.append(
            [
                sequence[j + 1] if len(example.prompt) <= j + 1 < len(sequence) else IGNORE
                for j in range(width)
            ]
        )
        targets.append(
            [example.target[j] if j < len(example.target) else PAD for j in range(target_width)]
        )
    return {
        "input_ids": input_ids,
        "labels": labels,
        "targets": targets,
        "prompt_lengths": [len(example.prompt) for example in examples],
        "target_lengths": [len(example.target) for example in examples],
        "lengths": [example.length for example in examples],
    }


def assert_matches_reference(examples: list[Example]) -> None:
    batch = collate_examples(examples)
    expected = reference_collate(examples)
    for name, values in expected.items():
        tensor = getattr(batch, name)
        assert tensor.dtype == torch.long, name
        assert tensor.tolist() == values, name
    # The loss sees exactly the `target EOS` tokens of every row.
    assert int((batch.labels != IGNORE).sum()) == sum(len(e.target) for e in examples)


def random_examples(rng: random.Random, count: int, longest: int) -> list[Example]:
    """Examples with prompts and targets of independent random lengths (>= 1 token each)."""
    return [
        Example(
            prompt=[rng.randrange(1, 50) for _ in range(rng.randint(1, longest))],
            target=[rng.randrange(1, 50) for _ in range(rng.randint(1, longest))],
            length=rng.randint(1, 100),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("draw", range(4))
def test_collate_matches_reference_on_random_batches(draw: int) -> None:
    # A fresh seed per run, drawn in the test (test ids must be equal on every xdist worker).
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for count, longest in [(1, 1), (1, 9), (7, 5), (64, 33), (3, 200)]:
        examples = random_examples(rng, count, longest)
        try:
            assert_matches_reference(examples)
        except AssertionError as error:
            raise AssertionError(f"seed {seed}: {error}") from error


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 300), min_size=1, max_size=12),
            st.lists(st.integers(0, 300), min_size=1, max_size=12),
            st.integers(0, 64),
        ),
        min_size=1,
        max_size=9,
    )
)
def test_collate_matches_reference_on_generated_examples(rows) -> None:
    assert_matches_reference([Example(list(p), list(t), n) for p, t, n in rows])


def test_collate_equal_lengths_need_no_padding() -> None:
    rng = random.Random()
    examples = [Example([1, *[rng.randrange(4, 9) for _ in range(5)], 2], [6, 3], 5)] * 4
    batch = collate_examples(examples)
    assert batch.input_ids.shape == (4, 8) and not (batch.input_ids == PAD).any()
    assert_matches_reference(examples)


@pytest.mark.parametrize("task_name", ["Copy", "Addition", "Sorting"])
def test_training_stream_batches_match_reference(task_name: str) -> None:
    """A training batch is the reference layout of the examples drawn with the same generator."""
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="lengen.tasks") if e.name == task_name]
    task = entry.load()()
    seed, index = random.randrange(2**16), random.randrange(1000)
    stream = TrainingStream(task, task.min_length, task.min_length + 12, seed, batch_size=16)
    batch = stream.batch(index)
    rng = random.Random(f"train-{seed}-0-{index}")  # TrainingStream's documented generator key
    lengths = [rng.randint(task.min_length, task.min_length + 12) for _ in range(16)]
    examples = [task.make_example(length, rng) for length in lengths]
    expected = reference_collate(examples)
    for name, values in expected.items():
        assert getattr(batch, name).tolist() == values, name
