"""`lengen report`: grouping, mean ± std over seeds, summary scores, outputs and bad input."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lengen.cli import main
from lengen.report import build_report, format_markdown
from lengen.summary import effective_length, extrapolation_score


def write_run(
    root: Path,
    name: str,
    task: str,
    encoding: str,
    seed: int,
    exact: dict[int, float],
    callbacks: list[str] | None = None,
    train_max_length: int = 8,
) -> Path:
    """A results.json laid out as `lengen test` writes it (lengen/module.py)."""
    folder = root / name / "lightning_logs" / "version_0"
    folder.mkdir(parents=True)
    config = {
        "seed_everything": seed,
        "trainer": {"callbacks": [{"class_path": f"lengen_plugins.callbacks.x.{c}"} for c in
                                  (callbacks or [])]},
        "model": {"pos_encoding": {"class_path": f"lengen_plugins.positional_encodings.{encoding}",
                                   "init_args": {}}},
        "data": {"class_path": "lengen.data.tasks.TaskDataModule",
                 "init_args": {"task": {"class_path": f"lengen_plugins.tasks.x.{task}"},
                               "seed": 0}},
    }  # fmt: skip
    payload = {
        "format": 1,
        "metrics": {
            "exact_match": {str(k): v for k, v in exact.items()},
            "token_accuracy": {str(k): min(1.0, v + 0.1) for k, v in exact.items()},
        },
        "train_max_length": train_max_length,
        "pos_encoding": encoding,
        "global_step": 100,
        "config": config,
        "summary": {"exact_match": {}, "token_accuracy": {}},
    }
    (folder / "results.json").write_text(json.dumps(payload))
    return folder


def plain_mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, std


LENGTHS = [4, 8, 12, 16]


def random_curve(rng: random.Random) -> dict[int, float]:
    return {length: round(rng.random(), 4) for length in LENGTHS}


def test_mean_and_std_over_seeds_match_a_plain_computation(tmp_path):
    rng = random.Random()
    curves = {}
    for encoding, seeds in (("ALiBi", [0, 1, 2]), ("NoPE", [0, 1, 2, 3])):
        for seed in seeds:
            curves[(encoding, seed)] = random_curve(rng)
            write_run(tmp_path, f"{encoding}-{seed}", "Copy", encoding, seed,
                      curves[(encoding, seed)])  # fmt: skip
    # One NoPE seed with a curriculum is its own group, not averaged with plain NoPE.
    # (A monitoring callback does not make a curriculum.)
    write_run(tmp_path, "NoPE-warmup", "Copy", "NoPE", 0, random_curve(rng),
              ["LengthWarmup", "GradientVarianceMonitor"])  # fmt: skip
    # A missing length in one seed is left out of that length's mean (never counted as 0).
    write_run(tmp_path, "ALiBi-3", "Copy", "ALiBi", 3, {4: 0.5, 8: 0.25})
    # A re-run test of NoPE seed 1 (older file) is left out with a note, not counted twice.
    stale = write_run(tmp_path, "NoPE-1-old", "Copy", "NoPE", 1, random_curve(rng))
    os.utime(stale / "results.json", (0, 0))
    report = build_report([str(tmp_path)], threshold=0.5)
    assert len(report.notes) == 1 and "NoPE seed 1" in report.notes[0]

    labels = [group.label for group in report.groups]
    assert labels == ["ALiBi", "NoPE", "NoPE + LengthWarmup"]
    assert report.tasks == ["Copy"]
    for encoding, seeds in (("ALiBi", [0, 1, 2]), ("NoPE", [0, 1, 2, 3])):
        row = report.tables[("Copy", "exact_match", encoding)]
        for length in LENGTHS:
            values = [curves[(encoding, seed)][length] for seed in seeds]
            if encoding == "ALiBi" and length in (4, 8):
                values.append({4: 0.5, 8: 0.25}[length])
            mean, std = plain_mean_std(values)
            assert row[str(length)].mean == pytest.approx(mean, abs=1e-12)
            assert row[str(length)].std == pytest.approx(std, abs=1e-12)
            assert row[str(length)].n == len(values)
        # Extrapolation score (lengths > 8) and effective length per seed, then mean ± std.
        scores = [(curves[(encoding, s)][12] + curves[(encoding, s)][16]) / 2 for s in seeds]
        # (ALiBi seed 3 has no length beyond training: its NaN score is left out, not 0.)
        mean, std = plain_mean_std(scores)
        assert row["extrapolation_score"].mean == pytest.approx(mean, abs=1e-12)
        assert row["extrapolation_score"].std == pytest.approx(std, abs=1e-12)
    single = report.tables[("Copy", "exact_match", "NoPE + LengthWarmup")]
    assert single["4"].n == 1 and math.isnan(single["4"].std)
    markdown = format_markdown(report)
    assert "| NoPE + LengthWarmup | 0 |" in markdown and "16*" in markdown


def test_summary_scores_against_a_plain_walk():
    rng = random.Random()
    for _ in range(50):
        curve = {length: rng.random() for length in rng.sample(range(1, 40), 8)}
        train_max, threshold = rng.randint(1, 40), rng.random()
        beyond = [v for k, v in curve.items() if k > train_max]
        expected = sum(beyond) / len(beyond) if beyond else math.nan
        got = extrapolation_score(curve, train_max)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
        longest = 0
        for length in sorted(curve):
            if curve[length] < threshold:
                break
            longest = length
        assert effective_length(curve, threshold) == longest
    assert effective_length({2: 1.0, 4: 0.9, 8: 0.2, 16: 0.95}, 0.5) == 4  # stops at the dip
    assert effective_length({2: 0.1}, 0.5) == 0
    assert effective_length({2: 1.0, 4: math.nan, 8: 0.7}, 0.5) == 8  # NaN = not evaluated


def test_differing_settings_split_groups(tmp_path):
    rng = random.Random()
    for window in ("n_ctx", "n_ctx+1"):
        folder = write_run(tmp_path / window, "run", "Copy", "Learned", 0, random_curve(rng))
        payload = json.loads((folder / "results.json").read_text())
        payload["config"]["data"]["init_args"]["window"] = window
        payload["config"]["data"]["init_args"]["cache_dir"] = str(tmp_path / window)  # ignored
        (folder / "results.json").write_text(json.dumps(payload))
    report = build_report([str(tmp_path)])
    assert [group.label for group in report.groups] == [
        "Learned [window=n_ctx+1]",
        "Learned [window=n_ctx]",
    ]
    assert not report.notes  # not mistaken for a repeated seed


def test_runs_of_several_tasks_get_one_table_each(tmp_path):
    rng = random.Random()
    for task in ("Copy", "Reverse"):
        for seed in (0, 1):
            write_run(tmp_path, f"{task}-{seed}", task, "RoPE", seed, random_curve(rng))
    report = build_report([str(tmp_path)])
    assert report.tasks == ["Copy", "Reverse"]
    assert {(g.task, g.label, len(g.runs)) for g in report.groups} == {
        ("Copy", "RoPE", 2),
        ("Reverse", "RoPE", 2),
    }
    assert "runs from 2 tasks (Copy, Reverse): never averaged across tasks" in format_markdown(
        report
    )


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_main(["report", str(empty), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("lengen: error: no results.json below") and "\n" == err[-1]
    assert err.count("\n") == 1

    broken = tmp_path / "broken" / "results.json"
    broken.parent.mkdir()
    broken.write_text("{ not json")
    code, _, err = run_main(["report", str(broken.parent), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "cannot read" in err and str(broken) in err and err.count("\n") == 1

    broken.write_text(json.dumps({"format": 1}))
    code, _, err = run_main(["report", str(broken), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "is not a lengen results.json" in err and err.count("\n") == 1

    code, _, err = run_main(["report", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "does not exist" in err

    code, _, err = run_main(["report"], capsys)
    assert code == 2 and err.count("\n") == 1 and "RUN_DIR" in err


def test_cli_writes_outputs_and_never_overwrites(tmp_path):
    rng = random.Random()
    for encoding in ("ALiBi", "RoPE"):
        for seed in (0, 1, 2):
            write_run(tmp_path / "runs", f"{encoding}-{seed}", "Copy", encoding, seed,
                      random_curve(rng))  # fmt: skip
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    command = [script, "report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "[Copy] exact_match" in result.stdout and "ALiBi" in result.stdout
    for name in ("report.md", "report.csv", "report.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert {(row["group"], row["metric"]) for row in rows} == {
        (e, m) for e in ("ALiBi", "RoPE") for m in ("exact_match", "token_accuracy")
    }
    assert all(row["16_n"] == "3" for row in rows)


def test_existing_outputs_are_kept_without_overwrite(tmp_path, capsys):
    rng = random.Random()
    for seed in (0, 1):
        write_run(tmp_path / "runs", f"T5Bias-{seed}", "Copy", "T5Bias", seed, random_curve(rng))
    args = ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert run_main(args, capsys)[0] == 0
    (tmp_path / "out" / "report.md").write_text("mine")
    code, _, err = run_main(args, capsys)
    assert code == 2 and "already holds report.md, report.csv, report.png" in err
    assert "--overwrite" in err and err.count("\n") == 1
    assert (tmp_path / "out" / "report.md").read_text() == "mine"
    assert run_main([*args, "--overwrite"], capsys)[0] == 0
    assert "T5Bias" in (tmp_path / "out" / "report.md").read_text()


def set_fields(folder: Path, **fields) -> None:
    """Change top-level fields of the results.json in `folder`."""
    path = folder / "results.json"
    payload = json.loads(path.read_text())
    payload.update(fields)
    path.write_text(json.dumps(payload))


def test_runs_of_other_steps_are_other_groups_never_dropped(tmp_path):
    """The bug of issue 12: a 200-step test replaced the 2000-step run of the same seed."""
    rng = random.Random()
    long_curve, short_curve = random_curve(rng), random_curve(rng)
    set_fields(write_run(tmp_path, "long", "Copy", "ALiBi", 0, long_curve), global_step=2000)
    short = write_run(tmp_path, "short", "Copy", "ALiBi", 0, short_curve)
    set_fields(short, global_step=200)
    os.utime(short / "results.json", (0, 0))  # older or newer: both must stay
    report = build_report([str(tmp_path)])
    assert report.notes == []
    rows = {group.label: [run.path.parent.parent.parent.name for run in group.runs]
            for group in report.groups}  # fmt: skip
    assert rows == {"ALiBi [step=2000]": ["long"], "ALiBi [step=200]": ["short"]}
    assert report.tables[("Copy", "exact_match", "ALiBi [step=2000]")]["16"].mean == long_curve[16]
    assert report.differ == [("Copy", ["step"])]
    assert "[Copy] groups differ in: step" in format_markdown(report)


def with_provenance(folder: Path, training_config: dict, sha256: str) -> None:
    """Turn a format-1 results.json into format 2 with a training config and checkpoint."""
    payload = json.loads((folder / "results.json").read_text())
    payload["format"] = 2
    payload["provenance"] = {
        "training_config": training_config,
        "checkpoint": {"path": "x.ckpt", "step": payload["global_step"], "sha256": sha256},
        "model_overrides": {},
    }
    (folder / "results.json").write_text(json.dumps(payload))


def test_format_2_groups_by_the_training_config_and_lists_dropped_duplicates(tmp_path):
    rng = random.Random()
    # Both tested with one test config (no callbacks); one was trained with a curriculum and
    # longer: only its training config says so.
    plain = write_run(tmp_path, "plain", "Copy", "RoPE", 0, random_curve(rng))
    trained_plain = json.loads((plain / "results.json").read_text())["config"]
    with_provenance(plain, trained_plain, "a" * 64)
    warm = write_run(tmp_path, "warm", "Copy", "RoPE", 0, random_curve(rng))
    trained_warm = copy.deepcopy(trained_plain)
    trained_warm["trainer"] = {
        "max_steps": 900,
        "callbacks": [{"class_path": "lengen_plugins.callbacks.x.LengthWarmup"}],
    }
    with_provenance(warm, trained_warm, "b" * 64)
    # The same checkpoint as `plain` tested again later: one is dropped, and said so.
    again = write_run(tmp_path, "again", "Copy", "RoPE", 0, random_curve(rng))
    with_provenance(again, trained_plain, "a" * 64)
    os.utime(plain / "results.json", (0, 0))
    # A format-1 file (no training config) of another seed with the same settings is read and
    # joins as a second seed.
    write_run(tmp_path, "old", "Copy", "RoPE", 1, random_curve(rng))

    report = build_report([str(tmp_path)])
    by_label = {g.label: [r.path.parent.parent.parent.name for r in g.runs]
                for g in report.groups}  # fmt: skip
    assert by_label == {
        "RoPE [max_steps=None]": ["again", "old"],
        "RoPE [max_steps=900] + LengthWarmup": ["warm"],
    }
    (note,) = report.notes
    assert note.startswith(f"dropped {plain / 'results.json'}:")
    assert "the same checkpoint tested again" in note and str(again / "results.json") in note
    assert "curriculum" in dict(report.differ)["Copy"]
