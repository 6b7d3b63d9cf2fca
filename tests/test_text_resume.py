"""Resume exactly on the language-model path: mid-epoch and at an epoch's end, through the CLI."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lengen.data.text import EpochShuffle, TextDataModule

# 419 random bytes + the tokenizer's newline = 420 tokens; val_fraction 0.1 holds out 42, leaving
# 378 training tokens = 23 windows of 17 (stride 16) = 5 batches of 4 (drop_last drops 3 windows).
# accumulate_grad_batches 2 gives 3 optimizer steps an epoch (2 + 2 + the short last 1):
# epoch 0 = steps 0-2, epoch 1 = steps 3-5, epoch 2 = steps 6-7.
CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_steps: 8
  limit_val_batches: 0
  num_sanity_val_steps: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  accumulate_grad_batches: 2
  callbacks:
    - class_path: SequenceLengthWarmup
      init_args: {max_seq_length: 16, min_seq_length: 4, duration: 0.9, step_size: 4}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 1, save_top_k: -1, filename: "{step}"}
model:
  pos_encoding: RoPE
  n_layer: 1
  n_head: 2
  d_model: 16
  dropout: 0.1
  warmup_steps: 2
data:
  class_path: TextDataModule
  init_args:
    n_ctx: 16
    batch_size: 4
    eval_multiples: [1]
    val_fraction: 0.1
"""


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread is faster on 2 cores
    return subprocess.run(
        [script, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env
    )


def run_args(root: Path, run: str) -> list[str]:
    return [
        "--config", str(root / "config.yaml"),
        "--trainer.default_root_dir", str(root / run),
        "--data.init_args.files", f"[{root / 'corpus.txt'}]",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


def per_step(log_dir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text_resume")
    rng = random.Random(1234)
    (root / "corpus.txt").write_text("".join(rng.choice("abcdefgh \n") for _ in range(419)))
    (root / "config.yaml").write_text(CONFIG)
    full = lengen("fit", *run_args(root, "full"), cwd=root)
    assert full.returncode == 0, full.stderr[-3000:]
    return root


@pytest.mark.parametrize(
    "resume_step",
    [4, 3],  # 4: mid-epoch 1 (2 of its 5 batches done); 3: saved on epoch 0's last batch
)
def test_resumed_text_run_reproduces_losses_bit_for_bit(uninterrupted, resume_step):
    root = uninterrupted
    full_log = root / "full" / "lightning_logs" / "version_0"
    checkpoint = full_log / "checkpoints" / f"step={resume_step}.ckpt"
    assert checkpoint.exists(), sorted(p.name for p in (full_log / "checkpoints").iterdir())
    run = f"resumed_{resume_step}"
    resumed = lengen("fit", *run_args(root, run), "--ckpt_path", str(checkpoint), cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_log = root / run / "lightning_logs" / "version_0"

    # The run crossed epoch boundaries at steps 3 and 6 (3 steps an epoch), as the comment says.
    epochs = per_step(full_log, "epoch")
    assert [epochs[step] for step in range(8)] == [0, 0, 0, 1, 1, 1, 2, 2], epochs

    # Logged step s is the s-th optimizer step (0-based): the resumed run logs steps t..7.
    for tag in ("train/loss", "curriculum/seq_length", "curriculum/tokens_seen"):
        want, got = per_step(full_log, tag), per_step(resumed_log, tag)
        assert sorted(got) == list(range(resume_step, 8)), (tag, sorted(got))
        assert {step: want[step] for step in got} == got, tag  # exact float equality
    # The final weights saw every micro-batch's gradient, so they match only if every batch did.
    want, got = (
        weights(full_log / "checkpoints" / "step=8.ckpt"),
        weights(resumed_log / "checkpoints" / "step=8.ckpt"),
    )
    assert want.keys() == got.keys()
    assert all(torch.equal(want[name], got[name]) for name in want)

    # Non-vacuous: the warmup was still moving after the resume, and losses differ step to step.
    lengths = per_step(full_log, "curriculum/seq_length")
    assert lengths[resume_step] < lengths[7] == 16
    losses = per_step(full_log, "train/loss")
    assert len(set(losses.values())) == len(losses)


def steps_of_uninterrupted_run(batches: int, accumulation: int, epochs: int) -> list[tuple]:
    """(epoch, first batch) of each optimizer step, by walking the batches as Lightning does:
    a step after every `accumulation` batches and after an epoch's last batch."""
    steps, group = [], []
    for epoch in range(epochs):
        for batch in range(batches):
            group.append((epoch, batch))
            if len(group) == accumulation or batch == batches - 1:
                steps.append(group[0])
                group = []
    return steps


@pytest.mark.parametrize(
    "windows, accumulation, limit",
    [(23, 2, 1.0), (23, 1, 1.0), (23, 3, 1.0), (40, 2, 7), (40, 4, 0.5)],
)
def test_resume_position_is_the_uninterrupted_runs_position(windows, accumulation, limit):
    data = TextDataModule(batch_size=4)
    data.train_windows = torch.zeros(windows, 17, dtype=torch.long)
    batches = windows // 4  # drop_last
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    for step, (epoch, batch) in enumerate(steps_of_uninterrupted_run(batches, accumulation, 4)):
        data.trainer = SimpleNamespace(
            world_size=1,
            global_step=step,
            accumulate_grad_batches=accumulation,
            limit_train_batches=limit,
        )
        assert data.resume_position() == (epoch, batch * 4), step


def test_epoch_shuffle_continues_only_the_resumed_epoch():
    sampler = EpochShuffle(23, seed=5, resume_epoch=1, resume_index=8)
    whole = EpochShuffle(23, seed=5)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        whole.set_epoch(epoch)
        expected = list(whole)[8:] if epoch == 1 else list(whole)
        assert list(sampler) == expected and len(sampler) == 23
    assert sorted(list(whole)) == list(range(23))
