"""Language-model path: corpora through `datasets`, windows, deterministic order, evaluation."""

from __future__ import annotations

import json
import random
import sys

import lightning as L
import pytest
import torch

from lengen.data.text import EpochShuffle, TextDataModule, sliding_windows
from lengen.module import LengenModule
from lengen_plugins.metrics.perplexity import Perplexity
from lengen_plugins.metrics.position_loss import PositionLoss
from lengen_plugins.positional_encodings.learned import Learned
from lengen_plugins.positional_encodings.sinusoidal import Sinusoidal


def random_text(count: int) -> str:
    return "".join(random.choice("abcdefgh \n") for _ in range(count))


def test_json_corpus_and_byte_tokens(tmp_path):
    records = [{"body": random_text(300), "id": i} for i in range(10)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records))
    data = TextDataModule(
        files=[str(path)], text_field="body", n_ctx=16, eval_multiples=[1, 2],
        val_fraction=0.2, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    stream = data.token_stream()
    expected = b"".join(record["body"].encode() + b"\n" for record in records)
    assert stream.tolist() == list(expected)  # documents in order, newline-separated
    with pytest.raises(ValueError, match="no field 'text'; fields: body, id"):
        TextDataModule(files=[str(path)], cache_dir=str(tmp_path / "cache")).token_stream()


def test_missing_transformers_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    data = TextDataModule(tokenizer="gpt2", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs the transformers package"):
        _ = data.vocab_size


def test_off_by_one_window_leaves_the_last_position_untrained(tmp_path):
    """window: n_ctx gives n_ctx - 1 inputs: a learned table's last row gets no gradient."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(random_text(2000))
    n_ctx = 16
    data = TextDataModule(
        files=[str(corpus)], n_ctx=n_ctx, window="n_ctx", eval_multiples=[1],
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.input_ids.shape[1] == n_ctx - 1
    model = LengenModule(Learned(max_length=n_ctx), vocab_size=256, n_layer=1, d_model=32)
    model.loss(model(batch.input_ids), batch.labels).backward()
    grad = model.decoder.pos_encoding.table.weight.grad.abs().sum(dim=1)  # (n_ctx,)
    assert (grad[:-1] > 0).all() and grad[-1] == 0
    # Evaluation always uses full n_ctx inputs, so the untrained position is measured.
    eval_batch = next(iter(data.val_dataloader()))
    assert eval_batch.input_ids.shape[1] == n_ctx and eval_batch.lengths.tolist()[0] == n_ctx


def test_training_order_is_a_function_of_seed_and_epoch():
    orders = {}
    for seed in (0, 1):
        for epoch in (0, 1):
            sampler = EpochShuffle(50, seed)
            sampler.set_epoch(epoch)
            orders[(seed, epoch)] = list(sampler)
    again = EpochShuffle(50, 0)
    again.set_epoch(3)
    list(again)
    again.set_epoch(1)  # history does not matter, only (seed, epoch)
    assert list(again) == orders[(0, 1)]
    assert sorted(orders[(0, 0)]) == list(range(50))
    assert len({tuple(order) for order in orders.values()}) == 4


def test_sliding_windows_score_every_token_once():
    tokens = torch.randperm(1000)  # distinct values: each token is identifiable
    context, stride = 64, 24
    windows, scored = sliding_windows(tokens, context, stride)
    labels = windows[:, 1:][scored]
    covered = (len(tokens) - 1 - context) // stride * stride + context
    assert labels.tolist() == tokens[1 : covered + 1].tolist()  # in order, no repeats or gaps
    assert scored[0].all() and scored[1:].sum(dim=1).eq(stride).all()


def test_perplexity_and_position_loss_by_context_length(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(random_text(12_000))
    data = TextDataModule(
        files=[str(corpus)], n_ctx=16, batch_size=8, eval_multiples=[1, 2, 4],
        val_fraction=0.2, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    model = LengenModule(
        Sinusoidal(), vocab_size=256, n_layer=1, d_model=32, warmup_steps=1,
        metrics=[Perplexity(), PositionLoss()],
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        default_root_dir=str(tmp_path), num_sanity_val_steps=0, limit_val_batches=0,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["metrics"]["perplexity"]) == {"16", "32", "64"}
    assert set(results["metrics"]["position_loss"]) == {str(i) for i in range(64)}
    assert results["train_max_length"] == 16
    assert all(1.0 < value < 1000.0 for value in results["metrics"]["perplexity"].values())
