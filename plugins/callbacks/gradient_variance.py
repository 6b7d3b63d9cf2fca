"""The instability signal of Li, Zhang, He 2022: Adam's second moment, grad norm, loss spikes."""

from __future__ import annotations

import math

import lightning as L
import torch

from lengen_plugins.callbacks.common import ResumableCallback


def adam_second_moment_stats(optimizer: torch.optim.Optimizer) -> tuple[float, float] | None:
    """(max, L1 norm) of Adam's `exp_avg_sq` over all parameters; None before the first step."""
    moments = [state["exp_avg_sq"] for state in optimizer.state.values() if "exp_avg_sq" in state]
    if not moments:
        return None
    maximum = torch.stack([moment.detach().amax() for moment in moments]).max()
    l1_norm = torch.stack([moment.detach().abs().sum(dtype=torch.float64) for moment in moments])
    return float(maximum), float(l1_norm.sum())


def gradient_norm(parameters) -> float:
    """The global L2 norm of the gradients (parameters without a gradient are skipped)."""
    norms = [p.grad.detach().norm(dtype=torch.float64) for p in parameters if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


class GradientVarianceMonitor(ResumableCallback):
    """Logs Adam's second-moment statistics, the gradient norm and a loss-spike count.

    Li, Zhang, He 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for
    Training GPT Models" (NeurIPS): training instability (loss spikes) correlates with extreme
    gradient variance, measured by the maximum and the L1 norm of Adam's variance state
    (`exp_avg_sq`). After every optimizer step this logs
      variance/adam_v_max, variance/adam_v_l1: max and L1 norm of exp_avg_sq;
      variance/grad_norm: the global gradient L2 norm before the step (after unscaling);
      variance/loss_spikes: how many steps had a loss above `spike_factor` x the running mean of
        the loss (an exponential moving average with `ema_decay`; the first `ignore_first_steps`
        steps only feed the mean), or a non-finite loss;
      variance/loss_running_mean.
    The cost is one reduction over the optimizer state per step (`every_n_steps` thins it). The
    spike count and running mean are saved in checkpoints; `history` keeps the per-step records of
    this process (read by `lengen tune`).
    """

    def __init__(
        self,
        spike_factor: float = 1.5,
        ema_decay: float = 0.95,
        ignore_first_steps: int = 10,
        every_n_steps: int = 1,
    ) -> None:
        if spike_factor <= 1.0:
            raise ValueError(f"GradientVarianceMonitor: spike_factor={spike_factor} must be > 1")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"GradientVarianceMonitor: ema_decay={ema_decay} must be in (0, 1)")
        if ignore_first_steps < 0 or every_n_steps < 1:
            raise ValueError(
                f"GradientVarianceMonitor: ignore_first_steps={ignore_first_steps} must be >= 0 "
                f"and every_n_steps={every_n_steps} >= 1"
            )
        self.spike_factor, self.ema_decay = spike_factor, ema_decay
        self.ignore_first_steps, self.every_n_steps = ignore_first_steps, every_n_steps
        self.loss_spikes = 0
        self.running_mean: float | None = None
        self.steps_seen = 0
        self.history: list[dict[str, float]] = []
        self._step_loss = 0.0
        self._grad_norm = 0.0

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer
    ) -> None:
        self._grad_norm = gradient_norm(pl_module.parameters())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        # LengenModule hands back `step_loss`: the per-token mean loss of the step so far. Other
        # modules: Lightning hands back each micro-batch's loss divided by the accumulation
        # factor, so the sum over the micro-batches of one step is that step's loss.
        if isinstance(outputs, dict) and "step_loss" in outputs:
            self._step_loss = float(outputs["step_loss"])
        else:
            self._step_loss += float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # not the last micro-batch of the optimizer step
        step_loss, self._step_loss = self._step_loss, 0.0
        spike = not math.isfinite(step_loss)
        warmed_up = self.running_mean is not None and self.steps_seen >= self.ignore_first_steps
        if not spike and warmed_up:
            spike = step_loss > self.spike_factor * self.running_mean
        self.loss_spikes += int(spike)
        if math.isfinite(step_loss):
            if self.running_mean is None:
                self.running_mean = step_loss
            else:
                decay = self.ema_decay
                self.running_mean = decay * self.running_mean + (1 - decay) * step_loss
        self.steps_seen += 1
        if (trainer.global_step - 1) % self.every_n_steps:
            return
        record = {"step": float(trainer.global_step), "loss": step_loss, "spike": float(spike)}
        record["grad_norm"] = self._grad_norm
        stats = adam_second_moment_stats(trainer.optimizers[0]) if trainer.optimizers else None
        if stats is not None:
            record["adam_v_max"], record["adam_v_l1"] = stats
        self.history.append(record)
        for key in ("adam_v_max", "adam_v_l1", "grad_norm"):
            if key in record:
                pl_module.log(f"variance/{key}", record[key])
        pl_module.log("variance/loss_spikes", float(self.loss_spikes))
        pl_module.log("variance/loss_running_mean", float(self.running_mean or 0.0))

    def extra_state(self) -> dict:
        return {
            "loss_spikes": self.loss_spikes,
            "running_mean": self.running_mean,
            "steps_seen": self.steps_seen,
        }

    def load_extra_state(self, state: dict) -> None:
        self.loss_spikes = state.get("loss_spikes", 0)
        self.running_mean = state.get("running_mean")
        self.steps_seen = state.get("steps_seen", 0)
