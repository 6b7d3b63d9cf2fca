#!/usr/bin/env python3
"""Soak test of crash recovery (not run in CI): kill -9 a training run at random moments, resume
it each time with `lengen fit --ckpt_path last`, and check the outcome against an uninterrupted
run of the same config.

    nice -n 10 env OMP_NUM_THREADS=1 python scripts/soak.py --steps 2000 --every 100 \
        --cycles 6 --out runs/soak

Checks at the end, failing with exit 1 if any does not hold:
- every optimizer step 0..steps-1 has a logged train/loss (no log line lost), and every logged
  value, in every version folder (killed runs included), equals the uninterrupted run's bit for bit;
- every checkpoint step=k.ckpt the uninterrupted run wrote exists in some version folder (no
  checkpoint lost), is readable, and holds exactly the uninterrupted run's weights.
The model has dropout, so the random state must be restored too, and validates every
`--val_every` steps, so validation falls between checkpoints and training steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def fit_args(options, root: Path) -> list[str]:
    return [
        "fit",
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root),
        "--trainer.max_steps", str(options.steps),
        "--trainer.val_check_interval", str(options.val_every),
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--checkpoint_every_n_steps", str(options.every),
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--model.dropout", "0.1",
        "--data.init_args.train_max_length", "8",
        "--data.init_args.eval_lengths", "[4, 8]",
        "--data.init_args.batch_size", "16",
        "--data.init_args.val_examples_per_length", "8",
        "--data.init_args.cache_dir", str(root.parent / "cache"),
    ]  # fmt: skip


def lengen_command() -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "lengen")]


def logged_losses(root: Path) -> dict[int, list[float]]:
    """step -> every train/loss value logged for it, over all version folders below root."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[int, list[float]] = defaultdict(list)
    for folder in sorted((root / "lightning_logs").iterdir()):
        events = EventAccumulator(str(folder))
        events.Reload()
        if "train/loss" in events.Tags()["scalars"]:
            for event in events.Scalars("train/loss"):
                values[event.step].append(event.value)
    return values


def checkpoints_by_name(root: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = defaultdict(list)
    for path in root.rglob("*.ckpt"):
        found[path.name].append(path)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="checkpoint every N steps")
    parser.add_argument("--val_every", type=int, default=150, help="validate every N steps")
    parser.add_argument("--cycles", type=int, default=6, help="kill -9 / resume cycles")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--out", type=Path, default=Path("runs/soak"))
    options = parser.parse_args()
    if options.out.exists():
        print(f"soak: {options.out} exists; choose a new --out", file=sys.stderr)
        return 2
    options.out.mkdir(parents=True)
    began = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    reference, soaked = options.out / "reference", options.out / "soak"
    log = open(options.out / "soak.log", "w")

    start = time.time()
    subprocess.run([*lengen_command(), *fit_args(options, reference)], check=True, env=env,
                   stdout=log, stderr=log)  # fmt: skip
    reference_seconds = time.time() - start
    print(f"soak: uninterrupted run: {options.steps} steps in {reference_seconds:.0f} s")
    # Start-up and training time, from when the first and last checkpoints were written, so the
    # kills spread over the whole run (each killed run trains for a random part of its share).
    written = {p.name: p.stat().st_mtime - start for p in reference.rglob("step=*.ckpt")}
    first, last = written[f"step={options.every}.ckpt"], max(written.values())
    step_seconds = (last - first) / max(1, options.steps - options.every)
    startup = first - options.every * step_seconds
    newest = 0

    rng = random.Random(options.seed)
    kills, attempts = [], 0
    while True:
        attempts += 1
        # Killed before its first checkpoint: start afresh (`--ckpt_path last` would refuse).
        resume = ["--ckpt_path", "last"] if list(soaked.rglob("*.ckpt")) else []
        process = subprocess.Popen(
            [*lengen_command(), *fit_args(options, soaked), *resume], env=env, stdout=log,
            stderr=log,
        )  # fmt: skip
        if len(kills) >= options.cycles:
            process.wait()
            if process.returncode != 0:
                print(f"soak: the final run failed with {process.returncode}", file=sys.stderr)
                return 1
            break
        # Each killed run trains on average for 1/(cycles left + 1) of what remains.
        remaining = (options.steps - newest) * step_seconds
        delay = startup + rng.uniform(0.0, 2 * remaining / (options.cycles - len(kills) + 1))
        try:
            process.wait(timeout=delay)  # finished before the kill: the run is complete
            if process.returncode != 0:
                print(f"soak: a run failed with {process.returncode}", file=sys.stderr)
                return 1
            break
        except subprocess.TimeoutExpired:
            process.kill()  # SIGKILL
            process.wait()
            names = [p.name for p in soaked.rglob("*.ckpt")]
            newest = max(
                (int(n.split("=")[1].split(".")[0]) for n in names if n.startswith("step=")),
                default=0,
            )
            kills.append({"after_seconds": round(delay, 1), "newest_checkpoint_step": newest})
            log.flush()
            print(f"soak: kill -9 after {delay:.1f} s; newest checkpoint: step {newest}")

    problems = []
    want = {step: values[0] for step, values in logged_losses(reference).items()}
    got = logged_losses(soaked)
    missing = sorted(set(range(options.steps)) - set(got))
    if missing:
        problems.append(f"no logged loss for steps {missing[:10]} ({len(missing)} in all)")
    wrong = sorted(step for step, values in got.items() if any(v != want[step] for v in values))
    if wrong:
        problems.append(f"losses differ from the uninterrupted run at steps {wrong[:10]}")
    import torch

    wanted = checkpoints_by_name(reference)
    found = checkpoints_by_name(soaked)
    compared = 0
    for name, (reference_path,) in sorted(wanted.items()):
        if not name.startswith("step="):
            continue
        if name not in found:
            problems.append(f"checkpoint {name} lost")
            continue
        want_state = torch.load(reference_path, weights_only=False)["state_dict"]
        for path in found[name]:
            state = torch.load(path, weights_only=False)["state_dict"]
            if not all(torch.equal(state[k], want_state[k]) for k in want_state):
                problems.append(f"{path} differs from the uninterrupted run's {name}")
            compared += 1
    result = {
        "steps": options.steps,
        "checkpoint_every": options.every,
        "kills": kills,
        "runs": attempts,
        "logged_steps_checked": len(got),
        "logged_values_checked": sum(len(v) for v in got.values()),
        "checkpoints_compared": compared,
        "problems": problems,
        "outcome": "pass" if not problems else "FAIL",
        "reference_seconds": round(reference_seconds),
        "total_seconds": round(time.time() - began),
        "command": " ".join(sys.argv),
    }
    (options.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "kills"}, indent=2))
    shutil.rmtree(options.out / "cache", ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
