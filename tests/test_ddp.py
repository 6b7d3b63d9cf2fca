"""Every subcommand under DDP with 2 CPU processes (gloo), through the `lengen` command.

Evaluation is sharded over the ranks, and what a DDP run reports (results.json, logged scalars,
predictions.jsonl) equals what one process reports on the same checkpoint: counts and exact match
exactly, means to 1e-6. The evaluation sets are cut so that the shards are uneven, each rank misses
some length bucket, and (validate) one rank gets no batch at all. Every run has a timeout, so a
hang (a collective called on one rank only) fails the test instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from ddp_worker import collectives
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lengen.cli import main
from lengen.data.tasks import ShardedBatches, TaskDataModule, batches_by_length
from lengen.distributed import compute_on_every_rank
from lengen.metric import BatchWeightedMean
from lengen.tb_logging import length_tag
from lengen_plugins.tasks.copy import Copy

pytestmark = pytest.mark.filterwarnings("ignore:.*args parameter is intended")  # main(args)

TESTS = Path(__file__).resolve().parent
TIMEOUT = 180  # seconds for one `lengen` run; a hang fails here
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]

# Test set: 5 examples at each of the lengths 2, 4, 6 in batches of 5 = 3 batches, one per length:
# rank 0 takes lengths 2 and 6, rank 1 length 4 (uneven shards; each rank misses buckets).
TASK_CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_steps: 4
  val_check_interval: 2
  check_val_every_n_epoch: null
  num_sanity_val_steps: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: ddp_helpers.RecordBatches
      init_args: {directory: batches}
model:
  pos_encoding: ALiBi
  n_layer: 1
  n_head: 2
  d_model: 16
  lr: 0.01
  warmup_steps: 1
  metrics:
    - ExactMatch
    - TokenAccuracy
    - class_path: ddp_helpers.ExampleCount
data:
  class_path: TaskDataModule
  init_args:
    task: Copy
    train_min_length: 1
    train_max_length: 4
    eval_lengths: [2, 4, 6]
    batch_size: 8
    eval_batch_size: 5
    val_examples_per_length: 3
    test_examples_per_length: 5
    cache_dir: cache
"""

# 1201 tokens, 240 held out: the test half (120 tokens) gives 7 windows of 16 + 1 and 3 of 32 + 1,
# in batches of 2: 4 + 2 = 6 batches, 3 a rank.
TEXT_CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_steps: 3
  limit_val_batches: 0
  num_sanity_val_steps: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: ddp_helpers.RecordBatches
      init_args: {directory: batches}
model:
  pos_encoding: RoPE
  n_layer: 1
  n_head: 2
  d_model: 16
  warmup_steps: 1
  metrics:
    - Perplexity
    - PositionLoss
    - class_path: ddp_helpers.ExampleCount
data:
  class_path: TextDataModule
  init_args:
    files: [corpus.txt]
    cache_dir: cache
    n_ctx: 16
    batch_size: 4
    eval_batch_size: 2
    eval_multiples: [1, 2]
    val_fraction: 0.2
"""


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    env.pop("MASTER_PORT", None)  # each DDP run picks a free port
    result = subprocess.run(
        [script, *args], capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT, env=env
    )
    assert result.returncode == 0, (args, result.stderr[-3000:])
    return result


def scalars(log_dir: Path) -> dict[str, float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


def logged_test_scalars(fit_dir: Path) -> dict[str, list[float]]:
    """{tag: values} of the test scalars that `lengen test` added to the training run's folder."""
    events = EventAccumulator(str(fit_dir))
    events.Reload()
    return {
        tag: [event.value for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag.startswith("test/")
    }


def assert_two_equal_test_runs(fit_dir: Path) -> None:
    """The DDP and the one-process test each logged every test scalar once, with equal values."""
    logged = logged_test_scalars(fit_dir)
    assert logged
    for tag, values in logged.items():
        assert len(values) == 2, tag
        assert values[0] == pytest.approx(values[1], rel=1e-6, abs=1e-6), tag


def version(root: Path, run: str) -> Path:
    (log_dir,) = (root / run / "lightning_logs").iterdir()  # one run, one version folder
    return log_dir


def results(log_dir: Path) -> dict[str, dict[str, float]]:
    return json.loads((log_dir / "results.json").read_text())["metrics"]


def assert_same_metrics(ddp: dict, single: dict, exact: tuple[str, ...]) -> None:
    """Per-length values of two results.json: `exact` metrics equal, the others to 1e-6."""
    assert ddp.keys() == single.keys()
    for name in single:
        assert ddp[name].keys() == single[name].keys(), name
        for length, want in single[name].items():
            if name in exact:
                assert ddp[name][length] == want, (name, length)
            else:
                assert ddp[name][length] == pytest.approx(want, rel=1e-6, abs=1e-6), (name, length)


def assert_same_scalars(ddp: dict[str, float], single: dict[str, float], prefix: str) -> None:
    tags = sorted(tag for tag in single if tag.startswith(prefix))
    assert tags and tags == sorted(tag for tag in ddp if tag.startswith(prefix))
    for tag in tags:
        assert ddp[tag] == pytest.approx(single[tag], rel=1e-6, abs=1e-6), tag


def assert_ranks_trained_apart_and_logged_global_losses(root: Path) -> list[list]:
    """Each rank's training batches differ from the other's, and the logged train/loss of step s
    is the mean of the two ranks' own losses. Returns both ranks' batches."""
    ranks = [json.loads((root / "batches" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) > 0
    assert all(a != b for a, b in zip(ranks[0]["batches"], ranks[1]["batches"]))
    events = EventAccumulator(str(version(root, "fit")))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("train/loss")}
    assert sorted(logged) == list(range(len(ranks[0]["losses"])))
    for step, value in logged.items():
        own = [rank["losses"][step] for rank in ranks]
        assert own[0] != own[1]  # else the check below could not tell local from global
        assert value == pytest.approx((own[0] + own[1]) / 2, rel=1e-6), step
    return [rank["batches"] for rank in ranks]


def only_rank_zero_printed(result: subprocess.CompletedProcess, marker: str) -> bool:
    """Both ranks print to the same streams (rank 1 says so); a rank-0-only line appears once."""
    assert "GLOBAL_RANK: 1" in result.stdout + result.stderr  # rank 1's output does arrive here
    return result.stdout.count(marker) == 1


# ----------------------------------------------------------------------------- task path


@pytest.fixture(scope="module")
def task_run(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("ddp_task")
    (root / "config.yaml").write_text(TASK_CONFIG)
    fit = lengen(
        "fit", "--config", "config.yaml", *DDP, "--trainer.default_root_dir", "fit", cwd=root
    )
    (checkpoint,) = (version(root, "fit") / "checkpoints").glob("*.ckpt")
    return SimpleNamespace(root=root, fit=fit, checkpoint=str(checkpoint))


def run(
    fitted, subcommand: str, name: str, *extra: str
) -> tuple[Path, subprocess.CompletedProcess]:
    """`lengen <subcommand>` under DDP on the fitted checkpoint into `<root>/<name>`: (log dir,
    the finished process)."""
    args = ["--config", "config.yaml", "--trainer.default_root_dir", name, *DDP, *extra]
    result = lengen(subcommand, *args, "--ckpt_path", fitted.checkpoint, cwd=fitted.root)
    return version(fitted.root, name), result


def run_one_process(fitted, subcommand: str, name: str, *extra: str) -> Path:
    """The same with one process, in this one (cheaper than starting a `lengen` process)."""
    args = ["--config", "config.yaml", "--trainer.default_root_dir", name, *extra]
    with contextlib.chdir(fitted.root):
        main([subcommand, *args, "--ckpt_path", fitted.checkpoint])
    return version(fitted.root, name)


def test_task_fit_under_ddp_validates_and_trains_each_rank_on_its_own_stream(task_run):
    logged = scalars(version(task_run.root, "fit"))
    assert "train/loss" in logged and "val/loss" in logged
    # 3 validation examples per length, each counted once over both ranks (2 batches + 1).
    assert {tag: logged[tag] for tag in logged if tag.startswith("val/example_count")} == {
        length_tag("val", "example_count", length): 3.0 for length in (2, 4, 6)
    }
    assert_ranks_trained_apart_and_logged_global_losses(task_run.root)


def test_task_test_under_ddp_equals_one_process(task_run):
    ddp_dir, ddp_out = run(task_run, "test", "test_ddp")
    one_dir = run_one_process(task_run, "test", "test_one")
    ddp, single = results(ddp_dir), results(one_dir)
    assert single["example_count"] == {"2": 5.0, "4": 5.0, "6": 5.0}  # every example once
    assert_same_metrics(ddp, single, exact=("example_count", "exact_match"))
    # Global logged values: both tests log into the training run's folder at its step.
    assert_two_equal_test_runs(version(task_run.root, "fit"))
    # Rank 0 alone wrote the outputs and printed the table.
    assert sorted(path.name for path in ddp_dir.iterdir() if path.suffix in (".json", ".png")) == [
        "metrics_vs_length.png",
        "results.json",
    ]
    assert only_rank_zero_printed(ddp_out, "results: ")
    assert only_rank_zero_printed(ddp_out, "  length ")


def test_task_predict_under_ddp_writes_every_example_once_in_order(task_run):
    ddp_dir, ddp_out = run(task_run, "predict", "predict_ddp")
    one_dir = run_one_process(task_run, "predict", "predict_one")
    ddp = (ddp_dir / "predictions.jsonl").read_text().splitlines()
    single = (one_dir / "predictions.jsonl").read_text().splitlines()
    assert len(single) == 15
    assert ddp == single
    assert only_rank_zero_printed(ddp_out, "predictions: ")


def test_task_validate_with_a_rank_without_batches(task_run):
    # One length, 3 examples, batches of 5: a single batch, so rank 1 evaluates nothing.
    extra = ["--data.init_args.eval_lengths", "[4]"]
    ddp_dir, _ = run(task_run, "validate", "validate_ddp", *extra)
    one_dir = run_one_process(task_run, "validate", "validate_one", *extra)
    ddp, single = scalars(ddp_dir), scalars(one_dir)
    assert ddp[length_tag("val", "example_count", 4)] == 3.0
    assert_same_scalars(ddp, single, "val/")


# ----------------------------------------------------------------------------- language-model path


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("ddp_text")
    rng = random.Random(1234)
    (root / "corpus.txt").write_text("".join(rng.choice("abcdefgh \n") for _ in range(1200)))
    (root / "config.yaml").write_text(TEXT_CONFIG)
    fit = lengen(
        "fit", "--config", "config.yaml", *DDP, "--trainer.default_root_dir", "fit", cwd=root
    )
    (checkpoint,) = (version(root, "fit") / "checkpoints").glob("*.ckpt")
    return SimpleNamespace(root=root, fit=fit, checkpoint=str(checkpoint))


def test_text_fit_under_ddp_trains_the_ranks_on_disjoint_windows(text_run):
    rank0, rank1 = assert_ranks_trained_apart_and_logged_global_losses(text_run.root)
    windows = [{tuple(row) for batch in rank for row in batch} for rank in (rank0, rank1)]
    assert len(windows[0]) == len(windows[1]) == 3 * 4  # 3 steps of 4 distinct windows
    assert not windows[0] & windows[1]


def test_text_test_and_validate_under_ddp_equal_one_process(text_run):
    ddp_dir, ddp_out = run(text_run, "test", "test_ddp")
    one_dir = run_one_process(text_run, "test", "test_one")
    ddp, single = results(ddp_dir), results(one_dir)
    assert single["example_count"] == {"16": 7.0, "32": 3.0}
    assert_same_metrics(ddp, single, exact=("example_count",))
    assert_two_equal_test_runs(version(text_run.root, "fit"))
    assert only_rank_zero_printed(ddp_out, "results: ")
    every_batch = ["--trainer.limit_val_batches", "1.0"]
    ddp_dir, _ = run(text_run, "validate", "validate_ddp", *every_batch)
    one_dir = run_one_process(text_run, "validate", "validate_one", *every_batch)
    ddp = scalars(ddp_dir)
    assert ddp[length_tag("val", "example_count", 16)] == 7.0  # the val half holds 120 tokens too
    assert_same_scalars(ddp, scalars(one_dir), "val/")


# ----------------------------------------------------------------------------- the pieces


def test_sharded_batches_deal_every_batch_to_exactly_one_rank():
    items = list(range(23))
    batches = batches_by_length(
        [item % 3 for item in items], batch_size=4
    )  # 6 batches of 4, 4, 4, 4, 4, 3
    for world_size in (1, 2, 3, 8):
        shards = [
            list(ShardedBatches(items, batches, list, r, world_size)) for r in range(world_size)
        ]
        assert sorted(sum(shards, [])) == sorted(batches)
        lengths = {
            len(ShardedBatches(items, batches, list, r, world_size)) for r in range(world_size)
        }
        assert lengths == {math.ceil(len(batches) / world_size)}  # the same on every rank
        assert max(len(shard) for shard in shards) == lengths.pop()
    assert list(ShardedBatches(items, batches, list, 7, 8)) == []  # a rank without batches


def test_evaluation_loss_is_the_row_weighted_mean_and_keeps_nan():
    losses, rows = torch.rand(5, dtype=torch.float64) * 3, [4, 4, 4, 1, 2]
    metric = BatchWeightedMean()
    for loss, n in zip(losses, rows):
        metric.update(loss.float(), n)
    mean, count = metric.compute().tolist()
    reference = sum(float(loss.float()) * n for loss, n in zip(losses, rows)) / sum(rows)
    assert count == 15 and mean == pytest.approx(reference, rel=1e-12)
    metric.update(torch.tensor(float("nan")), 3)  # a diverged model: NaN, not dropped
    assert math.isnan(metric.compute()[0])
    assert (
        compute_on_every_rank(BatchWeightedMean())[1] == 0
    )  # no batch: zero rows, nothing is logged


def test_training_stream_is_drawn_per_rank():
    data = TaskDataModule(Copy(), train_min_length=1, train_max_length=8, batch_size=4)
    streams = []
    for rank in (0, 1):
        data.trainer = SimpleNamespace(
            global_step=0, accumulate_grad_batches=1, global_rank=rank, world_size=2
        )
        streams.append(next(iter(data.train_dataloader())).input_ids)
    assert not torch.equal(streams[0], streams[1])


def test_metrics_and_gathering_with_uneven_ranks(tmp_path):
    """Two gloo processes: a bucket one rank never saw, a metric no rank updated, and uneven
    prediction batches; nothing hangs (the join has a timeout) and every value is global."""
    port = random.Random().randint(20000, 60000)
    context = mp.start_processes(
        collectives, args=(port, str(tmp_path / "out")), nprocs=2, join=False
    )
    for _ in range(60):  # seconds
        if context.join(timeout=1):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("the collectives hung")
    for rank in (0, 1):
        out = torch.load(tmp_path / f"out{rank}.pt")
        assert out["values"][2] == pytest.approx(2 / 3) and out["values"][3] == 1.0
        assert out["values"][[0, 1, 4, 5, 6, 7, 8]].isnan().all()
        assert out["empty"].isnan().all()
        assert out["gathered"] == ["r0b0", "r1b0", "r0b1", "r1b1", "r0b2"]
