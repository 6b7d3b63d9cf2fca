"""scripts/context_extension.sh end to end at toy size: 2-step bases, every method tested."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "context_extension.sh"
# The row label of each method in `lengen report` / `lengen heatmap` (the encoding's class).
LABELS = [
    "RoPE",
    "RoPELinear",
    "RoPENTK",
    "YaRN",
    "SelfExtend",
    "ReRoPE",
    "DualChunkAttention",
    "AttentionSinks",
]


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "RUNS": str(tmp_path / "runs"),
        "OUT": str(tmp_path / "out"),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=600
    )


def table_rows(report: Path) -> dict[str, list[str]]:
    """The first markdown table of `report`: label -> its cells after the label."""
    rows = {}
    for line in report.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("group", "location") and len(cells) > 2:
            rows.setdefault(cells[0], cells[1:])
        elif rows:
            break
    return rows


def test_toy_run_reports_every_method(tmp_path):
    result = run_script(
        tmp_path,
        PASSKEY_STEPS="2",
        LM_STEPS="2",
        PASSKEY_LENGTHS="[128, 192]",
        PASSKEY_EXAMPLES="2",
        LM_EVAL_TOKENS="1024",
        EXTRA_SCALES="",
        LOCATIONS="end",
        JOBS="2",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = tmp_path / "out"
    perplexity = table_rows(out / "perplexity" / "report.md")
    passkey = table_rows(out / "passkey" / "report.md")
    assert sorted(perplexity) == sorted(LABELS)
    assert sorted(passkey) == sorted(LABELS)
    for label, cells in perplexity.items():  # seeds, then one perplexity per length (64..512)
        values = [float(cell.split()[0]) for cell in cells[1:5]]
        assert all(math.isfinite(v) and v > 1 for v in values), (label, cells)
    heatmap = (out / "heatmap" / "heatmap.md").read_text()
    for label in LABELS:
        assert f"pos_encoding={label} end" in heatmap


def test_unknown_method_is_refused_before_training(tmp_path):
    result = run_script(tmp_path, METHODS="rope longlora")
    assert result.returncode == 2
    assert "unknown method 'longlora'" in result.stderr
    assert "accepted: rope pi ntk yarn self_extend rerope dca sinks" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_part_is_refused(tmp_path):
    result = run_script(tmp_path, PARTS="lm ppl")
    assert result.returncode == 2
    assert "PARTS has 'ppl'; accepted: lm, passkey" in result.stderr
