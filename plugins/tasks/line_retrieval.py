"""Line retrieval: many numbered lines `line N: value`, asked for the value of one line."""

from __future__ import annotations

import random

from lengen_plugins.tasks.retrieval import ByteTask, check_location, needle_offset, to_symbols


class LineRetrieval(ByteTask):
    """Return the value of line k among many `line N: value` lines (LongChat / LMSys "lines").

    Input (bytes, exactly `length`): as many lines `line N: V` as fit, with distinct random labels
    N of `label_digits` digits and random values V of `value_digits` digits, then the question
    `What is in line K? line K: `; the bytes that do not fill a whole line are newlines at the
    start. The asked line is drawn from the lines that start inside `location` (first 10% of the
    lines' bytes, 45-55%, last 10%, or anywhere). Target: the value's digits.

    Args:
        label_digits: digits of the line labels (at most 10^label_digits lines).
        value_digits: digits of each value.
        location: "start", "middle", "end" or "any".
    """

    def __init__(self, label_digits: int = 4, value_digits: int = 5, location: str = "any") -> None:
        if not 1 <= label_digits <= 8 or not 1 <= value_digits <= 20:
            raise ValueError(
                f"LineRetrieval: need label_digits in 1..8 and value_digits in 1..20, got "
                f"{label_digits} and {value_digits}"
            )
        self.label_digits, self.value_digits = label_digits, value_digits
        self.location = check_location("LineRetrieval", location)

    def _line(self, label: int, value: str) -> bytes:
        return f"line {label:0{self.label_digits}d}: {value}\n".encode()

    def _question(self, label: int) -> bytes:
        name = f"{label:0{self.label_digits}d}"
        return f"What is in line {name}? line {name}: ".encode()

    @property
    def min_length(self) -> int:
        return len(self._line(0, "0" * self.value_digits)) + len(self._question(0))

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        line_bytes = len(self._line(0, "0" * self.value_digits))
        room = length - len(self._question(0))
        num_lines = min(room // line_bytes, 10**self.label_digits)
        labels = rng.sample(range(10**self.label_digits), num_lines)
        low, high = 10 ** (self.value_digits - 1), 10**self.value_digits
        values = [str(rng.randrange(low, high)) for _ in range(num_lines)]
        padding = room - num_lines * line_bytes
        # The asked line: the one starting nearest a random offset inside the location.
        offset = needle_offset(num_lines * line_bytes - line_bytes, self.location, rng)
        asked = round(offset / line_bytes)
        lines = b"".join(self._line(label, value) for label, value in zip(labels, values))
        context = b"\n" * padding + lines + self._question(labels[asked])
        return to_symbols(context), list(values[asked])
