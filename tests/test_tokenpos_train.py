"""Abacus, PositionCoupling and LongRoPE train end to end on the reversed arithmetic tasks.

Each run builds the model and data from the shipped YAML files through the CLI (quickstart +
arithmetic task + configs/pe/...), takes a few optimizer steps, and tests to 2x the training
length with greedy generation: every weight of the encoding must move and every test number must
be finite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule

from lengen.cli import LengenArgumentParser, LengenCLI
from lengen.module import LengenModule
from lengen.plugins import discover_all

REPO = Path(__file__).resolve().parents[1]
TASKS = {
    "addition": [
        "--config", str(REPO / "configs" / "tasks" / "arithmetic_reversed_hints.yaml"),
        "--data.init_args.task.init_args.index_hints", "false",
    ],
    "multiplication": [
        "--config", str(REPO / "configs" / "tasks" / "arithmetic_multiplication.yaml"),
    ],
}  # fmt: skip
NAMES = {"abacus": "Abacus", "position_coupling": "PositionCoupling", "longrope": "LongRoPE"}
# (config, task, extra arguments); LongRoPE switches to its long factors above 20 tokens, so the
# 5-digit training sums (20 tokens) use the short ones and the 10-digit test sums the long ones.
CASES = [
    ("abacus", "addition", []),
    ("position_coupling", "multiplication", []),
    ("longrope", "addition", ["--model.pos_encoding.init_args.original_max_length", "20"]),
]


def arguments(root: Path, encoding: str, task: str) -> list[str]:
    return [
        "--config", str(REPO / "configs" / "quickstart.yaml"),
        *TASKS[task],
        "--config", str(REPO / "configs" / "pe" / f"{encoding}.yaml"),
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "6",
        "--trainer.val_check_interval", "6",
        "--trainer.enable_progress_bar", "false",
        "--model.n_layer", "1",
        "--data.init_args.train_max_length", "5",
        "--data.init_args.eval_lengths", "[3, 5, 10]",
        "--data.init_args.batch_size", "16",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "4",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("encoding, task, extra", CASES, ids=[case[0] for case in CASES])
def test_trains_on_reversed_arithmetic_and_tests_to_2x(tmp_path, encoding, task, extra):
    discover_all()
    cli = LengenCLI(
        LengenModule, LightningDataModule, subclass_mode_data=True,
        parser_class=LengenArgumentParser, run=False,
        args=[*arguments(tmp_path, encoding, task), *extra],
    )  # fmt: skip
    model = cli.model
    assert type(model.decoder.pos_encoding).__name__ == NAMES[encoding]
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    cli.trainer.fit(model, datamodule=cli.datamodule)
    after = dict(model.named_parameters())
    moved = [name for name, value in before.items() if not torch.equal(value, after[name])]
    encoding_parameters = [name for name in before if ".pos_encoding." in name]
    assert moved and set(encoding_parameters) <= set(moved), (encoding_parameters, moved)
    cli.trainer.test(model, datamodule=cli.datamodule)
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert results["pos_encoding"] == NAMES[encoding] and results["global_step"] == 6
    for metric in ("exact_match", "token_accuracy"):  # every length tested, up to 2x
        scores = results["metrics"][metric]
        assert sorted(scores, key=int) == ["3", "5", "10"]
        assert all(0.0 <= score <= 1.0 for score in scores.values()), scores
