"""Attention analysis: recorded maps, attended distances and Jensen-Shannon divergence."""

from __future__ import annotations

import json
import math
import random

import lightning as L
import pytest
import torch

from lengen.attention_analysis import (
    distance_distribution,
    head_divergence,
    jensen_shannon,
    record_attention,
)
from lengen.data.tasks import TaskDataModule
from lengen.model import Decoder
from lengen.module import LengenModule
from lengen_plugins.callbacks.attention_analysis import AttentionAnalysis
from lengen_plugins.positional_encodings.alibi import ALiBi
from lengen_plugins.positional_encodings.nope import NoPE
from lengen_plugins.tasks.copy import Copy


def plain_jsd_bits(p: list[float], q: list[float]) -> float:
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl_p = sum(a * math.log2(a / c) for a, c in zip(p, m) if a > 0)
    kl_q = sum(b * math.log2(b / c) for b, c in zip(q, m) if b > 0)
    return 0.5 * kl_p + 0.5 * kl_q


def random_distribution(rng: random.Random, size: int, zeros: int = 0) -> list[float]:
    weights = [rng.random() for _ in range(size)]
    for index in rng.sample(range(size), zeros):
        weights[index] = 0.0
    return [w / sum(weights) for w in weights]


def test_jensen_shannon_against_the_plain_formula():
    rng = random.Random()
    pairs = [(random_distribution(rng, 9, rng.randint(0, 4)), random_distribution(rng, 9))
             for _ in range(30)]  # fmt: skip
    p = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    q = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    got = jensen_shannon(p, q)
    for value, (a, b) in zip(got.tolist(), pairs):
        assert value == pytest.approx(plain_jsd_bits(a, b), abs=1e-10)
    assert torch.allclose(got, jensen_shannon(q, p))  # symmetric
    assert jensen_shannon(p, p).abs().max() < 1e-12
    disjoint = jensen_shannon(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert float(disjoint) == pytest.approx(1.0)  # the bound, in bits


def test_recorded_attention_is_the_models_attention():
    torch.manual_seed(random.randrange(2**31))
    decoder = Decoder(vocab_size=20, pos_encoding=ALiBi(), n_layer=2, n_head=4, d_model=32).eval()
    input_ids = torch.randint(20, (3, 11))
    original = decoder.attention
    expected = decoder(input_ids)
    maps = record_attention(decoder, input_ids)
    assert decoder.attention is original  # restored
    assert maps.shape == (2, 3, 4, 11, 11)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 3, 4, 11), atol=1e-5)
    assert (maps.triu(1) == 0).all()  # causal
    # Replaying the model with the recording attention gives the same logits.
    from lengen.attention_analysis import recording

    with torch.no_grad(), recording(decoder):
        assert torch.allclose(decoder(input_ids), expected, atol=1e-5)


def test_distance_distribution_and_head_divergence_against_loops():
    torch.manual_seed(random.randrange(2**31))
    layers, batch, heads, length = 2, 3, 2, 6
    scores = torch.randn(layers, batch, heads, length, length)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    maps = scores.masked_fill(future, float("-inf")).softmax(-1).double()
    reference = torch.randn(layers, batch, 3, length, length)
    reference = reference.masked_fill(future, float("-inf")).softmax(-1).double()

    got = distance_distribution(maps)
    for layer in range(layers):
        for b in range(batch):
            for head in range(heads):
                expected = [0.0] * length
                for i in range(length):
                    for j in range(i + 1):
                        expected[i - j] += float(maps[layer, b, head, i, j]) / length
                assert got[layer, b, head].tolist() == pytest.approx(expected, abs=1e-12)

    divergence = head_divergence(maps, reference)
    assert divergence.shape == (layers, heads, 3)
    for layer in range(layers):
        for head in range(heads):
            for other in range(3):
                values = [
                    plain_jsd_bits(maps[layer, b, head, i].tolist(),
                                   reference[layer, b, other, i].tolist())
                    for b in range(batch) for i in range(length)
                ]  # fmt: skip
                mean = sum(values) / len(values)
                assert float(divergence[layer, head, other]) == pytest.approx(mean, abs=1e-10)


def test_callback_writes_figures_and_divergence_against_a_reference(tmp_path):
    data = TaskDataModule(
        Copy(), train_max_length=4, eval_lengths=[3, 6], batch_size=8,
        val_examples_per_length=2, test_examples_per_length=4, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    model = LengenModule(NoPE(), vocab_size=data.vocab_size, n_layer=1, n_head=2, d_model=16)
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path), limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, data)
    checkpoint = tmp_path / "reference.ckpt"
    trainer.save_checkpoint(checkpoint)
    analysis = AttentionAnalysis(examples_per_length=2, reference_checkpoint=str(checkpoint))
    tester = L.Trainer(
        logger=False, callbacks=[analysis], enable_progress_bar=False,
        default_root_dir=str(tmp_path / "test"),
    )  # fmt: skip
    tester.test(model, data, verbose=False)
    out = tmp_path / "test" / "attention"
    for length in (3, 6):
        for name in ("maps", "distances", "jsd"):
            assert (out / f"length_{length}_{name}.png").stat().st_size > 0
    summary = json.loads((out / "attention.json").read_text())
    # The reference is this very model: each head's closest reference head is itself, JSD 0.
    for entry in summary["lengths"].values():
        jsd = torch.tensor(entry["jsd"])  # (L, nh, nh)
        assert jsd.diagonal(dim1=1, dim2=2).abs().max() < 1e-6
        assert len(entry["mean_distance"][0]) == 2
    with pytest.raises(ValueError, match="is not a checkpoint file or a folder"):
        AttentionAnalysis(reference_checkpoint=str(tmp_path / "none.ckpt"))
    with pytest.raises(ValueError, match="no \\*.ckpt below"):
        AttentionAnalysis(reference_checkpoint=str(tmp_path / "test" / "attention"))
    folder = AttentionAnalysis(reference_checkpoint=str(tmp_path))
    assert folder.reference_checkpoint == str(checkpoint)  # the newest below the folder
