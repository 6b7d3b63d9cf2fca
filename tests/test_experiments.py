"""scripts/scale_ladder.py --experiment arithmetic / ruler: each grid end to end at toy scale
(a few steps, a tiny evaluation), its runs.jsonl rows and its summary tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_scale_ladder

ROOT = Path(__file__).resolve().parent.parent


def read_rows(runs: Path) -> list[dict]:
    return [json.loads(line) for line in (runs / "runs.jsonl").read_text().splitlines()]


def test_defaults_keep_the_ladder():
    """No --experiment: the ladder's folder, tasks, encodings and output paths, as before."""
    ladder = load_scale_ladder()
    args = ladder.parse_args([])
    assert (args.experiment, args.tasks, args.runs, args.out) == (
        "ladder",
        ["copy", "reverse"],
        "runs/ladder",
        "docs/figures/scale_ladder",
    )
    assert args.encodings == ["nope", "sinusoidal", "t5_bias", "alibi", "rope"]
    args = ladder.parse_args(["--experiment", "arithmetic"])
    assert args.tasks == ["addition", "addition_hints"]
    assert args.encodings == ["nope", "rope", "fire", "abacus", "position_coupling"]
    assert (args.runs, args.out) == ("runs/arithmetic", "docs/figures/arithmetic")
    args = ladder.parse_args(["--experiment", "ruler"])
    assert len(args.tasks) == 7 and "niah_single" in args.tasks


def test_arithmetic_toy_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("LENGEN_CACHE_DIR", str(tmp_path / "cache"))
    ladder = load_scale_ladder()
    runs = tmp_path / "runs"
    argv = ["--experiment", "arithmetic", "--tasks", "addition", "addition_hints",
            "--encodings", "nope", "abacus", "--seeds", "0", "--runs", str(runs),
            "--steps", "2", "--set", "trainer.val_check_interval=2",
            "--set", "data.init_args.val_examples_per_length=4",
            "--set", "data.init_args.eval_lengths=[2, 5, 6, 15]"]  # fmt: skip
    ladder.main(argv)
    rows = read_rows(runs)
    # Abacus reads digits without index hints: the hints variant runs NoPE only.
    assert [(r["task"], r["encoding"]) for r in rows] == [
        ("addition", "nope"),
        ("addition", "abacus"),
        ("addition_hints", "nope"),
    ]
    config = ladder.run_config("addition_hints", "nope", 0, experiment="arithmetic")
    assert config["data"]["init_args"]["task"]["init_args"]["index_hints"] is True
    assert config["data"]["init_args"]["task"]["init_args"]["reverse_digits"] is True
    for row in rows:
        assert row["metric_names"] == ["exact_match", "token_accuracy"]
        assert row["train_max_length"] == 5 and list(row["rungs"]) == ["2"]
        rung = row["rungs"]["2"]
        assert sorted(int(n) for n in rung["metrics"]["exact_match"]) == [2, 5, 6, 15]
        for metric in ("exact_match", "token_accuracy"):
            unseen = [rung["metrics"][metric][str(n)] for n in (6, 15)]  # above 5 digits
            assert rung["unseen"][metric] == pytest.approx(sum(unseen) / 2)
            assert rung[f"unseen_{metric}"] == rung["unseen"][metric]
        # 4 examples per length: exact match is a multiple of 1/4
        assert all(4 * v == int(4 * v) for v in rung["metrics"]["exact_match"].values())
        assert "depth" not in row

    out = tmp_path / "out"
    ladder.main([*argv, "--summarise", "--out", str(out)])
    text = (out / "arithmetic.md").read_text()
    assert "## addition: 2 layers, d_model 64, batch 64" in text
    assert "## addition_hints:" in text
    assert "| encoding | seeds | 2 | 5 | 6* | 15* | unseen EM | unseen tok. acc. |" in text
    assert "| NoPE | 1 |" in text and "| Abacus | 1 |" in text
    assert (out / "addition.png").stat().st_size > 0


def test_ruler_toy_grid_with_depth(tmp_path, monkeypatch):
    monkeypatch.setenv("LENGEN_CACHE_DIR", str(tmp_path / "cache"))
    ladder = load_scale_ladder()
    runs = tmp_path / "runs"
    argv = ["--experiment", "ruler", "--tasks", "niah_single", "common_words",
            "--encodings", "alibi", "--seeds", "0", "--runs", str(runs),
            "--steps", "2", "--set", "trainer.val_check_interval=2",
            "--set", "data.init_args.train_min_length=176",
            "--set", "data.init_args.train_max_length=200",
            "--set", "data.init_args.eval_lengths=[200, 400]",
            "--set", "data.init_args.batch_size=4",
            "--set", "data.init_args.val_examples_per_length=2",
            "--set", "data.init_args.test_examples_per_length=2"]  # fmt: skip
    ladder.main(argv)
    rows = {row["task"]: row for row in read_rows(runs)}
    assert sorted(rows) == ["common_words", "niah_single"]
    for row in rows.values():
        assert row["metric_names"] == ["string_match_all", "string_match_part", "exact_match"]
        rung = row["rungs"]["2"]
        for metric in row["metric_names"]:
            assert sorted(int(n) for n in rung["metrics"][metric]) == [200, 400]
            assert rung["unseen"][metric] == rung["metrics"][metric]["400"]  # only 400 > 200
        # RULER's part match is at least its all match (any reference vs the fraction found)
        for n in ("200", "400"):
            assert rung["metrics"]["string_match_part"][n] >= rung["metrics"]["string_match_all"][n]
    assert "depth" not in rows["common_words"]  # no needle location in that task
    depth = rows["niah_single"]["depth"]
    assert list(depth) == ["start", "middle", "end"]
    for location, metrics in depth.items():
        assert sorted(int(n) for n in metrics["string_match_all"]) == [200, 400]
        (found,) = (runs / "niah_single/alibi/seed0/depth" / location).rglob("results.json")
        results = json.loads(found.read_text())
        assert results["config"]["data"]["init_args"]["task"]["init_args"]["location"] == location
        assert results["metrics"]["string_match_all"] == {
            k: pytest.approx(v) for k, v in metrics["string_match_all"].items()
        }

    out = tmp_path / "out"
    ladder.main([*argv, "--summarise", "--out", str(out)])
    text = (out / "ruler.md").read_text()
    assert "## niah_single:" in text and "## common_words:" in text
    header = "| 200 | 400* | unseen SM all | unseen SM part | rank (SM all) | rank (SM part) |"
    assert header in text
    assert "| string_match_all | 200 | 400 |" in text  # the heatmap table, by location
    for location in ("start", "middle", "end"):
        assert f"| {location} |" in text
    assert (out / "niah_single_depth/heatmap.png").stat().st_size > 0
    assert not (out / "common_words_depth").exists()


def test_bad_experiment_or_task_is_one_line(capsys):
    ladder = load_scale_ladder()
    with pytest.raises(SystemExit):
        ladder.main(["--experiment", "bogus"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown experiment 'bogus'" in err and "arithmetic" in err and "ruler" in err
    with pytest.raises(SystemExit):
        ladder.main(["--experiment", "arithmetic", "--tasks", "copy"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown task 'copy'" in err and "addition_hints" in err
