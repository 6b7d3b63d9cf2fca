"""Data for task plugins: an endless training stream and cached per-length evaluation sets.

Training draws lengths uniformly from [train_min_length, train_max_length] (or from a length
curriculum's sampler); training batch b is a pure function of (seed, rank, b), and a resumed run
continues from the restored step. Evaluation holds
`*_examples_per_length` examples per length in `eval_lengths`, generated once per
(task, lengths, examples, seed, split), stored with `datasets.Dataset.save_to_disk` and reloaded, so
every run of a comparison is scored on identical examples.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from lengen.metric import EvalBatch
from lengen.task import PAD, Example, Task

CACHE_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """`$LENGEN_CACHE_DIR`, else `~/.cache/lengen`."""
    return Path(os.environ.get("LENGEN_CACHE_DIR", Path.home() / ".cache" / "lengen"))


def collate_examples(examples: list[Example]) -> EvalBatch:
    """Lay out `BOS input SEP target EOS` for teacher forcing, right-padded with PAD."""
    sequences = [example.prompt + example.target for example in examples]
    width = max(len(sequence) for sequence in sequences) - 1
    target_width = max(len(example.target) for example in examples)
    input_ids = torch.full((len(examples), width), PAD, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    targets = torch.full((len(examples), target_width), PAD, dtype=torch.long)
    for row, (example, sequence) in enumerate(zip(examples, sequences, strict=True)):
        input_ids[row, : len(sequence) - 1] = torch.tensor(sequence[:-1])
        # Label j is token j + 1, so the target starts at label index len(prompt) - 1.
        start = len(example.prompt) - 1
        labels[row, start : start + len(example.target)] = torch.tensor(example.target)
        targets[row, : len(example.target)] = torch.tensor(example.target)
    return EvalBatch(
        input_ids=input_ids,
        labels=labels,
        targets=targets,
        prompt_lengths=torch.tensor([len(example.prompt) for example in examples]),
        target_lengths=torch.tensor([len(example.target) for example in examples]),
        lengths=torch.tensor([example.length for example in examples]),
    )


LengthSampler = Callable[[int, random.Random, int], list[int]]
# (optimizer step, generator, batch size) -> the task lengths of a batch; set by curricula.


class TrainingStream(IterableDataset):
    """Endless training batches; batch b is a pure function of (seed, rank, b).

    The stream starts at batch `start_batch` (the restored step x accumulation on resume), so an
    interrupted run continues with the batches the uninterrupted one would have drawn. With several
    workers, worker w makes the batches b = w (mod workers); the DataLoader returns them in order.
    `length_sampler` draws the lengths of a batch from its optimizer step b // `accumulation`;
    None draws each example's length uniformly from [min_length, max_length].
    """

    def __init__(
        self,
        task: Task,
        min_length: int,
        max_length: int,
        seed: int,
        batch_size: int,
        start_batch: int = 0,
        accumulation: int = 1,
        length_sampler: LengthSampler | None = None,
    ) -> None:
        self.task, self.min_length, self.max_length, self.seed = task, min_length, max_length, seed
        self.batch_size, self.start_batch, self.accumulation = batch_size, start_batch, accumulation
        self.length_sampler = length_sampler

    def batch(self, batch_index: int, rank: int = 0) -> EvalBatch:
        """The batch number `batch_index` of `rank`'s stream."""
        rng = random.Random(f"train-{self.seed}-{rank}-{batch_index}")
        if self.length_sampler is None:
            lengths = [
                rng.randint(self.min_length, self.max_length) for _ in range(self.batch_size)
            ]
        else:
            lengths = self.length_sampler(batch_index // self.accumulation, rng, self.batch_size)
        return collate_examples([self.task.make_example(length, rng) for length in lengths])

    def __iter__(self):
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        first = self.start_batch + (worker_id - self.start_batch) % num_workers
        for batch_index in itertools.count(first, num_workers):
            yield self.batch(batch_index, rank)


def build_eval_set(
    task: Task, lengths: list[int], examples_per_length: int, seed: int, split: str
) -> datasets.Dataset:
    """Generate `examples_per_length` examples per length; each length has its own generator."""
    rows = {"prompt": [], "target": [], "length": []}
    for length in lengths:
        rng = random.Random(f"{split}-{seed}-{length}")
        for _ in range(examples_per_length):
            example = task.make_example(length, rng)
            rows["prompt"].append(example.prompt)
            rows["target"].append(example.target)
            rows["length"].append(example.length)
    return datasets.Dataset.from_dict(rows)


def load_or_build_eval_set(
    task: Task,
    lengths: list[int],
    examples_per_length: int,
    seed: int,
    split: str,
    cache_dir: Path,
) -> datasets.Dataset:
    """The cached evaluation set for this key, generated and saved on first use."""
    key = {
        "format": CACHE_FORMAT_VERSION,
        "task": task.identity(),
        "lengths": lengths,
        "examples_per_length": examples_per_length,
        "seed": seed,
        "split": split,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / "eval_sets" / f"{type(task).__name__}-{split}-{digest}"
    if path.exists():
        return datasets.load_from_disk(str(path))
    dataset = build_eval_set(task, lengths, examples_per_length, seed, split)
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    dataset.save_to_disk(str(partial))
    (partial / "lengen_key.json").write_text(json.dumps(key, indent=2))
    try:
        partial.rename(path)  # atomic: a concurrent run either sees nothing or the whole set
    except OSError:
        shutil.rmtree(partial)  # another process saved the same set first
    return datasets.load_from_disk(str(path))


class FixedBatches(Sampler):
    """A batch sampler over precomputed index batches (a class, so Lightning can re-create it)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches holding one length each, so a batch is one evaluation bucket."""
    by_length: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        by_length.setdefault(length, []).append(index)
    return [
        indices[start : start + batch_size]
        for _, indices in sorted(by_length.items())
        for start in range(0, len(indices), batch_size)
    ]


class TaskDataModule(L.LightningDataModule):
    """Train on lengths in [train_min_length, train_max_length]; evaluate per length.

    eval_lengths: the evaluation buckets; None means every multiple of max(1, train_max_length // 4)
    up to 4 x train_max_length. `vocab_size` is linked to the model by the CLI.

    Args:
        task: the task plugin (short name, e.g. Copy; see `lengen plugins`).
        train_min_length: shortest task length drawn for training.
        train_max_length: longest task length drawn for training.
        eval_lengths: task lengths evaluated (one bucket each); None: see above.
        batch_size: training examples per batch.
        eval_batch_size: evaluation examples per batch (batches hold one length each).
        val_examples_per_length: validation examples per evaluated length.
        test_examples_per_length: test examples per evaluated length.
        seed: seed of the training stream and of the evaluation sets.
        cache_dir: where evaluation sets are cached; None: $LENGEN_CACHE_DIR or ~/.cache/lengen.
        num_workers: DataLoader worker processes for training.
    """

    def __init__(
        self,
        task: Task,
        train_min_length: int = 1,
        train_max_length: int = 16,
        eval_lengths: list[int] | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        val_examples_per_length: int = 64,
        test_examples_per_length: int = 256,
        seed: int = 0,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not task.min_length <= train_min_length <= train_max_length:
            raise ValueError(
                f"need {task.min_length} <= train_min_length <= train_max_length for "
                f"{type(task).__name__}, got {train_min_length} and {train_max_length}"
            )
        if eval_lengths is None:
            step = max(1, train_max_length // 4)
            eval_lengths = list(range(step, 4 * train_max_length + 1, step))
        if not eval_lengths or min(eval_lengths) < task.min_length:
            raise ValueError(
                f"eval_lengths must be a non-empty list of lengths >= {task.min_length}, "
                f"got {eval_lengths}"
            )
        self.task = task
        self.train_min_length = train_min_length
        self.train_max_length = train_max_length
        self.eval_lengths = sorted(set(eval_lengths))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.examples_per_length = {
            "val": val_examples_per_length,
            "test": test_examples_per_length,
        }
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.num_workers = num_workers
        self.eval_sets: dict[str, list[Example]] = {}
        self.train_length_sampler: LengthSampler | None = None  # set by a length curriculum

    @property
    def vocab_size(self) -> int:
        return self.task.vocab_size

    def prepare_data(self) -> None:
        for split in self.examples_per_length:
            self._eval_set(split)

    def _eval_set(self, split: str) -> datasets.Dataset:
        return load_or_build_eval_set(
            self.task,
            self.eval_lengths,
            self.examples_per_length[split],
            self.seed,
            split,
            self.cache_dir,
        )

    def setup(self, stage: str) -> None:
        splits = {"fit": ["val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
        for split in splits[stage]:
            rows = self._eval_set(split).to_list()
            self.eval_sets[split] = [Example(**row) for row in rows]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        accumulation = trainer.accumulate_grad_batches if trainer else 1
        stream = TrainingStream(
            self.task,
            self.train_min_length,
            self.train_max_length,
            self.seed,
            self.batch_size,
            start_batch=trainer.global_step * accumulation if trainer else 0,
            accumulation=accumulation,
            length_sampler=self.train_length_sampler,
        )
        # batch_size=None: the stream yields whole batches. Its own generator, so creating the
        # iterator draws nothing from the global RNG (a resumed run keeps the same random state).
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _eval_dataloader(self, split: str) -> DataLoader:
        examples = self.eval_sets[split]
        batches = batches_by_length([example.length for example in examples], self.eval_batch_size)
        return DataLoader(
            examples, batch_sampler=FixedBatches(batches), collate_fn=collate_examples
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")
