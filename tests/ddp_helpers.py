"""Test-only plugins for tests/test_ddp.py, imported by the `lengen` subprocesses (PYTHONPATH).

ExampleCount: a per-length metric whose value is the number of examples in the bucket, so a test
sees that every example was evaluated exactly once over all ranks. RecordBatches: a callback that
writes each rank's training batches, so a test sees that the ranks train on different data.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from lengen.metric import LengthMetric


class ExampleCount(LengthMetric):
    """The number of examples (rows) per bucket, summed over ranks; NaN for an empty bucket."""

    def accepts(self, batch) -> bool:
        return getattr(batch, "lengths", None) is not None  # task and language-model batches

    def score(self, batch, logits, generated) -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones(len(batch.lengths), dtype=torch.float64)
        return ones, ones

    def compute(self) -> torch.Tensor:
        return torch.where(self.count > 0, self.count, torch.nan)


class RecordBatches(L.Callback):
    """Write `<directory>/rank<r>.json`: the input ids of every training batch of rank r and its
    per-token loss on this rank alone (no accumulation: one batch a step)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.batches: list[list[list[int]]] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batches.append(batch.input_ids.tolist())
        self.losses.append(float(outputs["step_loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"batches": self.batches, "losses": self.losses}))
