"""Resume after a crash: `lengen fit --ckpt_path last` continues a run killed by SIGKILL, with
dropout, bit for bit, on the task path and on the language-model path; no checkpoint fails in one
line; unreadable checkpoints are skipped; the random state is in every checkpoint."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lengen.checkpoints import checkpoint_problem
from lengen.cli import main
from lengen.random_state import TrainingRandomState, random_state, set_random_state

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")

# A callback that kills its own process with SIGKILL (no clean-up, no flush) at the end of a
# step; it runs before ModelCheckpoint's hook (Lightning orders checkpoint callbacks last), so the
# checkpoint of that step is never written. Configured only for the run that is to be killed.
KILLER = """
import os, signal
import lightning as L

class KillAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [script, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env
    )


def per_step(log_dir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def task_args(root: Path, run: str) -> list[str]:
    """8 steps of the quickstart task (Copy), dropout 0.1, a checkpoint every 2 steps and a
    validation every 4 batches, so one falls between checkpoint 4 and step 4 (its DataLoader
    draws from the global RNG in the uninterrupted run only)."""
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / run),
        "--trainer.max_steps", "8",
        "--trainer.val_check_interval", "4",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--checkpoint_every_n_steps", "2",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--model.dropout", "0.1",
        "--model.warmup_steps", "2",
        "--data.init_args.train_max_length", "10",
        "--data.init_args.eval_lengths", "[4, 8]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


TEXT_CONFIG = """
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


def text_args(root: Path, run: str) -> list[str]:
    """8 steps of a byte-level language model on a random corpus (3 steps an epoch)."""
    return [
        "--config", str(root / "text.yaml"),
        "--trainer.default_root_dir", str(root / run),
        "--checkpoint_every_n_steps", "2",
        "--data.init_args.files", f"[{root / 'corpus.txt'}]",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


@pytest.mark.parametrize("path", ["task", "text"])
def test_killed_run_resumed_with_last_reproduces_every_loss(tmp_path, path):
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "kill.yaml").write_text(
        "trainer:\n  callbacks:\n    - {class_path: killer.KillAtStep, init_args: {step: 5}}\n"
    )
    if path == "text":
        rng = random.Random(1234)
        (tmp_path / "corpus.txt").write_text("".join(rng.choice("abcdefgh \n") for _ in range(419)))
        (tmp_path / "text.yaml").write_text(TEXT_CONFIG)
    args = task_args if path == "task" else text_args

    full = lengen("fit", *args(tmp_path, "full"), cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = lengen("fit", *args(tmp_path, "run"), "--config", "kill.yaml", cwd=tmp_path)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])  # SIGKILL
    folder = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step=2.ckpt", "step=4.ckpt"]

    # Newer but unreadable checkpoints are skipped, each with a line saying so.
    good = (folder / "step=4.ckpt").read_bytes()
    (folder / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "text.ckpt").write_text("not a checkpoint")

    resumed = lengen("fit", *args(tmp_path, "run"), "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    skipped = [line for line in resumed.stderr.splitlines() if "skipping unreadable" in line]
    assert len(skipped) == 3 and all(".ckpt: " in line for line in skipped), skipped
    assert f"lengen: resuming from the newest checkpoint {folder / 'step=4.ckpt'}" in resumed.stdout

    full_log = tmp_path / "full" / "lightning_logs" / "version_0"
    killed_log = tmp_path / "run" / "lightning_logs" / "version_0"
    resumed_log = tmp_path / "run" / "lightning_logs" / "version_1"
    want = per_step(full_log, "train/loss")
    before, after = per_step(killed_log, "train/loss"), per_step(resumed_log, "train/loss")
    assert sorted(want) == list(range(8))
    assert sorted(after) == [4, 5, 6, 7], sorted(after)  # the resumed run starts at step 4
    assert sorted(before) == [0, 1, 2, 3, 4][: len(before)] and len(before) >= 4, sorted(before)
    assert {step: want[step] for step in after} == after  # exact float equality
    assert {step: want[step] for step in before} == before
    # The final weights saw every step's gradient, so they match only if every step did.
    final_want = weights(full_log / "checkpoints" / "step=8.ckpt")
    final_got = weights(resumed_log / "checkpoints" / "step=8.ckpt")
    assert all(torch.equal(final_want[name], final_got[name]) for name in final_want)
    # Non-vacuous: losses differ step to step, and a resumed run that does not restore the random
    # state differs (shown by deleting it from a copy of the checkpoint).
    assert len(set(want.values())) == len(want)
    checkpoint = torch.load(folder / "step=4.ckpt", weights_only=False)
    assert len(checkpoint["lengen_random_state"]) == 1  # one state per rank
    del checkpoint["lengen_random_state"]
    torch.save(checkpoint, tmp_path / "no_rng.ckpt")
    plain = lengen(
        "fit", *args(tmp_path, "plain"), "--ckpt_path", str(tmp_path / "no_rng.ckpt"), cwd=tmp_path
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    differs = per_step(tmp_path / "plain" / "lightning_logs" / "version_0", "train/loss")
    assert sorted(differs) == [4, 5, 6, 7] and all(differs[s] != want[s] for s in differs)


def test_fit_last_without_checkpoint_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "run" / "lightning_logs" / "version_0").mkdir(parents=True)
    (tmp_path / "run" / "lightning_logs" / "version_0" / "broken.ckpt").write_bytes(b"PK\x03\x04")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *task_args(tmp_path, "run"), "--ckpt_path", "last"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lengen: error")]
    assert len(errors) == 1, stderr
    assert "--ckpt_path last: only 1 unreadable checkpoint(s) below" in errors[0]
    assert "skipping unreadable checkpoint" in stderr
    assert not list((tmp_path / "run").rglob("events.out.*"))  # nothing trained or logged


@pytest.mark.parametrize("bad", ["--checkpoint_every_n_steps=0", "--on_nonfinite=ignore"])
def test_fit_options_refuse_bad_values_in_one_line(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *task_args(tmp_path, "run"), bad])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("lengen: error")]
    assert exit_info.value.code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
    assert bad.split("=")[0] in errors[0]


def test_checkpoint_problem_tells_readable_from_broken(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}, "global_step": 3}, good)
    assert checkpoint_problem(good) is None
    data = good.read_bytes()
    cases = {
        "empty.ckpt": b"",
        "truncated.ckpt": data[: len(data) - 100],
        "text.ckpt": b"hello",
    }
    # One flipped byte inside the tensor data: the zip member's CRC no longer matches.
    flipped = bytearray(data)
    offset = data.index(b"data/0") + 200
    flipped[offset] ^= 0xFF
    cases["flipped.ckpt"] = bytes(flipped)
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert checkpoint_problem(tmp_path / name) is not None, name
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")  # a torch file, not Lightning
    assert "not a Lightning checkpoint" in checkpoint_problem(tmp_path / "other.ckpt")


def test_random_state_round_trip_covers_every_generator():
    state = random_state()
    drawn = (random.random(), np.random.rand(), torch.rand(3), np.random.randn())
    set_random_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3), np.random.randn())
    assert drawn[0] == again[0] and drawn[1] == again[1] and drawn[3] == again[3]
    assert torch.equal(drawn[2], again[2])


def save_and_restore_per_rank(rank: int, world_size: int, path: str) -> None:
    """One gloo rank: snapshot its own random state, save the gathered checkpoint (rank 0
    writes), load it into a fresh keeper and check the draws after the snapshot repeat."""
    dist.init_process_group(
        "gloo", init_method=f"file://{path}.rendezvous", rank=rank, world_size=world_size
    )
    try:
        cpu = torch.device("cpu")
        torch.manual_seed(100 + rank)
        random.seed(100 + rank)
        np.random.seed(100 + rank)
        keeper = TrainingRandomState()
        keeper.after_backward(cpu)
        expected = (torch.rand(4), random.random(), np.random.rand())
        checkpoint: dict = {}
        keeper.save(checkpoint, cpu)  # a collective: every rank calls it
        if rank == 0:
            torch.save(checkpoint, path)
        dist.barrier()
        loaded = torch.load(path, weights_only=False)
        states = loaded["lengen_random_state"]
        assert len(states) == world_size
        assert not torch.equal(states[0]["torch"], states[1]["torch"])  # one state per rank
        torch.manual_seed(999)  # move on, as a new process would start elsewhere
        fresh = TrainingRandomState()
        fresh.load(loaded, rank)
        fresh.before_batch(cpu)
        got = (torch.rand(4), random.random(), np.random.rand())
        assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:], rank
    finally:
        dist.destroy_process_group()


def test_random_state_is_saved_and_restored_per_rank(tmp_path):
    torch.multiprocessing.spawn(
        save_and_restore_per_rank, args=(2, str(tmp_path / "state.ckpt")), nprocs=2, join=True
    )
