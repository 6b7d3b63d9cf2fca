"""A smoke of the benchmark harness at its smallest settings (the real run: benchmarks/run.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("transformers", reason="the bench extra is not installed")
pytest.importorskip("x_transformers", reason="the bench extra is not installed")


def test_benchmark_quick_run_writes_every_section(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    command = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"]
    command += ["--sections", "training,eval,generation,data,rope", "--output", str(output)]
    command += ["--encodings", "NoPE", "RoPE", "Learned"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = output.read_text()
    for heading in ("## Training step", "## Evaluation forward", "## Greedy generation"):
        assert heading in text
    assert "| lengen RoPE |" in text and "transformers Llama" in text
    assert "x-transformers RoPE" in text and "transformers GPT-2" in text
    assert "% of it." in text  # the data share of a quickstart step
    assert "| RoPE T=16 |" in text and "| XPos T=16 |" in text  # rotary tables once vs per layer
    assert "Load average" in text and "torch 2.13" in text
