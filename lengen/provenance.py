"""Where a result came from: versions, code revision, hardware, the checkpoint and the training run.

Gathered once when results are written (`LengenModule` -> lengen/results.py), so every
results.json says which code, on which machine, evaluated which checkpoint of which training run,
and what the test command changed relative to that run.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

# Model settings that are not part of what was trained: the test command's values are kept.
#   metrics: what is measured, not the model; init_from: where `fit` started, not needed later;
#   vocab_size: linked from the data module by the CLI.
EVALUATION_KEYS = ("metrics", "init_from", "vocab_size")


# Callbacks that do not change training (Lightning's, lengen's own such as the divergence guard,
# monitoring plugins): left out of the curriculum label.
NON_CURRICULUM = ("lightning.", "lengen.", "AttentionAnalysis", "GradientVarianceMonitor")


def _short_name(class_path: str) -> str:
    return str(class_path).rsplit(".", 1)[-1]


def curriculum_label(class_paths: list[str]) -> str:
    """'+'-joined short names of the callbacks that change training (not Lightning's, not
    monitoring ones); '-' when none."""
    names = [
        _short_name(path)
        for path in class_paths
        if not str(path).startswith(NON_CURRICULUM) and _short_name(path) not in NON_CURRICULUM
    ]
    return "+".join(names) or "-"


def code_revision() -> str | None:
    """`git describe --always --dirty --tags` of the checkout lengen is imported from; None when
    lengen is installed from a wheel (no checkout) or git is missing."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():  # a worktree has a .git file, a clone a .git folder
        return None
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if described.returncode != 0:
        return None
    return described.stdout.strip() or None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """lengen, torch, lightning and Python versions, and the code revision."""
    import lightning
    import torch

    return {
        "lengen": _version("lengen"),
        "code_revision": code_revision(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }


def environment(trainer) -> dict:
    """Device (with its name on CUDA), precision, world size and node count of a Trainer."""
    import torch

    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": str(device),
        "device_name": name or platform.machine(),
        "precision": str(trainer.precision),
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
    }


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def training_config_path(checkpoint: str | Path) -> Path | None:
    """The `config.yaml` LightningCLI saved for the run that wrote `checkpoint`:
    `<version folder>/checkpoints/<name>.ckpt` -> `<version folder>/config.yaml`."""
    checkpoint = Path(checkpoint)
    for folder in (checkpoint.parent.parent, checkpoint.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def _plain(value):
    """Hyperparameters as JSON-ready data: an object becomes {"class_path", "init_args"}."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    cls = type(value)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": {}}


def training_config(checkpoint: str | Path) -> tuple[dict | None, str | None]:
    """(the training run's config, where it was read) for a checkpoint.

    The run's saved config.yaml (the whole `lengen fit` config) when it sits beside the version
    folder; else the checkpoint's hyper_parameters as `{"model": ...}` (the model section only;
    an encoding object there becomes its class path without arguments); (None, None) if neither.
    """
    path = training_config_path(checkpoint)
    if path is not None:
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            config = None
        if isinstance(config, dict):
            return config, str(path.resolve())
    try:
        import torch

        # weights_only=False: a Lightning checkpoint pickles the encoding in its hyperparameters.
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception:  # unreadable: the caller reports the missing config
        return None, None
    hparams = loaded.get("hyper_parameters") if isinstance(loaded, dict) else None
    if not hparams:
        return None, None
    return {"model": _plain(dict(hparams))}, "checkpoint hyper_parameters"


def flatten(config, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    if not isinstance(config, dict):
        return {prefix: config}
    flat = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def model_differences(trained: dict | None, tested: dict | None) -> dict[str, dict]:
    """{key: {"trained": value, "tested": value}} for every model setting that differs between
    the training run's model section and the tested one (evaluation-only keys left out)."""
    if not trained or not tested:
        return {}
    trained_flat = {k: v for k, v in flatten(trained).items() if not _evaluation_key(k)}
    tested_flat = {k: v for k, v in flatten(tested).items() if not _evaluation_key(k)}
    return {
        key: {"trained": trained_flat.get(key), "tested": tested_flat.get(key)}
        for key in sorted(set(trained_flat) | set(tested_flat))
        if json.dumps(trained_flat.get(key), sort_keys=True)
        != json.dumps(tested_flat.get(key), sort_keys=True)
    }


def _evaluation_key(key: str) -> bool:
    return key.split(".", 1)[0] in EVALUATION_KEYS


def gather(
    trainer,
    checkpoint_path: str | None,
    checkpoint_step: int,
    command_line: list[str] | None,
    tested_model: dict | None,
) -> dict:
    """The `provenance` block of results.json (see README, Outputs)."""
    training, source = training_config(checkpoint_path) if checkpoint_path else (None, None)
    checkpoint = None
    if checkpoint_path:
        checkpoint = {
            "path": str(Path(checkpoint_path).resolve()),
            "step": checkpoint_step,
            "sha256": file_sha256(checkpoint_path),
        }
    return {
        **versions(),
        **environment(trainer),
        "command": command_line if command_line is not None else sys.argv,
        "checkpoint": checkpoint,
        "training_config": training,
        "training_config_source": source,
        "model_overrides": model_differences((training or {}).get("model"), tested_model),
    }
