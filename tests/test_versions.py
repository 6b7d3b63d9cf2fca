"""Version folders are claimed atomically: runs started together never share `version_N`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only

from lengen.logger import ClaimingTensorBoardLogger

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")

# Each process waits for a shared start time, then asks its logger for its folder and writes an
# event into it, as a run does when it starts.
CLAIM = """
import sys, time
from lengen.logger import ClaimingTensorBoardLogger
root, start = sys.argv[1], float(sys.argv[2])
logger = ClaimingTensorBoardLogger(save_dir=root)
time.sleep(max(0.0, start - time.time()))
print(logger.log_dir)
logger.log_metrics({"x": 1.0}, step=0)
logger.finalize("success")
"""


def test_processes_started_together_claim_distinct_folders(tmp_path):
    (tmp_path / "lightning_logs" / "version_3").mkdir(parents=True)  # an earlier run
    processes = 6
    start = time.time() + 8  # after every interpreter has imported lightning
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    folders = [out.strip().splitlines()[-1] for out, _ in outputs]
    assert len(set(folders)) == processes, folders
    names = sorted(Path(folder).name for folder in folders)
    assert names == [f"version_{n}" for n in range(4, 4 + processes)], names
    for folder in folders:  # each holds exactly its own run's event file
        assert len(list(Path(folder).glob("events.out.tfevents.*"))) == 1, folder


def test_only_rank_zero_claims_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert ClaimingTensorBoardLogger(save_dir=str(tmp_path)).version == 0
    assert not (tmp_path / "lightning_logs").exists()  # rank 1 takes rank 0's folder (broadcast)
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert ClaimingTensorBoardLogger(save_dir=str(tmp_path)).version == 0
    assert ClaimingTensorBoardLogger(save_dir=str(tmp_path)).version == 1
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == [
        "version_0",
        "version_1",
    ]


def test_two_lengen_fit_runs_started_together_use_two_folders(tmp_path):
    args = [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.max_steps", "2",
        "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--model.n_layer", "1",
        "--model.d_model", "16",
        "--data.init_args.train_max_length", "6",
        "--data.init_args.eval_lengths", "[4]",
        "--data.init_args.batch_size", "4",
        "--data.init_args.val_examples_per_length", "2",
        "--data.init_args.test_examples_per_length", "2",
    ]  # fmt: skip
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [script, "fit", *args, "--data.init_args.cache_dir", str(tmp_path / f"cache{n}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for n in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    folders = sorted((tmp_path / "runs" / "lightning_logs").iterdir())
    assert [folder.name for folder in folders] == ["version_0", "version_1"]
    for folder in folders:  # one event file, one config and the final checkpoint each
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        assert (folder / "config.yaml").exists()
        assert [p.name for p in (folder / "checkpoints").iterdir()] == ["final-step=2.ckpt"]
