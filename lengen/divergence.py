"""Divergence guard: a non-finite loss or gradient stops the run (or skips the step, or is let
through, as configured), and a model with non-finite weights is never written as a checkpoint.

The `lengen` CLI adds `DivergenceGuard(mode)` to every `fit` (`--on_nonfinite stop|skip|continue`,
default stop). Each optimizer step is judged once, before the optimizer applies it, from the loss
of each of its micro-batches and from the gradients (after DDP has averaged them), with the
decision reduced over ranks so every rank takes the same one:

- stop: raise `Diverged`, one line naming the step and the newest checkpoint written before it;
  the weights are those before the bad step, and nothing more is saved;
- skip: drop the step's gradients (the optimizer leaves the weights and its moments as they are;
  the learning-rate schedule still advances), print one line, go on;
- continue: print one line the first time, then train on as if nothing happened.

In stop and skip modes a checkpoint whose weights are not all finite (reached with finite
gradients, e.g. by an infinite update) is refused: `Diverged` is raised before it is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from lengen.checkpoints import checkpoint_problem

MODES = ("stop", "skip", "continue")


class Diverged(Exception):
    """Training stopped on a non-finite loss, gradient or weight; the message is one line."""


def newest_good_checkpoint(trainer: L.Trainer) -> Path | None:
    """The most recently written readable checkpoint of this run's folders, or None."""
    folders = {Path(trainer.default_root_dir)}
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None):
            folders.add(Path(callback.dirpath))
    paths = {path for folder in folders for path in folder.rglob("*.ckpt")}
    for path in sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True):
        if checkpoint_problem(path) is None:
            return path
    return None


class DivergenceGuard(L.Callback):
    """Judge every optimizer step for non-finite values; see the module docstring.

    `mode`: "stop" (default), "skip" or "continue". `skipped_steps` counts the skipped steps.
    """

    def __init__(self, mode: str = "stop") -> None:
        if mode not in MODES:
            raise ValueError(f"on_nonfinite={mode!r}; accepted: {', '.join(MODES)}")
        self.mode = mode
        self.skipped_steps = 0
        self._losses_finite: torch.Tensor | None = None  # all micro-batch losses of the step
        self._warned = False

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        if self._losses_finite is not None:
            finite = finite & self._losses_finite
        self._losses_finite = finite

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.mode == "continue" and self._warned:
            self._losses_finite = None
            return
        device = pl_module.device
        gradients = [
            parameter.grad
            for group in optimizer.param_groups
            for parameter in group["params"]
            if parameter.grad is not None
        ]
        all_true = torch.ones((), dtype=torch.bool, device=device)
        gradients_finite = all_true
        if gradients:
            gradients_finite = torch.stack([torch.isfinite(g).all() for g in gradients]).all()
        losses_finite = self._losses_finite if self._losses_finite is not None else all_true
        self._losses_finite = None
        # (2,): non-finite loss, non-finite gradient; summed over ranks
        bad = torch.stack([~losses_finite.to(device), ~gradients_finite.to(device)]).float()
        bad = trainer.strategy.reduce(bad, reduce_op="sum")
        bad_loss, bad_gradient = (bool(value > 0) for value in bad.tolist())
        if not (bad_loss or bad_gradient):
            return
        what = "loss" if bad_loss else "gradient"
        step = trainer.global_step
        if self.mode == "stop":
            raise Diverged(self._stop_message(trainer, f"non-finite {what} at step {step}"))
        if self.mode == "skip":
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.grad = None
            self.skipped_steps += 1
            if trainer.is_global_zero:
                print(
                    f"lengen: skipped step {step}: non-finite {what} (--on_nonfinite skip)",
                    file=sys.stderr,
                )
            return
        self._warned = True
        if trainer.is_global_zero:
            print(
                f"lengen: non-finite {what} at step {step}; training continues as asked "
                "(--on_nonfinite continue)",
                file=sys.stderr,
            )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.mode == "continue":
            return
        finite = torch.stack([torch.isfinite(p.detach()).all() for p in pl_module.parameters()])
        bad = (~finite.all()).float().to(pl_module.device)
        if trainer.strategy.reduce(bad, reduce_op="sum").item() > 0:  # sharded weights: any rank
            raise Diverged(
                self._stop_message(
                    trainer,
                    f"non-finite weights after step {trainer.global_step - 1}, not saved",
                )
            )

    @staticmethod
    def _stop_message(trainer: L.Trainer, what: str) -> str:
        good = newest_good_checkpoint(trainer)
        last = f"the last good checkpoint is {good}" if good else "no checkpoint was written"
        return f"training diverged: {what}; stopped, {last}"
