"""Scratchpad targets for the arithmetic tasks (Kazemnejad et al. 2023, section 5).

A scratchpad is a list of steps; each step has five parts, any of which can be left out:
the step's input, its computation, its output, the intermediate variables after it, and the
remaining input. A target with a scratchpad is `steps <ans> answer`, each part introduced by its
marker symbol and steps separated by `;`:

    <in> 7 5 <comp> 7 + 5 + 0 = 1 2 <out> 2 <vars> 1 <rest> 3 + 4 ; <in> ... <ans> 1 1 2

Numbers inside the scratchpad are written with the decimal digit symbols 0-9 (and `-` where a
value can be negative).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PARTS = ("input", "computation", "output", "intermediate", "remaining")
MARKERS = {
    "input": "<in>",
    "computation": "<comp>",
    "output": "<out>",
    "intermediate": "<vars>",
    "remaining": "<rest>",
}
STEP_SEPARATOR, ANSWER_MARKER = ";", "<ans>"
SCRATCHPAD_SYMBOLS = (
    *"0123456789",
    "+",
    "-",
    "=",
    *MARKERS.values(),
    STEP_SEPARATOR,
    ANSWER_MARKER,
)


def number(value: int) -> list[str]:
    """A decimal integer as symbols: 12 -> ["1", "2"], -3 -> ["-", "3"]."""
    return list(str(value))


@dataclass
class Step:
    """One scratchpad step; each part is a list of symbols."""

    input: list[str] = field(default_factory=list)
    computation: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    intermediate: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)


class ScratchpadFormat:
    """Mixin of a task whose target can hold a scratchpad before the answer.

    Subclasses take the constructor arguments `scratchpad` (off by default) and
    `scratchpad_<part>` for each part (all on by default), pass them to `set_scratchpad`, extend
    their symbols with `scratchpad_symbols` and build targets with `target_with_scratchpad`.
    """

    scratchpad: bool = False

    def set_scratchpad(self, scratchpad: bool, **parts: bool) -> None:
        self.scratchpad = scratchpad
        for part in PARTS:
            setattr(self, f"scratchpad_{part}", parts[f"scratchpad_{part}"])
        if scratchpad and not any(parts.values()):
            raise ValueError(
                f"{type(self).__name__}: scratchpad=true needs at least one scratchpad part "
                f"({', '.join('scratchpad_' + p for p in PARTS)})"
            )

    def scratchpad_symbols(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        """`symbols`, plus the scratchpad's own when the scratchpad is on."""
        if not self.scratchpad:
            return symbols
        return symbols + tuple(s for s in SCRATCHPAD_SYMBOLS if s not in symbols)

    def target_with_scratchpad(self, steps: list[Step], answer: list[str]) -> list[str]:
        """`answer` alone, or the rendered steps, `<ans>` and the answer."""
        if not self.scratchpad:
            return answer
        rendered: list[str] = []
        for index, step in enumerate(steps):
            if index:
                rendered.append(STEP_SEPARATOR)
            for part in PARTS:
                if getattr(self, f"scratchpad_{part}"):
                    rendered += [MARKERS[part], *getattr(step, part)]
        return [*rendered, ANSWER_MARKER, *answer]
