"""configs/tasks/*.yaml and configs/experiments/passkey.yaml name installed tasks with valid
arguments and lengths each task can generate (parsed here without starting a run)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from lengen.plugins import GROUPS, discover

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted((CONFIGS / "tasks").rglob("*.yaml")) + [CONFIGS / "experiments" / "passkey.yaml"]


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_task_config_instantiates_and_generates(path):
    data = yaml.safe_load(path.read_text())["data"]["init_args"]
    spec = data["task"]
    name, arguments = (
        (spec, {}) if isinstance(spec, str) else (spec["class_path"], spec["init_args"])
    )
    plugin = discover(GROUPS["tasks"])[name]
    task = plugin.obj(**arguments)
    assert task.min_length <= data["train_min_length"] <= data["train_max_length"]
    rng = random.Random(0)
    for length in (data["train_min_length"], data["train_max_length"], max(data["eval_lengths"])):
        task.make_example(length, rng)
