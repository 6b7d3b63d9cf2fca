"""`lengen heatmap`: the length x location table from results.json files of several runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lengen.heatmap import build_table, find_results, format_markdown


def write_run(root: Path, name: str, location: str, values: dict[int, float], **task_args) -> None:
    run = root / name / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    task = {"class_path": "lengen_plugins.tasks.needle_qa.NeedleQA"}
    task["init_args"] = {"location": location, **task_args}
    results = {
        "format": 1,
        "metrics": {"presence_accuracy": {str(n): v for n, v in values.items()}},
        "pos_encoding": "RoPE",
        "config": {"data": {"init_args": {"task": task}}},
    }
    (run / "results.json").write_text(json.dumps(results))


def test_table_means_seeds_orders_locations_and_splits_differing_arguments(tmp_path):
    write_run(tmp_path, "end", "end", {256: 0.25, 512: 0.0}, altered=False)
    write_run(tmp_path, "start-seed0", "start", {256: 1.0, 512: 0.5}, altered=False)
    write_run(tmp_path, "start-seed1", "start", {256: 0.5, 512: 0.25}, altered=False)
    write_run(tmp_path, "alt-middle", "middle", {256: 0.75}, altered=True)
    table = build_table(find_results([str(tmp_path)]), "presence_accuracy")
    assert list(table) == ["altered=false start", "altered=false end", "altered=true middle"]
    assert table["altered=false start"] == {256: [1.0, 0.5], 512: [0.5, 0.25]}
    markdown = format_markdown(table, "presence_accuracy").splitlines()
    assert markdown[0] == "| presence_accuracy | 256 | 512 |"
    assert markdown[2] == "| altered=false start | 0.750 | 0.375 |"  # the mean of two seeds
    assert markdown[4] == "| altered=true middle | 0.750 | - |"


def test_cli_writes_markdown_and_png(tmp_path):
    write_run(tmp_path, "a", "start", {128: 1.0, 256: 0.5})
    write_run(tmp_path, "b", "end", {128: 0.0, 256: 0.5})
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    out = tmp_path / "out"
    args = [script, "heatmap", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "start" in result.stdout and "1.000" in result.stdout
    assert (out / "heatmap.md").read_text().splitlines()[3] == "| end | 0.000 | 0.500 |"
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_line(tmp_path, capsys):
    from lengen.cli import main

    write_run(tmp_path, "a", "start", {128: 1.0})
    for args, message in (
        ([str(tmp_path / "a"), "--metric", "exact_match"], "no metric 'exact_match'; it has: "),
        (
            [str(tmp_path / "missing")],
            "does not exist (give run directories or results.json files)",
        ),
        ([str(tmp_path / "a"), "--colour"], "unrecognized arguments: --colour"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["heatmap", *args])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lengen: error: ") and message in lines[0]


def test_existing_outputs_are_kept_without_overwrite(tmp_path, capsys):
    from lengen.cli import main

    write_run(tmp_path, "a", "start", {128: 1.0})
    out = tmp_path / "out"
    out.mkdir()
    (out / "heatmap.md").write_text("earlier")
    with pytest.raises(SystemExit) as exit_info:
        main(["heatmap", str(tmp_path / "a"), "--out", str(out)])
    assert exit_info.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    assert (out / "heatmap.md").read_text() == "earlier"
    main(["heatmap", str(tmp_path / "a"), "--out", str(out), "--overwrite"])
    assert (out / "heatmap.md").read_text().startswith("| presence_accuracy | 128 |")
