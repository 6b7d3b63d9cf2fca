"""Cycle navigation (regular): the final position of a walk on a cycle."""

from __future__ import annotations

import random

from lengen.task import Task

MOVES = {"-1": -1, "0": 0, "+1": 1}


class CycleNavigation(Task):
    """Walk on a cycle of `cycle_length` positions from 0 (Delétang et al. 2023, regular).

    Input: `length` moves from {-1, 0, +1} (left, stay, right); target: the final position
    `sum(moves) mod cycle_length`. Default split: train 1..40, test 41..500.

    Args:
        cycle_length: number of positions on the cycle (5 in the paper).
    """

    def __init__(self, cycle_length: int = 5) -> None:
        if cycle_length < 2:
            raise ValueError(f"CycleNavigation: cycle_length={cycle_length} must be >= 2")
        self.cycle_length = cycle_length

    @property
    def symbols(self) -> tuple[str, ...]:
        return (*MOVES, *(f"p{i}" for i in range(self.cycle_length)))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        moves = [rng.choice(tuple(MOVES)) for _ in range(length)]
        return moves, [f"p{sum(MOVES[move] for move in moves) % self.cycle_length}"]
