"""The Python API (lengen/api.py): a cheap `import lengen`, train and evaluate with outputs in the
trainer's log dir (never the current directory by accident), generation against a plain greedy
loop, and the runnable examples at tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

import lengen
from lengen.task import BOS, EOS, SEP, SPECIAL_TOKENS

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = dict(
    train_max_length=4,
    eval_lengths=[2, 4, 8],
    batch_size=8,
    val_examples_per_length=4,
    test_examples_per_length=8,
)


def test_import_lengen_is_cheap():
    code = (
        "import sys, lengen; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
    assert set(lengen.__all__) >= {"build_model", "train", "evaluate", "generate", "Results"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    cwd = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(cwd)  # anything written "by accident" would land here
    try:
        torch.manual_seed(0)
        model = lengen.build_model(
            "ALiBi", task="Copy", metrics=["ExactMatch", "TokenAccuracy"],
            n_layer=1, d_model=32, warmup_steps=2,
        )  # fmt: skip
        data = lengen.task_data("Copy", cache_dir=str(root / "cache"), **TINY_DATA)
        trainer = lengen.trainer(
            root / "runs", max_steps=6, accelerator="cpu", enable_progress_bar=False
        )
        lengen.train(model, data, trainer)
        results = lengen.evaluate(model, data, trainer)
    finally:
        os.chdir(before)
    return model, data, results, root, cwd


def test_evaluate_returns_the_results_written_to_the_log_dir(trained):
    model, data, results, root, cwd = trained
    assert list(cwd.iterdir()) == []  # nothing in the current directory
    assert results.out_dir.is_relative_to(root / "runs" / "lightning_logs")
    written = json.loads((results.out_dir / "results.json").read_text())["metrics"]
    expected = {
        name: {int(length): value for length, value in per_length.items()}
        for name, per_length in written.items()
    }
    assert results.metrics.keys() == expected.keys()
    for name, per_length in expected.items():  # logged scalars are float32, the file float64
        assert results.metrics[name] == pytest.approx(per_length, rel=1e-6)
    assert set(results.metrics) == {"exact_match", "token_accuracy"}
    assert set(results.metrics["token_accuracy"]) == {2, 4, 8}
    assert "8*" in results.table()
    assert results.to_dict()["metrics"] == results.metrics
    assert results.figure().axes[0].get_xlabel() == "length"
    assert list((results.out_dir / "checkpoints").glob("*.ckpt"))  # fit and test share the folder


def test_building_a_model_warns_nothing():
    """`build_model` (and LengenModule) keep the encoding in the hyperparameters on purpose,
    without Lightning's warning about it: every warning is recorded here, none filtered."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lengen.build_model("RoPE", task="Copy", n_layer=1, d_model=16, n_head=2)
    assert [str(w.message) for w in caught] == []


def test_a_trainer_that_would_write_into_the_current_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = lengen.build_model("NoPE", task="Copy", n_layer=1, d_model=32)
    data = lengen.task_data("Copy", cache_dir=str(tmp_path / "cache"), **TINY_DATA)
    trainer = Trainer(logger=False, max_steps=1, enable_progress_bar=False)
    with pytest.raises(ValueError, match="current directory"):
        lengen.train(model, data, trainer)
    with pytest.raises(ValueError, match="current directory"):
        lengen.evaluate(model, data, trainer)
    assert list(tmp_path.iterdir()) == []


def reference_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """A plain loop: the whole sequence through the model, argmax of the last position."""
    tokens = list(prompt_ids)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([tokens]))  # (1, T, V)
        next_token = int(logits[0, -1].argmax())
        if next_token == EOS:
            break
        tokens.append(next_token)
    return tokens[len(prompt_ids) :]


def test_generate_matches_a_plain_greedy_loop(trained):
    model, data, _, _, _ = trained
    task = data.task
    symbols = [task.symbols[i] for i in (3, 1, 4, 1, 5)]
    model.eval()
    with torch.no_grad():
        expected = reference_greedy(model, [BOS, *task.encode(symbols), SEP], 12)
    for use_cache in (True, False):
        got = lengen.generate(
            model, " ".join(symbols), task, max_new_tokens=12, use_cache=use_cache
        )
        assert got == " ".join(task.decode(expected))
    with pytest.raises(ValueError, match="vocabulary"):
        lengen.generate(model, "not-a-symbol", task)


def test_generate_reads_and_writes_a_text_task_as_text():
    """Byte tasks: the prompt string is UTF-8 text and the answer is text (a special token by
    its name); against the ids of the prompt's UTF-8 bytes run through the plain loop (an
    untrained model, fresh weights)."""
    from lengen_plugins.tasks.passkey import Passkey

    task = Passkey()
    model = lengen.build_model("NoPE", task=task, n_layer=1, d_model=32)
    model.eval()
    prompt = "The pass key is 4821. Où est-il? "
    prompt_ids = [BOS, *(len(SPECIAL_TOKENS) + byte for byte in prompt.encode("utf-8")), SEP]
    with torch.no_grad():
        expected_ids = reference_greedy(model, prompt_ids, 10)
    expected, run = "", b""
    for token_id in expected_ids:
        if token_id < len(SPECIAL_TOKENS):
            expected += run.decode("utf-8", errors="replace") + SPECIAL_TOKENS[token_id]
            run = b""
        else:
            run += bytes([token_id - len(SPECIAL_TOKENS)])
    expected += run.decode("utf-8", errors="replace")
    assert lengen.generate(model, prompt, task=task, max_new_tokens=10) == expected


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "examples").glob("*.py")))
def test_examples_run_at_tiny_size(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LENGEN_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), "--tiny", "--root_dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("lightning_logs/version_*/results.json"))
