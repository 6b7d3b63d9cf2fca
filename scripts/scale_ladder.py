#!/usr/bin/env python
"""A task x encoding x seed grid trained in ONE Python process, each run's per-length metrics
measured every `val_check_interval` steps (the rungs) on the same validation examples. An
experiment is a folder configs/experiments/<name>/ holding base.yaml and one yaml per task.

    OMP_NUM_THREADS=1 python scripts/scale_ladder.py                      # the ladder's grid
    python scripts/scale_ladder.py --tasks copy --seeds 0 --steps 20 \\
        --set trainer.val_check_interval=10                            # a smoke run
    python scripts/scale_ladder.py --summarise --out docs/figures/scale_ladder   # tables, figures
    OMP_NUM_THREADS=1 python scripts/scale_ladder.py --experiment arithmetic     # experiment 2
    OMP_NUM_THREADS=1 python scripts/scale_ladder.py --experiment ruler          # experiment 3
    python scripts/scale_ladder.py --experiment ruler --summarise                # its tables

Experiments (defaults: every task file of the folder, the experiment's encodings, seeds 0 1 2,
--runs runs/<name>, --out docs/figures/<name>; the ladder keeps runs/ladder and
docs/figures/scale_ladder):
- ladder (issue #11): the five-encoding comparison at Kazemnejad et al.'s split (train 1-20,
  test 21-40) on copy and reverse, as a ladder of training budgets.
- arithmetic (experiment 2, issue #17): reversed-digit addition, trained on 1..5 digits, tested
  to 15 (3N), with NoPE, RoPE, FIRE, Abacus, position coupling, ALL in one format
  (addition.yaml: reversed digits, no index hints, the format Abacus and position coupling
  need); addition_hints.yaml adds index hints for NoPE, RoPE, FIRE only (the grid leaves out
  Abacus and position coupling there). Exact match. 2 layers, d_model 64, batch 64, 10000 steps,
  rungs every 2500. 24 runs; 5-13 min each here, so about 3 h in one process, or
      OMP_NUM_THREADS=1 python scripts/scale_ladder.py --experiment arithmetic --tasks addition
      OMP_NUM_THREADS=1 python scripts/scale_ladder.py --experiment arithmetic \\
          --tasks addition_hints                   # in parallel: about 1.5 h each
  Calibration (why these settings): configs/experiments/arithmetic/base.yaml.
- ruler (experiment 3, issue #17): the seven RULER tasks (byte level) with the five base
  encodings, trained on contexts of up to 384 bytes, tested at 1x-4x (384-1536 bytes) with
  RULER's string match (all; part beside it); after the last rung each NIAH run is also tested
  with its needles at the start / middle / end of the context (results.json under
  RUN/depth/<location>/, `lengen heatmap` input) and --summarise adds `lengen heatmap`'s table
  and figure per NIAH task (OUT/<task>_depth/). 2 layers, d_model 64, batch 16, 4000 steps,
  rungs every 1000. 105 runs; 14-19 min each here, so about 30 h in one process, or one
  process per task (about 4.5 h each, 7 processes):
      OMP_NUM_THREADS=1 python scripts/scale_ladder.py --experiment ruler --tasks niah_single
  Calibration and what was measured: configs/experiments/ruler/base.yaml.
Wall times are for this 2-core VM while two other training processes ran (one thread each);
each grid resumes, and --stop-at cuts it between runs.

A run is configs/experiments/<name>/{base,<task>}.yaml + configs/pe/<encoding>.yaml (the files
`lengen fit --config ...` takes) + `--set KEY=VALUE` overrides (e.g. model.d_model=128 for a size
rung); the seed sets seed_everything AND data.seed. Each run appends one line to RUNS/runs.jsonl
(its per-length metrics at every rung); a run whose line exists is skipped, so the grid resumes.
The grid runs seed by seed, so --stop-at (no new run after that time) cuts seeds first.
`--summarise` reads runs.jsonl and writes <name>.md (the ladder: ladder.md; the first metric of
the task's `model.metrics` and the second on unseen lengths, i.e. lengths above
train_max_length, per rung, mean ± std over seeds, each encoding's rank) and one figure per task
to --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = ROOT / "configs" / "experiments"
LADDER = EXPERIMENTS_DIR / "ladder"
PANELS_PER_ROW = 4  # figure panels per row: a 12-rung ladder reads as four rows, not one strip
ENCODINGS = ["nope", "sinusoidal", "t5_bias", "alibi", "rope"]
LABELS = {"nope": "NoPE", "sinusoidal": "APE (sin)", "t5_bias": "T5 bias", "alibi": "ALiBi",
          "rope": "RoPE", "fire": "FIRE", "abacus": "Abacus",
          "position_coupling": "Pos. coupling"}  # fmt: skip
# Each experiment's default encodings, and the (task, encoding) pairs its grid leaves out:
# Abacus and position coupling read the digits of the reversed format without index hints.
EXPERIMENTS = {
    "ladder": {"encodings": ENCODINGS, "out": "docs/figures/scale_ladder", "summary": "ladder.md"},
    "arithmetic": {
        "encodings": ["nope", "rope", "fire", "abacus", "position_coupling"],
        "skip": {("addition_hints", "abacus"), ("addition_hints", "position_coupling")},
    },
    "ruler": {"encodings": ENCODINGS},
}
# Metric names in the tables: (column, rank column) and prose.
SHORT = {"exact_match": ("EM", "EM"), "token_accuracy": ("tok. acc.", "tok."),
         "string_match_all": ("SM all", "SM all"),
         "string_match_part": ("SM part", "SM part")}  # fmt: skip
LONG = {"exact_match": "exact match", "token_accuracy": "token accuracy",
        "string_match_all": "string match all",
        "string_match_part": "string match part"}  # fmt: skip
LEGACY_METRICS = ["exact_match", "token_accuracy"]  # rows written before metric_names existed
DEPTHS = ["start", "middle", "end"]  # needle locations of the depth test (`lengen heatmap` rows)


def experiment_settings(name: str) -> dict:
    """Defaults of experiment `name`: encodings, skipped pairs, runs and output folders."""
    settings = {"encodings": ENCODINGS, "skip": set(), "runs": f"runs/{name}",
                "out": f"docs/figures/{name}", "summary": f"{name}.md"}  # fmt: skip
    settings.update(EXPERIMENTS.get(name, {}))
    return settings


def experiment_dir(name: str) -> Path:
    folder = EXPERIMENTS_DIR / name
    if not (folder / "base.yaml").is_file():
        accepted = sorted(p.parent.name for p in EXPERIMENTS_DIR.glob("*/base.yaml"))
        raise SystemExit(
            f"scale_ladder: unknown experiment {name!r}; accepted: folders of configs/experiments/ "
            f"with a base.yaml: {', '.join(accepted)}"
        )
    return folder


def experiment_tasks(name: str) -> list[str]:
    """The task files of an experiment folder (every yaml but base.yaml), sorted."""
    return sorted(p.stem for p in experiment_dir(name).glob("*.yaml") if p.stem != "base")


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
    task: str,
    encoding: str,
    seed: int,
    steps: int | None = None,
    sets: list[str] = (),
    experiment: str = "ladder",
) -> dict:
    """The merged config of one run, in `lengen fit`'s layout; `sets`: "a.b.c=YAML" overrides."""
    config: dict = {}
    folder = experiment_dir(experiment)
    files = [folder / "base.yaml", folder / f"{task}.yaml",
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


def split_plugin(spec: str | dict) -> tuple[str, dict]:
    """A config's plugin entry (a short name, or class_path + init_args) -> (name, arguments)."""
    if isinstance(spec, dict):
        return spec["class_path"], dict(spec.get("init_args") or {})
    return spec, {}


def build_data(config: dict):
    """The run's TaskDataModule (data.init_args of the merged config)."""
    from lengen import api

    data_args = dict(config["data"]["init_args"])
    task, task_args = split_plugin(data_args.pop("task"))
    return api.task_data(task, task_args=task_args, **data_args)


def build_run(config: dict):
    """(model, data module) of one run's merged config, through lengen's Python API."""
    from lengen import api

    model_args = dict(config["model"])
    encoding, encoding_args = split_plugin(model_args.pop("pos_encoding"))
    metrics = [api._plugin("metrics", name, **kwargs)
               for name, kwargs in map(split_plugin, model_args.pop("metrics"))]  # fmt: skip
    data = build_data(config)
    model = api.build_model(
        encoding, task=data.task, metrics=metrics, encoding_args=encoding_args, **model_args
    )
    model.run_config = config
    return model, data


def train_ladder(
    config: dict, root: Path, depths: list[str] = ()
) -> tuple[dict[int, dict[str, dict[int, float]]], dict[str, dict[str, dict[int, float]]]]:
    """Train one run with lengen's Python API; returns ({step: {metric: {length: value}}}, the
    validation results at every `val_check_interval` steps, and {location: {metric: {length:
    value}}}, the trained model tested with the task's `location` set to each of `depths`; each
    test writes results.json under root/depth/<location>/ for `lengen heatmap`)."""
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
            results = {
                name: {n: float(found[length_tag("val", name, n)]) for n in self.lengths
                       if length_tag("val", name, n) in found}
                for name in self.metrics
            }  # fmt: skip
            self.results[trainer.global_step] = {k: v for k, v in results.items() if v}

    L.seed_everything(config["seed_everything"], verbose=False)
    model, data = build_run(config)
    trainer_args = dict(config["trainer"])
    rungs = Rungs(list(model.metrics["val"]), config["data"]["init_args"]["eval_lengths"])
    trainer_args.pop("check_val_every_n_epoch", None)  # api.trainer sets it (None)
    trainer = api.trainer(
        root,
        trainer_args.pop("max_steps"),
        val_check_interval=trainer_args.pop("val_check_interval"),
        callbacks=[rungs],
        **trainer_args,
    )
    api.train(model, data, trainer)
    by_depth = {}
    for location in depths:  # the trained weights, one test per needle location
        located = copy.deepcopy(config)
        located["data"]["init_args"]["task"]["init_args"]["location"] = location
        data = build_data(located)
        model.run_config = located  # results.json's config: `lengen heatmap` reads the location
        tester = api.trainer(root / "depth" / location, 1, **trainer_args)
        by_depth[location] = api.evaluate(model, data, tester).metrics
    return rungs.results, by_depth


def unseen_mean(per_length: dict, train_max_length: int) -> float:
    """Mean over the tested lengths beyond training (Kazemnejad et al. score unseen lengths)."""
    values = [v for length, v in per_length.items() if int(length) > train_max_length]
    return sum(values) / len(values) if values else math.nan


def has_depth(config: dict) -> bool:
    """Whether the run's task takes a needle `location` (RULER's NIAH, passkey, ...)."""
    task = config["data"]["init_args"]["task"]
    return isinstance(task, dict) and "location" in (task.get("init_args") or {})


def run_grid(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "runs.jsonl"
    done = set()
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done.add((row["task"], row["encoding"], row["seed"]))
    skip = experiment_settings(args.experiment)["skip"]
    left_out = sorted({(t, e) for t in args.tasks for e in args.encodings} & skip)
    if left_out:
        print("not in this experiment's grid: " + ", ".join(f"{t} x {e}" for t, e in left_out))
    grid = [(t, e, s) for s in args.seeds for t in args.tasks for e in args.encodings
            if (t, e) not in skip]  # fmt: skip
    for index, (task, encoding, seed) in enumerate(grid, 1):
        if (task, encoding, seed) in done:
            continue
        if args.stop_at is not None and time.time() >= args.stop_at:
            print(f"--stop-at reached: {len(grid) - index + 1} runs not started", flush=True)
            return
        config = run_config(task, encoding, seed, args.steps, args.set, args.experiment)
        root = runs / task / encoding / f"seed{seed}"
        shutil.rmtree(root / "depth", ignore_errors=True)  # an unfinished run's depth tests
        start = time.perf_counter()
        results, by_depth = train_ladder(config, root, DEPTHS if has_depth(config) else [])
        seconds = time.perf_counter() - start
        train_max = config["data"]["init_args"]["train_max_length"]
        names = list(results[min(results)]) if results else []  # model.metrics' order
        row = {
            "task": task, "encoding": encoding, "seed": seed, "experiment": args.experiment,
            "n_layer": config["model"]["n_layer"], "d_model": config["model"]["d_model"],
            "batch_size": config["data"]["init_args"]["batch_size"],
            "max_steps": config["trainer"]["max_steps"],
            "train_max_length": train_max, "seconds": round(seconds, 1),
            "metric_names": names,
            "rungs": {
                str(step): {
                    **{f"unseen_{name}": unseen_mean(values, train_max)
                       for name, values in metrics.items() if name in LEGACY_METRICS},
                    "unseen": {name: unseen_mean(values, train_max)
                               for name, values in metrics.items()},
                    "metrics": {name: {str(k): v for k, v in values.items()}
                                for name, values in metrics.items()},
                } for step, metrics in results.items()
            },
        }  # fmt: skip
        if by_depth:
            row["depth"] = {location: {name: {str(k): v for k, v in values.items()}
                                       for name, values in metrics.items()}
                            for location, metrics in by_depth.items()}  # fmt: skip
        with log.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        last = row["rungs"][str(max(results))]["unseen"] if results else {}
        headline = names[0] if names else "exact_match"
        print(
            f"[{index}/{len(grid)}] {task} {encoding} seed {seed}: {seconds:.0f} s, unseen "
            f"{LONG.get(headline, headline)} at the last rung {last.get(headline, math.nan):.3f}",
            flush=True,
        )


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def ranks(scores: dict[str, Any]) -> dict[str, float]:
    """Rank 1 = best (highest score; a score may be a tuple, compared in order); tied scores
    share the mean of their ranks."""
    ordered = sorted(scores, key=lambda e: scores[e], reverse=True)
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


def ordering(rank_keys: dict[str, tuple[float, ...]]) -> str:
    """Encodings from best to worst rank, as "A > B = C"; equal keys (a tie) joined by "="."""
    ordered = sorted(rank_keys, key=lambda e: rank_keys[e])
    text = LABELS.get(ordered[0], ordered[0])
    for before, encoding in zip(ordered, ordered[1:]):
        sign = "=" if rank_keys[encoding] == rank_keys[before] else ">"
        text += f" {sign} {LABELS.get(encoding, encoding)}"
    return text


def fmt(mean: float, std: float) -> str:
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def short(name: str) -> tuple[str, str]:
    return SHORT.get(name, (name, name))


def long(name: str) -> str:
    return LONG.get(name, name.replace("_", " "))


def summarise(args: argparse.Namespace) -> None:
    """<name>.md and one figure per task (the first metric against length at each rung, and the
    second metric on unseen lengths against steps) from RUNS/runs.jsonl; for a task tested by
    depth, `lengen heatmap`'s table and figure in OUT/<task>_depth/ (also quoted in <name>.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(args.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for task in args.tasks:
        task_rows = [row for row in rows if row["task"] == task]
        if not task_rows:
            continue
        first = task_rows[0]
        train_max = first["train_max_length"]
        names = first.get("metric_names", LEGACY_METRICS)
        main, second = names[0], names[1] if len(names) > 1 else names[0]

        def unseen(rung: dict, name: str, train_max: int = train_max) -> float:
            return unseen_mean(rung["metrics"][name], train_max)

        steps = sorted({int(step) for row in task_rows for step in row["rungs"]})
        lines.append(f"## {task}: {first['n_layer']} layers, d_model {first['d_model']}, "
                     f"batch {first['batch_size']}\n")  # fmt: skip
        panels = len(steps) + 1  # one per rung, then the unseen metric against steps
        columns = min(panels, PANELS_PER_ROW)
        rows_of_panels = math.ceil(panels / columns)
        figure, grid = plt.subplots(rows_of_panels, columns,
                                    figsize=(3.6 * columns, 3.3 * rows_of_panels),
                                    squeeze=False)  # fmt: skip
        axes = grid.ravel()  # (rows_of_panels * columns,) in reading order
        for unused in axes[panels:]:
            unused.set_visible(False)
        previous, by_step = None, {}
        for column, step in enumerate(steps):
            cell = [row for row in task_rows if str(step) in row["rungs"]]
            lengths = sorted(int(k) for k in cell[0]["rungs"][str(step)]["metrics"][main])
            shown = lengths
            lines.append(f"### {step} steps\n")
            lines.append("| encoding | seeds | " + " | ".join(
                f"{n}{'*' if n > train_max else ''}" for n in shown)
                + f" | unseen {short(main)[0]} | unseen {short(second)[0]} | rank "
                f"({short(main)[1]}) | rank ({short(second)[1]}) |")  # fmt: skip
            lines.append("|---|---:|" + "---:|" * (len(shown) + 4))
            em, tok, curves, seeds = {}, {}, {}, {}
            for encoding in args.encodings:
                rungs = [row["rungs"][str(step)] for row in cell if row["encoding"] == encoding]
                if not rungs:
                    continue
                seeds[encoding] = len(rungs)
                em[encoding] = mean_std([unseen(rung, main) for rung in rungs])
                tok[encoding] = mean_std([unseen(rung, second) for rung in rungs])
                curves[encoding] = {
                    n: mean_std([rung["metrics"][main][str(n)] for rung in rungs]) for n in lengths
                }
                axes[column].errorbar(
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
            order = ordering({e: (rank_tok[e],) for e in tok})
            em_order = ordering({e: (rank_em[e], rank_tok[e]) for e in em})
            changed = "" if previous is None else (
                " (same as the rung below)" if order == previous
                else " (changed from the rung below)")  # fmt: skip
            lines.append(f"\nOrder by unseen {long(main)} (ties broken by {long(second)}): "
                         f"{em_order}. By unseen {long(second)}: {order}{changed}.\n")  # fmt: skip
            previous = order
            ax = axes[column]
            ax.axvspan(min(lengths) - 0.5, train_max + 0.5, color="0.9")
            ax.set_title(f"{task}, {step} steps", fontsize=9)
            ax.set_xlabel("length")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        lines.append(
            f"Rank of each encoding per rung (1 = best; by unseen {long(main)}, by unseen "
            f"{long(second)} in brackets; ties share the mean rank):\n"
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
            if any(c != "-" for c in cells):
                lines.append(f"| {LABELS.get(encoding, encoding)} | " + " | ".join(cells) + " |")
        lines.append("")
        if any("depth" in row for row in task_rows):
            lines.extend(depth_table(task, Path(args.runs), out, main))
        for first_in_row in axes[: panels - 1 : columns]:
            first_in_row.set_ylabel(f"{long(main)} (mean ± std over seeds)")
        axes[0].legend(fontsize=7)
        ax = axes[panels - 1]
        for encoding in args.encodings:
            points = [(step, by_step[step][1][encoding]) for step in steps
                      if encoding in by_step[step][1]]  # fmt: skip
            if points:
                ax.errorbar(
                    [p for p, _ in points], [v[0] for _, v in points],
                    yerr=[0 if math.isnan(v[1]) else v[1] for _, v in points],
                    label=LABELS.get(encoding, encoding), marker="o", capsize=2,
                )  # fmt: skip
        ax.set_title(f"{task}: unseen lengths, {long(second)}", fontsize=9)
        ax.set_xlabel("training steps (rung)")
        ax.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / f"{task}.png", dpi=110)
        plt.close(figure)
    summary = out / experiment_settings(args.experiment)["summary"]
    summary.write_text("\n".join(lines) + "\n")
    print(f"wrote {summary} and the figures in {out}")


def read_rows(source: str) -> list[dict]:
    """The rows of a runs.jsonl file, or of RUNS/runs.jsonl for a run folder."""
    path = Path(source)
    log = path / "runs.jsonl" if path.is_dir() else path
    if not log.is_file():
        raise SystemExit(f"scale_ladder: no {log}; train the grid first (same --runs)")
    return [json.loads(line) for line in log.read_text().splitlines()]


def summarise_sizes(args: argparse.Namespace) -> None:
    """sizes.md and sizes_<task>.png: each encoding's unseen-length scores at the last rung, one
    column per model size (one --sizes source per size), and its rank at each size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [read_rows(source) for source in args.sizes]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for task in args.tasks:
        # columns: (label, {encoding: [last-rung rung dicts over seeds]}) per size with this task
        columns, metric_names = [], None
        for rows in sizes:
            task_rows = [row for row in rows if row["task"] == task]
            if not task_rows:
                continue
            first = task_rows[0]
            metric_names = metric_names or first.get("metric_names", LEGACY_METRICS)
            last = str(max(int(step) for row in task_rows for step in row["rungs"]))
            label = f"{first['n_layer']}x{first['d_model']}, {last} steps"
            cells = {e: [row["rungs"][last] for row in task_rows
                         if row["encoding"] == e and last in row["rungs"]]
                     for e in args.encodings}  # fmt: skip
            columns.append((label, first["train_max_length"], cells))
        if not columns:
            continue
        main = metric_names[0]
        second = metric_names[1] if len(metric_names) > 1 else main
        lines.append(f"## {task}: unseen {long(main)} (unseen {long(second)}) by model size\n")
        lines.append("| encoding | " + " | ".join(label for label, _, _ in columns) + " |")
        lines.append("|---|" + "---:|" * len(columns))
        scores = []  # per column: {encoding: (main mean, second mean)}
        for _, train_max, cells in columns:
            scores.append({
                e: tuple(statistics.fmean(unseen_mean(r["metrics"][m], train_max) for r in rungs)
                         for m in (main, second))
                for e, rungs in cells.items() if rungs
            })  # fmt: skip
        for encoding in args.encodings:
            row = []
            for _, train_max, cells in columns:
                rungs = cells[encoding]
                if not rungs:
                    row.append("-")
                    continue
                a = mean_std([unseen_mean(r["metrics"][main], train_max) for r in rungs])
                b = mean_std([unseen_mean(r["metrics"][second], train_max) for r in rungs])
                row.append(f"{fmt(*a)} ({fmt(*b)}), {len(rungs)} seed{'s' * (len(rungs) > 1)}")
            lines.append(f"| {LABELS.get(encoding, encoding)} | " + " | ".join(row) + " |")
        lines.append(
            f"\nRank at each size (1 = best; by unseen {long(main)}, ties broken by "
            f"unseen {long(second)}; an encoding without runs at a size is left out):\n"
        )
        lines.append("| encoding | " + " | ".join(label for label, _, _ in columns) + " |")
        lines.append("|---|" + "---:|" * len(columns))
        size_ranks = [ranks({e: (round(v[0], 4), round(v[1], 4)) for e, v in score.items()})
                      for score in scores]  # fmt: skip
        for encoding in args.encodings:
            cells = [f"{rank[encoding]:g}" if encoding in rank else "-" for rank in size_ranks]
            lines.append(f"| {LABELS.get(encoding, encoding)} | " + " | ".join(cells) + " |")
        lines.append("")
        for (label, _, _), rank in zip(columns, size_ranks):
            lines.append(f"- {label}: " + ordering({e: (r,) for e, r in rank.items()}))
        lines.append("")
        figure, axes = plt.subplots(1, 2, figsize=(8, 3.3))
        for encoding in args.encodings:
            points = [(i, score[encoding]) for i, score in enumerate(scores) if encoding in score]
            for ax, k in zip(axes, (0, 1)):
                ax.plot([i for i, _ in points], [v[k] for _, v in points], marker="o",
                        label=LABELS.get(encoding, encoding))  # fmt: skip
        for ax, name in zip(axes, (main, second)):
            ax.set_xticks(range(len(columns)), [label.split(",")[0] for label, _, _ in columns])
            ax.set_xlabel("layers x d_model")
            ax.set_title(f"{task}: unseen {long(name)} (mean over seeds)", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / f"sizes_{task}.png", dpi=110)
        plt.close(figure)
    (out / "sizes.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'sizes.md'} and the figures in {out}")


def depth_table(task: str, runs: Path, out: Path, metric: str) -> list[str]:
    """`lengen heatmap RUNS/<task> --metric METRIC --out OUT/<task>_depth`: rows = encoding x
    needle location, columns = context length, mean over seeds; returns its Markdown lines."""
    from lengen.heatmap import main as heatmap

    folder = out / f"{task}_depth"
    heatmap([str(runs / task), "--metric", metric, "--out", str(folder), "--overwrite"])
    return [
        f"{long(metric).capitalize()} of the last rung's weights by needle location (rows) and "
        f"context length (columns), mean over seeds (`lengen heatmap`; figure: "
        f"{task}_depth/heatmap.png):\n",
        (folder / "heatmap.md").read_text(),
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiment", default="ladder",
        help="configs/experiments/<name>/ with base.yaml and one yaml per task (default ladder)",
    )  # fmt: skip
    parser.add_argument("--tasks", nargs="+", default=None, help="default: the folder's tasks")
    parser.add_argument("--encodings", nargs="+", default=None,
                        help="configs/pe/<name>.yaml names; default: the experiment's")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.init_args.test_examples_per_length=8",
    )  # fmt: skip
    parser.add_argument("--runs", default=None, help="run folder (default runs/<experiment>)")
    parser.add_argument(
        "--stop-at", type=float, default=None, help="start no run after this Unix time (seconds)"
    )
    parser.add_argument("--summarise", action="store_true", help="only write tables and figures")
    parser.add_argument(
        "--sizes", nargs="+", default=None, metavar="RUNS",
        help="with --summarise: one run folder (or runs.jsonl) per model size; writes sizes.md "
        "and sizes_<task>.png comparing the sizes at their last rung",
    )  # fmt: skip
    parser.add_argument(
        "--out", default=None,
        help="--summarise output (default docs/figures/<experiment>; the ladder: "
        "docs/figures/scale_ladder)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (EXPERIMENTS_DIR / args.experiment / "base.yaml").is_file():
        accepted = sorted(p.parent.name for p in EXPERIMENTS_DIR.glob("*/base.yaml"))
        parser.error(
            f"unknown experiment {args.experiment!r}; accepted: folders of configs/experiments/ "
            f"with a base.yaml: {', '.join(accepted)}"
        )
    settings = experiment_settings(args.experiment)
    tasks = experiment_tasks(args.experiment)
    args.tasks = args.tasks or tasks
    args.encodings = args.encodings or settings["encodings"]
    args.runs = args.runs or settings["runs"]
    args.out = args.out or settings["out"]
    for task in args.tasks:
        if task not in tasks:
            parser.error(
                f"unknown task {task!r} for --experiment {args.experiment}; accepted: "
                f"{', '.join(tasks)}"
            )
    for encoding in args.encodings:
        if not (ROOT / "configs" / "pe" / f"{encoding}.yaml").is_file():
            parser.error(f"unknown encoding {encoding!r}; accepted: configs/pe/<name>.yaml names")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.sizes and not args.summarise:
        raise SystemExit("scale_ladder: --sizes needs --summarise")
    if args.summarise:
        summarise_sizes(args) if args.sizes else summarise(args)
    else:
        run_grid(args)


if __name__ == "__main__":
    main()
