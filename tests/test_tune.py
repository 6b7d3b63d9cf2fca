"""`lengen tune`: the stability rule on hand-made trials, and a tiny grid end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lengen.cli import main
from lengen.tune import judge

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def trial(max_adam_v: float, spikes: int = 0, finite: bool = True) -> dict:
    return {"max_adam_v": max_adam_v, "spikes": spikes, "finite": finite}


def test_stability_rule():
    trials = [
        trial(1e-4),
        trial(5e-4),
        trial(2e-3),
        trial(1e-4, spikes=2),
        trial(1e-4, finite=False),
    ]
    judge(trials, variance_factor=10.0)
    assert [t["stable"] for t in trials] == [True, True, False, False, False]
    assert "Adam variance" in trials[2]["why"] and "2 loss spike" in trials[3]["why"]
    assert "non-finite" in trials[4]["why"]


def test_tune_runs_a_grid_and_writes_table_json_and_figure(tmp_path, capsys):
    out = tmp_path / "tune"
    main(
        [
            "tune", "--lr", "0.01", "--warmup", "0,0.5", "--steps", "6",
            "--max_seq_length", "16", "--min_seq_length", "4", "--step_size", "4",
            "--allow_task_data",  # the quickstart is task data (fast); see SequenceLengthWarmup
            "--out", str(out),
            "--config", QUICKSTART,
            "--model.n_layer", "1", "--model.d_model", "16",
            "--data.init_args.train_max_length", "6",
            "--data.init_args.eval_lengths", "[2]",
            "--data.init_args.batch_size", "4",
            "--data.init_args.val_examples_per_length", "1",
            "--data.init_args.test_examples_per_length", "1",
            "--data.init_args.cache_dir", str(tmp_path / "cache"),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "max Adam v" in printed and "stable" in printed
    trials = json.loads((out / "tune_results.json").read_text())
    assert [(t["lr"], t["warmup"]) for t in trials] == [(0.01, 0.0), (0.01, 0.5)]
    for t in trials:
        assert len(t["history"]) == 6 and math.isfinite(t["final_loss"])
        assert t["max_adam_v"] == pytest.approx(max(r["adam_v_max"] for r in t["history"]))
        assert isinstance(t["stable"], bool)
    hparams = (
        out / "lr0.01_warmup0.5" / "lightning_logs" / "version_0" / "config.yaml"
    ).read_text()
    assert "SequenceLengthWarmup" in hparams and "duration: 0.5" in hparams
    assert (out / "tune.png").stat().st_size > 10_000


def test_tune_bad_option_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--steps", "0", "--out", str(tmp_path), "--config", QUICKSTART])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("lengen: error: --steps must be >= 1")


def test_tune_unparsable_grid_is_one_line_without_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--lr", "fast"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage" not in err
    assert err.startswith("lengen: error: lengen tune: argument --lr: expected comma-separated")


def test_tune_never_overwrites_an_earlier_tuning(tmp_path, capsys):
    earlier = tmp_path / "tune_results.json"
    earlier.write_text("[]")
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--out", str(tmp_path), "--config", QUICKSTART])
    assert exit_info.value.code == 2
    assert "tune_results.json exists" in capsys.readouterr().err
    assert earlier.read_text() == "[]"
    with pytest.raises(SystemExit):
        main(["tune", "--warmup", "0,1.5", "--out", str(tmp_path / "new")])
    assert "--warmup durations in [0, 1]" in capsys.readouterr().err
