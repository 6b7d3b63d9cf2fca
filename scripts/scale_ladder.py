#!/usr/bin/env python
"""The five-encoding comparison at Kazemnejad et al.'s split (train 1-20, test 21-40) as a ladder
of training budgets: every task x encoding x seed trained in ONE Python process, exact match per
length measured every `val_check_interval` steps (the rungs) on the same validation examples.

    OMP_NUM_THREADS=1 python scripts/scale_ladder.py                      # the whole grid
    python scripts/scale_ladder.py --tasks copy --seeds 0 --steps 20 \\
        --set trainer.val_check_interval=10                            # a smoke run
    python scripts/scale_ladder.py --summarise --out docs/figures/scale_ladder   # tables, figures

A run is configs/experiments/ladder/{base,<task>}.yaml + configs/pe/<encoding>.yaml (the files
`lengen fit --config ...` takes) + `--set KEY=VALUE` overrides (e.g. model.d_model=128 for a size
rung); the seed sets seed_everything AND data.seed. Each run appends one line to RUNS/runs.jsonl
(its per-length metrics at every rung); a run whose line exists is skipped, so the grid resumes.
The grid runs seed by seed, so --stop-at (no new run after that time) cuts seeds first.
`--summarise` reads runs.jsonl and writes ladder.md (exact match on unseen lengths per rung, mean ±
std over seeds, each encoding's rank) and one figure per task to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LADDER = ROOT / "configs" / "experiments" / "ladder"
ENCODINGS = ["nope", "sinusoidal", "t5_bias", "alibi", "rope"]
LABELS = {"nope": "NoPE", "sinusoidal": "APE (sin)", "t5_bias": "T5 bias", "alibi": "ALiBi",
          "rope": "RoPE"}  # fmt: skip


def merge(base: dict, update: dict) -> dict:
    """Deep-merge `update` into a copy of `base` (dicts merge, anything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def run_config(
    task: str, encoding: str, seed: int, steps: int | None = None, sets: list[str] = ()
) -> dict:
    """The merged config of one run, in `lengen fit`'s layout; `sets`: "a.b.c=YAML" overrides."""
    config: dict = {}
    files = [LADDER / "base.yaml", LADDER / f"{task}.yaml",
             ROOT / "configs" / "pe" / f"{encoding}.yaml"]  # fmt: skip
    for path in files:
        if not path.is_file():
            raise SystemExit(f"scale_ladder: no config {path.relative_to(ROOT)}")
        config = merge(config, yaml.safe_load(path.read_text()) or {})
    config["seed_everything"] = seed
    config["data"]["init_args"]["seed"] = seed
    if steps is not None:
        config["trainer"]["max_steps"] = steps
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(
                f"scale_ladder: --set {item!r}: expected KEY=VALUE, e.g. model.lr=0.001"
            )
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return config


def train_ladder(config: dict, root: Path) -> dict[int, dict[str, dict[int, float]]]:
    """Train one run with lengen's Python API; returns {step: {metric: {length: value}}}, the
    validation results at every `val_check_interval` steps."""
    import lightning as L

    from lengen import api
    from lengen.tb_logging import length_tag

    class Rungs(L.Callback):
        """Copies the per-length validation results at each validation (`_finish_split` logs
        them to callback_metrics under lengen's length tags)."""

        def __init__(self, metrics: list[str], lengths: list[int]) -> None:
            self.metrics, self.lengths, self.results = metrics, lengths, {}

        def on_validation_end(self, trainer, module) -> None:
            found = trainer.callback_metrics
            self.results[trainer.global_step] = {
                name: {n: float(found[length_tag("val", name, n)]) for n in self.lengths}
                for name in self.metrics
            }

    L.seed_everything(config["seed_everything"], verbose=False)
    model_args = dict(config["model"])
    encoding = model_args.pop("pos_encoding")
    encoding_args = {}
    if isinstance(encoding, dict):
        encoding, encoding_args = encoding["class_path"], encoding.get("init_args") or {}
    metrics = [m["class_path"] for m in model_args.pop("metrics")]
    data_args = dict(config["data"]["init_args"])
    task = data_args.pop("task")
    model = api.build_model(
        encoding, task=task, metrics=metrics, encoding_args=encoding_args, **model_args
    )
    model.run_config = config
    data = api.task_data(task, **data_args)
    trainer_args = dict(config["trainer"])
    rungs = Rungs(["exact_match", "token_accuracy"], data_args["eval_lengths"])
    trainer_args.pop("check_val_every_n_epoch", None)  # api.trainer sets it (None)
    trainer = api.trainer(
        root,
        trainer_args.pop("max_steps"),
        val_check_interval=trainer_args.pop("val_check_interval"),
        callbacks=[rungs],
        **trainer_args,
    )
    api.train(model, data, trainer)
    return rungs.results


def unseen_mean(per_length: dict, train_max_length: int) -> float:
    """Mean over the tested lengths beyond training (Kazemnejad et al. score unseen lengths)."""
    values = [v for length, v in per_length.items() if int(length) > train_max_length]
    return sum(values) / len(values) if values else math.nan


def run_grid(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "runs.jsonl"
    done = set()
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done.add((row["task"], row["encoding"], row["seed"]))
    grid = [(t, e, s) for s in args.seeds for t in args.tasks for e in args.encodings]
    for index, (task, encoding, seed) in enumerate(grid, 1):
        if (task, encoding, seed) in done:
            continue
        if args.stop_at is not None and time.time() >= args.stop_at:
            print(f"--stop-at reached: {len(grid) - index + 1} runs not started", flush=True)
            return
        config = run_config(task, encoding, seed, args.steps, args.set)
        root = runs / task / encoding / f"seed{seed}"
        start = time.perf_counter()
        results = train_ladder(config, root)
        seconds = time.perf_counter() - start
        train_max = config["data"]["init_args"]["train_max_length"]
        row = {
            "task": task, "encoding": encoding, "seed": seed,
            "n_layer": config["model"]["n_layer"], "d_model": config["model"]["d_model"],
            "batch_size": config["data"]["init_args"]["batch_size"],
            "train_max_length": train_max, "seconds": round(seconds, 1),
            "rungs": {
                str(step): {
                    "unseen_exact_match": unseen_mean(metrics["exact_match"], train_max),
                    "unseen_token_accuracy": unseen_mean(metrics["token_accuracy"], train_max),
                    "metrics": {name: {str(k): v for k, v in values.items()}
                                for name, values in metrics.items()},
                } for step, metrics in results.items()
            },
        }  # fmt: skip
        with log.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        last = row["rungs"][str(max(results))] if results else {"unseen_exact_match": math.nan}
        print(
            f"[{index}/{len(grid)}] {task} {encoding} seed {seed}: {seconds:.0f} s, unseen "
            f"exact match at the last rung {last['unseen_exact_match']:.3f}",
            flush=True,
        )


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 = best; tied scores share the mean of their ranks."""
    ordered = sorted(scores, key=lambda e: -scores[e])
    out: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and scores[ordered[j + 1]] == scores[ordered[i]]:
            j += 1
        for e in ordered[i : j + 1]:
            out[e] = (i + j) / 2 + 1
        i = j + 1
    return out


def fmt(mean: float, std: float) -> str:
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def summarise(args: argparse.Namespace) -> None:
    """ladder.md and one figure per task (exact match against length at each rung, and the
    unseen-length scores against steps) from RUNS/runs.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (Path(args.runs) / "runs.jsonl").read_text().splitlines()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for task in args.tasks:
        task_rows = [row for row in rows if row["task"] == task]
        if not task_rows:
            continue
        first = task_rows[0]
        steps = sorted({int(step) for row in task_rows for step in row["rungs"]})
        lines.append(f"## {task}: {first['n_layer']} layers, d_model {first['d_model']}, "
                     f"batch {first['batch_size']}\n")  # fmt: skip
        figure, axes = plt.subplots(1, len(steps) + 1, figsize=(3.6 * (len(steps) + 1), 3.3),
                                    squeeze=False)  # fmt: skip
        previous, by_step = None, {}
        for column, step in enumerate(steps):
            cell = [row for row in task_rows if str(step) in row["rungs"]]
            lengths = sorted(int(k) for k in cell[0]["rungs"][str(step)]["metrics"]["exact_match"])
            shown = lengths
            lines.append(f"### {step} steps\n")
            lines.append("| encoding | seeds | " + " | ".join(
                f"{n}{'*' if n > first['train_max_length'] else ''}" for n in shown)
                + " | unseen EM | unseen tok. acc. | rank (EM) | rank (tok.) |")  # fmt: skip
            lines.append("|---|---:|" + "---:|" * (len(shown) + 4))
            em, tok, curves, seeds = {}, {}, {}, {}
            for encoding in args.encodings:
                rungs = [row["rungs"][str(step)] for row in cell if row["encoding"] == encoding]
                if not rungs:
                    continue
                seeds[encoding] = len(rungs)
                em[encoding] = mean_std([rung["unseen_exact_match"] for rung in rungs])
                tok[encoding] = mean_std([rung["unseen_token_accuracy"] for rung in rungs])
                curves[encoding] = {
                    n: mean_std([rung["metrics"]["exact_match"][str(n)] for rung in rungs])
                    for n in lengths
                }
                axes[0][column].errorbar(
                    lengths, [curves[encoding][n][0] for n in lengths],
                    yerr=[0 if math.isnan(curves[encoding][n][1]) else curves[encoding][n][1]
                          for n in lengths],
                    label=LABELS.get(encoding, encoding), marker=".", capsize=2,
                )  # fmt: skip
            by_step[step] = (em, tok)
            rank_em = ranks({e: round(v[0], 4) for e, v in em.items()})
            rank_tok = ranks({e: round(v[0], 4) for e, v in tok.items()})
            for encoding in em:
                values = [fmt(*curves[encoding][n]) for n in shown]
                lines.append(
                    f"| {LABELS.get(encoding, encoding)} | {seeds[encoding]} | "
                    + " | ".join(values)
                    + f" | {fmt(*em[encoding])} | {fmt(*tok[encoding])} | {rank_em[encoding]:g}"
                    f" | {rank_tok[encoding]:g} |"
                )  # fmt: skip
            order = " > ".join(LABELS.get(e, e) for e in sorted(tok, key=lambda e: rank_tok[e]))
            em_order = " > ".join(
                LABELS.get(e, e) for e in sorted(em, key=lambda e: (rank_em[e], rank_tok[e]))
            )
            changed = "" if previous is None else (
                " (same as the rung below)" if order == previous
                else " (changed from the rung below)")  # fmt: skip
            lines.append(f"\nOrder by unseen exact match (ties broken by token accuracy): "
                         f"{em_order}. By unseen token accuracy: {order}{changed}.\n")  # fmt: skip
            previous = order
            ax = axes[0][column]
            ax.axvspan(min(lengths) - 0.5, first["train_max_length"] + 0.5, color="0.9")
            ax.set_title(f"{task}, {step} steps", fontsize=9)
            ax.set_xlabel("length")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        lines.append(
            "Rank of each encoding per rung (1 = best; by unseen exact match, by unseen token "
            "accuracy in brackets; ties share the mean rank):\n"
        )
        lines.append("| encoding | " + " | ".join(f"{step} steps" for step in steps) + " |")
        lines.append("|---|" + "---:|" * len(steps))
        for encoding in args.encodings:
            cells = []
            for step in steps:
                em, tok = by_step[step]
                if encoding not in em:
                    cells.append("-")
                    continue
                r_em = ranks({e: round(v[0], 4) for e, v in em.items()})[encoding]
                r_tok = ranks({e: round(v[0], 4) for e, v in tok.items()})[encoding]
                cells.append(f"{r_em:g} ({r_tok:g})")
            lines.append(f"| {LABELS.get(encoding, encoding)} | " + " | ".join(cells) + " |")
        lines.append("")
        axes[0][0].set_ylabel("exact match (mean ± std over seeds)")
        axes[0][0].legend(fontsize=7)
        ax = axes[0][-1]
        for encoding in args.encodings:
            points = [(step, by_step[step][1][encoding]) for step in steps
                      if encoding in by_step[step][1]]  # fmt: skip
            if points:
                ax.errorbar(
                    [p for p, _ in points], [v[0] for _, v in points],
                    yerr=[0 if math.isnan(v[1]) else v[1] for _, v in points],
                    label=LABELS.get(encoding, encoding), marker="o", capsize=2,
                )  # fmt: skip
        ax.set_title(f"{task}: unseen lengths, token accuracy", fontsize=9)
        ax.set_xlabel("training steps (rung)")
        ax.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / f"{task}.png", dpi=110)
        plt.close(figure)
    (out / "ladder.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'ladder.md'} and the figures in {out}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["copy", "reverse"])
    parser.add_argument("--encodings", nargs="+", default=ENCODINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.init_args.test_examples_per_length=8",
    )  # fmt: skip
    parser.add_argument("--runs", default="runs/ladder", help="run folder (default runs/ladder)")
    parser.add_argument(
        "--stop-at", type=float, default=None, help="start no run after this Unix time (seconds)"
    )
    parser.add_argument("--summarise", action="store_true", help="only write tables and figures")
    parser.add_argument("--out", default="docs/figures/scale_ladder", help="--summarise output")
    args = parser.parse_args(argv)
    for encoding in args.encodings:
        if not (ROOT / "configs" / "pe" / f"{encoding}.yaml").is_file():
            parser.error(f"unknown encoding {encoding!r}; accepted: configs/pe/<name>.yaml names")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    summarise(args) if args.summarise else run_grid(args)


if __name__ == "__main__":
    main()
