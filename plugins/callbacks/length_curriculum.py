"""Task-length curricula over training steps (Delétang et al. 2023; Ruoss et al. 2023)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import lightning as L

from lengen_plugins.callbacks.common import CurriculumConfigError, ResumableCallback

SCHEDULES = ("fixed", "uniform", "regular_increase", "reverse_exponential")


@dataclass(frozen=True)
class LengthSchedule:
    """The task length of a training batch as a function of (optimizer step, generator).

    One length per batch, as in Delétang et al.'s curricula. Picklable, so data-loader workers get
    it. See `LengthCurriculum` for the meaning of each schedule.
    """

    schedule: str
    min_length: int
    max_length: int
    increase_every: int = 100
    increase_by: int = 1
    sample_all_lengths: bool = True
    tau: float = 0.9

    def current_max(self, step: int) -> int:
        """The largest length that batches at `step` may have."""
        if self.schedule == "regular_increase":
            grown = self.min_length + self.increase_by * (step // self.increase_every)
            return min(self.max_length, grown)
        return self.max_length

    def sample(self, step: int, rng: random.Random) -> int:
        lengths = range(self.min_length, self.max_length + 1)
        if self.schedule == "fixed":
            return self.max_length
        if self.schedule == "uniform":
            return rng.choice(lengths)
        if self.schedule == "regular_increase":
            if not self.sample_all_lengths:
                return self.current_max(step)
            # The reference's lengths: min_length + increase_by * k, k uniform in 0..K, where K is
            # the number of increases so far, capped at the first grid point >= max_length
            # (which is then max_length itself).
            increases = step // self.increase_every
            to_max = -(-(self.max_length - self.min_length) // self.increase_by)  # ceil
            k = rng.randint(0, min(increases, to_max))
            return min(self.max_length, self.min_length + self.increase_by * k)
        weights = [self.tau**length for length in lengths]  # reverse_exponential
        return rng.choices(lengths, weights=weights)[0]

    def __call__(self, step: int, rng: random.Random, batch_size: int) -> list[int]:
        return [self.sample(step, rng)] * batch_size


class LengthCurriculum(ResumableCallback):
    """Task-length curriculum: the distribution of training lengths over steps, one per batch.

    Delétang, Ruoss, Grau-Moya, Genewein, Wenliang, Catt, Cundy, Hutter, Legg, Veness, Ortega 2023,
    "Neural Networks and the Chomsky Hierarchy" (ICLR), and Ruoss et al. 2023, "Randomized
    Positional Encodings Boost Length Generalization of Transformers" (ACL), sample one training
    length per batch from a curriculum. The schedules (lengths in [min_length, max_length]):
      fixed: always max_length;
      uniform: uniform over [min_length, max_length] (the papers' default);
      regular_increase: the top length starts at min_length and grows by `increase_by` every
        `increase_every` optimizer steps; a batch's length is the top itself, or, with
        `sample_all_lengths`, uniform over the lengths the schedule has reached so far,
        min_length + increase_by * k for k = 0 .. (increases so far), as the reference
        (google-deepmind/randomized_positional_encodings, experiments/curriculum.py,
        `RegularIncreaseCurriculum`): with increase_by > 1 the lengths between grid points are
        never drawn. Unlike the reference, lengths stop at max_length (the last grid point past
        it counts as max_length);
      reverse_exponential: P(length) proportional to tau^length (tau < 1 favours short lengths).
    The length is drawn by the task data stream from the generator of the batch (seeded by
    (seed, rank, batch index)) and the optimizer step, so it survives resumption exactly.
    Needs `TaskDataModule` (its `train_length_sampler`). Logs `curriculum/task_length` (the batch's
    length) and `curriculum/task_length_max`.

    Args:
        schedule: one of fixed, uniform, regular_increase, reverse_exponential.
        min_length, max_length: the range of task lengths; None takes the data module's
            train_min_length / train_max_length.
        increase_every, increase_by, sample_all_lengths: regular_increase's parameters.
        tau: reverse_exponential's rate, in (0, 1].
    """

    def __init__(
        self,
        schedule: str = "uniform",
        min_length: int | None = None,
        max_length: int | None = None,
        increase_every: int = 100,
        increase_by: int = 1,
        sample_all_lengths: bool = True,
        tau: float = 0.9,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(
                f"LengthCurriculum: schedule={schedule!r}; accepted: {', '.join(SCHEDULES)}"
            )
        if increase_every < 1 or increase_by < 1:
            raise ValueError(
                f"LengthCurriculum: increase_every={increase_every} and increase_by={increase_by} "
                "must be >= 1"
            )
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"LengthCurriculum: tau={tau} must be in (0, 1]")
        self.schedule = schedule
        self.min_length, self.max_length = min_length, max_length
        self.increase_every, self.increase_by = increase_every, increase_by
        self.sample_all_lengths, self.tau = sample_all_lengths, tau
        self.lengths: LengthSchedule | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "train_length_sampler"):
            raise CurriculumConfigError(
                f"LengthCurriculum needs a task data module (TaskDataModule), got "
                f"{type(datamodule).__name__}"
            )
        low = datamodule.train_min_length if self.min_length is None else self.min_length
        high = datamodule.train_max_length if self.max_length is None else self.max_length
        if not datamodule.task.min_length <= low <= high:
            raise CurriculumConfigError(
                f"LengthCurriculum: need {datamodule.task.min_length} <= min_length <= max_length, "
                f"got {low} and {high}"
            )
        self.lengths = LengthSchedule(
            self.schedule,
            low,
            high,
            self.increase_every,
            self.increase_by,
            self.sample_all_lengths,
            self.tau,
        )
        datamodule.train_length_sampler = self.lengths

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        pl_module.log("curriculum/task_length", float(batch.lengths.float().mean()))
        pl_module.log(
            "curriculum/task_length_max", float(self.lengths.current_max(trainer.global_step))
        )
