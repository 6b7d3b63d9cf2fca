"""Data for task plugins: an endless training stream and cached per-length evaluation sets.

Training draws lengths uniformly from [train_min_length, train_max_length] (or from a length
curriculum's sampler); training batch b is a pure function of (seed, rank, b), and a resumed run
continues from the restored step. Evaluation holds
`*_examples_per_length` examples per length in `eval_lengths`, generated once per
(task, lengths, examples, seed, split), stored with `datasets.Dataset.save_to_disk` and reloaded, so
every run of a comparison is scored on identical examples. Under DDP each rank evaluates its own
share of the fixed evaluation batches (`ShardedBatches`).
"""

from __future__ import annotations

import array
import hashlib
import inspect
import itertools
import json
import os
import random
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lengen.checks import require_positive_ints
from lengen.distributed import rank_and_world_size
from lengen.metric import EvalBatch
from lengen.task import PAD, Example, Task

IGNORE_INDEX = -100  # labels the loss skips (torch.nn.functional.cross_entropy's default)
CACHE_FORMAT_VERSION = 2  # 2: key holds the task's code version; rows checksummed


def default_cache_dir() -> Path:
    """`$LENGEN_CACHE_DIR`, else `~/.cache/lengen`."""
    return Path(os.environ.get("LENGEN_CACHE_DIR", Path.home() / ".cache" / "lengen"))


def long_tensor(flat: list[int], rows: int) -> torch.Tensor:
    """A flat list of ints -> a (rows, len(flat) // rows) int64 tensor.

    Goes through `array.array`, which converts the list in one C loop; `torch.tensor` on nested
    lists checks every element and took about 2.5x longer for a quickstart batch's fields.
    The clone owns its memory (the view of the array's buffer cannot be resized or shared with
    DataLoader workers).
    """
    return torch.frombuffer(array.array("q", flat), dtype=torch.long).view(rows, -1).clone()


def collate_examples(examples: list[Example]) -> EvalBatch:
    """Lay out `BOS input SEP target EOS` for teacher forcing, right-padded with PAD.

    Rows are padded as one flat Python list per field, which becomes a tensor in one copy
    (`long_tensor`); per-row tensor copies cost about 6x more at quickstart sizes.
    """
    width = max(len(example.prompt) + len(example.target) for example in examples) - 1
    target_width = max(len(example.target) for example in examples)
    inputs, labels, targets = [], [], []
    for example in examples:
        prompt, target = example.prompt, example.target
        sequence = prompt + target
        inputs += sequence[:-1]
        inputs += [PAD] * (width + 1 - len(sequence))
        # Label j is token j + 1: -100 under the prompt but its last token, then the target.
        labels += [IGNORE_INDEX] * (len(prompt) - 1)
        labels += target
        labels += [IGNORE_INDEX] * (width + 1 - len(sequence))
        targets += target
        targets += [PAD] * (target_width - len(target))
    rows = len(examples)
    return EvalBatch(
        input_ids=long_tensor(inputs, rows),  # (B, T)
        labels=long_tensor(labels, rows),  # (B, T)
        targets=long_tensor(targets, rows),  # (B, max target length)
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
    None draws each example's length uniformly from [min_length, max_length]. `rank`: the
    process's global rank (each rank draws its own stream); None reads it from torch.distributed
    when iterated, which a DataLoader worker started by spawn or forkserver cannot see.
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
        rank: int | None = None,
    ) -> None:
        self.task, self.min_length, self.max_length, self.seed = task, min_length, max_length, seed
        self.batch_size, self.start_batch, self.accumulation = batch_size, start_batch, accumulation
        self.length_sampler = length_sampler
        self.rank = rank

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
        rank = self.rank
        if rank is None:
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


def task_source_modules(task: Task) -> list:
    """The modules whose code makes `task`'s examples: those defining its class and its bases
    (lengen.task included), and the modules of the same package they take names from (e.g. a
    helper `random_expression` imported from a sibling task module)."""
    modules = [sys.modules[cls.__module__] for cls in type(task).__mro__[:-1]]  # without object
    for module in list(modules):
        package = module.__name__.split(".")[0]
        for value in vars(module).values():
            name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(name, str) and name.split(".")[0] == package and name in sys.modules:
                modules.append(sys.modules[name])
    return list(dict.fromkeys(modules))


def task_code_version(task: Task) -> str:
    """A hash of the source of `task_source_modules(task)`: editing a task's `generate`, a helper
    it uses, or `Task.make_example` gives new cache keys."""
    sources = []
    for module in task_source_modules(task):
        try:
            sources.append(inspect.getsource(module))
        except (OSError, TypeError):  # no source file (e.g. defined in a REPL)
            sources.append(module.__name__)
    return hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]


def eval_set_checksum(dataset: datasets.Dataset) -> str:
    """sha256 of an evaluation set's rows (prompt, target, length), in order."""
    rows = dataset.to_dict()
    digest = hashlib.sha256()
    for column in ("prompt", "target", "length"):
        digest.update(json.dumps(rows[column]).encode())
    return digest.hexdigest()


def _load_verified(path: Path, key: dict) -> tuple[datasets.Dataset | None, str]:
    """(the cached set, "") when it reads back with its key and checksum, else (None, why)."""
    try:
        stored = json.loads((path / "lengen_key.json").read_text())
        checksum = stored.pop("checksum", None)
        if stored != key:
            return None, "was written for another key"
        dataset = datasets.load_from_disk(str(path))
        if checksum is None or eval_set_checksum(dataset) != checksum:
            return None, "does not match its checksum (corrupted)"
        return dataset, ""
    except Exception as error:  # truncated or missing files, unreadable JSON or arrow data
        return None, f"is unreadable ({type(error).__name__})"


def load_or_build_eval_set(
    task: Task,
    lengths: list[int],
    examples_per_length: int,
    seed: int,
    split: str,
    cache_dir: Path,
) -> datasets.Dataset:
    """The cached evaluation set for this key, generated and saved on first use.

    The key holds the task's code version (`task_code_version`), so a changed generator never
    reuses old examples. The set is saved with a checksum of its rows; an entry that is
    unreadable or does not match its checksum is rebuilt with a warning, never used.
    """
    key = {
        "format": CACHE_FORMAT_VERSION,
        "task": task.identity(),
        "code": task_code_version(task),
        "lengths": lengths,
        "examples_per_length": examples_per_length,
        "seed": seed,
        "split": split,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / "eval_sets" / f"{type(task).__name__}-{split}-{digest}"
    if path.exists():
        dataset, problem = _load_verified(path, key)
        if dataset is not None:
            return dataset
        warnings.warn(f"cached evaluation set {path} {problem}; rebuilding it", stacklevel=2)
    dataset = build_eval_set(task, lengths, examples_per_length, seed, split)
    if len(dataset) == 0:
        raise ValueError(
            f"the {split} evaluation set of {type(task).__name__} would have no rows "
            f"(lengths {lengths}, {examples_per_length} examples per length); give at least "
            "one length and one example per length"
        )
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    dataset.save_to_disk(str(partial))
    stored = {**key, "checksum": eval_set_checksum(dataset)}
    (partial / "lengen_key.json").write_text(json.dumps(stored, indent=2))
    shutil.rmtree(path, ignore_errors=True)  # a corrupt entry found above
    try:
        partial.rename(path)  # atomic: a concurrent run either sees nothing or the whole set
    except OSError:
        shutil.rmtree(partial)  # another process saved the same set first
    return datasets.load_from_disk(str(path))


class ShardedBatches(IterableDataset):
    """Fixed evaluation batches dealt round-robin to the ranks, collated as they are drawn.

    Rank r of W takes batches r, r + W, r + 2W, ... of `batches` (lists of indices into `items`),
    so every example is evaluated exactly once over all ranks: no padding or repeated examples, as
    Lightning's DistributedSampler would add. An IterableDataset (used with `batch_size=None`):
    Lightning injects no sampler into it, with or without `use_distributed_sampler`.

    `len` is ceil(len(batches) / W) on every rank, the count of rank 0; another rank may yield
    one batch fewer, or none. The same length everywhere keeps Lightning from skipping the
    evaluation loop, and so the epoch-end hooks whose metric synchronisation is a collective, on a
    rank without batches. Evaluation data loaders run in the main process (no workers).
    """

    def __init__(
        self,
        items: list,
        batches: list[list[int]],
        collate_fn: Callable,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.items, self.batches, self.collate_fn = items, batches, collate_fn
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for indices in self.batches[self.rank :: self.world_size]:
            yield self.collate_fn([self.items[index] for index in indices])

    def __len__(self) -> int:
        return -(-len(self.batches) // self.world_size)  # ceil


def sharded_loader(
    items: list, batches: list[list[int]], collate_fn: Callable, trainer: L.Trainer | None
) -> DataLoader:
    """A DataLoader over `trainer`'s rank's share of the fixed evaluation `batches`."""
    rank, world_size = rank_and_world_size(trainer)
    ignore_iterable_len_warning()
    return DataLoader(ShardedBatches(items, batches, collate_fn, rank, world_size), batch_size=None)


def ignore_iterable_len_warning() -> None:
    """Lightning warns that an IterableDataset's `len` may be wrong with several workers; the
    evaluation loaders use none (ShardedBatches documents what its `len` means)."""
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


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
    up to 4 x train_max_length. `vocab_size` is linked to the model by the CLI. `tokenizer`: a
    `transformers` tokenizer (folder or hub name) whose ids a text task's examples are given in
    (lengen/data/tokenized.py); None keeps the task's own symbols.

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
        tokenizer: a transformers tokenizer for a text (retrieval) task; None: the task's symbols.
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
        tokenizer: str | None = None,
    ) -> None:
        super().__init__()
        require_positive_ints(
            "TaskDataModule",
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            val_examples_per_length=val_examples_per_length,
            test_examples_per_length=test_examples_per_length,
        )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"TaskDataModule: num_workers={num_workers!r} must be an integer >= 0")
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
        if tokenizer is not None:
            from lengen.data.tokenized import TokenizedTask

            task = TokenizedTask(task, tokenizer)
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
            rank=rank_and_world_size(trainer)[0],
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
        return sharded_loader(examples, batches, collate_examples, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")
