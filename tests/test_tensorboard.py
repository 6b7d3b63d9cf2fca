"""TensorBoard built for comparing runs (issue 12), checked by reading the event files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import lengen
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
LENGTHS = [2, 4, 8, 12]  # 12 sorts before 2, 4 and 8 as unpadded text
TRAIN_MAX = 4


def tiny(root: Path) -> list[str]:
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "6",
        "--trainer.val_check_interval", "3",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--model.pos_encoding", "RoPE",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data.init_args.train_max_length", str(TRAIN_MAX),
        "--data.init_args.eval_lengths", json.dumps(LENGTHS),
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "8",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """(the training run's folder, the test run's folder) after `lengen fit` and `lengen test`."""
    root = tmp_path_factory.mktemp("tensorboard")
    for command in (["fit"], ["test", "--ckpt_path", "last"]):
        result = lengen(command[0], *tiny(root), *command[1:], cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
    logs = root / "runs" / "lightning_logs"
    return logs / "version_0", logs / "version_1"


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def hparams_data(folder: Path) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    content = events(folder).PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}


def test_hparams_are_the_run_settings_and_the_summary_scores(run):
    training, _ = run
    data = hparams_data(training)
    start = next(d.session_start_info for d in data.values() if d.HasField("session_start_info"))
    hparams = {
        key: value.string_value or value.number_value for key, value in start.hparams.items()
    }
    # The run's settings only: no `_instantiator`, no metric list, the same keys for every run.
    assert set(hparams) == {
        "encoding", "encoding_args", "task", "n_layer", "n_head", "d_model", "d_mlp", "lr",
        "warmup_steps", "weight_decay", "max_steps", "batch_size", "train_min_length",
        "train_max_length", "curriculum", "seed",
    }  # fmt: skip
    assert hparams["encoding"] == "RoPE" and hparams["task"] == "Copy"
    assert hparams["encoding_args"] == "base=10000.0"  # unset (None) arguments are left out
    assert (hparams["n_layer"], hparams["d_model"], hparams["train_max_length"]) == (1, 32, 4)
    assert hparams["curriculum"] == "-" and hparams["max_steps"] == 6
    experiment = next(d.experiment for d in data.values() if d.HasField("experiment"))
    metric_tags = {info.name.tag for info in experiment.metric_infos}
    for split in ("val", "test"):
        for name in ("exact_match", "token_accuracy"):
            for score in ("in_range", "extrapolation_score", "effective_length"):
                assert f"summary/{split}/{name}/{score}" in metric_tags
    assert "hp_metric" not in metric_tags
    assert "hp_metric" not in events(training).Tags()["scalars"]


def plain_scores(per_length: dict[int, float]) -> dict[str, float]:
    inside = [v for n, v in per_length.items() if n <= TRAIN_MAX]
    beyond = [v for n, v in per_length.items() if n > TRAIN_MAX]
    effective = 0
    for length in sorted(per_length):
        if per_length[length] < 0.5:
            break
        effective = length
    return {
        "in_range": sum(inside) / len(inside),
        "extrapolation_score": sum(beyond) / len(beyond),
        "effective_length": float(effective),
    }


def test_test_results_sit_in_the_training_run_at_the_checkpoint_step(run):
    training, tested = run
    results = json.loads((tested / "results.json").read_text())
    accumulator = events(training)
    for name, values in results["metrics"].items():
        for length, value in values.items():
            (event,) = accumulator.Scalars(f"test/{name}/length_{int(length):04d}")
            assert event.step == 6 and event.value == pytest.approx(value)
        for score, value in plain_scores({int(k): v for k, v in values.items()}).items():
            (event,) = accumulator.Scalars(f"summary/test/{name}/{score}")
            assert event.step == 6 and event.value == pytest.approx(value)
    (figure,) = accumulator.Images("test/metrics_vs_length")
    assert figure.step == 6
    # The test run's own folder holds results.json and the PNG but no second copy of the scalars
    # (which would show as a separate TensorBoard run at step 0).
    assert events(tested).Tags()["scalars"] == []


def test_length_tags_sort_numerically_and_validation_is_logged_at_one_step(run):
    training, _ = run
    accumulator = events(training)
    tags = [t for t in accumulator.Tags()["scalars"] if t.startswith("val/exact_match/length_")]
    assert sorted(tags) == [f"val/exact_match/length_{n:04d}" for n in LENGTHS]
    validation = [t for t in accumulator.Tags()["scalars"] if t.startswith(("val/", "summary/val"))]
    assert "val/loss" in validation
    for tag in validation:
        assert [event.step for event in accumulator.Scalars(tag)] == [3, 6], tag
    assert [image.step for image in accumulator.Images("val/metrics_vs_length")] == [3, 6]
