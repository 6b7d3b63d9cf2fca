"""The Python API (for notebooks and scripts), exported lazily from `lengen`.

    import lengen
    model = lengen.build_model("ALiBi", task="Copy", d_model=64)
    data = lengen.task_data("Copy", train_max_length=16)
    trainer = lengen.trainer("runs/notebook", max_steps=500)
    lengen.train(model, data, trainer)
    results = lengen.evaluate(model, data, trainer)   # results.table(), .figure(), .to_dict()
    lengen.generate(model, "1 2 3", task=data.task)   # -> "1 2 3"

Everything is plain Lightning: `build_model` returns a `LengenModule`, `task_data` a
`TaskDataModule`, `trainer` a `lightning.pytorch.Trainer`; any Trainer works with `train` and
`evaluate`. Outputs (checkpoints, TensorBoard logs, results.json, the figure) go to the trainer's
log dir. A Trainer without a logger and without an explicit `default_root_dir` would write them
into the current directory: `train` and `evaluate` refuse it with a ValueError instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from matplotlib.figure import Figure

from lengen.data.tasks import TaskDataModule
from lengen.divergence import DivergenceGuard
from lengen.logger import ClaimingTensorBoardLogger
from lengen.metric import EvalBatch, LengthMetric
from lengen.module import LengenModule
from lengen.plugins import GROUPS, available_names, discover
from lengen.positional import PositionalEncoding
from lengen.quiet import silence_known_noise
from lengen.results import figure_metrics_vs_length, format_table
from lengen.task import BOS, EOS, PAD, SEP, Task

__all__ = [
    "Results",
    "build_model",
    "evaluate",
    "generate",
    "task_data",
    "train",
    "trainer",
]


def _plugin(group: str, value, **kwargs):
    """A plugin instance from a short name (with kwargs) or an instance (returned as is)."""
    if not isinstance(value, str):
        return value
    plugins = discover(GROUPS[group])
    if value not in plugins or plugins[value].error is not None:
        names = ", ".join(available_names(GROUPS[group]))
        raise ValueError(f"unknown {group} plugin {value!r}; available: {names}")
    return plugins[value].obj(**kwargs)


def build_model(
    pos_encoding: str | PositionalEncoding = "RoPE",
    *,
    task: str | Task | None = None,
    metrics: list[str | LengthMetric] | None = None,
    encoding_args: dict | None = None,
    **model_args,
) -> LengenModule:
    """A `LengenModule` with the encoding `pos_encoding` (short name or instance).

    task: sets `vocab_size` from the task's vocabulary (else pass `vocab_size=`); metrics: short
    names or instances (None: every installed metric); encoding_args: the encoding's constructor
    arguments when it is given by name; model_args: LengenModule's other arguments (n_layer,
    d_model, lr, warmup_steps, ...).
    """
    encoding = _plugin("positional_encodings", pos_encoding, **(encoding_args or {}))
    if task is not None:
        model_args.setdefault("vocab_size", _plugin("tasks", task).vocab_size)
    if metrics is not None:
        metrics = [_plugin("metrics", metric) for metric in metrics]
    return LengenModule(pos_encoding=encoding, metrics=metrics, **model_args)


def task_data(task: str | Task = "Copy", *, task_args: dict | None = None, **data_args):
    """A `TaskDataModule` for `task` (short name or instance); data_args: its other arguments
    (train_max_length, eval_lengths, batch_size, ...)."""
    return TaskDataModule(task=_plugin("tasks", task, **(task_args or {})), **data_args)


def trainer(
    root_dir: str | os.PathLike,
    max_steps: int,
    *,
    val_check_interval: int | None = None,
    callbacks: list[Callback] | None = None,
    on_nonfinite: str = "stop",
    **trainer_args,
) -> Trainer:
    """A Lightning Trainer set up as `lengen fit` sets it up: TensorBoard logs in a new
    `root_dir/lightning_logs/version_N`, gradient clipping at 1.0, the divergence guard, validation
    every `val_check_interval` steps (default: once, at `max_steps`; the training stream is
    endless). trainer_args: any other Trainer argument (accelerator, precision, ...)."""
    silence_known_noise()
    root_dir = str(root_dir)
    trainer_args.setdefault("gradient_clip_val", 1.0)
    trainer_args.setdefault("num_sanity_val_steps", 0)
    return Trainer(
        default_root_dir=root_dir,
        logger=ClaimingTensorBoardLogger(save_dir=root_dir),
        max_steps=max_steps,
        val_check_interval=val_check_interval or max_steps,
        check_val_every_n_epoch=None,
        callbacks=[DivergenceGuard(on_nonfinite), *(callbacks or [])],
        **trainer_args,
    )


def _check_output_dir(trainer: Trainer) -> None:
    """Refuse a Trainer that would write into the current directory by accident."""
    if trainer.logger is None and trainer.default_root_dir == os.getcwd():
        raise ValueError(
            "this Trainer has no logger and no default_root_dir, so checkpoints and results "
            "would be written into the current directory; pass Trainer(default_root_dir=...) "
            "or use lengen.trainer(root_dir, max_steps)"
        )


def train(model: LengenModule, data, trainer: Trainer, ckpt_path: str | None = None):
    """`trainer.fit(model, datamodule=data)`; returns the model."""
    _check_output_dir(trainer)
    silence_known_noise()
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model


@dataclass
class Results:
    """Per-length results of `evaluate`: {metric: {length: value}}.

    `table()` is the terminal table, `figure()` a matplotlib Figure (metric against length,
    training lengths shaded), `to_dict()` plain data; `out_dir` holds results.json and the PNG.
    """

    metrics: dict[str, dict[int, float]]
    train_max_length: int | None = None
    out_dir: Path | None = None
    split: str = field(default="test")

    def table(self) -> str:
        return format_table(self.metrics, self.train_max_length)

    def figure(self, title: str = "") -> Figure:
        return figure_metrics_vs_length(self.metrics, self.train_max_length, title=title)

    def to_dict(self) -> dict:
        return {
            "metrics": {name: dict(values) for name, values in self.metrics.items()},
            "train_max_length": self.train_max_length,
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }

    def __repr__(self) -> str:
        return self.table()


def evaluate(model: LengenModule, data, trainer: Trainer, ckpt_path: str | None = None) -> Results:
    """Test `model` per length (`trainer.test`); results.json and metrics_vs_length.png are
    written to the trainer's log dir (`Results.out_dir`)."""
    _check_output_dir(trainer)
    silence_known_noise("test")
    model.test_results = {}
    trainer.test(model, datamodule=data, ckpt_path=ckpt_path, verbose=False)
    metrics = {name: dict(sorted(values.items())) for name, values in model.test_results.items()}
    out_dir = Path(trainer.log_dir or trainer.default_root_dir)
    return Results(metrics, getattr(data, "train_max_length", None), out_dir)


@torch.no_grad()
def generate(
    model: LengenModule,
    prompt: str | list[str],
    task: Task,
    max_new_tokens: int = 64,
    use_cache: bool = True,
) -> str:
    """Greedy continuation of an input (`task` symbols as a list, or a string read by
    `task.from_text`: space-separated symbols, or text for the byte tasks), laid out as the task
    lays it out (`BOS input SEP`), up to EOS or `max_new_tokens`; returns the generated symbols
    as `task.to_text` writes them."""
    symbols = task.from_text(prompt) if isinstance(prompt, str) else list(prompt)
    unknown = sorted(set(symbols) - set(task.symbols))
    if unknown:
        raise ValueError(f"symbols {unknown} are not in {type(task).__name__}'s vocabulary")
    device = next(model.parameters()).device
    ids = torch.tensor([[BOS, *task.encode(symbols), SEP]], device=device)  # (1, P)
    batch = EvalBatch(
        input_ids=ids,
        labels=torch.full_like(ids, -100),
        targets=torch.full((1, max_new_tokens), PAD, device=device),
        prompt_lengths=torch.tensor([ids.shape[1]], device=device),
        target_lengths=torch.tensor([max_new_tokens], device=device),
        lengths=torch.tensor([len(symbols)], device=device),
    )
    was_training = model.training
    model.eval()
    try:
        generated = model.greedy_generate(batch, use_cache=use_cache)[0].tolist()
    finally:
        model.train(was_training)
    if EOS in generated:
        generated = generated[: generated.index(EOS)]
    return task.to_text(task.decode(generated))
