"""Fast paths against their plain references: the cached symbol table of tasks, RoPE tables."""

from __future__ import annotations

import random
from importlib.metadata import entry_points

import pytest

from lengen.task import SPECIAL_TOKENS, Task

TASK_CLASSES = sorted((entry.name, entry) for entry in entry_points(group="lengen.tasks"))


def linear_search_encode(task: Task, symbols: list[str]) -> list[int]:
    """The former `Task.encode`: a linear search of `task.symbols` per token."""
    return [len(SPECIAL_TOKENS) + tuple(task.symbols).index(symbol) for symbol in symbols]


def task_instances() -> list[tuple[str, Task]]:
    instances = []
    for name, entry in TASK_CLASSES:
        cls = entry.load()
        instances.append((name, cls()))
    from lengen_plugins.tasks.copy import Copy
    from lengen_plugins.tasks.reverse import Reverse

    instances += [("Copy-252", Copy(num_symbols=252)), ("Reverse-97", Reverse(num_symbols=97))]
    return instances


def task_id(value: object) -> str:
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize(("name", "task"), task_instances(), ids=task_id)
def test_cached_encode_equals_linear_search(name: str, task: Task) -> None:
    if type(task).encode is not Task.encode:
        pytest.skip(f"{name} has its own encode")
    rng = random.Random(f"perf-{name}")
    checked = 0
    for _ in range(12):
        length = rng.randint(task.min_length, task.min_length + 24)
        try:
            inputs, target = task.generate(length, rng)
        except ValueError:  # a length the task cannot make (e.g. Scan's gaps)
            continue
        assert task.encode(inputs) == linear_search_encode(task, inputs)
        assert task.encode(target) == linear_search_encode(task, target)
        assert task.decode(task.encode(inputs)) == list(inputs)
        checked += len(inputs) + len(target)
    assert checked > 0
    assert "_symbol_table_cache" not in task.identity()  # the cache is not an argument


def test_copy_draws_the_same_symbols_as_before() -> None:
    """Copy draws from the cached tuple; the former code drew from a fresh equal tuple."""
    from lengen_plugins.tasks.copy import Copy

    task = Copy(num_symbols=252)
    inputs, target = task.generate(1024, random.Random(7))
    rng = random.Random(7)
    expected = [rng.choice(tuple(f"s{i}" for i in range(252))) for _ in range(1024)]
    assert inputs == expected and target == expected
    example = task.make_example(1024, random.Random(7))
    assert example.prompt[1:-1] == [len(SPECIAL_TOKENS) + int(s[1:]) for s in expected]


def test_symbol_cache_follows_changed_arguments() -> None:
    from lengen_plugins.tasks.copy import Copy

    task = Copy(num_symbols=3)
    assert task.encode(["s2"]) == [len(SPECIAL_TOKENS) + 2]
    with pytest.raises(ValueError, match="s7"):
        task.encode(["s7"])
    task.num_symbols = 9  # an argument changed after first use: the table is rebuilt
    assert task.encode(["s7"]) == [len(SPECIAL_TOKENS) + 7]
    assert task.vocab_size == len(SPECIAL_TOKENS) + 9
    assert task.identity() == {"class_path": "lengen_plugins.tasks.copy.Copy", "num_symbols": 9}

