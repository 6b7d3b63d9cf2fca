"""The `lengen` console script end to end: fit, test from the checkpoint, outputs, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_run import lengen
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def tiny(root: Path) -> list[str]:
    """The quickstart config shrunk to seconds."""
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "6",
        "--trainer.val_check_interval", "3",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[2, 4, 8]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "8",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


def scalars(log_dir: Path) -> dict[str, float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    result = lengen("fit", *tiny(root), "--model.pos_encoding", "ALiBi", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_fit_logs_training_and_per_length_validation(fitted):
    log_dir = fitted / "runs" / "lightning_logs" / "version_0"
    assert list((log_dir / "checkpoints").glob("*.ckpt"))
    logged = scalars(log_dir)
    assert "train/loss" in logged and "train/lr" in logged
    for length in (2, 4, 8):
        assert f"val/exact_match/length_{length:04d}" in logged
        assert 0.0 <= logged[f"val/token_accuracy/length_{length:04d}"] <= 1.0
    hparams = (log_dir / "hparams.yaml").read_text()
    assert "encoding: ALiBi" in hparams


def test_test_from_the_checkpoint_writes_table_figure_results_and_scalars(fitted):
    result = lengen(
        "test", *tiny(fitted), "--model.pos_encoding", "ALiBi", "--ckpt_path", "last", cwd=fitted
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the newest checkpoint" in result.stdout
    table = result.stdout[result.stdout.index("length") :]
    assert "exact_match" in table and "token_accuracy" in table and "8*" in table

    log_dir = fitted / "runs" / "lightning_logs" / "version_1"  # a new version: nothing overwritten
    results = json.loads((log_dir / "results.json").read_text())
    assert set(results["metrics"]) == {"exact_match", "token_accuracy"}  # the quickstart's
    assert set(results["summary"]) == {"exact_match", "token_accuracy"}
    assert set(results["metrics"]["exact_match"]) == {"2", "4", "8"}
    assert results["pos_encoding"] == "ALiBi" and results["train_max_length"] == 4
    assert results["global_step"] == 6  # the steps the checkpoint was trained for
    assert results["config"]["model"]["pos_encoding"]["class_path"].endswith("ALiBi")
    assert (log_dir / "metrics_vs_length.png").stat().st_size > 0

    # Test scalars go into the training run's folder, beside its training curves.
    logged = scalars(fitted / "runs" / "lightning_logs" / "version_0")
    for length in (2, 4, 8):
        value = results["metrics"]["token_accuracy"][str(length)]
        assert logged[f"test/token_accuracy/length_{length:04d}"] == pytest.approx(value)
    assert (fitted / "runs" / "lightning_logs" / "version_0" / "config.yaml").exists()


def test_unknown_encoding_is_one_line_listing_the_names(tmp_path):
    result = lengen("fit", *tiny(tmp_path), "--model.pos_encoding", "Rope2", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("lengen: error")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "'Rope2'" in lines[0] and "ALiBi" in lines[0] and "RoPE" in lines[0]


def test_unknown_task_in_yaml_is_one_line_listing_the_names(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  init_args:\n    task: Multiplication\n")
    result = lengen("fit", *tiny(tmp_path), "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown task 'Multiplication'; available in lengen.tasks: Addition, " in result.stderr
    assert ", Copy, " in result.stderr  # every installed task is named


def test_evaluating_past_a_learned_table_fails_with_one_line(tmp_path):
    result = lengen(
        "validate",
        *tiny(tmp_path),
        "--model.pos_encoding", "Learned",
        "--model.pos_encoding.init_args.max_length", "12",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("lengen: error")]
    assert len(error) == 1 and "12" in error[0]


def test_last_checkpoint_without_any_is_a_clear_error(tmp_path):
    result = lengen("test", *tiny(tmp_path), "--ckpt_path", "last", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no checkpoint" in result.stderr


def test_a_checkpoint_tested_with_an_encoding_it_does_not_fit_is_one_line(fitted, tmp_path):
    checkpoint = str(next((fitted / "runs").rglob("*.ckpt")))  # trained with ALiBi
    args = [*tiny(tmp_path), "--model.pos_encoding", "T5Bias", "--ckpt_path", checkpoint]
    result = lengen("test", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(  # refused before loading (issue 12)
        "lengen: error: the checkpoint was trained with ALiBi; testing it with T5Bias is not a "
        "context extension"
    )


def test_predict_writes_one_line_per_test_example(fitted):
    result = lengen(
        "predict", *tiny(fitted), "--model.pos_encoding", "ALiBi", "--ckpt_path", "last", cwd=fitted
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.split("predictions: ")[1].split()[0])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(record["length"] for record in records) == [2] * 8 + [4] * 8 + [8] * 8
    for record in records:
        assert record["target"] == record["input"] + " <eos>"  # the Copy task
        assert record["exact_match"] == (record["generated"] == record["target"])


def test_predict_writes_a_text_task_as_text(tmp_path):
    """Passkey's records read as text, not one byte per space: the key found in the input is
    the target (an untrained model: only the layout is checked)."""
    result = lengen(
        "predict", *tiny(tmp_path), "--data.init_args.task", "Passkey",
        "--data.init_args.train_min_length", "100", "--data.init_args.train_max_length", "120",
        "--data.init_args.eval_lengths", "[120]", "--data.init_args.test_examples_per_length", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.split("predictions: ")[1].split()[0])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        key = re.search(r"The pass key is (\d+)\. Remember it\. \1 is", record["input"])
        assert key is not None, record["input"]
        assert record["input"].endswith("What is the pass key? The pass key is ")
        assert record["target"] == key.group(1) + "<eos>"
