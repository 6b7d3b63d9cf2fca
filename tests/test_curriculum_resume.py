"""Resume exactly: a run restarted from a mid-curriculum checkpoint reproduces every step's loss."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lengen.cli import main

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread is faster on 2 cores
    return subprocess.run(
        [script, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env
    )


CALLBACKS = """
trainer:
  callbacks:
    - class_path: SequenceLengthWarmup
      init_args: {max_seq_length: 24, min_seq_length: 8, duration: 0.75, step_size: 4,
                  allow_task_data: true}
    - class_path: RopeToXPosBlend
      init_args: {start: 1, end: 0.75}
    - class_path: GradientVarianceMonitor
      init_args: {ignore_first_steps: 2}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 1, save_top_k: -1, filename: "{step}"}
"""


def run_args(root: Path, run: str) -> list[str]:
    """8 steps of the quickstart task (Copy) with XPos and dropout (so the RNG state matters)."""
    return [
        "--config", QUICKSTART,
        "--config", str(root / "callbacks.yaml"),
        "--trainer.default_root_dir", str(root / run),
        "--trainer.max_steps", "8",
        "--trainer.val_check_interval", "3",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.accumulate_grad_batches", "2",
        "--model.pos_encoding", "XPos",
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


def per_step(log_dir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def test_resumed_run_reproduces_losses_bit_for_bit(tmp_path):
    (tmp_path / "callbacks.yaml").write_text(CALLBACKS)
    full = lengen("fit", *run_args(tmp_path, "full"), cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    full_log = tmp_path / "full" / "lightning_logs" / "version_0"
    checkpoint = full_log / "checkpoints" / "step=4.ckpt"
    assert checkpoint.exists(), sorted(p.name for p in (full_log / "checkpoints").iterdir())

    resumed = lengen(
        "fit", *run_args(tmp_path, "resumed"), "--ckpt_path", str(checkpoint), cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_log = tmp_path / "resumed" / "lightning_logs" / "version_0"

    # Logged step s is the s-th optimizer step (0-based): the resumed run logs steps 4..7.
    for tag in (
        "train/loss",
        "curriculum/seq_length",
        "curriculum/blend",
        "curriculum/tokens_seen",
        "variance/adam_v_max",
        "variance/loss_running_mean",
    ):
        want, got = per_step(full_log, tag), per_step(resumed_log, tag)
        assert sorted(got) == [4, 5, 6, 7], (tag, sorted(got))
        assert {step: want[step] for step in got} == got, tag  # exact float equality
    # The resumed steps are mid-warmup and mid-blend, so the curricula were really moving.
    lengths = per_step(full_log, "curriculum/seq_length")
    blends = per_step(full_log, "curriculum/blend")
    assert lengths[4] < lengths[7] == 24 and 0 < blends[4] < blends[5] < 1
    # Losses of different steps differ (a constant loss would make the comparison vacuous).
    losses = per_step(full_log, "train/loss")
    assert len(set(losses.values())) == len(losses)


@pytest.mark.parametrize(
    "callback, message",
    [
        (
            "{class_path: SequenceLengthWarmup, init_args: "
            "{max_seq_length: 8, min_seq_length: 9, allow_task_data: true}}",
            "SequenceLengthWarmup: min_seq_length=9 > max_seq_length=8",
        ),
        (
            "{class_path: SequenceLengthWarmup, init_args: "
            "{max_seq_length: 64, duration: 0.1, allow_task_data: true}}",
            "the run is too short for the schedule",
        ),
        (
            "{class_path: SequenceLengthWarmup, init_args: "
            "{max_seq_length: 12, step_size: 8, allow_task_data: true}}",
            "the schedule is empty",
        ),
        ("{class_path: RopeToXPosBlend}", "no positional encoding in the model has"),
        ("{class_path: LengthCurriculum, init_args: {schedule: harmonic}}", "accepted: fixed"),
    ],
)
def test_misconfiguration_fails_at_start_with_one_line(tmp_path, capsys, callback, message):
    (tmp_path / "callbacks.yaml").write_text(f"trainer:\n  callbacks:\n    - {callback}\n")
    args = run_args(tmp_path, "bad")
    args[args.index("XPos")] = "RoPE"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])  # in-process: the same entry point as the console script
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lengen: error")]
    assert len(errors) == 1 and message in errors[0], stderr[-2000:]
    assert not list((tmp_path / "bad").rglob("*.ckpt"))  # failed before any training step
