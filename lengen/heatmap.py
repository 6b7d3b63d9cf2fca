"""`lengen heatmap RUN_DIR...`: accuracy by context length x needle location.

The retrieval tasks take the needle's `location` as a task argument, so each `lengen test` run
covers one location and writes its per-length metrics to results.json. This command gathers
those files (a RUN_DIR is searched recursively; a results.json path is taken as is), and builds
the table rows = location, columns = context length, cells = the metric (the mean where several
runs share a cell, e.g. seeds). Runs that differ in anything else (task, task arguments such as
`altered`, positional encoding) get separate rows, labelled by what differs. It prints the table,
and writes it as Markdown (heatmap.md) and as a heatmap PNG (heatmap.png) to --out.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from lengen.argparser import OneLineArgumentParser
from lengen.report import find_results  # raises ReportError, printed as one line by the CLI

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOCATION_ORDER = ("start", "middle", "end", "any")


class HeatmapError(ValueError):
    """Bad input to `lengen heatmap`; the message is the one line printed."""


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def describe(results: dict, path: Path) -> tuple[dict[str, str], str]:
    """(what identifies the run apart from location, its location) from results.json's config."""
    try:
        task = results["config"]["data"]["init_args"]["task"]
    except (KeyError, TypeError):
        raise HeatmapError(f"{path}: no data.init_args.task in its config") from None
    if isinstance(task, str):
        task = {"class_path": task, "init_args": {}}
    arguments = dict(task.get("init_args") or {})
    location = str(arguments.pop("location", "any"))
    identity = {"task": _short(task["class_path"])}
    identity.update({name: json.dumps(value) for name, value in sorted(arguments.items())})
    identity["pos_encoding"] = str(results.get("pos_encoding"))
    return identity, location


def build_table(paths: list[Path], metric: str) -> dict[str, dict[int, list[float]]]:
    """{row label: {length: [values over runs]}}; rows ordered by label then location."""
    runs = []
    for path in paths:
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise HeatmapError(f"{path}: not valid JSON ({error})") from None
        if metric not in results.get("metrics", {}):
            available = ", ".join(results.get("metrics", {})) or "none"
            raise HeatmapError(f"{path}: no metric {metric!r}; it has: {available}")
        identity, location = describe(results, path)
        runs.append((identity, location, results["metrics"][metric]))
    keys = sorted({key for identity, _, _ in runs for key in identity})
    differing = [key for key in keys if len({identity.get(key) for identity, _, _ in runs}) > 1]
    table: dict[tuple[str, int, str], dict[int, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for identity, location, per_length in runs:
        prefix = " ".join(
            identity[key] if key == "task" else f"{key}={identity.get(key)}" for key in differing
        )
        order = (
            LOCATION_ORDER.index(location) if location in LOCATION_ORDER else len(LOCATION_ORDER)
        )
        for length, value in per_length.items():
            table[(prefix, order, location)][int(length)].append(float(value))
    return {
        f"{prefix} {location}".strip(): dict(cells)
        for (prefix, _, location), cells in sorted(table.items())
    }


def _cell(values: list[float] | None) -> float:
    return sum(values) / len(values) if values else math.nan


def _lengths(table: dict[str, dict[int, list[float]]]) -> list[int]:
    return sorted({length for cells in table.values() for length in cells})


def format_text(table: dict[str, dict[int, list[float]]], metric: str) -> str:
    lengths = _lengths(table)
    label_width = max(len("location"), *(len(label) for label in table)) + 2
    lines = [f"{metric} by context length (columns) and location (rows)"]
    lines.append("location".ljust(label_width) + "".join(f"{n:>8}" for n in lengths))
    for label, cells in table.items():
        values = [_cell(cells.get(n)) for n in lengths]
        lines.append(
            label.ljust(label_width)
            + "".join("       -" if math.isnan(v) else f"{v:8.3f}" for v in values)
        )
    return "\n".join(lines)


def format_markdown(table: dict[str, dict[int, list[float]]], metric: str) -> str:
    lengths = _lengths(table)
    lines = [
        f"| {metric} | " + " | ".join(str(n) for n in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for label, cells in table.items():
        values = [_cell(cells.get(n)) for n in lengths]
        lines.append(
            f"| {label} | "
            + " | ".join("-" if math.isnan(v) else f"{v:.3f}" for v in values)
            + " |"
        )
    return "\n".join(lines) + "\n"


def figure_heatmap(table: dict[str, dict[int, list[float]]], metric: str) -> Figure:
    """Rows = locations, columns = lengths, colour = metric in [0, 1], values written in cells."""
    from matplotlib.figure import Figure  # here: `lengen heatmap --help` starts without it

    lengths, labels = _lengths(table), list(table)
    grid = [[_cell(table[label].get(n)) for n in lengths] for label in labels]
    label_inches = 0.08 * max(len(label) for label in labels)  # room for the row labels
    figure = Figure(figsize=(2.0 + label_inches + 0.8 * len(lengths), 1.2 + 0.5 * len(labels)))
    axes = figure.subplots()
    image = axes.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel("needle location")
    for row, values in enumerate(grid):
        for column, value in enumerate(values):
            if not math.isnan(value):
                colour = "black" if value > 0.6 else "white"
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", color=colour)
    figure.colorbar(image, ax=axes, label=metric)
    figure.tight_layout()
    return figure


def main(argv: list[str]) -> None:
    """`lengen heatmap RUN_DIR... [--metric NAME] [--out DIR] [--overwrite]`."""
    parser = OneLineArgumentParser(prog="lengen heatmap", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories or results.json files")
    parser.add_argument("--metric", default="presence_accuracy", help="metric to show")
    parser.add_argument("--out", default=".", help="directory for heatmap.md and heatmap.png")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    table = build_table(find_results(args.runs), args.metric)
    out = Path(args.out)
    existing = [str(out / name) for name in ("heatmap.md", "heatmap.png") if (out / name).exists()]
    if existing and not args.overwrite:
        raise HeatmapError(f"{', '.join(existing)} exist: choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    print(format_text(table, args.metric))
    (out / "heatmap.md").write_text(format_markdown(table, args.metric))
    figure_heatmap(table, args.metric).savefig(out / "heatmap.png", dpi=120, bbox_inches="tight")
    print(f"table: {out / 'heatmap.md'}, heatmap: {out / 'heatmap.png'}")
