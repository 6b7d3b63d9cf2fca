"""RULER's variable tracking: follow chains of variable assignments (multi-hop tracing)."""

from __future__ import annotations

import random
import string

from lengen_plugins.tasks.retrieval import ByteTask, to_symbols
from lengen_plugins.tasks.ruler_common import (
    ANSWER_SEPARATOR,
    HAYSTACKS,
    check_choice,
    check_count,
    distinct,
    haystack_text,
    insert_all,
)


class RulerVariableTracking(ByteTask):
    """Name every variable that ends up holding a value (Hsieh et al. 2024, RULER, variable
    tracking; NVIDIA/RULER scripts/data/synthetic/variable_tracking.py).

    Each chain is RULER's statements `VAR X0 = 12345`, `VAR X1 = VAR X0`, ..., `VAR Xh = VAR Xh-1`
    (num_hops + 1 variables of 5 upper-case letters, a 5-digit value), each on its own line,
    inserted in chain order at sorted random byte offsets of the haystack; chains have distinct
    values and variables. The input (exactly `length` bytes) ends with
    `Find all variables that are assigned the value {value}. Answer: ` for the first chain's value.
    Target: the first chain's variables in chain order, joined by `,`; score with StringMatchAll
    (RULER's metric). The other chains are distractors. A chain statement is about 20 bytes, so
    the default (1 chain, 4 hops) fits from 160 bytes.

    Args:
        num_chains: chains inserted (RULER's num_chains; 1 asked, the rest distractors).
        num_hops: assignments after the first in each chain (RULER's num_hops, default 4).
        haystack: "noise" (RULER's repeated sentences) or "essay" (the embedded corpus).
    """

    def __init__(self, num_chains: int = 1, num_hops: int = 4, haystack: str = "noise") -> None:
        name = "RulerVariableTracking"
        self.num_chains = check_count(name, "num_chains", num_chains, 1, 32)
        self.num_hops = check_count(name, "num_hops", num_hops, 1, 32)
        self.haystack = check_choice(name, "haystack", haystack, HAYSTACKS)

    def _question(self, value: str) -> bytes:
        return f"\nFind all variables that are assigned the value {value}. Answer: ".encode()

    def _statements(self, names: list[str], value: str) -> list[bytes]:
        first = [f"\nVAR {names[0]} = {value}\n".encode()]
        rest = [f"\nVAR {b} = VAR {a}\n".encode() for a, b in zip(names, names[1:])]
        return first + rest

    @property
    def min_length(self) -> int:
        names = ["A" * 5] * (self.num_hops + 1)
        chain = sum(len(s) for s in self._statements(names, "12345"))
        return chain * self.num_chains + len(self._question("12345"))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        size = self.num_hops + 1
        names = distinct(
            lambda r: "".join(r.choices(string.ascii_uppercase, k=5)), size * self.num_chains, rng
        )
        values = distinct(lambda r: str(r.randint(10000, 99999)), self.num_chains, rng)
        chains = [
            self._statements(names[c * size : (c + 1) * size], values[c])
            for c in range(self.num_chains)
        ]
        question = self._question(values[0])
        room = length - sum(len(s) for chain in chains for s in chain) - len(question)
        for _ in range(100):
            text = haystack_text(self.haystack, room, rng)
            if b"VAR " not in text:  # the haystack must not look like a statement
                break
        else:
            raise ValueError(f"RulerVariableTracking: no clean haystack of {room} bytes")
        pieces = []
        for chain in chains:  # chain order = byte order, as in RULER's noise haystack
            offsets = sorted(rng.randint(0, room) for _ in chain)
            pieces += list(zip(offsets, chain))
        context = insert_all(text, pieces) + question
        return to_symbols(context), list(ANSWER_SEPARATOR.join(names[:size]))
