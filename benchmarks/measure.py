"""Timing and memory primitives of the benchmark: one job each, no model knowledge.

Memory is the peak of live tensor storage (bytes) during one call, counted by a
`TorchDispatchMode` that sees every tensor an ATen op returns (forward, backward and optimizer
alike) and a finaliser on its storage: exact for tensors, blind to allocator caching and to
scratch space inside a kernel. Measured relative to the tensors alive before the call (weights,
optimizer state), so it is the working memory of the step. Not tracemalloc (it sees only
Python's allocator, not torch's) and not the torch profiler's CPU memory events (on this machine
they missed most allocations in a check).
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage created and alive at once inside the `with` block."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.tracked: set[int] = set()

    def _free(self, pointer: int, nbytes: int) -> None:
        self.tracked.discard(pointer)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            pointer, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or pointer in self.tracked:  # a view of a storage already counted
                continue
            self.tracked.add(pointer)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, pointer, nbytes)
        return out


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak live tensor bytes allocated by one call of `fn` (see the module docstring)."""
    with PeakTensorMemory() as memory:
        fn()
    return memory.peak


def seconds(fn: Callable[[], object], calls: int) -> float:
    """Median wall time of `calls` calls of `fn`, in seconds."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(
    contenders: dict[str, Callable[[], object]], repeats: int, calls: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Per-repeat median seconds of each contender, contenders interleaved within each repeat.

    Every contender runs `warmup` untimed calls first; then each repeat times every contender in
    turn (order rotated per repeat), so a change of machine load hits all of them alike.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            times[name].append(seconds(contenders[name], calls))
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float]:
    """(median, min) over repeats of numerator[i] / denominator[i]."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return statistics.median(ratios), min(ratios)


def training_step(
    model: torch.nn.Module, ids: torch.Tensor, autocast: torch.dtype | None = None
) -> Callable[[], None]:
    """A closure doing one AdamW step of next-token cross-entropy on `ids` (B, T).

    autocast: a dtype runs forward and loss under `torch.autocast` (as Lightning's "bf16-mixed").
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        with torch.autocast(ids.device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(ids)  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def forward_only(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    """A closure doing one evaluation forward (no gradients) on `ids` (B, T)."""
    model.eval()

    def forward() -> None:
        with torch.no_grad():
            model(ids)

    return forward
