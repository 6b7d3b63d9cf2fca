"""The experiment scripts: passkey_pi.sh end to end at toy size; both refuse an old report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SCRIPT = SCRIPTS / "passkey_pi.sh"
TINY = [
    "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
    "--data.init_args.val_examples_per_length", "1",
    "--data.init_args.test_examples_per_length", "2",
]  # fmt: skip


def test_passkey_pi_script_runs_every_arm_and_writes_report_and_heatmap(tmp_path):
    env = dict(os.environ, SEEDS="0", RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "report"))
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env["PATH"]])
    result = subprocess.run(
        ["bash", str(SCRIPT), *TINY], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    presence = report.split("## Passkey: presence_accuracy")[1].split("\n\n")[1]
    groups = [line.split(" | ")[0] for line in presence.splitlines()[2:]]
    # base, fine-tuned RoPE, base with PI (no fine-tuning), fine-tuned with PI
    assert [group.split(" [")[0] for group in groups] == ["| RoPE", "| RoPE"] + ["| RoPELinear"] * 2
    # (label order follows the settings that differ, e.g. the training configs' eval lengths)
    kinds = sorted((group.split(" [")[0], "train_max_length=160" in group) for group in groups)
    assert kinds == [("| RoPE", False), ("| RoPE", True)] + [("| RoPELinear", False),
                     ("| RoPELinear", True)], presence  # fmt: skip
    assert (tmp_path / "report" / "report.png").is_file()
    heatmap = (tmp_path / "report" / "heatmap" / "heatmap.md").read_text()
    assert "start" in heatmap and "end" in heatmap
    for arm in ("PI", "ROPE"):  # both fine-tunes start from the base's weights
        assert "lengen: init_from" in (tmp_path / "runs/any" / arm / "seed0/fit.log").read_text()
    fine_tuned = json.loads(
        next((tmp_path / "runs" / "any" / "PI" / "seed0").rglob("results.json")).read_text()
    )
    assert fine_tuned["train_max_length"] == 320
    assert sorted(map(int, fine_tuned["metrics"]["presence_accuracy"])) == [
        128, 160, 256, 320, 384, 512,
    ]  # fmt: skip


@pytest.mark.parametrize("script", ["passkey_pi.sh", "compare_encodings.sh"])
def test_script_refuses_an_existing_report_before_training(script, tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("earlier results")
    env = dict(os.environ, RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "report"))
    command = ["bash", str(SCRIPTS / script)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("exists; set OUT or REPORT_ARGS=--overwrite")
    assert not (tmp_path / "runs").exists()
    assert (tmp_path / "report" / "report.md").read_text() == "earlier results"
