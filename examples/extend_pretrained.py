"""Extend the context of a pretrained model, end to end (docs/howto/extend-pretrained.md).

    python examples/extend_pretrained.py --tiny --root_dir runs/extend   # what CI runs
    python examples/extend_pretrained.py --root_dir runs/extend          # a larger tiny model

A tiny random Llama (byte-level tokenizer, pretrained length L0) stands in for a real checkpoint:
1. import it and evaluate at 1x-8x L0 (perplexity vs length; passkey retrieval);
2. fine-tune it at 4x L0 with Position Interpolation (RoPELinear) and with YaRN;
3. evaluate both fine-tuned models at 1x-8x L0;
4. export the fine-tuned models as transformers folders and load them back.
Every step is a `lengen` command, printed before it runs. Outputs go under --root_dir: the
checkpoint in pretrained/; the runs (each evaluation with its results.json) in lightning_logs/
(the imported model), pi/ and yarn/ (fine-tuned); the exported folders export-pi/, export-yarn/.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch


def make_pretrained(folder: Path, original_length: int, d_model: int) -> None:
    """A random LlamaForCausalLM (RoPE base 10000, grouped-query attention) with the byte-level
    tokenizer `lengen export` writes: the stand-in for a downloaded checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from lengen.export import byte_tokenizer

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=original_length,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)


def lengen(*args: str) -> None:
    """Run `lengen ARGS`, printing the command first. In this process (what the console script
    runs), so the libraries are imported once; a failed command exits with its status."""
    from lengen.launcher import main as lengen_main

    print("$ lengen " + shlex.join(args), flush=True)
    argv, sys.argv = sys.argv, ["lengen", *args]
    try:
        lengen_main()
    finally:
        sys.argv = argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the smallest sizes (CI)")
    parser.add_argument("--root_dir", default="runs/extend", help="output folder")
    args = parser.parse_args()
    out = Path(args.root_dir)
    if (out / "pretrained").exists():
        parser.error(f"{out} holds an earlier run (pretrained/); give a new --root_dir")

    # L0, model width, fine-tuning steps, evaluation tokens per length, passkeys per length
    L0, d_model, steps, eval_tokens, passkeys = (
        (128, 32, 4, 2048, 2) if args.tiny else (256, 128, 200, 16384, 20)
    )
    pretrained = str(out / "pretrained")
    make_pretrained(Path(pretrained), L0, d_model)

    cpu = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    text = [
        "--data", "TextDataModule", "--data.init_args.tokenizer", pretrained,
        "--data.init_args.cache_dir", str(out / "cache"),
        "--data.init_args.eval_tokens", str(eval_tokens),
    ]  # fmt: skip
    at_1x_to_8x = [
        "--data.init_args.n_ctx", str(L0), "--data.init_args.eval_multiples", "[1, 2, 4, 8]",
        "--model.metrics", "[Perplexity]",
    ]  # fmt: skip
    passkey = [
        "--data", "TaskDataModule", "--data.init_args.task", "Passkey",
        "--data.init_args.tokenizer", pretrained, "--data.init_args.cache_dir", str(out / "cache"),
        "--data.init_args.train_min_length", str(L0), "--data.init_args.train_max_length", str(L0),
        "--data.init_args.eval_lengths", str([L0, 2 * L0, 4 * L0, 8 * L0]),
        "--data.init_args.test_examples_per_length", str(passkeys),
        "--model.metrics", "[PresenceAccuracy]",
    ]  # fmt: skip

    # 1. The pretrained model as it is: its own rope (here plain RoPE) is chosen on import.
    base = ["--model.hf_checkpoint", pretrained, "--trainer.default_root_dir", str(out)]
    lengen("test", *base, *text, *at_1x_to_8x, *cpu)
    lengen("test", *base, *passkey, *cpu)

    # 2. Fine-tune at 4 x L0 under a context-extension encoding (the weights come from the
    #    checkpoint; the encoding given here replaces its own rope, as one line says).
    extensions = {
        "pi": ["--model.pos_encoding", "RoPELinear", "--model.pos_encoding.init_args.scale", "4"],
        "yarn": [
            "--model.pos_encoding", "YaRN", "--model.pos_encoding.init_args.scale", "4",
            "--model.pos_encoding.init_args.original_max_length", str(L0),
        ],
    }  # fmt: skip
    for name, encoding in extensions.items():
        root = ["--trainer.default_root_dir", str(out / name)]
        lengen(
            "fit", "--model.hf_checkpoint", pretrained, *encoding, *root, *text,
            "--data.init_args.n_ctx", str(4 * L0), "--data.init_args.eval_multiples", "[1]",
            "--data.init_args.batch_size", "2",
            "--model.lr", "1e-4", "--model.warmup_steps", "0", "--model.metrics", "[Perplexity]",
            "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0", *cpu,
        )  # fmt: skip
        # 3. The fine-tuned model at 1x-8x L0 (perplexity), then passkey retrieval.
        lengen("test", "--ckpt_path", "last", *root, *text, *at_1x_to_8x, *cpu)
        lengen("test", "--ckpt_path", "last", *root, *passkey, *cpu)

        # 4. Export: a transformers folder (config, safetensors, the byte-level tokenizer).
        checkpoint = max((out / name).rglob("*.ckpt"), key=os.path.getmtime)
        lengen("export", "--ckpt_path", str(checkpoint), "--out", str(out / f"export-{name}"))

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    for name in extensions:
        folder = out / f"export-{name}"
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer("The pass key is", return_tensors="pt")["input_ids"]
        generated = model.generate(ids, max_new_tokens=8, do_sample=False)
        rope = model.config.rope_parameters
        print(f"{folder}: {type(model).__name__}, rope {rope}; greedy: {generated.shape[1]} tokens")


if __name__ == "__main__":
    main()
