"""The how-to docs/howto/extend-pretrained.md runs end to end: examples/extend_pretrained.py --tiny
(a tiny random Llama: import, evaluate at 1x-8x, fine-tune with PI and YaRN, evaluate, export).
Extra: parity (`transformers`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "extend_pretrained.py"
L0 = 128  # the tiny checkpoint's pretrained length (max_position_embeddings)


def results(root: Path) -> dict[str, dict]:
    """{metric name: results.json} of the test runs in `root`/lightning_logs."""
    found = {}
    for path in root.glob("lightning_logs/version_*/results.json"):
        loaded = json.loads(path.read_text())
        for metric in loaded["metrics"]:
            found[metric] = loaded
    return found


def test_extend_pretrained_howto_runs(tmp_path):
    out = tmp_path / "extend"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LENGEN_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--root_dir", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    lengths = {str(multiple * L0) for multiple in (1, 2, 4, 8)}
    expected_encoding = {".": "RoPE", "pi": "RoPELinear", "yarn": "YaRN"}
    for name, encoding in expected_encoding.items():
        found = results(out / name)
        assert set(found) == {"perplexity", "presence_accuracy"}, name
        for metric, loaded in found.items():
            assert loaded["pos_encoding"] == encoding
            assert set(loaded["metrics"][metric]) == lengths
        assert all(value > 1 for value in found["perplexity"]["metrics"]["perplexity"].values())
    # The base model was evaluated under its own rope, chosen on import with no encoding given.
    assert "replaces it" in run.stdout  # the fine-tuning runs' encodings replaced it, in one line

    from transformers import AutoModelForCausalLM, AutoTokenizer

    rope_types = {"pi": ("linear", 4.0), "yarn": ("yarn", 4.0)}
    for name, (rope_type, factor) in rope_types.items():
        folder = out / f"export-{name}"
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            path.name for path in folder.iterdir()
        }
        model = AutoModelForCausalLM.from_pretrained(folder)
        rope = model.config.rope_parameters
        assert (rope["rope_type"], rope["factor"]) == (rope_type, factor)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer("The pass key is", return_tensors="pt")["input_ids"]
        assert ids.tolist()[0] == list(b"The pass key is")  # the byte-level tokenizer
        generated = model.generate(ids, max_new_tokens=4, do_sample=False)
        assert generated.shape == (1, ids.shape[1] + 4)
