"""The plugin author's kit: `pytest --pyargs lengen.testing` passes the example plugin package
(examples/lengen-plugin-example) and catches a broken task, metric and callback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import write_distribution

# The task, metric and callback suites over every installed plugin (lengen's own included).
from lengen.testing_plugins import (  # noqa: F401
    test_callback_state_round_trips_through_a_checkpoint,
    test_metric_bucket_is_the_weighted_mean_of_scores_and_empty_buckets_are_nan,
    test_metric_states_are_sums_so_ranks_can_be_added,
    test_task_cache_key_is_stable_plain_data_naming_every_argument,
    test_task_examples_are_deterministic_given_the_seed,
    test_task_examples_have_the_layout_and_the_requested_length,
    test_task_uses_only_its_own_vocabulary,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lengen-plugin-example"


def run_kit(path: Path, names: list[str]) -> dict[str, str]:
    """Run the kit with `path` on sys.path; test id -> PASSED / FAILED / SKIPPED."""
    env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "--pyargs", "lengen.testing", "-k", " or ".join(names)],
        capture_output=True, text=True, cwd=path, env=env, timeout=900,
    )  # fmt: skip
    outcomes = {}
    for line in result.stdout.splitlines():
        word, _, test = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED"):
            outcomes[test.split(" ")[0].split("::")[-1]] = word
    assert outcomes, result.stdout[-3000:]
    return outcomes


def example_entry_points() -> str:
    """The [project.entry-points."group"] tables of the example's pyproject, as entry_points.txt."""
    text = (EXAMPLE / "pyproject.toml").read_text()
    lines = []
    for group, body in re.findall(
        r'\[project\.entry-points\."([\w.]+)"\]\n(.*?)(?:\n\n|\Z)', text, re.S
    ):
        lines.append(f"[{group}]")
        lines += [re.sub(r'"', "", line) for line in body.strip().splitlines()]
    return "\n".join(lines) + "\n"


def test_the_example_plugin_package_passes_the_kit(tmp_path):
    entry_points = example_entry_points()
    names = re.findall(r"^(\w+) = ", entry_points, re.M)
    assert sorted(names) == ["DampedALiBi", "FirstTokenAccuracy", "Increment", "StepCounter"]
    write_distribution(tmp_path, "lengen-plugin-example", entry_points, {})
    (tmp_path / "lengen_plugin_example").symlink_to(EXAMPLE / "lengen_plugin_example")
    outcomes = run_kit(tmp_path, names)
    for name in names:  # every kind was checked, and nothing failed
        mine = {test: word for test, word in outcomes.items() if f"[{name}" in test}
        assert mine and set(mine.values()) == {"PASSED"}, mine
    for prefix, name in [
        ("test_task_", "Increment"),
        ("test_metric_", "FirstTokenAccuracy"),
        ("test_callback_", "StepCounter"),
        ("test_cached_decoding_equals_uncached", "DampedALiBi"),
    ]:
        assert any(t.startswith(prefix) and f"[{name}" in t for t in outcomes), (prefix, outcomes)


BROKEN = '''
import random
import torch
from lightning.pytorch import Callback
from lengen.metric import LengthMetric
from lengen.task import Task

_GLOBAL = random.Random(0)


class UnseededTask(Task):
    """Draws from a module-level generator instead of the one it is given."""

    symbols = ("a", "b")

    def generate(self, length, rng):
        symbols = [_GLOBAL.choice(self.symbols) for _ in range(length)]
        return symbols, symbols


class HiddenArgumentTask(Task):
    """Keeps its argument under another name: the cache key cannot tell 2 from 3 apart."""

    symbols = ("a", "b")

    def __init__(self, repeat: int = 2):
        self._times = repeat

    def generate(self, length, rng):
        symbols = [rng.choice(self.symbols) for _ in range(length)]
        return symbols, symbols * self._times


class MeanStateMetric(LengthMetric):
    """A running mean as its state: ranks' states cannot be added."""

    def __init__(self):
        super().__init__()
        self.add_state("mean", torch.zeros(self.max_length + 1, dtype=torch.float64), "mean")

    def score(self, batch, logits, generated):
        values = logits[:, 0, 0].double()
        return values, torch.ones_like(values)


class ZeroForEmptyMetric(LengthMetric):
    """Reports 0 for buckets it never saw."""

    def score(self, batch, logits, generated):
        values = logits[:, 0, 0].double()
        return values, torch.ones_like(values)

    def compute(self):
        return torch.nan_to_num(super().compute(), nan=0.0)


class ForgetfulCallback(Callback):
    """Saves a counter but never restores it."""

    def __init__(self):
        self.seen = 0

    def state_dict(self):
        return {"seen": self.seen}
'''


def test_the_kit_catches_broken_tasks_metrics_and_callbacks(tmp_path):
    write_distribution(
        tmp_path,
        "fake-broken",
        """
        [lengen.tasks]
        UnseededTask = fake_broken:UnseededTask
        HiddenArgumentTask = fake_broken:HiddenArgumentTask
        [lengen.metrics]
        MeanStateMetric = fake_broken:MeanStateMetric
        ZeroForEmptyMetric = fake_broken:ZeroForEmptyMetric
        [lengen.callbacks]
        ForgetfulCallback = fake_broken:ForgetfulCallback
        """,
        {"fake_broken": BROKEN},
    )
    outcomes = run_kit(
        tmp_path,
        ["UnseededTask", "HiddenArgumentTask", "MeanStateMetric", "ZeroForEmptyMetric",
         "ForgetfulCallback"],
    )  # fmt: skip
    expected_failures = [
        "test_task_examples_are_deterministic_given_the_seed[UnseededTask]",
        "test_task_cache_key_is_stable_plain_data_naming_every_argument[HiddenArgumentTask]",
        "test_metric_states_are_sums_so_ranks_can_be_added[MeanStateMetric]",
        "test_metric_bucket_is_the_weighted_mean_of_scores_and_empty_buckets_are_nan"
        "[ZeroForEmptyMetric]",
        "test_callback_state_round_trips_through_a_checkpoint[ForgetfulCallback]",
    ]
    for test in expected_failures:
        assert outcomes[test] == "FAILED", (test, outcomes)
    # The sound parts of the broken plugins still pass (each check is specific).
    assert outcomes["test_task_uses_only_its_own_vocabulary[HiddenArgumentTask]"] == "PASSED"
    assert outcomes["test_metric_states_are_sums_so_ranks_can_be_added[ZeroForEmptyMetric]"] == (
        "PASSED"
    )
