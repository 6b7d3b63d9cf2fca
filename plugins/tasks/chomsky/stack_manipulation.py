"""Stack manipulation (deterministic context-free): the stack after push and pop actions."""

from __future__ import annotations

import random

from lengen.task import Task

ACTIONS = ("POP", "PUSH0", "PUSH1")


class StackManipulation(Task):
    """Apply POP / PUSH 0 / PUSH 1 to a binary stack (Delétang et al. 2023, DCF).

    Input: an initial stack of k bits given bottom to top (k uniform in 1..length-1), then
    `length - k` actions; a POP on an empty stack does nothing. Target: the final stack top to
    bottom (possibly empty). Length 1 is a single bit, returned as is. Default split: train 1..40,
    test 41..500.
    """

    symbols = ("0", "1", *ACTIONS)

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        if length == 1:
            bit = rng.choice("01")
            return [bit], [bit]
        stack = [rng.choice("01") for _ in range(rng.randint(1, length - 1))]
        actions = [rng.choice(ACTIONS) for _ in range(length - len(stack))]
        final = list(stack)
        for action in actions:
            if action == "POP":
                if final:
                    final.pop()
            else:
                final.append(action[-1])
        return stack + actions, final[::-1]
