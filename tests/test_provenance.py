"""Test what was trained, provenance in results.json, and `lengen validate`'s outputs (issue 12)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import lightning
import pytest
import torch
import yaml
from cli_run import lengen
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lengen.cli import is_context_extension
from lengen.plugins import discover_all

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")  # says ALiBi, n_layer 2, d_model 64


def data_and_trainer(root: Path) -> list[str]:
    """The quickstart's data and trainer shrunk to seconds; no --model arguments."""
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "6",
        "--trainer.val_check_interval", "3",
        "--trainer.enable_progress_bar", "false",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[2, 4, 8]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "8",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


SIZES = ["--model.n_layer", "1", "--model.d_model", "32"]
TRAINED_MODEL = ["--model.pos_encoding", "RoPE", *SIZES]


@pytest.fixture(scope="module")
def rope_run(tmp_path_factory) -> Path:
    """A RoPE model (1 layer, d_model 32) fitted for 6 steps; returns its checkpoint."""
    root = tmp_path_factory.mktemp("provenance")
    result = lengen("fit", *data_and_trainer(root), *TRAINED_MODEL, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (checkpoint,) = (root / "runs").rglob("*.ckpt")
    return checkpoint


def results_files(root: Path) -> list[Path]:
    return sorted(root.rglob("results.json"))


def test_a_rope_checkpoint_tested_with_the_alibi_quickstart_is_refused(rope_run, tmp_path):
    """The quickstart's model settings count as if given on the command line
    (tests/test_ckpt_config.py): its sizes and ALiBi are not what was trained, so the test is
    refused in one line naming them, and nothing is written."""
    refused = tmp_path / "refused"
    for extra, words in (
        ([], "n_layer=1 (this model: 2) given by " + QUICKSTART),
        (SIZES, "trained with RoPE; testing it with ALiBi is not a context extension"),
        ([*SIZES, "--model.pos_encoding", "ALiBi"], "testing it with ALiBi is not a context"),
    ):
        command = ["test", *data_and_trainer(refused), *extra, "--ckpt_path", str(rope_run)]
        result = lengen(*command, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("lengen: error")]
        assert len(errors) == 1 and words in errors[0], errors
        assert results_files(refused) == []

    # The trained model spelled out: tested as trained.
    result = lengen(
        "test", *data_and_trainer(tmp_path), *TRAINED_MODEL, "--ckpt_path", str(rope_run),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = results_files(tmp_path)
    results = json.loads(path.read_text())
    assert results["pos_encoding"] == "RoPE"
    model = results["config"]["model"]
    assert model["pos_encoding"]["class_path"].endswith(".RoPE")
    assert (model["n_layer"], model["d_model"]) == (1, 32)
    assert results["provenance"]["model_overrides"] == {}


def test_a_context_extension_on_the_command_line_is_allowed(rope_run, tmp_path):
    result = lengen(
        "test", *data_and_trainer(tmp_path), *SIZES, "--model.pos_encoding", "RoPELinear",
        "--model.pos_encoding.init_args.scale", "2", "--ckpt_path", str(rope_run), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = results_files(tmp_path)
    results = json.loads(path.read_text())
    assert results["pos_encoding"] == "RoPELinear"
    overrides = results["provenance"]["model_overrides"]
    assert overrides["pos_encoding.class_path"]["trained"].endswith(".RoPE")
    assert overrides["pos_encoding.class_path"]["tested"].endswith(".RoPELinear")
    assert overrides["pos_encoding.init_args.scale"] == {"trained": None, "tested": 2.0}
    assert results["config"]["model"]["n_layer"] == 1  # the rest is still the trained model


def encoding(name: str) -> type:
    discover_all()
    from lengen.plugins import discover

    return discover("lengen.positional_encodings")[name].obj


@pytest.mark.parametrize(
    ("trained", "tested", "allowed"),
    [
        ("RoPE", "RoPELinear", True),
        ("RoPE", "RoPENTK", True),
        ("RoPE", "YaRN", True),
        ("RoPE", "XPos", True),
        ("RoPELinear", "RoPE", True),
        ("RoPELinear", "YaRN", True),
        ("RoPE", "ALiBi", False),
        ("T5Bias", "ALiBi", False),
        ("RoPE", "RoPEPartial", False),  # same family, but nothing schedulable: another model
        ("ALiBi", "RoPELinear", False),
    ],
)
def test_context_extension_pairs(trained, tested, allowed):
    assert is_context_extension(encoding(trained), encoding(tested)) is allowed


def git_describe() -> str | None:
    if not (REPO / ".git").exists():
        return None
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--tags"], cwd=REPO, capture_output=True,
        text=True,
    )  # fmt: skip
    return described.stdout.strip() or None


def test_results_json_carries_provenance(rope_run, tmp_path):
    command = ["test", *data_and_trainer(tmp_path), *TRAINED_MODEL, "--ckpt_path", str(rope_run)]
    result = lengen(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = results_files(tmp_path)
    results = json.loads(path.read_text())
    assert results["format"] == 2 and results["split"] == "test"
    provenance = results["provenance"]
    assert provenance["lengen"] == metadata.version("lengen")
    assert provenance["code_revision"] == git_describe()
    assert provenance["torch"] == torch.__version__
    assert provenance["lightning"] == lightning.__version__
    assert provenance["python"] == platform.python_version()
    assert provenance["device"] == "cpu" and provenance["precision"] == "32-true"
    assert provenance["world_size"] == 1 and provenance["num_nodes"] == 1
    assert provenance["command"] == command
    assert provenance["checkpoint"] == {
        "path": str(rope_run.resolve()),
        "step": 6,
        "sha256": hashlib.sha256(rope_run.read_bytes()).hexdigest(),
    }
    config_yaml = rope_run.parent.parent / "config.yaml"
    assert provenance["training_config_source"] == str(config_yaml.resolve())
    assert provenance["training_config"] == yaml.safe_load(config_yaml.read_text())
    assert results["global_step"] == 6


def test_validate_writes_table_figure_and_results_like_test(rope_run, tmp_path):
    result = lengen("validate", *data_and_trainer(tmp_path), *TRAINED_MODEL,
                    "--ckpt_path", str(rope_run), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("length") :]
    assert "exact_match" in table and "token_accuracy" in table and "8*" in table
    (path,) = sorted(tmp_path.rglob("validate_results.json"))
    assert (path.parent / "validate_metrics_vs_length.png").stat().st_size > 0
    assert not (path.parent / "results.json").exists()  # test's file name is left to test
    results = json.loads(path.read_text())
    assert results["split"] == "val" and results["pos_encoding"] == "RoPE"
    assert results["provenance"]["checkpoint"]["step"] == 6
    # The same weights on the same validation examples as the training run's last validation
    # (at step 6, just before the checkpoint was saved): the numbers it logged.
    events = EventAccumulator(str(rope_run.parent.parent))
    events.Reload()
    for name, per_length in results["metrics"].items():
        for length, value in per_length.items():
            logged = events.Scalars(f"val/{name}/length_{int(length):04d}")[-1]
            assert logged.step == 6 and logged.value == pytest.approx(value)


def test_training_config_falls_back_to_the_checkpoint_hyperparameters(tmp_path):
    from lengen.provenance import model_differences, training_config

    rope = encoding("RoPE")()
    checkpoint = tmp_path / "loose.ckpt"  # not inside a <version>/checkpoints folder
    torch.save(
        {"hyper_parameters": {"pos_encoding": rope, "n_layer": 3, "_instantiator": "x"}},
        checkpoint,
    )
    config, source = training_config(checkpoint)
    assert source == "checkpoint hyper_parameters"
    assert config == {
        "model": {
            "pos_encoding": {"class_path": f"{type(rope).__module__}.RoPE", "init_args": {}},
            "n_layer": 3,
        }
    }
    tested = {"pos_encoding": {"class_path": "x.RoPELinear"}, "n_layer": 3, "metrics": ["A"]}
    assert model_differences(config["model"], tested) == {
        "pos_encoding.class_path": {
            "trained": f"{type(rope).__module__}.RoPE",
            "tested": "x.RoPELinear",
        },
        "pos_encoding.init_args": {"trained": {}, "tested": None},
    }  # metrics are what is measured, not the model: left out
    torch.save({"state_dict": {}}, checkpoint)
    assert training_config(checkpoint) == (None, None)
