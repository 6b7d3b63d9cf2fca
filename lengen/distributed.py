"""Keeping ranks in step under DDP / FSDP: the collectives every rank must call, and gathering.

The rule: a collective (a metric's `compute()`, `trainer.log_dir`, a gather) is called on every
rank or on none. Whether it runs never depends on what one rank saw (its number of batches, the
buckets its examples fell in) nor on the rank itself; rank-0-only work (writing files, printing)
comes after the collectives. With one process every helper here is the plain local operation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:  # for type hints only: this module stays cheap to import
    import lightning as L
    from torchmetrics import Metric


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size(trainer: L.Trainer | None) -> tuple[int, int]:
    """(global rank, number of processes) of `trainer`; (0, 1) without one."""
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


def output_dir(trainer: L.Trainer) -> Path:
    """The run's folder for results (the logger's version folder, else default_root_dir).

    Call it on every rank: `trainer.log_dir` broadcasts rank 0's folder (a collective)."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def compute_on_every_rank(metric: Metric) -> torch.Tensor:
    """`metric.compute()`, synchronised over all ranks (torchmetrics gathers the states).

    Call it on every rank for every metric, in the same order, whether or not this rank updated
    it: a rank that saw no batch contributes empty states. (torchmetrics warns when `compute`
    comes before any `update` on this rank; that is expected here and silenced.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method")
        return metric.compute()


def ignore_unsynced_epoch_log_warning() -> None:
    """Silence Lightning's advice to log with sync_dist=True for lengen's evaluation scalars:
    they are computed from metrics already synchronised over all ranks (`compute_on_every_rank`),
    so every rank logs the same value and another reduction would only add a collective."""
    warnings.filterwarnings(
        "ignore", message=r"It is recommended to use `self\.log\('(val|test)/.*sync_dist=True"
    )


def gather_batches(local: list) -> list:
    """Every rank's per-batch outputs, in the order of the evaluation set's batches.

    `local`: this rank's outputs, one entry per batch, in its order. Evaluation batches are dealt
    round-robin (`lengen.data.tasks.ShardedBatches`: rank r of W takes batches r, r + W, ...),
    so global batch k is entry k // W of rank k % W. Entries must be picklable (plain Python
    values, not device tensors). A collective: call on every rank. Returns the same list on
    every rank.
    """
    if not is_distributed():
        return list(local)
    per_rank: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(per_rank, local)
    return [
        per_rank[rank][index]
        for index in range(max(len(outputs) for outputs in per_rank))
        for rank in range(len(per_rank))
        if index < len(per_rank[rank])
    ]
