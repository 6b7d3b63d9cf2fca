"""What every lengen callback shares: step arithmetic, one-line configuration errors, RNG state.

Curricula are pure functions of the global optimizer step (`trainer.global_step`, which does not
move between the micro-batches of one step under gradient accumulation), so resuming needs no
hidden state. The global random state is saved with each callback's state, so an interrupted run
resumed with `--ckpt_path` continues with the random numbers (dropout, sampling) of the
uninterrupted run.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException


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


def random_state() -> dict:
    """The global random state (python, numpy, torch CPU and CUDA) as checkpoint-safe values."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    """Restore what `random_state` returned."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumableCallback(L.Callback):
    """Saves the global random state with the callback's own `extra_state()` in checkpoints."""

    def extra_state(self) -> dict:
        """Callback-specific state to save; override together with `load_extra_state`."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` returned."""

    def state_dict(self) -> dict:
        return {"random_state": random_state(), **self.extra_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        if "random_state" in state:
            set_random_state(state.pop("random_state"))
        self.load_extra_state(state)
