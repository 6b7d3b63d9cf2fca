"""`lengen tune`: short trials over a (learning rate, length-warmup) grid; which ones are stable.

Li, Zhang, He 2022 ("The Stability-Efficiency Dilemma") tune the learning rate and the length of
the sequence-length warmup with short trials and keep the settings that train without loss spikes
or extreme gradient variance. Each trial here is `lengen fit` with the given configs, the trial's
learning rate and, for a warmup duration > 0, the `SequenceLengthWarmup` callback; every trial
has a `GradientVarianceMonitor`. A trial is stable when its loss stays finite, it has no loss spike,
and the largest Adam second moment it reached is within `variance_factor` x the smallest such value
among the trials. Results: a table on stdout, `tune_results.json` and `tune.png` in `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from lengen.argparser import OneLineArgumentParser


def parse_floats(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def tune_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="lengen tune",
        description="Short trials over (lr, warmup duration); other arguments go to `lengen fit`.",
    )
    parser.add_argument("--lr", type=parse_floats, default=[1e-3, 3e-3, 1e-2])
    parser.add_argument(
        "--warmup",
        type=parse_floats,
        default=[0.0, 0.3],
        help="sequence-length warmup durations (fractions of the steps; 0 = no warmup)",
    )
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per trial")
    parser.add_argument("--min_seq_length", type=int, default=8)
    parser.add_argument("--max_seq_length", type=int, default=None)
    parser.add_argument("--step_size", type=int, default=8)
    parser.add_argument(
        "--allow_task_data",
        action="store_true",
        help="let SequenceLengthWarmup truncate task rows (it refuses task data otherwise)",
    )
    parser.add_argument("--spike_factor", type=float, default=1.5)
    parser.add_argument("--variance_factor", type=float, default=10.0)
    parser.add_argument("--out", default="runs/tune", help="folder for trials, table and figure")
    return parser


def trial_callbacks(duration: float, options: argparse.Namespace) -> list[dict]:
    callbacks = [
        {
            "class_path": "GradientVarianceMonitor",
            "init_args": {"spike_factor": options.spike_factor},
        }
    ]
    if duration > 0:
        warmup = {
            "duration": duration,
            "min_seq_length": options.min_seq_length,
            "max_seq_length": options.max_seq_length,
            "step_size": options.step_size,
            "allow_task_data": options.allow_task_data,
        }
        callbacks.append({"class_path": "SequenceLengthWarmup", "init_args": warmup})
    return callbacks


def run_trial(fit_args: list[str], lr: float, duration: float, options, out: Path) -> dict:
    """One `lengen fit` in this process; returns the monitor's per-step history and a summary."""
    from lightning.pytorch import LightningDataModule

    from lengen.lightning_cli import LengenArgumentParser, LengenCLI
    from lengen.module import LengenModule

    name = f"lr{lr:g}_warmup{duration:g}"
    config = out / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump({"trainer": {"callbacks": trial_callbacks(duration, options)}})
    )
    args = [
        # Trials measure instability: no clipping and no divergence stop unless fit_args say so.
        "fit", "--trainer.gradient_clip_val", "null", "--on_nonfinite", "continue", *fit_args,
        "--config", str(config),
        "--model.lr", str(lr),
        "--trainer.max_steps", str(options.steps),
        "--trainer.default_root_dir", str(out / name),
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    with warnings.catch_warnings():  # `args` replaces sys.argv (`lengen tune ...`) on purpose
        warnings.filterwarnings("ignore", message=".*args parameter is intended")
        cli = LengenCLI(
            LengenModule,
            LightningDataModule,
            subclass_mode_data=True,
            parser_class=LengenArgumentParser,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    monitor = next(
        cb for cb in cli.trainer.callbacks if type(cb).__name__ == "GradientVarianceMonitor"
    )
    history = monitor.history
    losses = [record["loss"] for record in history]
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "name": name,
        "lr": lr,
        "warmup": duration,
        "history": history,
        "final_loss": sum(tail) / len(tail),
        "spikes": monitor.loss_spikes,
        "finite": all(math.isfinite(loss) for loss in losses),
        "max_adam_v": max((r.get("adam_v_max", 0.0) for r in history), default=0.0),
        "max_grad_norm": max((r["grad_norm"] for r in history), default=0.0),
    }


def judge(trials: list[dict], variance_factor: float) -> None:
    """Mark each trial stable or unstable (in place)."""
    finite = [t["max_adam_v"] for t in trials if t["finite"] and t["max_adam_v"] > 0]
    bound = variance_factor * min(finite) if finite else math.inf
    for trial in trials:
        reasons = []
        if not trial["finite"]:
            reasons.append("non-finite loss")
        if trial["spikes"]:
            reasons.append(f"{trial['spikes']} loss spike(s)")
        if trial["max_adam_v"] > bound:
            reasons.append(f"Adam variance {trial['max_adam_v']:.3g} > bound {bound:.3g}")
        trial["stable"] = not reasons
        trial["why"] = "; ".join(reasons)


def format_trials(trials: list[dict]) -> str:
    header = ["lr", "warmup", "final loss", "spikes", "max Adam v", "max grad norm", "stable"]
    rows = [
        [
            f"{t['lr']:g}", f"{t['warmup']:g}", f"{t['final_loss']:.4f}", str(t["spikes"]),
            f"{t['max_adam_v']:.3g}", f"{t['max_grad_norm']:.3g}",
            "yes" if t["stable"] else f"no ({t['why']})",
        ]
        for t in trials
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) + 2 for i in range(len(header))]
    lines = ["".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header]]
    lines += ["".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def figure_trials(trials: list[dict]) -> Figure:
    """Loss, Adam's max second moment and the gradient norm per step, one line per trial."""
    figure = Figure(figsize=(15, 4.2))
    axes = figure.subplots(1, 3)
    for trial in trials:
        steps = [r["step"] for r in trial["history"]]
        style = "-" if trial["stable"] else "--"
        label = f"lr {trial['lr']:g}, warmup {trial['warmup']:g}" + (
            "" if trial["stable"] else " (unstable)"
        )
        for ax, key in zip(axes, ("loss", "adam_v_max", "grad_norm")):
            values = [r.get(key, math.nan) for r in trial["history"]]
            ax.plot(steps, values, style, label=label, linewidth=1)
    for ax, title in zip(axes, ("training loss", "max of Adam's exp_avg_sq", "gradient norm")):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def tune(argv: list[str]) -> list[dict]:
    """`lengen tune [options] --config base.yaml [fit arguments]`."""
    options, fit_args = tune_parser().parse_known_args(argv)
    if options.steps < 1 or options.variance_factor <= 1:
        raise ValueError("--steps must be >= 1 and --variance_factor > 1")
    if min(options.lr) <= 0 or not all(0 <= duration <= 1 for duration in options.warmup):
        raise ValueError("--lr values must be > 0 and --warmup durations in [0, 1] (0: none)")
    out = Path(options.out)
    if (out / "tune_results.json").exists():
        raise ValueError(f"{out / 'tune_results.json'} exists: choose another --out (or remove it)")
    out.mkdir(parents=True, exist_ok=True)
    trials = [
        run_trial(fit_args, lr, duration, options, out)
        for lr in options.lr
        for duration in options.warmup
    ]
    judge(trials, options.variance_factor)
    table = format_trials(trials)
    print(table)
    (out / "tune_results.json").write_text(json.dumps(trials, indent=1))
    figure_trials(trials).savefig(out / "tune.png", dpi=110, bbox_inches="tight")
    print(f"table: {out / 'tune_results.json'}, figure: {out / 'tune.png'}")
    return trials
