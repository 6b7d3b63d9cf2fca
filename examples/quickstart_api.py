"""The quickstart from Python: train ALiBi to copy 1-16 symbols, test up to 48, generate.

    python examples/quickstart_api.py                 # the README's quickstart (minutes on CPU)
    python examples/quickstart_api.py --tiny          # seconds: what CI runs
    python examples/quickstart_api.py --root_dir DIR  # where outputs go (default runs/api)

Outputs (checkpoints, TensorBoard logs, results.json, metrics_vs_length.png) go to a new
DIR/lightning_logs/version_N.
"""

from __future__ import annotations

import argparse

import lightning

import lengen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few steps of a tiny model")
    parser.add_argument("--root_dir", default="runs/api", help="output folder")
    args = parser.parse_args()

    lightning.seed_everything(0)
    if args.tiny:
        sizes = dict(n_layer=1, d_model=32, warmup_steps=2)
        data_args = dict(train_max_length=4, eval_lengths=[2, 4, 8], batch_size=8,
                         val_examples_per_length=4, test_examples_per_length=8)  # fmt: skip
        max_steps = 6
    else:
        sizes = dict(n_layer=2, d_model=64, lr=3e-3, warmup_steps=100)
        data_args = dict(train_max_length=16, eval_lengths=[4, 8, 12, 16, 20, 24, 32, 40, 48])
        max_steps = 2000

    model = lengen.build_model(
        "ALiBi", task="Copy", metrics=["ExactMatch", "TokenAccuracy"], **sizes
    )
    data = lengen.task_data("Copy", **data_args)
    trainer = lengen.trainer(
        args.root_dir, max_steps=max_steps, accelerator="cpu", enable_progress_bar=False
    )
    lengen.train(model, data, trainer)

    results = lengen.evaluate(model, data, trainer)  # prints the per-length table
    print("exact match by length:", results.to_dict()["metrics"]["exact_match"])
    results.figure(title="ALiBi on Copy").savefig(results.out_dir / "api_figure.png")
    print("outputs in", results.out_dir)

    prompt = " ".join(data.task.symbols[:4])  # Copy's symbols are s0, s1, ...
    print(f"generate({prompt!r}) ->", lengen.generate(model, prompt, task=data.task))


if __name__ == "__main__":
    main()
