"""What every lengen callback shares: step arithmetic, one-line configuration errors, state.

Curricula are pure functions of the global optimizer step (`trainer.global_step`, which does not
move between the micro-batches of one step under gradient accumulation), so resuming needs no
hidden state. The global random state is not a callback's business: LengenModule saves it in every
checkpoint whatever callbacks are configured (lengen/random_state.py).
"""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException

from lengen.random_state import random_state, set_random_state  # noqa: F401 (older imports)


class CurriculumConfigError(MisconfigurationException):
    """A callback that cannot run with this trainer or data; the message is one line."""


def resolve_step(value: int | float, max_steps: int, what: str) -> int:
    """An int is a step; a float in [0, 1] is a fraction of `max_steps` (which must be set)."""
    if isinstance(value, bool):
        raise CurriculumConfigError(f"{what}={value!r}: expected a step (int) or fraction (float)")
    if isinstance(value, int):
        if value < 0:
            raise CurriculumConfigError(f"{what}={value} must be a step >= 0")
        return value
    if not 0.0 <= value <= 1.0:
        raise CurriculumConfigError(
            f"{what}={value} must be a fraction in [0, 1] of trainer.max_steps (or an int step)"
        )
    if max_steps <= 0:
        raise CurriculumConfigError(
            f"{what}={value} is a fraction of training: set trainer.max_steps, or give a step"
        )
    return round(value * max_steps)


def require_max_steps(trainer: L.Trainer, who: str) -> int:
    """trainer.max_steps, or a one-line error when the run has no step budget."""
    if trainer.max_steps is None or trainer.max_steps <= 0:
        raise CurriculumConfigError(
            f"{who} needs trainer.max_steps > 0 (its schedule is a fraction of the steps)"
        )
    return trainer.max_steps


class ResumableCallback(L.Callback):
    """Saves the callback's own `extra_state()` in checkpoints.

    Checkpoints written before the random state moved into LengenModule hold it here too; it is
    still restored from them.
    """

    def extra_state(self) -> dict:
        """Callback-specific state to save; override together with `load_extra_state`."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` returned."""

    def state_dict(self) -> dict:
        return self.extra_state()

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        if "random_state" in state:
            set_random_state(state.pop("random_state"))
        self.load_extra_state(state)
