"""Divergence: a non-finite loss stops the run by default (one line, exit 3, no non-finite
checkpoint), skip mode skips the step, continue mode continues; gradient clipping is on by
default and clips the gradient of the whole accumulated step."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lengen.data.tasks import TaskDataModule, TrainingStream
from lengen.divergence import Diverged, DivergenceGuard
from lengen.module import LengenModule
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.tasks.copy import Copy
from tests.test_token_normalisation import big_batch_gradient, stack_rows

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [script, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env
    )


def run_args(root: Path, *extra: str) -> list[str]:
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / "run"),
        "--trainer.max_steps", "5",
        "--trainer.val_check_interval", "100",
        "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--checkpoint_every_n_steps", "1",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--model.warmup_steps", "1",
        "--model.lr", "1e6",
        "--data.init_args.train_max_length", "8",
        "--data.init_args.eval_lengths", "[4]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "2",
        "--data.init_args.cache_dir", str(root / "cache"),
        *extra,
    ]  # fmt: skip


def all_finite(checkpoint: Path) -> bool:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_lr_1e6_stops_with_one_line_and_no_nonfinite_checkpoint(tmp_path):
    result = lengen("fit", *run_args(tmp_path), cwd=tmp_path)
    assert result.returncode == 3, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("lengen: error")]
    assert len(errors) == 1, result.stderr[-3000:]
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    assert checkpoints and all(all_finite(path) for path in checkpoints)
    # At lr 1e6 the first update leaves finite but huge weights; the next loss is not finite.
    assert (
        "training diverged: non-finite loss at step 1; stopped, the last good checkpoint is"
        in (errors[0])
    )
    assert errors[0].endswith(str(checkpoints[-1])) and checkpoints[-1].name == "step=1.ckpt"


@pytest.mark.parametrize("mode", ["skip", "continue"])
def test_lr_1e6_skip_and_continue_modes_finish(tmp_path, mode):
    result = lengen("fit", *run_args(tmp_path, "--on_nonfinite", mode), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "non-finite" in line]
    newest = max((tmp_path / "run").rglob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    assert newest.name == "step=5.ckpt"
    if mode == "skip":  # steps 1-4 skipped: the weights stay those after step 0
        assert lines == [
            f"lengen: skipped step {step}: non-finite loss (--on_nonfinite skip)"
            for step in range(1, 5)
        ]
        first = newest.parent / "step=1.ckpt"
        a = torch.load(first, weights_only=False)["state_dict"]
        b = torch.load(newest, weights_only=False)["state_dict"]
        assert all(torch.equal(a[name], b[name]) for name in a) and all_finite(newest)
    else:  # one line, then training on non-finite weights
        assert lines == [
            "lengen: non-finite loss at step 1; training continues as asked "
            "(--on_nonfinite continue)"
        ]
        assert not all_finite(newest)


class PoisonedModule(LengenModule):
    """Multiplies the loss of chosen optimizer steps by NaN."""

    poison_steps: tuple[int, ...] = ()

    def training_step(self, batch, batch_idx):
        output = super().training_step(batch, batch_idx)
        if self.trainer.global_step in self.poison_steps:
            output["loss"] = output["loss"] * float("nan")
        return output


class WeightRecorder(L.Callback):
    """The weights after each optimizer step, by the number of steps taken."""

    def __init__(self) -> None:
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.after[trainer.global_step] = copy.deepcopy(pl_module.state_dict())


def tiny_fit(tmp_path, mode, poison_steps, callbacks=(), accumulate=2, max_steps=5):
    data = TaskDataModule(
        Copy(), train_min_length=1, train_max_length=6, batch_size=4, eval_lengths=[2],
        val_examples_per_length=1, test_examples_per_length=1, cache_dir=str(tmp_path), seed=1,
    )  # fmt: skip
    torch.manual_seed(0)
    module = PoisonedModule(
        RoPE(), vocab_size=data.vocab_size, n_layer=1, n_head=2, d_model=16, metrics=[]
    )
    module.poison_steps = poison_steps
    guard, recorder = DivergenceGuard(mode), WeightRecorder()
    trainer = L.Trainer(
        max_steps=max_steps, accumulate_grad_batches=accumulate,
        callbacks=[guard, recorder, *callbacks], logger=False, enable_checkpointing=bool(callbacks),
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, accelerator="cpu", gradient_clip_val=1.0,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    return module, guard, recorder, trainer, data


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


def test_skip_mode_skips_exactly_the_bad_step(tmp_path, capsys):
    module, guard, recorder, trainer, data = tiny_fit(tmp_path, "skip", poison_steps=(2,))
    trainer.fit(module, datamodule=data)
    after = recorder.after
    assert guard.skipped_steps == 1
    assert "lengen: skipped step 2: non-finite loss" in capsys.readouterr().err
    assert same(after[3], after[2])  # step 2 changed nothing
    assert not same(after[2], after[1]) and not same(after[4], after[3])  # the others did
    assert all(torch.isfinite(t).all() for t in after[5].values() if t.is_floating_point())
    optimizer = trainer.optimizers[0]
    assert {int(optimizer.state[p]["step"]) for p in module.parameters()} == {4}  # 5 - 1 skipped


def test_stop_mode_stops_before_applying_the_bad_step(tmp_path):
    module, guard, recorder, trainer, data = tiny_fit(tmp_path, "stop", poison_steps=(3,))
    with pytest.raises(Diverged, match="non-finite loss at step 3; stopped, no checkpoint"):
        trainer.fit(module, datamodule=data)
    assert max(recorder.after) == 3
    assert same(module.state_dict(), recorder.after[3])  # the weights before the bad step


def test_continue_mode_applies_the_bad_step(tmp_path):
    module, guard, recorder, trainer, data = tiny_fit(tmp_path, "continue", poison_steps=(2,))
    trainer.fit(module, datamodule=data)
    assert max(recorder.after) == 5
    assert not torch.isfinite(recorder.after[3]["decoder.token_embedding.weight"]).all()


class BreakWeights(L.Callback):
    """Sets one weight to inf after optimizer step `step` (finite gradients, infinite weight)."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == 2:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("inf")


def test_a_nonfinite_model_is_never_saved(tmp_path):
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    module, guard, recorder, trainer, data = tiny_fit(
        tmp_path, "skip", poison_steps=(), callbacks=[BreakWeights(), saver]
    )
    with pytest.raises(Diverged, match="non-finite weights after step 1, not saved"):
        trainer.fit(module, datamodule=data)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "epoch=0-step=1.ckpt"
    ]  # step=2 refused


def reference_adamw(initial, steps, clip, lr):
    """Plain AdamW on the big batch of each step's micro-batches, its gradient clipped to global
    norm `clip` (torch's clip_grad_norm_ formula) when `clip` is set; returns (model, norms)."""
    model = copy.deepcopy(initial)
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    norms = []
    for micro in steps:
        grads, _ = big_batch_gradient(model, *stack_rows([(b.input_ids, b.labels) for b in micro]))
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))
        norms.append(float(norm))
        scale = min(1.0, clip / (float(norm) + 1e-6)) if clip else 1.0
        for name, grad in grads.items():
            params[name].grad = grad * scale
        optimizer.step()
    return model, norms


def test_default_clipping_clips_the_whole_accumulated_step(tmp_path):
    """Two steps of 2 micro-batches each with gradient_clip_val=0.05 (float64) against a plain
    reference: each step's big-batch gradient clipped to norm 0.05, then AdamW."""
    clip, lr = 0.05, 1e-2
    data = TaskDataModule(
        Copy(), train_min_length=1, train_max_length=7, batch_size=3, eval_lengths=[2],
        val_examples_per_length=1, test_examples_per_length=1, cache_dir=str(tmp_path), seed=3,
    )  # fmt: skip
    torch.manual_seed(0)
    module = LengenModule(
        RoPE(), vocab_size=data.vocab_size, n_layer=1, n_head=2, d_model=16, lr=lr,
        warmup_steps=1, metrics=[],
    )  # fmt: skip
    initial = copy.deepcopy(module).double()
    L.Trainer(
        max_steps=2, accumulate_grad_batches=2, gradient_clip_val=clip, precision="64-true",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator="cpu", callbacks=[DivergenceGuard()],
    ).fit(module, datamodule=data)  # fmt: skip

    stream = TrainingStream(Copy(), 1, 7, seed=3, batch_size=3, accumulation=2)
    steps = [[stream.batch(0), stream.batch(1)], [stream.batch(2), stream.batch(3)]]
    clipped, norms = reference_adamw(initial, steps, clip, lr)
    unclipped, _ = reference_adamw(initial, steps, None, lr)
    assert min(norms) > 4 * clip  # clipping is active at both steps
    got = module.state_dict()
    for name, want in clipped.state_dict().items():
        torch.testing.assert_close(got[name], want, rtol=1e-10, atol=1e-12)
    # Non-vacuous: without clipping the weights differ by far more than the tolerance.
    gap = max((got[n] - w).abs().max() for n, w in unclipped.state_dict().items())
    assert gap > 1e-6


def test_cli_clips_at_one_by_default(tmp_path):
    result = lengen("fit", "--config", QUICKSTART, "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "  gradient_clip_val: 1.0\n" in result.stdout
    assert "on_nonfinite: stop\n" in result.stdout
