"""Data: teacher-forcing layout, cached evaluation sets, and n_ctx + 1 language-model windows."""

from __future__ import annotations

import random

import pytest
import torch

from lengen.data.tasks import (
    TaskDataModule,
    batches_by_length,
    collate_examples,
    load_or_build_eval_set,
)
from lengen.data.text import TextDataModule, pack_windows
from lengen.module import LengenModule
from lengen.task import BOS, EOS, PAD, SEP, Example, Task
from lengen_plugins.positional_encodings.learned import Learned


class Echo(Task):
    """Copy over a small alphabet (defined here so the tests need no task plugin)."""

    symbols = ("a", "b", "c")

    def __init__(self, salt: int = 0) -> None:
        self.salt = salt

    def generate(self, length, rng):
        symbols = [rng.choice(self.symbols) for _ in range(length)]
        return symbols, symbols


def test_collate_lays_out_prompt_and_target_for_teacher_forcing():
    examples = [Example([BOS, 4, 5, SEP], [4, 5, EOS], 2), Example([BOS, 6, SEP], [6, EOS], 1)]
    batch = collate_examples(examples)
    assert batch.input_ids.tolist() == [[BOS, 4, 5, SEP, 4, 5], [BOS, 6, SEP, 6, PAD, PAD]]
    assert batch.labels.tolist() == [
        [-100, -100, -100, 4, 5, EOS],
        [-100, -100, 6, EOS, -100, -100],
    ]
    assert batch.targets.tolist() == [[4, 5, EOS], [6, EOS, PAD]]
    assert batch.prompt_lengths.tolist() == [4, 3]
    assert batch.target_lengths.tolist() == [3, 2]
    assert batch.lengths.tolist() == [2, 1]


def test_eval_set_is_generated_once_and_reused(tmp_path):
    task = Echo()
    first = load_or_build_eval_set(task, [2, 5], 7, seed=3, split="test", cache_dir=tmp_path)
    saved = list((tmp_path / "eval_sets").iterdir())
    assert len(saved) == 1
    again = load_or_build_eval_set(task, [2, 5], 7, seed=3, split="test", cache_dir=tmp_path)
    assert first.to_list() == again.to_list()
    assert list((tmp_path / "eval_sets").iterdir()) == saved  # loaded, not written again
    assert sorted(set(first["length"])) == [2, 5] and len(first) == 14
    assert all(
        len(prompt) == length + 2 for prompt, length in zip(first["prompt"], first["length"])
    )
    # Another seed, split or task argument is another set.
    load_or_build_eval_set(task, [2, 5], 7, seed=4, split="test", cache_dir=tmp_path)
    load_or_build_eval_set(task, [2, 5], 7, seed=3, split="val", cache_dir=tmp_path)
    load_or_build_eval_set(Echo(salt=1), [2, 5], 7, seed=3, split="test", cache_dir=tmp_path)
    assert len(list((tmp_path / "eval_sets").iterdir())) == 4


def test_eval_batches_hold_one_length_each():
    lengths = [random.choice([3, 8, 13]) for _ in range(100)]
    batches = batches_by_length(lengths, batch_size=16)
    assert sorted(i for batch in batches for i in batch) == list(range(100))
    for batch in batches:
        assert len(batch) <= 16 and len({lengths[i] for i in batch}) == 1


def test_data_module_checks_its_lengths(tmp_path):
    with pytest.raises(ValueError, match="train_min_length <= train_max_length"):
        TaskDataModule(Echo(), train_min_length=9, train_max_length=4, cache_dir=str(tmp_path))
    module = TaskDataModule(Echo(), train_max_length=8, cache_dir=str(tmp_path))
    assert module.eval_lengths == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32]
    stream = iter(module.train_dataloader())
    batch = next(stream)
    assert batch.input_ids.shape[0] == module.batch_size
    assert 1 <= int(batch.lengths.min()) <= int(batch.lengths.max()) <= 8


def test_windows_hold_n_ctx_plus_one_tokens():
    tokens = torch.arange(23)
    windows = pack_windows(tokens, n_ctx=5)
    assert windows.shape == (4, 6)
    assert windows[1].tolist() == [5, 6, 7, 8, 9, 10]  # consecutive windows share one token
    with pytest.raises(ValueError, match="at least n_ctx \\+ 1 = 6 tokens"):
        pack_windows(torch.arange(5), n_ctx=5)


def test_text_module_fills_every_position_of_the_context(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(random.choice("abcdefgh \n") for _ in range(3000)))
    data = TextDataModule(
        files=[str(corpus)], n_ctx=32, batch_size=4, val_fraction=0.3, cache_dir=str(tmp_path)
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.input_ids.shape == batch.labels.shape == (4, 32)
    assert torch.equal(batch.input_ids[:, 1:], batch.labels[:, :-1])


def test_stdlib_source_is_the_default_corpus(tmp_path):
    data = TextDataModule(n_ctx=64, max_tokens=20_000, eval_multiples=[1], cache_dir=str(tmp_path))
    data.setup("fit")
    text = bytes(data.train_windows[0].tolist()).decode("utf-8", errors="replace")
    assert len(data.train_windows) == (20_000 - int(20_000 * 0.05) - 1) // 64
    assert "import" in bytes(data.train_windows.flatten().tolist()).decode("utf-8", "replace")
    assert text  # real text, not padding


def test_one_full_length_step_trains_every_row_of_a_learned_table(tmp_path):
    """The off-by-one: with n_ctx + 1 windows, positions 0..n_ctx-1 all receive gradient."""
    n_ctx = 16
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(random.choice("abcdefgh \n") for _ in range(2000)))
    data = TextDataModule(
        files=[str(corpus)], n_ctx=n_ctx, batch_size=4, eval_multiples=[1], cache_dir=str(tmp_path)
    )
    data.setup("fit")
    model = LengenModule(Learned(max_length=n_ctx), vocab_size=256, n_layer=1, d_model=32)
    batch = next(iter(data.train_dataloader()))
    model.loss(model(batch.input_ids), batch.labels).backward()
    table_grad = model.decoder.pos_encoding.table.weight.grad  # (n_ctx, d_model)
    assert table_grad.shape[0] == n_ctx
    assert (table_grad.abs().sum(dim=1) > 0).all()
