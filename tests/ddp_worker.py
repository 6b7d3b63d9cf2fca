"""The body of one process in test_ddp.py's two-process gloo test (kept out of the test module so
a spawned process imports little)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from lengen.distributed import compute_on_every_rank, gather_batches
from lengen.metric import EvalBatch
from lengen_plugins.metrics.exact_match import ExactMatch


def one_token_batch(lengths: list[int], hits: list[int]) -> tuple[EvalBatch, None, torch.Tensor]:
    """(batch, logits, generated) with one-token targets; the generation hits where `hits` is 1."""
    targets = torch.tensor([[5] for _ in lengths])
    generated = torch.tensor([[5 if hit else 6] for hit in hits])
    ones = torch.ones(len(lengths), dtype=torch.long)
    return EvalBatch(targets, targets, targets, ones, ones, torch.tensor(lengths)), None, generated


def collectives(rank: int, port: int, out: str) -> None:
    """Rank 0 scores three length-2 examples (2 hits), rank 1 one length-3 example (a hit); a
    second metric is updated on no rank; rank 0 has 3 prediction batches, rank 1 two."""
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        updated, idle = ExactMatch(max_length=8), ExactMatch(max_length=8)
        if rank == 0:
            updated.update(*one_token_batch([2, 2, 2], [1, 0, 1]))
        else:
            updated.update(*one_token_batch([3], [1]))
        values = compute_on_every_rank(updated)
        empty = compute_on_every_rank(idle)
        gathered = gather_batches([f"r{rank}b{k}" for k in range(3 - rank)])
        torch.save({"values": values, "empty": empty, "gathered": gathered}, f"{out}{rank}.pt")
    finally:
        dist.destroy_process_group()
