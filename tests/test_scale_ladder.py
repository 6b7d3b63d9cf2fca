"""scripts/scale_ladder.py: its configuration at a few steps, end to end (train, rungs, summary)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import load_scale_ladder

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "4", "--set", "trainer.val_check_interval=2",
        "--set", "data.init_args.val_examples_per_length=4",
        "--set", "data.init_args.eval_lengths=[20, 21, 30, 40]"]  # fmt: skip


def test_grid_at_a_few_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("LENGEN_CACHE_DIR", str(tmp_path / "cache"))
    ladder = load_scale_ladder()
    runs = tmp_path / "runs"
    argv = ["--tasks", "copy", "--encodings", "alibi", "--seeds", "0",
            "--runs", str(runs), *TINY]  # fmt: skip
    ladder.main(argv)
    rows = [json.loads(line) for line in (runs / "runs.jsonl").read_text().splitlines()]
    assert [(row["encoding"], row["seed"]) for row in rows] == [("alibi", 0)]
    for row in rows:
        assert (row["n_layer"], row["d_model"], row["train_max_length"]) == (2, 64, 20)
        assert sorted(row["rungs"], key=int) == ["2", "4"]  # one rung per validation
        for rung in row["rungs"].values():
            lengths = sorted(int(n) for n in rung["metrics"]["exact_match"])
            assert lengths == [20, 21, 30, 40]
            # The unseen score is the plain mean over the lengths beyond 20, recomputed by hand.
            for metric in ("exact_match", "token_accuracy"):
                unseen = [rung["metrics"][metric][str(n)] for n in (21, 30, 40)]
                assert 0.0 <= min(unseen) and max(unseen) <= 1.0
                assert rung[f"unseen_{metric}"] == pytest.approx(sum(unseen) / 3)

    # A second call resumes: nothing is trained again.
    ladder.main(argv)
    assert len((runs / "runs.jsonl").read_text().splitlines()) == 1

    ladder.main([*argv, "--summarise", "--out", str(tmp_path / "out")])
    text = (tmp_path / "out/ladder.md").read_text()
    assert "## copy: 2 layers, d_model 64, batch 32" in text
    assert "### 2 steps" in text and "### 4 steps" in text and "| ALiBi | 1 |" in text
    assert "| ALiBi | 1 (1) | 1 (1) |" in text  # the rank table: one encoding ranks first
    assert (tmp_path / "out/copy.png").stat().st_size > 0


def test_seed_sets_initialisation_and_data(tmp_path, monkeypatch):
    """seed_everything and data.seed both follow the seed: other validation examples per seed."""
    monkeypatch.setenv("LENGEN_CACHE_DIR", str(tmp_path / "cache"))
    ladder = load_scale_ladder()
    from lengen import api

    inputs = []
    for seed in (0, 1):
        config = ladder.run_config(
            "copy", "nope", seed, 4, ["data.init_args.val_examples_per_length=4"]
        )
        assert config["seed_everything"] == config["data"]["init_args"]["seed"] == seed
        args = {k: v for k, v in config["data"]["init_args"].items() if k != "task"}
        data = api.task_data("Copy", **args)
        data.setup("validate")
        inputs.append([batch.input_ids.tolist() for batch in data.val_dataloader()])
    assert inputs[0] != inputs[1]


def test_ranks_with_ties():
    """Mean ranks (1 = best) on fresh random scores with ties, against the counting definition:
    1 + #(better) + (#(equal) - 1) / 2 (the "average" method of scipy.stats.rankdata)."""
    ladder = load_scale_ladder()
    rng = random.Random()
    for _ in range(50):
        scores = {f"e{i}": rng.choice([0.0, 0.25, 0.5, 1.0]) for i in range(5)}
        for name, value in scores.items():
            better = sum(v > value for v in scores.values())
            equal = sum(v == value for v in scores.values())
            assert ladder.ranks(scores)[name] == 1 + better + (equal - 1) / 2


def test_ordering_marks_ties():
    """The "Order by" line: best to worst, ">" between different scores, "=" between tied ones,
    checked on fresh random scores against the ranks' definition."""
    ladder = load_scale_ladder()
    rng = random.Random()
    for _ in range(50):
        scores = {e: rng.choice([0.0, 0.5, 1.0]) for e in ladder.ENCODINGS}
        rank = ladder.ranks(scores)
        text = ladder.ordering({e: (r,) for e, r in rank.items()})
        names = {ladder.LABELS[e]: e for e in scores}
        parts = re.split(r" ([>=]) ", text)  # name, sign, name, sign, ...
        assert sorted(names[p] for p in parts[::2]) == sorted(scores)
        for before, sign, after in zip(parts[::2], parts[1::2], parts[2::2]):
            a, b = scores[names[before]], scores[names[after]]
            assert (sign, a >= b) == ("=" if a == b else ">", True)


def test_bad_input_is_one_line(capsys):
    ladder = load_scale_ladder()
    with pytest.raises(SystemExit):
        ladder.main(["--encodings", "nope", "bogus"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown encoding 'bogus'" in err and "configs/pe" in err
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        ladder.run_config("copy", "nope", 0, None, ["model.lr"])


def test_sizes_summary(tmp_path):
    """--sizes: per size, each encoding's unseen exact match at its LAST rung, averaged over
    seeds (checked against the mean computed here), and the order by it; fresh random rows."""
    ladder = load_scale_ladder()
    rng = random.Random()
    lengths = [10, 20, 25, 40]  # train_max_length 20: 25 and 40 are unseen
    expected = {}  # (size, encoding) -> mean unseen exact match at the last rung
    sources = []
    for size, (n_layer, d_model, last) in enumerate([(2, 64, 30), (4, 128, 60)]):
        rows = []
        for encoding in ("nope", "alibi"):
            seeds = []
            for seed in range(2):
                em = {str(n): rng.random() for n in lengths}
                seeds.append((em["25"] + em["40"]) / 2)
                early = {str(n): 2.0 for n in lengths}  # an earlier rung: must be ignored
                rows.append({
                    "task": "copy", "encoding": encoding, "seed": seed, "n_layer": n_layer,
                    "d_model": d_model, "batch_size": 8, "train_max_length": 20,
                    "rungs": {str(last // 2): {"metrics": {"exact_match": early,
                                                           "token_accuracy": early}},
                              str(last): {"metrics": {"exact_match": em, "token_accuracy": em}}},
                })  # fmt: skip
            expected[size, encoding] = sum(seeds) / 2
        path = tmp_path / f"size{size}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        sources.append(str(path))
    out = tmp_path / "out"
    ladder.main(["--summarise", "--tasks", "copy", "--encodings", "nope", "alibi",
                 "--sizes", *sources, "--out", str(out)])  # fmt: skip
    text = (out / "sizes.md").read_text()
    assert (out / "sizes_copy.png").is_file()
    assert "| encoding | 2x64, 30 steps | 4x128, 60 steps |" in text
    for size in range(2):
        order = sorted(["nope", "alibi"], key=lambda e: -expected[size, e])
        label = ["2x64, 30 steps", "4x128, 60 steps"][size]
        assert f"- {label}: " + " > ".join(ladder.LABELS[e] for e in order) in text
    row = next(line for line in text.splitlines() if line.startswith("| NoPE |"))
    assert f"{expected[0, 'nope']:.3f} ± " in row.split("|")[2]
    assert f"{expected[1, 'nope']:.3f} ± " in row.split("|")[3]
    with pytest.raises(SystemExit, match="--sizes needs --summarise"):
        ladder.main(["--sizes", *sources])
