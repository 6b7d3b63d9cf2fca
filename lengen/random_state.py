"""The global random state (Python `random`, NumPy, torch CPU and CUDA) in every checkpoint.

Training randomness (dropout, anything a callback draws) comes from the global generators, so an
interrupted run continues exactly only if their state is saved and restored. `TrainingRandomState`
makes that independent of what else happens between two training batches:

- after each training micro-batch's backward it takes a snapshot of the global state;
- before each training batch it restores the latest snapshot, so whatever draws random numbers
  between two batches (creating a validation DataLoader iterator, an evaluation, a callback)
  leaves the training stream untouched, in an uninterrupted run and in a resumed one alike;
- every checkpoint holds the snapshot of each rank (gathered under DDP), and a resumed run
  restores its rank's snapshot before its first batch.

So a run resumed from any checkpoint draws the same random numbers as the uninterrupted run,
whichever callbacks are configured and wherever validation falls.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch
import torch.distributed as dist

# The checkpoint key: a list with one state per rank, indexed by global rank.
CHECKPOINT_KEY = "lengen_random_state"


def random_state(cuda_device: torch.device | None = None) -> dict:
    """The global random state (python, numpy, torch CPU and, on `cuda_device`, CUDA) as
    checkpoint-safe values (tensors and plain Python types)."""
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
    if cuda_device is not None and cuda_device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(cuda_device)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_all"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict, cuda_device: torch.device | None = None) -> None:
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
        on_cuda = cuda_device is not None and cuda_device.type == "cuda"
        torch.cuda.set_rng_state(state["cuda"], cuda_device if on_cuda else "cuda")
    if "cuda_all" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_all"])


def gather_per_rank(state: dict) -> list[dict]:
    """Every rank's `state`, indexed by global rank (a collective when torch.distributed runs:
    call it on every rank); [state] in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


class TrainingRandomState:
    """Keeps the training stream of random numbers apart and puts it in checkpoints.

    The host (LengenModule) calls `after_backward` after each training micro-batch's backward,
    `before_batch` before each training batch, `save` from `on_save_checkpoint` (on every rank)
    and `load` from `on_load_checkpoint`.
    """

    def __init__(self) -> None:
        self.snapshot: dict | None = None  # the state after the last training micro-batch

    def after_backward(self, device: torch.device) -> None:
        self.snapshot = random_state(device)

    def before_batch(self, device: torch.device) -> None:
        if self.snapshot is not None:
            set_random_state(self.snapshot, device)

    def save(self, checkpoint: dict, device: torch.device) -> None:
        """Write every rank's snapshot (the current state before the first batch)."""
        own = self.snapshot if self.snapshot is not None else random_state(device)
        checkpoint[CHECKPOINT_KEY] = gather_per_rank(own)

    def load(self, checkpoint: dict, rank: int) -> None:
        """Take this rank's saved snapshot; restored before the next training batch."""
        states = checkpoint.get(CHECKPOINT_KEY)
        if not states:
            return  # an older checkpoint: callbacks may have saved the state (ResumableCallback)
        if rank >= len(states):
            warnings.warn(
                f"the checkpoint holds the random state of {len(states)} rank(s), not of rank "
                f"{rank}: rank {rank} continues with its current random state",
                stacklevel=2,
            )
            return
        self.snapshot = states[rank]
