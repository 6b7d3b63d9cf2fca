"""Sequence-length warmup: train on short sequences first (Li, Zhang, He 2022)."""

from __future__ import annotations

import math

import lightning as L
import torch

from lengen.task import PAD
from lengen_plugins.callbacks.common import (
    CurriculumConfigError,
    ResumableCallback,
    require_max_steps,
)

MODES = ("truncate", "segment")


def truncate(input_ids: torch.Tensor, labels: torch.Tensor, length: int):
    """(B, T) input_ids and labels -> (B, min(T, length)): the first `length` tokens of each row."""
    return input_ids[:, :length], labels[:, :length]


def segment(input_ids: torch.Tensor, labels: torch.Tensor, length: int):
    """(B, T) input_ids and labels -> (B * ceil(T / length), length): every token kept.

    Each row is cut into consecutive chunks of `length` (input j still predicts label j); the last
    chunk is padded with PAD inputs and ignored labels (-100).
    """
    batch, width = input_ids.shape
    if width <= length:
        return input_ids, labels
    chunks = math.ceil(width / length)
    pad = chunks * length - width
    input_ids = torch.nn.functional.pad(input_ids, (0, pad), value=PAD)  # (B, chunks * length)
    labels = torch.nn.functional.pad(labels, (0, pad), value=-100)  # (B, chunks * length)
    return input_ids.view(batch * chunks, length), labels.view(batch * chunks, length)


class SequenceLengthWarmup(ResumableCallback):
    """Sequence-length warmup: the training length grows linearly to the full length.

    Li, Zhang, He 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for
    Training GPT Models" (NeurIPS): training on short sequences first, with the length increased
    linearly over the first part of training (~30 %), reduces the extreme gradient variance of early
    training and allows larger batches and learning rates. (MosaicML Composer's `SeqLengthWarmup`.)

    At optimizer step t, with W = floor(duration * trainer.max_steps) warmup steps and
    K = ceil((max_seq_length - min_seq_length) / step_size) increments, the length is
    min(max_seq_length, min_seq_length + step_size * floor(t * K / W)) for t < W and
    max_seq_length afterwards: a pure function of the step, the same for every micro-batch of one
    step. It acts on each training batch (any batch with `input_ids` and `labels` of shape (B, T),
    language-model and task batches alike):
      truncate: keep the first L tokens of each row (the rest of the row is not trained on);
      segment: cut each row into ceil(T / L) rows of L tokens, so no token is dropped.
    The micro-batches of one step may keep different numbers of labelled tokens (task batches);
    `LengenModule.training_step` counts the labels it receives, so each optimizer step still
    follows the mean loss over all labelled tokens of its micro-batches.

    Task data (a data module with `train_length_sampler`, i.e. `TaskDataModule`) is refused by
    default: its rows are BOS input SEP target EOS with labels on the target only, so cutting
    rows to L tokens removes every label of each example whose prompt fills the L tokens; early
    steps train only on the shortest examples (or on nothing, in a batch of long ones). Grow the
    task length with `LengthCurriculum` instead (the task analogue of this warmup), or set
    `allow_task_data: true` to truncate task rows anyway.

    Logs `curriculum/seq_length` and `curriculum/tokens_seen` (labelled tokens, summed over ranks).

    Args:
        max_seq_length: the full length; None takes the data module's `n_ctx`.
        min_seq_length: the first length (8 in Composer).
        duration: the warmup's fraction of trainer.max_steps, in (0, 1] (0.3 in the paper).
        step_size: lengths grow in multiples of this (8 in Composer).
        mode: "truncate" or "segment".
        allow_task_data: accept task data (see above); False refuses it with a one-line error.
    """

    def __init__(
        self,
        max_seq_length: int | None = None,
        min_seq_length: int = 8,
        duration: float = 0.3,
        step_size: int = 8,
        mode: str = "truncate",
        allow_task_data: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"SequenceLengthWarmup: mode={mode!r}; accepted: {', '.join(MODES)}")
        if not 0.0 < duration <= 1.0:
            raise ValueError(f"SequenceLengthWarmup: duration={duration} must be in (0, 1]")
        if min_seq_length < 1 or step_size < 1:
            raise ValueError(
                f"SequenceLengthWarmup: min_seq_length={min_seq_length} and "
                f"step_size={step_size} must be >= 1"
            )
        if max_seq_length is not None:
            self._check_lengths(min_seq_length, max_seq_length, step_size)
        self.max_seq_length = max_seq_length
        self.min_seq_length = min_seq_length
        self.duration = duration
        self.step_size = step_size
        self.mode = mode
        self.allow_task_data = allow_task_data
        self.warmup_steps = 0  # resolved in `setup`
        self.tokens_seen = 0

    @staticmethod
    def _check_lengths(min_seq_length: int, max_seq_length: int, step_size: int) -> None:
        if min_seq_length > max_seq_length:
            raise CurriculumConfigError(
                f"SequenceLengthWarmup: min_seq_length={min_seq_length} > "
                f"max_seq_length={max_seq_length}"
            )
        if max_seq_length - min_seq_length < step_size:
            raise CurriculumConfigError(
                f"SequenceLengthWarmup: step_size={step_size} leaves no length between "
                f"min_seq_length={min_seq_length} and max_seq_length={max_seq_length}: the "
                "schedule is empty; lower step_size or min_seq_length"
            )

    @property
    def increments(self) -> int:
        return math.ceil((self.max_seq_length - self.min_seq_length) / self.step_size)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        task_data = hasattr(trainer.datamodule, "train_length_sampler")
        if task_data and not self.allow_task_data:
            raise CurriculumConfigError(
                "SequenceLengthWarmup cuts rows to the first L tokens, which on task data (BOS "
                "input SEP target EOS) removes every label of the examples longer than L, so "
                "early steps train on the shortest examples only; grow the task length with "
                "LengthCurriculum instead "
                "(configs/curriculum/length_curriculum.yaml), or set allow_task_data: true"
            )
        if self.max_seq_length is None:
            n_ctx = getattr(trainer.datamodule, "n_ctx", None)
            if n_ctx is None:
                raise CurriculumConfigError(
                    "SequenceLengthWarmup: set max_seq_length (the data module has no n_ctx)"
                )
            self.max_seq_length = int(n_ctx)
        self._check_lengths(self.min_seq_length, self.max_seq_length, self.step_size)
        max_steps = require_max_steps(trainer, "SequenceLengthWarmup")
        self.warmup_steps = math.floor(self.duration * max_steps)
        if self.warmup_steps < self.increments:
            raise CurriculumConfigError(
                f"SequenceLengthWarmup: the run is too short for the schedule: duration="
                f"{self.duration} x max_steps={max_steps} = {self.warmup_steps} warmup steps < "
                f"{self.increments} length increments; raise duration or max_steps, or step_size"
            )

    def length_at(self, step: int) -> int:
        """The training length at optimizer step `step` (after `setup`)."""
        if step >= self.warmup_steps:
            return self.max_seq_length
        increment = step * self.increments // self.warmup_steps
        return min(self.max_seq_length, self.min_seq_length + self.step_size * increment)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        length = self.length_at(trainer.global_step)
        cut = truncate if self.mode == "truncate" else segment
        batch.input_ids, batch.labels = cut(batch.input_ids, batch.labels, length)
        self.tokens_seen += int((batch.labels != -100).sum())
        pl_module.log("curriculum/seq_length", float(length))
        pl_module.log(
            "curriculum/tokens_seen", float(self.tokens_seen), reduce_fx="sum", sync_dist=True
        )

    def extra_state(self) -> dict:
        return {"tokens_seen": self.tokens_seen}

    def load_extra_state(self, state: dict) -> None:
        self.tokens_seen = state.get("tokens_seen", 0)
