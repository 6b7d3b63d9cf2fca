"""`lengen report RUN_DIR...`: compare test results of many runs, mean ± std over seeds.

Reads every results.json below the given paths (written by `lengen test`; formats 1 and 2). Runs
are grouped by task, then by what was trained and measured: the encoding, the curriculum, every
other model / data / max_steps setting, the checkpoint's step and the test command's model
overrides. Format 2 files name the training run's own config (provenance.training_config), so the
trained model and curriculum come from it; format 1 files only have the test command's config.
Runs that differ in anything but the seed are different groups, and their labels name the
differing fields. Inside a group the seeds are aggregated: mean and sample standard deviation
(n - 1; "±" is left out for one run); a second file with the same seed is listed as dropped.
Runs of different tasks are never averaged together: each task gets its own tables and its own
panel in the figure, and the terminal says so. Outputs in `--out`: report.md, report.csv and
report.png (the chosen metric against length per group, error bars = std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lengen.argparser import OneLineArgumentParser
from lengen.checks import check_creatable_dir
from lengen.provenance import curriculum_label
from lengen.summary import effective_length, extrapolation_score

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUTPUT_FILES = ("report.md", "report.csv", "report.png")
POSITION_METRICS = {"position_loss"}  # buckets are positions, not lengths
SUMMARY_COLUMNS = ("extrapolation_score", "effective_length")


class ReportError(ValueError):
    """Bad input to `lengen report`; its message is the one line printed."""


@dataclass
class Run:
    """One results.json: per-length metrics and what identifies the run."""

    path: Path
    task: str
    pos_encoding: str
    pos_encoding_args: dict
    settings: dict[str, str]  # other model/data/trainer settings, flattened, JSON-encoded values
    curriculum: str
    seed: int | str
    train_max_length: int | None
    metrics: dict[str, dict[int, float]]
    summary_metrics: list[str]
    step: int | None = None  # the checkpoint's optimizer steps (global_step)
    checkpoint_sha256: str | None = None  # format 2 only


@dataclass
class Stat:
    mean: float
    std: float  # NaN for a single run
    n: int


@dataclass
class Group:
    task: str
    label: str
    runs: list[Run] = field(default_factory=list)


def short_name(spec) -> str:
    """'lengen_plugins.x.RoPE' or {'class_path': ...} -> 'RoPE'; None -> '-'."""
    if spec is None:
        return "-"
    if isinstance(spec, dict):
        spec = spec.get("class_path", "?")
    return str(spec).rsplit(".", 1)[-1]


def find_results(paths: list[str]) -> list[Path]:
    """Every results.json below each path (or the path itself when it is a file), sorted."""
    found = []
    for name in paths:
        path = Path(name)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(path.rglob("results.json"))
            if not below:
                raise ReportError(f"no results.json below {name}; run `lengen test` first")
            found.extend(below)
        else:
            raise ReportError(f"{name} does not exist (give run directories or results.json files)")
    return sorted(set(found))


# Settings that do not change what a run measures: never used to tell groups apart.
IGNORED_SETTINGS = {
    "model.metrics", "model.pos_encoding", "model.vocab_size", "data.seed", "data.cache_dir",
    "data.num_workers", "data.eval_batch_size", "data.task",
}  # fmt: skip


MISSING = json.dumps("-")  # a setting absent from a run's config


def run_settings(config: dict, tested_data: dict | None = None) -> dict[str, str]:
    """The model, data and trainer.max_steps settings of a run config, as {key: JSON value}.
    `tested_data`: the test command's data arguments when `config` is the training config; those
    that differ from the training data's join as `test.data.<key>` (e.g. a needle location)."""
    data = (config.get("data") or {}).get("init_args") or {}
    sections = {"model": config.get("model") or {}, "data": data}
    if tested_data is not None:
        sections["test.data"] = {k: v for k, v in tested_data.items() if data.get(k) != v}
    settings = {
        f"{section}.{key}": json.dumps(value, sort_keys=True)
        for section, values in sections.items()
        for key, value in values.items()
        if f"{section.removeprefix('test.')}.{key}" not in IGNORED_SETTINGS
    }
    settings["trainer.max_steps"] = json.dumps((config.get("trainer") or {}).get("max_steps"))
    return settings


def load_run(path: Path) -> Run:
    """Parse one results.json; any problem is a one-line ReportError naming the file."""
    try:
        payload = json.loads(path.read_text())
        tested = payload.get("config") or {}  # the test command's config
        provenance = payload.get("provenance") or {}  # format 2
        trained = provenance.get("training_config") or {}
        tested_data = (tested.get("data") or {}).get("init_args") or {}
        data_args = tested_data
        task = data_args.get("task")
        if task is None:  # a language-model run: name its data module
            task = (tested.get("data") or {}).get("class_path", "unknown task")
        # The model that was tested: the test command's (format 2 builds it from the training
        # config plus explicit overrides); training-side settings from the training config.
        model = tested.get("model") or {}
        encoding = model.get("pos_encoding")
        config = {**tested, **{k: v for k, v in trained.items() if k in ("trainer", "data")}}
        config["model"] = model
        callbacks = (config.get("trainer") or {}).get("callbacks") or []
        class_paths = [
            cb.get("class_path", "?") if isinstance(cb, dict) else cb for cb in callbacks
        ]
        settings = run_settings(config, tested_data if "data" in trained else None)
        settings["step"] = json.dumps(payload.get("global_step"))
        seed = (trained or tested).get("seed_everything", data_args.get("seed", "?"))
        metrics = {
            name: {int(length): float("nan" if v is None else v) for length, v in values.items()}
            for name, values in payload["metrics"].items()
        }
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"cannot read {path}: {error}") from error
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ReportError(
            f"{path} is not a lengen results.json (needs 'metrics': {{name: {{length: value}}}}): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not metrics:
        raise ReportError(f"{path} holds no metrics")
    return Run(
        path=path,
        task=short_name(task),
        pos_encoding=payload.get("pos_encoding") or short_name(encoding),
        pos_encoding_args=(encoding.get("init_args") or {}) if isinstance(encoding, dict) else {},
        settings=settings,
        curriculum=curriculum_label(class_paths),
        seed=seed if seed is not None else "?",
        train_max_length=payload.get("train_max_length"),
        metrics=metrics,
        # Files without a `summary` entry predate it: summarise every metric.
        summary_metrics=list(payload["summary"] if "summary" in payload else metrics),
        step=payload.get("global_step"),
        checkpoint_sha256=(provenance.get("checkpoint") or {}).get("sha256"),
    )


def group_runs(runs: list[Run]) -> list[Group]:
    """Group by (task, encoding, curriculum). Encoding arguments that differ between runs of the
    same encoding class are added to the label, so e.g. two RoPE bases are not averaged together;
    so are the model, data and max_steps settings that differ between runs of one task
    (e.g. `[window=n_ctx]`), except seeds, paths and batch sizes of evaluation."""
    differing: dict[str, set[str]] = {}
    for run in runs:
        for other in runs:
            if other.pos_encoding == run.pos_encoding:
                keys = set(run.pos_encoding_args) | set(other.pos_encoding_args)
                differing.setdefault(run.pos_encoding, set()).update(
                    k
                    for k in keys
                    if run.pos_encoding_args.get(k) != other.pos_encoding_args.get(k)
                )
    varying: dict[str, set[str]] = {}  # per task: settings that differ between its runs
    for run in runs:
        for other in runs:
            if other.task == run.task:
                keys = set(run.settings) | set(other.settings)
                varying.setdefault(run.task, set()).update(
                    k for k in keys if run.settings.get(k) != other.settings.get(k)
                )
    groups: dict[tuple[str, str], Group] = {}
    for run in runs:
        args = ", ".join(
            f"{k}={run.pos_encoding_args.get(k)}" for k in sorted(differing[run.pos_encoding])
        )
        label = run.pos_encoding + (f"({args})" if args else "")
        settings = [
            f"{setting_name(key)}={json.loads(run.settings.get(key, MISSING))}"
            for key in sorted(varying[run.task])
        ]
        if settings:
            label += f" [{', '.join(settings)}]"
        if run.curriculum != "-":
            label += f" + {run.curriculum}"
        groups.setdefault((run.task, label), Group(run.task, label)).runs.append(run)
    return [groups[key] for key in sorted(groups)]


def setting_name(key: str) -> str:
    """'model.lr' -> 'lr', 'data.window' -> 'window'; 'step' and 'test.data.x' stay as they are."""
    if key.startswith("test.") or "." not in key:
        return key
    return key.split(".", 1)[1]


def differing_fields(groups: list[Group]) -> dict[str, list[str]]:
    """{task: the settings whose values differ between that task's runs} (labels carry them)."""
    fields: dict[str, set[str]] = {}
    for group in groups:
        runs = [run for g in groups if g.task == group.task for run in g.runs]
        keys = {key for run in runs for key in run.settings}
        fields[group.task] = {
            key for key in keys if len({run.settings.get(key, MISSING) for run in runs}) > 1
        }
        if len({run.pos_encoding for run in runs}) > 1:
            fields[group.task].add("pos_encoding")
        if len({run.curriculum for run in runs}) > 1:
            fields[group.task].add("curriculum")
    return {task: sorted(setting_name(key) for key in keys) for task, keys in fields.items()}


def drop_repeated_seeds(groups: list[Group]) -> list[str]:
    """Keep the newest results.json per seed in each group (a re-run test writes a new version
    folder); return one note per file left out, naming it and why, so nothing goes silently.
    Runs in one group agree in everything but the seed (settings, step, test overrides)."""
    notes = []
    for group in groups:
        newest: dict[str, Run] = {}
        for run in sorted(group.runs, key=lambda run: run.path.stat().st_mtime):
            kept = newest.get(str(run.seed))
            if kept is not None:
                same = kept.checkpoint_sha256 and kept.checkpoint_sha256 == run.checkpoint_sha256
                why = "the same checkpoint tested again" if same else "same settings, step and seed"
                notes.append(
                    f"dropped {kept.path}: {group.task} {group.label} seed {run.seed}, {why}; "
                    f"the newer {run.path} is used"
                )
            newest[str(run.seed)] = run
        group.runs = sorted(newest.values(), key=lambda run: str(run.seed))
    return notes


def stat(values: list[float]) -> Stat:
    """Mean and sample std of the finite values (a missing or NaN entry is not a zero)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return Stat(math.nan, math.nan, 0)
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return Stat(statistics.fmean(finite), std, len(finite))


def group_table(group: Group, metric: str, threshold: float) -> dict[str, Stat]:
    """{length or summary name: Stat over the group's runs} for one metric."""
    lengths = sorted({length for run in group.runs for length in run.metrics.get(metric, {})})
    row = {
        str(length): stat([run.metrics.get(metric, {}).get(length, math.nan) for run in group.runs])
        for length in lengths
    }
    summarised = [
        run for run in group.runs if metric in run.summary_metrics and metric in run.metrics
    ]
    if summarised:
        row["extrapolation_score"] = stat(
            [extrapolation_score(run.metrics[metric], run.train_max_length) for run in summarised]
        )
        row["effective_length"] = stat(
            [effective_length(run.metrics[metric], threshold) for run in summarised]
        )
    return row


def format_stat(value: Stat, digits: int = 3) -> str:
    if value.n == 0:
        return "-"
    if math.isnan(value.std):
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.std:.{digits}f}"


@dataclass
class Report:
    """Everything the outputs are made from."""

    groups: list[Group]
    tasks: list[str]
    metrics: list[str]
    threshold: float
    tables: dict[tuple[str, str, str], dict[str, Stat]]  # (task, metric, label) -> row
    notes: list[str] = field(default_factory=list)
    differ: list[tuple[str, list[str]]] = field(default_factory=list)  # (task, fields)

    def columns(self, task: str, metric: str) -> list[str]:
        lengths = sorted(
            {
                int(c)
                for (t, m, _), row in self.tables.items()
                if (t, m) == (task, metric)
                for c in row
                if c.isdigit()
            }
        )
        summaries = [
            c
            for c in SUMMARY_COLUMNS
            if any(c in row for (t, m, _), row in self.tables.items() if (t, m) == (task, metric))
        ]
        return [str(length) for length in lengths] + summaries

    def train_max_length(self, task: str) -> int | None:
        values = {run.train_max_length for g in self.groups if g.task == task for run in g.runs}
        return values.pop() if len(values) == 1 else None


def build_report(paths: list[str], threshold: float = 0.5) -> Report:
    runs = [load_run(path) for path in find_results(paths)]
    groups = group_runs(runs)
    notes = drop_repeated_seeds(groups)
    tasks = sorted({group.task for group in groups})
    metrics = sorted({name for run in runs for name in run.metrics})
    tables = {}
    for group in groups:
        for metric in metrics:
            if any(metric in run.metrics for run in group.runs):
                tables[(group.task, metric, group.label)] = group_table(group, metric, threshold)
    fields = differing_fields(groups)
    differ = [(task, fields.get(task, [])) for task in tasks]
    return Report(groups, tasks, metrics, threshold, tables, notes, differ)


def header_label(column: str, train_max_length: int | None) -> str:
    if column.isdigit():
        beyond = train_max_length is not None and int(column) > train_max_length
        return column + ("*" if beyond else "")
    return {"extrapolation_score": "extrap.", "effective_length": "eff. len"}[column]


def table_rows(report: Report, task: str, metric: str) -> tuple[list[str], list[list[str]]]:
    columns = report.columns(task, metric)
    header = ["group", "seeds"] + [header_label(c, report.train_max_length(task)) for c in columns]
    rows = []
    for group in report.groups:
        row = report.tables.get((task, metric, group.label))
        if group.task != task or row is None:
            continue
        seeds = ",".join(str(run.seed) for run in group.runs)
        cells = []
        for column in columns:
            digits = 1 if column == "effective_length" else 3
            cells.append(format_stat(row[column], digits) if column in row else "-")
        rows.append([group.label, seeds, *cells])
    return header, rows


def task_note(report: Report) -> str:
    if len(report.tasks) == 1:
        return f"task {report.tasks[0]}: {sum(len(g.runs) for g in report.groups)} runs"
    return (
        f"runs from {len(report.tasks)} tasks ({', '.join(report.tasks)}): never averaged across "
        "tasks; one table per task and metric"
    )


def legend_lines(report: Report) -> list[str]:
    lines = [
        "mean ± sample std over seeds (no ± with one run); * = beyond the training lengths; "
        f"extrap. = mean over lengths beyond training; eff. len = longest length up to which the "
        f"metric stays >= {report.threshold}"
    ]
    return lines


def differ_lines(report: Report) -> list[str]:
    """One line per task naming the fields that tell its groups apart (beyond the seed)."""
    return [
        f"[{task}] groups differ in: {', '.join(fields) or 'nothing but the seed'}"
        for task, fields in report.differ
    ]


def format_terminal(report: Report) -> str:
    out = [task_note(report), *legend_lines(report), *(f"note: {n}" for n in report.notes)]
    out += differ_lines(report)
    for task in report.tasks:
        for metric in report.metrics:
            header, rows = table_rows(report, task, metric)
            if not rows:
                continue
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            out.append("")
            out.append(f"[{task}] {metric}")
            for row in [header, *rows]:
                out.append(
                    "  ".join(
                        cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))
                    )
                )
    return "\n".join(out)


def format_markdown(report: Report) -> str:
    out = ["# lengen report", "", task_note(report), "", *legend_lines(report)]
    out += [f"- note: {note}" for note in report.notes]
    out += [f"- {line}" for line in differ_lines(report)]
    for task in report.tasks:
        for metric in report.metrics:
            header, rows = table_rows(report, task, metric)
            if not rows:
                continue
            out += ["", f"## {task}: {metric}", ""]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
            out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def format_csv(report: Report) -> str:
    """Wide CSV: a row per (task, group, metric); columns `<length>_mean`, `_std`, `_n`."""
    all_columns = []
    for task in report.tasks:
        for metric in report.metrics:
            for column in report.columns(task, metric):
                if column not in all_columns:
                    all_columns.append(column)
    lengths = sorted((c for c in all_columns if c.isdigit()), key=int)
    columns = lengths + [c for c in SUMMARY_COLUMNS if c in all_columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["task", "group", "metric", "runs", "seeds", "train_max_length"]
        + [f"{c}_{part}" for c in columns for part in ("mean", "std", "n")]
    )
    for group in report.groups:
        for metric in report.metrics:
            row = report.tables.get((group.task, metric, group.label))
            if row is None:
                continue
            cells = []
            for column in columns:
                value = row.get(column, Stat(math.nan, math.nan, 0))
                cells += [
                    "" if math.isnan(value.mean) else repr(value.mean),
                    "" if math.isnan(value.std) else repr(value.std),
                    value.n,
                ]
            writer.writerow(
                [
                    group.task,
                    group.label,
                    metric,
                    len(group.runs),
                    " ".join(str(run.seed) for run in group.runs),
                    report.train_max_length(group.task) or "",
                ]
                + cells
            )
    return buffer.getvalue()


def figure(report: Report, metric: str) -> Figure:
    """One panel per task: `metric` against length, one line per group, error bars = std."""
    from matplotlib.figure import Figure  # here: `lengen report --help` starts without it

    fig = Figure(figsize=(5.5 * len(report.tasks), 4))
    axes = fig.subplots(1, len(report.tasks), squeeze=False)[0]
    for ax, task in zip(axes, report.tasks):
        for group in report.groups:
            row = report.tables.get((task, metric, group.label))
            if group.task != task or row is None:
                continue
            lengths = sorted(int(c) for c in row if c.isdigit() and row[c].n > 0)
            means = [row[str(length)].mean for length in lengths]
            stds = [0.0 if math.isnan(row[str(n)].std) else row[str(n)].std for n in lengths]
            seeds = len(group.runs)
            ax.errorbar(
                lengths, means, yerr=stds, marker="o", capsize=3, label=f"{group.label} (n={seeds})"
            )
        limit = report.train_max_length(task)
        by_position = metric in POSITION_METRICS
        if limit is not None and not by_position:
            ax.axvspan(0, limit, color="grey", alpha=0.15, label="training lengths")
        ax.set_title(f"{task}: {metric}")
        ax.set_xlabel("position in the window" if by_position else "length")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        # Below the panel: labels of groups that differ in settings are long.
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.15))
    fig.subplots_adjust(wspace=0.3)  # no tight_layout: it would shrink the panels to fit legends
    return fig


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineArgumentParser(
        prog="lengen report",
        description="Compare results.json of many runs: mean ± std over seeds per length.",
    )
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run folders or results.json")
    parser.add_argument("--out", default="report", help="output folder (default: ./report)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--metric",
        default=None,
        help="metric of the figure (default: exact_match if present, else the first)",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="effective length threshold (default 0.5)"
    )
    return parser.parse_args(argv)


def run_report(argv: list[str]) -> None:
    """Entry of `lengen report`: print the tables and write report.md/.csv/.png to --out."""
    args = parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        raise ReportError(f"--threshold must lie in [0, 1], got {args.threshold}")
    out = Path(args.out)
    check_creatable_dir(out, "--out")  # before reading or printing anything
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not args.overwrite:
        raise ReportError(
            f"{out} already holds {', '.join(existing)}; pass --overwrite or another --out"
        )
    report = build_report(args.paths, args.threshold)
    metric = args.metric or (
        "exact_match" if "exact_match" in report.metrics else report.metrics[0]
    )
    if metric not in report.metrics:
        raise ReportError(
            f"--metric {metric!r} is not in the results; have: {', '.join(report.metrics)}"
        )
    print(format_terminal(report))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(format_markdown(report))
    (out / "report.csv").write_text(format_csv(report))
    figure(report, metric).savefig(out / "report.png", dpi=120, bbox_inches="tight")
    print(f"\nwrote {', '.join(str(out / name) for name in OUTPUT_FILES)}")
