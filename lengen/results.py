"""Per-length results: the terminal table, the metric-versus-length figure and results.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure

# 2: adds "split", "provenance" (versions, device, checkpoint, training config, overrides) and
#    the summary's "in_range"; `lengen report` reads 1 and 2.
RESULTS_FORMAT_VERSION = 2
# The files `lengen <command>` writes into the run's log folder.
OUTPUT_NAMES = {
    "test": ("results.json", "metrics_vs_length.png"),
    "validate": ("validate_results.json", "validate_metrics_vs_length.png"),
}


def format_table(metrics: dict[str, dict[int, float]], train_max_length: int | None) -> str:
    """Rows = lengths, columns = metrics; lengths beyond training are marked with '*'."""
    names = list(metrics)
    lengths = sorted({length for per_length in metrics.values() for length in per_length})
    width = max(12, *(len(name) + 2 for name in names))
    lines = ["length".rjust(8) + "".join(name.rjust(width) for name in names)]
    for length in lengths:
        beyond = train_max_length is not None and length > train_max_length
        label = f"{length}{'*' if beyond else ' '}".rjust(8)
        cells = []
        for name in names:
            value = metrics[name].get(length, math.nan)
            cells.append(("-" if math.isnan(value) else f"{value:.4f}").rjust(width))
        lines.append(label + "".join(cells))
    if train_max_length is not None:
        lines.append(f"* beyond the training lengths (max {train_max_length})")
    return "\n".join(lines)


def figure_metrics_vs_length(
    metrics: dict[str, dict[int, float]], train_max_length: int | None, title: str = ""
) -> Figure:
    """One line per metric against length; the training range is shaded."""
    figure = Figure(figsize=(6, 4))  # not pyplot: nothing global, nothing to close
    axes = figure.subplots()
    for name, per_length in metrics.items():
        lengths = sorted(per_length)
        axes.plot(lengths, [per_length[length] for length in lengths], marker="o", label=name)
    if train_max_length is not None:
        axes.axvspan(0, train_max_length, color="grey", alpha=0.15, label="training lengths")
    axes.set_xlabel("length")
    axes.set_ylabel("value")
    values = [value for per_length in metrics.values() for value in per_length.values()]
    if all(0.0 <= value <= 1.0 for value in values):  # fractions; perplexity and loss are not
        axes.set_ylim(-0.02, 1.02)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def write_results(path: Path, **payload) -> None:
    """Write results.json; metric lengths become string keys (JSON objects)."""
    payload["metrics"] = {
        name: {str(length): value for length, value in sorted(per_length.items())}
        for name, per_length in payload["metrics"].items()
    }
    path.write_text(json.dumps({"format": RESULTS_FORMAT_VERSION, **payload}, indent=2))


def write_outputs(out_dir: Path, command: str, payload: dict, figure: Figure) -> None:
    """What `lengen test` / `lengen validate` leave behind: the per-length table on the terminal,
    the figure as PNG and the payload as JSON, named by OUTPUT_NAMES[command] in `out_dir`."""
    results_name, figure_name = OUTPUT_NAMES[command]
    out_dir.mkdir(parents=True, exist_ok=True)
    print("\n" + format_table(payload["metrics"], payload.get("train_max_length")))
    figure.savefig(out_dir / figure_name, dpi=120, bbox_inches="tight")
    write_results(out_dir / results_name, **payload)
    print(f"results: {out_dir / results_name}, figure: {out_dir / figure_name}")
