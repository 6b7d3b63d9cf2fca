"""Contract of every installed task plugin (third-party ones included), with default arguments:
examples are deterministic by seed, laid out BOS input SEP / target EOS, and use only the vocab."""

from __future__ import annotations

import random

import pytest

from lengen.plugins import GROUPS, discover
from lengen.task import BOS, EOS, SEP, SPECIAL_TOKENS, Task

PLUGINS = sorted(discover(GROUPS["tasks"]).items())


@pytest.mark.parametrize("name, plugin", PLUGINS, ids=[name for name, _ in PLUGINS])
def test_task_contract(name, plugin):
    assert plugin.error is None, plugin.error
    task = plugin.obj()
    assert isinstance(task, Task)
    assert len(set(task.symbols)) == len(task.symbols), "symbols must be distinct"
    assert task.identity()["class_path"].endswith(type(task).__qualname__)
    for length in (task.min_length, task.min_length + 5):
        example = task.make_example(length, random.Random(f"{name}-{length}"))
        assert example == task.make_example(length, random.Random(f"{name}-{length}"))
        assert example.prompt[0] == BOS and example.prompt[-1] == SEP
        assert example.target[-1] == EOS and example.length == length
        body = example.prompt[1:-1] + example.target[:-1]
        assert all(len(SPECIAL_TOKENS) <= i < task.vocab_size for i in body)
