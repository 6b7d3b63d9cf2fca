"""Checks of a run's input made before the run starts, so bad input costs no run and writes nothing.

Each check raises ValueError with one line naming what is wrong and what is accepted; the CLI prints
it as `lengen: error: ...` and exits with status 2. The CLI calls `check_run` after the classes are
built and before the trainer runs (no version folder, no cache entry yet).
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Sizes that fix the shapes (or the meaning) of a checkpoint's tensors.
MODEL_SIZES = ("vocab_size", "n_layer", "n_head", "d_model", "d_mlp", "tie_embeddings")
ENCODING_PREFIX = "decoder.pos_encoding."


def require_positive_ints(owner: str, **values: object) -> None:
    """Each value must be an int >= 1 (bools are not counts)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name}={value!r} must be an integer >= 1")


def require_finite(owner: str, name: str, value: float, low: float, low_open: bool) -> None:
    """`value` must be a finite number > low (low_open) or >= low."""
    bound = f"> {low:g}" if low_open else f">= {low:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}: {name}={value!r} must be a finite number {bound}")
    if not math.isfinite(value) or value < low or (low_open and value == low):
        raise ValueError(f"{owner}: {name}={value!r} must be a finite number {bound}")


def check_creatable_dir(path: str | os.PathLike, what: str) -> None:
    """`path` must be a directory or creatable as one (its nearest existing ancestor a writable
    directory); nothing is created."""
    target = Path(path).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{what} {target} is a file, not a directory; give a directory path")
        probe = target
    else:
        probe = target.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise ValueError(
                f"{what} {target} cannot be created: {probe} is a file, not a directory; "
                "give a path whose parents are directories"
            )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what} {target} cannot be created: {probe} is not writable; give a writable path"
        )


def read_checkpoint(path: str, option: str = "--ckpt_path") -> dict:
    """The checkpoint at `path`, tensors memory-mapped; ValueError naming `option` when it is not
    a readable Lightning checkpoint."""
    file = Path(path)
    accepted = "give a *.ckpt file written by `lengen fit`"
    if option == "--ckpt_path":
        accepted += ", or `last`"
    if not file.exists():
        raise ValueError(f"{option} {path}: no such file; {accepted}")
    if not file.is_file():
        raise ValueError(f"{option} {path} is a directory, not a file; {accepted}")
    if file.stat().st_size == 0:
        raise ValueError(f"{option} {path} is empty (0 bytes); {accepted}")
    try:
        # mmap: tensors are not read here; weights_only=False as Lightning (hyperparameters pickle
        # the encoding). Only files the user names are read.
        import torch  # here: `lengen report` imports this module and needs no torch

        checkpoint = torch.load(file, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # truncated zip, not a zip, a pickle of something else, ...
        raise ValueError(
            f"{option} {path} cannot be read as a checkpoint ({type(error).__name__}); it is "
            f"truncated or not a checkpoint; {accepted}"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(
            f"{option} {path} is not a Lightning checkpoint (no state_dict); {accepted}"
        )
    return checkpoint


def check_checkpoint(path: str, model: torch.nn.Module) -> None:
    """`--ckpt_path FILE`: a readable Lightning checkpoint whose tensors fit `model` (a
    LengenModule). Encoding tensors are left to `LengenModule.fit_encoding_state`."""
    checkpoint = read_checkpoint(path)
    trained = checkpoint.get("hyper_parameters") or {}
    differing = [
        f"{name}={trained[name]} (this model: {model.hparams[name]})"
        for name in MODEL_SIZES
        if name in trained and name in model.hparams and trained[name] != model.hparams[name]
    ]
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("metrics.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("metrics.")}
    mismatched = sorted(
        name for name in set(state) ^ set(own) if not name.startswith(ENCODING_PREFIX)
    ) + sorted(
        name for name in set(state) & set(own) if tuple(state[name].shape) != tuple(own[name].shape)
    )
    if differing or mismatched:
        what = ", ".join(differing) or (
            f"{len(mismatched)} tensors differ, e.g. {mismatched[0]} "
            f"{tuple(state[mismatched[0]].shape) if mismatched[0] in state else 'missing'}"
            f" vs {tuple(own[mismatched[0]].shape) if mismatched[0] in own else 'absent here'}"
        )
        raise ValueError(
            f"--ckpt_path {path} was trained with another model size: {what}; give the model the "
            "sizes it was trained with (e.g. the run's config.yaml)"
        )


def task_max_position(datamodule, splits: list[str], fit: bool) -> int:
    """The largest position a TaskDataModule run asks of the encoding. Makes one example at every
    evaluation length (and the training range's ends) and the whole evaluation set at the longest
    length, without writing the cache; a length the task cannot make is a ValueError here."""
    from lengen.data.tasks import build_eval_set

    task = datamodule.task
    lengths = list(datamodule.eval_lengths)
    if fit:
        lengths += [datamodule.train_min_length, datamodule.train_max_length]
    widest = 0
    for length in sorted(set(lengths)):
        example = task.make_example(length, random.Random(f"check-{length}"))
        widest = max(widest, len(example.prompt) + len(example.target))
    longest = max(datamodule.eval_lengths)
    for split in splits:
        count = datamodule.examples_per_length[split]
        rows = build_eval_set(task, [longest], count, datamodule.seed, split)
        for prompt, target in zip(rows["prompt"], rows["target"]):
            widest = max(widest, len(prompt) + len(target))
    return widest - 2  # inputs drop the last token; positions count from 0


def check_run(model, datamodule, subcommand: str, ckpt_path: str | None) -> None:
    """Everything checkable before `subcommand` runs: the checkpoint, the data (corpus, lengths,
    cache folder) and the encoding's position limit against the longest sequence of the run."""
    if ckpt_path:
        check_checkpoint(ckpt_path, model)
    if getattr(model, "init_from", None):  # other sizes are expected there: readable is enough
        read_checkpoint(model.init_from, "--model.init_from")
    cache_dir = getattr(datamodule, "cache_dir", None)
    if cache_dir is not None:
        what = "cache folder (data.init_args.cache_dir or LENGEN_CACHE_DIR)"
        check_creatable_dir(cache_dir, what)
    splits = {"fit": ["val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
    splits = splits[subcommand]
    if hasattr(datamodule, "check_input"):
        datamodule.check_input(subcommand)
    if hasattr(datamodule, "task") and hasattr(datamodule, "eval_lengths"):
        max_position = task_max_position(datamodule, splits, fit=subcommand == "fit")
        longest_bucket = max(datamodule.eval_lengths)
    elif hasattr(datamodule, "n_ctx") and hasattr(datamodule, "eval_multiples"):
        max_position = max(datamodule.eval_multiples) * datamodule.n_ctx - 1
        longest_bucket = max_position + 1
    else:
        return
    model.decoder.pos_encoding.check_positions(max_position)
    for split in splits:
        for metric in model.metrics[split].values():
            limit = getattr(metric, "max_length", None)
            if limit is not None and longest_bucket > limit:
                raise ValueError(
                    f"metric {type(metric).__name__} keeps lengths up to max_length={limit}, but "
                    f"the run evaluates length {longest_bucket}; raise its max_length"
                )
