"""Per-length metric bookkeeping: weighted bucket means, empty buckets, state merging (DDP)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lengen.data.tasks import collate_examples
from lengen.metric import bucket_values
from lengen.task import EOS, Example
from lengen_plugins.metrics.exact_match import ExactMatch
from lengen_plugins.metrics.token_accuracy import TokenAccuracy


def random_examples(rng: random.Random, count: int) -> list[Example]:
    examples = []
    for _ in range(count):
        length = rng.choice([2, 3, 5])
        prompt = [1, *(rng.randrange(4, 14) for _ in range(length)), 2]
        target = [*(rng.randrange(4, 14) for _ in range(rng.randint(1, length))), EOS]
        examples.append(Example(prompt=prompt, target=target, length=length))
    return examples


def test_exact_match_and_token_accuracy_against_a_plain_count():
    rng = random.Random()
    examples = random_examples(rng, 40)
    batch = collate_examples(examples)
    vocab = 14
    logits = torch.randn(*batch.input_ids.shape, vocab)
    # Make roughly half of the target tokens correct so the counts are non-trivial.
    for row, example in enumerate(examples):
        start = len(example.prompt) - 1
        for offset, token in enumerate(example.target):
            if rng.random() < 0.7:
                logits[row, start + offset, token] = 100.0
    generated = batch.targets.clone()
    for row in range(len(examples)):
        if rng.random() < 0.5:
            generated[row, 0] = (generated[row, 0] + 1) % vocab  # a wrong first token

    exact, tokens = ExactMatch(max_length=8), TokenAccuracy(max_length=8)
    exact.update(batch, logits, generated)
    tokens.update(batch, logits, None)

    predictions = logits.argmax(-1)
    expected_exact, expected_tokens = {}, {}
    for row, example in enumerate(examples):
        start = len(example.prompt) - 1
        hits = [int(predictions[row, start + i]) == t for i, t in enumerate(example.target)]
        right, total = expected_tokens.get(example.length, (0, 0))
        expected_tokens[example.length] = (right + sum(hits), total + len(hits))
        same = generated[row, : len(example.target)].tolist() == example.target
        right, total = expected_exact.get(example.length, (0, 0))
        expected_exact[example.length] = (right + same, total + 1)

    got_exact, got_tokens = bucket_values(exact.compute()), bucket_values(tokens.compute())
    assert set(got_exact) == set(expected_exact)
    for length, (right, total) in expected_exact.items():
        assert math.isclose(got_exact[length], right / total)
    for length, (right, total) in expected_tokens.items():
        assert math.isclose(got_tokens[length], right / total)


def test_empty_buckets_are_nan_and_absent():
    metric = ExactMatch(max_length=10)
    examples = [Example([1, 5, 2], [5, EOS], 1), Example([1, 5, 6, 7, 2], [7, EOS], 3)]
    batch = collate_examples(examples)
    metric.update(batch, torch.zeros(2, batch.input_ids.shape[1], 8), batch.targets.clone())
    values = metric.compute()
    assert values.shape == (11,)
    assert values[1] == 1.0 and values[3] == 1.0
    assert torch.isnan(values[[0, 2, 4, 10]]).all()
    assert bucket_values(values) == {1: 1.0, 3: 1.0}


def test_merged_states_equal_one_metric_over_all_batches():
    """Sum states merge like DDP's all-reduce: two halves give the single-process result."""
    rng = random.Random()
    examples = random_examples(rng, 30)
    whole, first, second = TokenAccuracy(8), TokenAccuracy(8), TokenAccuracy(8)
    batches = [collate_examples(examples[:13]), collate_examples(examples[13:])]
    for metric, batch_list in ((whole, batches), (first, batches[:1]), (second, batches[1:])):
        for batch in batch_list:
            torch.manual_seed(len(batch.lengths))
            metric.update(batch, torch.randn(*batch.input_ids.shape, 14), None)
    first.merge_state(second)
    assert torch.equal(whole.compute().nan_to_num(-1), first.compute().nan_to_num(-1))


def test_a_length_past_the_buckets_is_a_clear_error():
    metric = TokenAccuracy(max_length=4)
    batch = collate_examples([Example([1, 5, 2], [5, EOS], 9)])
    with pytest.raises(ValueError, match="up to length 4, got 9; raise its max_length"):
        metric.update(batch, torch.zeros(1, 3, 8), None)
