"""Edit distance, perplexity and per-position loss against plain reference computations."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lengen.data.tasks import collate_examples
from lengen.data.text import TextBatch
from lengen.metric import bucket_values
from lengen.task import EOS, PAD, Example
from lengen_plugins.metrics.edit_distance import EditDistance, levenshtein
from lengen_plugins.metrics.perplexity import Perplexity
from lengen_plugins.metrics.position_loss import PositionLoss


def plain_levenshtein(a: list[int], b: list[int]) -> int:
    """Wagner-Fischer dynamic programme, written out."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return table[len(a)][len(b)]


def test_batched_levenshtein_equals_the_plain_dp():
    rng = random.Random()
    rows = [
        ([rng.randrange(4) for _ in range(rng.randint(0, 12))],
         [rng.randrange(4) for _ in range(rng.randint(0, 12))])
        for _ in range(200)
    ]  # fmt: skip
    first = torch.full((len(rows), 12), -1)
    second = torch.full((len(rows), 12), -2)
    for index, (a, b) in enumerate(rows):
        first[index, : len(a)] = torch.tensor(a, dtype=torch.long)
        second[index, : len(b)] = torch.tensor(b, dtype=torch.long)
    got = levenshtein(
        first,
        torch.tensor([len(a) for a, _ in rows]),
        second,
        torch.tensor([len(b) for _, b in rows]),
    )
    assert got.tolist() == [plain_levenshtein(a, b) for a, b in rows]


def test_edit_distance_per_bucket_against_plain_computation():
    rng = random.Random()
    examples, generations = [], []
    for _ in range(60):
        length = rng.choice([3, 6, 9])
        target = [rng.randrange(4, 10) for _ in range(length)] + [EOS]
        prompt = [1, *(rng.randrange(4, 10) for _ in range(length)), 2]
        generation = [t if rng.random() < 0.6 else rng.randrange(3, 10) for t in target]
        examples.append(Example(prompt, target, length))
        generations.append(generation)
    batch = collate_examples(examples)
    generated = torch.full_like(batch.targets, PAD)
    for row, generation in enumerate(generations):
        generated[row, : len(generation)] = torch.tensor(generation)
    metric = EditDistance(max_length=10)
    metric.update(batch, torch.zeros(1), generated)

    expected: dict[int, list[float]] = {}
    for example, generation in zip(examples, generations):
        cut = generation[: generation.index(EOS) + 1] if EOS in generation else generation
        distance = plain_levenshtein(cut, example.target)
        expected.setdefault(example.length, []).append(
            distance / max(len(cut), len(example.target))
        )
    got = bucket_values(metric.compute())
    assert set(got) == set(expected)
    for length, values in expected.items():
        assert got[length] == pytest.approx(sum(values) / len(values), abs=1e-12)
    assert not metric.higher_is_better


def lm_batch(rng: torch.Generator, batch: int, width: int, vocab: int, context: int) -> TextBatch:
    input_ids = torch.randint(vocab, (batch, width), generator=rng)
    labels = torch.randint(vocab, (batch, width), generator=rng)
    labels[:, : width // 3] = -100  # a sliding window scores only its last tokens
    return TextBatch(input_ids, labels, lengths=torch.full((batch,), context))


def test_perplexity_and_position_loss_against_plain_log_softmax():
    rng = torch.Generator().manual_seed(random.randrange(2**31))
    vocab = 11
    batches = [lm_batch(rng, 3, 8, vocab, 8), lm_batch(rng, 2, 16, vocab, 16),
               lm_batch(rng, 4, 8, vocab, 8)]  # fmt: skip
    logits = [torch.randn(*b.input_ids.shape, vocab, generator=rng) for b in batches]
    perplexity, positions, only_eight = Perplexity(32), PositionLoss(32), PositionLoss(32, 8)
    for batch, batch_logits in zip(batches, logits):
        for metric in (perplexity, positions, only_eight):
            assert metric.accepts(batch)
            metric.update(batch, batch_logits, None)

    nll_by_length: dict[int, list[float]] = {}
    nll_by_position: dict[int, list[float]] = {}
    nll_by_position_eight: dict[int, list[float]] = {}
    for batch, batch_logits in zip(batches, logits):
        log_probs = batch_logits.double().log_softmax(-1)
        for row in range(batch.input_ids.shape[0]):
            for position in range(batch.input_ids.shape[1]):
                label = int(batch.labels[row, position])
                if label == -100:
                    continue
                nll = -float(log_probs[row, position, label])
                nll_by_length.setdefault(int(batch.lengths[row]), []).append(nll)
                nll_by_position.setdefault(position, []).append(nll)
                if int(batch.lengths[row]) == 8:
                    nll_by_position_eight.setdefault(position, []).append(nll)
    got = bucket_values(perplexity.compute())
    assert set(got) == {8, 16}
    for length, values in nll_by_length.items():
        assert got[length] == pytest.approx(math.exp(sum(values) / len(values)), rel=1e-5)
    for metric, expected in ((positions, nll_by_position), (only_eight, nll_by_position_eight)):
        got = bucket_values(metric.compute())
        assert set(got) == set(expected)  # unscored positions are absent, not 0
        for position, values in expected.items():
            assert got[position] == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_task_metrics_skip_language_model_batches_and_back():
    rng = torch.Generator().manual_seed(0)
    text = lm_batch(rng, 2, 8, 5, 8)
    task = collate_examples([Example([1, 5, 2], [5, EOS], 1)])
    assert not EditDistance().accepts(text) and EditDistance().accepts(task)
    assert not PositionLoss().accepts(task) and Perplexity().accepts(task)
