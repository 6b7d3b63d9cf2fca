"""A smoke of benchmarks/gpu.py on CPU (`--device cpu`); the real run needs a CUDA GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_runs_on_cpu_and_writes_its_table(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS_GPU.md"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu"]
    command += ["--sections", "backends", "--encodings", "NoPE", "RoPE", "--no-peers"]
    command += ["--lengths", "32", "--tokens", "64", "--d-model", "16", "--n-layer", "1"]
    command += ["--n-head", "2", "--repeats", "1", "--calls", "1", "--warmup", "1"]
    command += ["--output", str(output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = output.read_text()
    assert "### T = 32, batch 2" in text
    assert "| RoPE | lengen sdpa |" in text and "| NoPE | lengen reference |" in text


def test_gpu_benchmark_without_a_gpu_says_so() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=120,
    )
    assert result.returncode == 1 and "needs a CUDA GPU" in result.stderr
