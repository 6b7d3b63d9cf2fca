"""Schedules of an encoding's schedulable values (a blend, a scale) over training steps."""

from __future__ import annotations

import math

import lightning as L

from lengen.positional import PositionalEncoding, set_schedulable
from lengen_plugins.callbacks.common import (
    CurriculumConfigError,
    ResumableCallback,
    resolve_step,
)

SHAPES = ("linear", "cosine", "step")


def schedule_value(
    step: int,
    start_step: int,
    end_step: int,
    start_value: float,
    end_value: float,
    shape: str,
    num_steps: int = 4,
) -> float:
    """The value at optimizer step `step`: start_value until start_step, end_value from end_step.

    Between them, with progress p in [0, 1): linear a + (b - a) p; cosine
    a + (b - a) (1 - cos(pi p)) / 2; step a + (b - a) floor(p num_steps) / num_steps.
    """
    if step >= end_step:
        return end_value
    if step <= start_step:
        return start_value
    progress = (step - start_step) / (end_step - start_step)
    if shape == "linear":
        fraction = progress
    elif shape == "cosine":
        fraction = 0.5 * (1.0 - math.cos(math.pi * progress))
    else:
        fraction = math.floor(progress * num_steps) / num_steps
    return start_value + (end_value - start_value) * fraction


def schedulable_encodings(module: L.LightningModule, name: str) -> list[PositionalEncoding]:
    """Every positional encoding inside `module` that has a schedulable value `name`."""
    return [
        encoding
        for encoding in module.modules()
        if isinstance(encoding, PositionalEncoding) and name in encoding.schedulable
    ]


class EncodingSchedule(ResumableCallback):
    """Moves one schedulable value of the positional encoding along a schedule over steps.

    Encodings expose the values a curriculum may move as 0-dim float32 buffers named in
    `PositionalEncoding.schedulable` (saved in checkpoints, no recompilation under torch.compile);
    this callback reaches them through that protocol, not through the encoding's class, and sets
    them before every training step from the global optimizer step alone (so a resumed run needs
    no hidden state). Logs `curriculum/<name>`.

    Args:
        name: the schedulable value (e.g. blend, scale, scale_base).
        start_value, end_value: the values before `start` and from `end` on.
        start, end: an int is an optimizer step, a float in [0, 1] a fraction of trainer.max_steps.
        shape: linear, cosine or step.
        num_steps: the number of equal jumps of the step shape.
    """

    def __init__(
        self,
        name: str,
        start_value: float,
        end_value: float,
        start: int | float = 0,
        end: int | float = 1.0,
        shape: str = "linear",
        num_steps: int = 4,
    ) -> None:
        if shape not in SHAPES:
            accepted = ", ".join(SHAPES)
            raise ValueError(f"{type(self).__name__}: shape={shape!r}; accepted: {accepted}")
        if num_steps < 1:
            raise ValueError(f"{type(self).__name__}: num_steps={num_steps} must be >= 1")
        self.name = name
        self.start_value, self.end_value = float(start_value), float(end_value)
        self.start, self.end = start, end
        self.shape, self.num_steps = shape, num_steps
        self.start_step = self.end_step = 0  # resolved in `setup`
        self.encodings: list[PositionalEncoding] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        who = type(self).__name__
        self.start_step = resolve_step(self.start, trainer.max_steps, f"{who}: start")
        self.end_step = resolve_step(self.end, trainer.max_steps, f"{who}: end")
        if self.end_step < self.start_step:
            raise CurriculumConfigError(
                f"{who}: end (step {self.end_step}) is before start (step {self.start_step})"
            )
        self.encodings = schedulable_encodings(pl_module, self.name)
        if not self.encodings:
            found = {
                type(module).__name__: ", ".join(module.schedulable) or "none"
                for module in pl_module.modules()
                if isinstance(module, PositionalEncoding)
            }
            listing = "; ".join(f"{cls} has: {names}" for cls, names in found.items()) or "none"
            raise CurriculumConfigError(
                f"{who}: no positional encoding in the model has a schedulable value "
                f"{self.name!r} ({listing})"
            )

    def value_at(self, step: int) -> float:
        return schedule_value(
            step,
            self.start_step,
            self.end_step,
            self.start_value,
            self.end_value,
            self.shape,
            self.num_steps,
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        value = self.value_at(trainer.global_step)
        for encoding in self.encodings:
            set_schedulable(encoding, self.name, value)
        pl_module.log(f"curriculum/{self.name}", value)


class RopeToXPosBlend(EncodingSchedule):
    """RoPE-to-xPos blend: alpha goes from 0 (exactly RoPE) to 1 (exactly xPos) over a window.

    Abacus AI's Giraffe report (Pal, Karkhanis, Roberts, Dooley, Sundararajan, Naidu 2023, "Giraffe:
    Adventures in Expanding Context Lengths in LLMs") found fine-tuning a RoPE model straight into
    xPos (Sun et al. 2023) too large a jump and proposed shifting gradually; this moves the
    `blend` of an xPos-capable encoding (e.g. `XPos`: the decay exponent is multiplied by alpha).
    Logs `curriculum/blend`.

    Args:
        start, end: the window (int steps or float fractions of trainer.max_steps).
        shape: linear, cosine or step.
    """

    def __init__(
        self,
        start: int | float = 0,
        end: int | float = 1.0,
        shape: str = "linear",
        num_steps: int = 4,
    ) -> None:
        super().__init__("blend", 0.0, 1.0, start, end, shape, num_steps)


# Giraffe's `AdjustXPOSCallback` (abacusai/Long-Context, python/train/finetune_context.py, commit
# 11b61fbd9b738d3bfd08ecbc6c5dfea7f8c9f59e): scale_base starts at 8192 and, after every optimizer
# step, drops by 8 while it is above 128: 8192 - 8 t for t <= 1008, then 128.
GIRAFFE_SCALE_BASE = {"start_value": 8192.0, "end_value": 128.0, "start": 0, "end": 1008}
PRESETS = ("giraffe",)


class XPosScaleBaseAnnealing(EncodingSchedule):
    """Anneals xPos's `scale_base` from a large value (little decay) down to the target.

    Giraffe (Pal et al. 2023) anneals xPos's scale_base during training instead of fixing it; a
    large scale_base makes zeta^(n / scale_base) close to 1, i.e. xPos close to RoPE. Logs
    `curriculum/scale_base`. Two schedules:

      default (lengen's): 16384 -> 512 (the xPos paper's scale_base), linear over the whole run
        (`end` 1.0, a fraction of trainer.max_steps). The default because it is stated in
        fractions of the run, so it completes in a run of any length and ends at the value the
        xPos paper trains with.
      preset="giraffe" (Giraffe's `AdjustXPOSCallback`): 8192, minus 8 after every optimizer
        step, down to a floor of 128: step t has 8192 - 8 min(t, 1008). It replaces start_value,
        end_value, start, end and shape (linear from step 0 to step 1008, which is exactly that
        staircase at integer steps). A run shorter than 1008 steps never reaches the floor.

    Args:
        start_value: the initial scale_base.
        end_value: the target scale_base (512 in Sun et al.).
        start, end, shape, num_steps: as in `EncodingSchedule`.
        preset: None (the arguments above) or "giraffe".
    """

    def __init__(
        self,
        start_value: float = 16384.0,
        end_value: float = 512.0,
        start: int | float = 0,
        end: int | float = 1.0,
        shape: str = "linear",
        num_steps: int = 4,
        preset: str | None = None,
    ) -> None:
        if preset is not None and preset not in PRESETS:
            raise ValueError(
                f"XPosScaleBaseAnnealing: preset={preset!r}; accepted: {', '.join(PRESETS)} or null"
            )
        if preset == "giraffe":
            start_value, end_value = (
                GIRAFFE_SCALE_BASE["start_value"],
                GIRAFFE_SCALE_BASE["end_value"],
            )
            start, end, shape = GIRAFFE_SCALE_BASE["start"], GIRAFFE_SCALE_BASE["end"], "linear"
        if start_value <= 0 or end_value <= 0:
            raise ValueError(
                f"XPosScaleBaseAnnealing: start_value={start_value} and end_value={end_value} "
                "must be > 0"
            )
        self.preset = preset
        super().__init__("scale_base", start_value, end_value, start, end, shape, num_steps)


class PositionInterpolationRamp(EncodingSchedule):
    """Ramps a Position-Interpolation scale from 1 to the target during fine-tuning.

    Chen, Wong, Chen, Tian 2023, "Extending Context Window of Large Language Models via Positional
    Interpolation": positions are divided by the scale s; instead of switching to s at once, this
    moves the encoding's schedulable `scale` (e.g. of `RoPELinear`) from 1 to `target_scale`.
    Logs `curriculum/scale`.

    Args:
        target_scale: the final scale (> 0; e.g. 4 to extend 4x).
        start_value: the initial scale (1 = no interpolation).
        start, end, shape, num_steps: as in `EncodingSchedule`.
    """

    def __init__(
        self,
        target_scale: float,
        start_value: float = 1.0,
        start: int | float = 0,
        end: int | float = 1.0,
        shape: str = "linear",
        num_steps: int = 4,
    ) -> None:
        if target_scale <= 0 or start_value <= 0:
            raise ValueError(
                f"PositionInterpolationRamp: target_scale={target_scale} and "
                f"start_value={start_value} must be > 0"
            )
        super().__init__("scale", start_value, target_scale, start, end, shape, num_steps)
