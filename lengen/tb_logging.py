"""TensorBoard laid out for comparing runs: per-length tags, summary scores, HParams, test results
written into the training run's folder.

- Per-length scalars `<split>/<metric>/length_0016`: zero-padded, so the tags sort numerically.
- Summary scalars `summary/<split>/<metric>/<score>` (in_range, extrapolation_score,
  effective_length; lengen/summary.py) for every higher-is-better metric: the HParams metrics.
- HParams: one fixed set of keys per run (encoding, its arguments as one string, task, sizes,
  training lengths, optimiser settings, curriculum, seed), so the runs of one log folder line up
  as rows of one table.
- `lengen test` writes its scalars and figure at the checkpoint's step into the event files of the
  training run the checkpoint belongs to (`<version>/checkpoints/x.ckpt` -> `<version>/`), beside
  its training curves; a checkpoint outside such a folder falls back to the test run's own logger.
"""

from __future__ import annotations

from pathlib import Path

from lengen.provenance import curriculum_label
from lengen.summary import effective_length, extrapolation_score, in_range_score

SCORES = ("in_range", "extrapolation_score", "effective_length")
LENGTH_DIGITS = 4  # length_0004 ... length_9999 sort as text and as numbers alike


def length_tag(split: str, metric: str, length: int) -> str:
    """'test', 'exact_match', 16 -> 'test/exact_match/length_0016'."""
    return f"{split}/{metric}/length_{length:0{LENGTH_DIGITS}d}"


def summary_tag(split: str, metric: str, score: str) -> str:
    return f"summary/{split}/{metric}/{score}"


def scalars(
    split: str,
    results: dict[str, dict[int, float]],
    summarised: list[str],
    train_max_length: int | None,
) -> dict[str, float]:
    """Every scalar of one evaluation: per-length values and the summary scores of the metrics
    named in `summarised` (NaN scores, e.g. nothing beyond training, are left out)."""
    values = {
        length_tag(split, name, length): float(value)
        for name, per_length in results.items()
        for length, value in per_length.items()
    }
    for name in summarised:
        scores = {
            "in_range": in_range_score(results[name], train_max_length),
            "extrapolation_score": extrapolation_score(results[name], train_max_length),
            "effective_length": float(effective_length(results[name])),
        }
        for score, value in scores.items():
            if value == value:  # not NaN
                values[summary_tag(split, name, score)] = value
    return values


def metric_tags(metrics: list[str]) -> list[str]:
    """The HParams metrics: the summary scores of `metrics` on test, then validation (TensorBoard
    shows the columns in this order)."""
    return [
        summary_tag(split, name, score)
        for split in ("test", "val")
        for name in metrics
        for score in SCORES
    ]


def _short(spec) -> str:
    if isinstance(spec, dict):
        spec = spec.get("class_path", "?")
    return str(spec).rsplit(".", 1)[-1]


def _arguments(spec) -> str:
    """{"class_path": ..., "init_args": {"base": 500}} -> 'base=500'; '-' when none."""
    args = (spec.get("init_args") or {}) if isinstance(spec, dict) else {}
    return ", ".join(f"{key}={value}" for key, value in sorted(args.items())) or "-"


def run_hparams(module, run_config: dict | None) -> dict[str, str | int | float | bool]:
    """The HParams of a run, from the live module, trainer and data module (and the CLI's run
    config for the encoding's arguments and the seed). The same keys for every run."""
    config = run_config or {}
    model_config = config.get("model") or {}
    datamodule = getattr(module.trainer, "datamodule", None)
    task = getattr(datamodule, "task", None)
    hp = module.hparams
    callbacks = [type(callback) for callback in module.trainer.callbacks]
    params = {
        "encoding": type(module.decoder.pos_encoding).__name__,
        "encoding_args": _arguments(model_config.get("pos_encoding")),
        "task": type(task).__name__ if task is not None else type(datamodule).__name__,
        "n_layer": hp.get("n_layer"),
        "n_head": hp.get("n_head"),
        "d_model": hp.get("d_model"),
        "d_mlp": hp.get("d_mlp") or 4 * hp.get("d_model", 0),
        "lr": hp.get("lr"),
        "warmup_steps": hp.get("warmup_steps"),
        "weight_decay": hp.get("weight_decay"),
        "max_steps": module.trainer.max_steps,
        "batch_size": getattr(datamodule, "batch_size", None),
        "train_min_length": getattr(datamodule, "train_min_length", None),
        "train_max_length": getattr(datamodule, "train_max_length", None),
        "curriculum": curriculum_label([f"{c.__module__}.{c.__qualname__}" for c in callbacks]),
        "seed": config.get("seed_everything"),
    }
    return {key: "-" if value is None else value for key, value in params.items()}


def write_hparams(writer, params: dict, metrics: list[str]) -> None:
    """Write the HParams session of a run to a SummaryWriter: `params` as hyperparameters and the
    scalar tags `metrics` as its metrics (their values are the scalars logged under those tags;
    no placeholder value is logged)."""
    from torch.utils.tensorboard.summary import hparams

    experiment, start, end = hparams(params, {tag: 0.0 for tag in metrics})
    file_writer = writer._get_file_writer()  # as Lightning's TensorBoardLogger does
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
    writer.flush()


def training_run_folder(checkpoint: str | Path | None) -> Path | None:
    """`<version>/checkpoints/x.ckpt` -> `<version>` when it holds TensorBoard event files."""
    if not checkpoint:
        return None
    folder = Path(checkpoint).resolve().parent.parent
    if Path(checkpoint).resolve().parent.name != "checkpoints":
        return None
    return folder if any(folder.glob("events.out.tfevents.*")) else None


def write_to_training_run(
    folder: Path, step: int, values: dict[str, float], figures: dict[str, object]
) -> bool:
    """Append scalars and figures at `step` to the training run's event files (a new event file
    in `folder`; nothing existing is changed). False when the folder cannot be written."""
    from torch.utils.tensorboard import SummaryWriter

    try:
        writer = SummaryWriter(log_dir=str(folder))
    except OSError:
        return False
    for tag, value in values.items():
        writer.add_scalar(tag, value, step)
    for tag, figure in figures.items():
        writer.add_figure(tag, figure, step, close=False)
    writer.close()
    return True
