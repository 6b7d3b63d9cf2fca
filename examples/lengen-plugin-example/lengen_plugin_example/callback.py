"""StepCounter: counts optimizer steps and logs how many tokens training has seen."""

from __future__ import annotations

from lightning.pytorch import Callback


class StepCounter(Callback):
    """Logs `train/tokens_seen`; its counts are saved in checkpoints and restored on resume.

    Args:
        log_every_n_steps: log every this many optimizer steps.
    """

    def __init__(self, log_every_n_steps: int = 10) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.steps = 0
        self.tokens_seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """`batch` is a `lengen.metric.EvalBatch` on the task path (attributes, not keys)."""
        self.steps += 1
        self.tokens_seen += int((batch.labels != -100).sum())
        if self.steps % self.log_every_n_steps == 0:
            pl_module.log("train/tokens_seen", float(self.tokens_seen))

    def state_dict(self) -> dict:
        return {"steps": self.steps, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps = state_dict["steps"]
        self.tokens_seen = state_dict["tokens_seen"]
