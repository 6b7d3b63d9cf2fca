"""Language-model data: any text corpus through `datasets`, tokenised once, packed into windows.

A window of n_ctx + 1 tokens gives inputs w[:-1] and targets w[1:] that fill all n_ctx positions
(with windows of n_ctx tokens the model would only ever see n_ctx - 1 positions, and the last row of
a learned absolute table would never be trained). Consecutive windows share one token, so every
token after the first is a target exactly once. `window: n_ctx` reproduces that off-by-one on
purpose (for the demonstration in configs/experiments/off_by_one*.yaml).

Corpus: local text files (one document per file), local JSON/JSONL files (a `text_field` per
record), or a Hugging Face hub dataset name (needs a network). The default corpus is the running
interpreter's own standard-library source: real text on every machine, no download. Tokenisation
runs once through `Dataset.map` and is cached in `cache_dir` by the `datasets` fingerprint.

Evaluation (val and test): the held-out tail of the token stream, cut into contexts of
m x n_ctx tokens for m in `eval_multiples` (Press et al. 2022, "Train Short, Test Long": perplexity
as the evaluation length grows), either as non-overlapping windows or as a sliding window that
advances by `eval_stride` tokens and scores only the tokens new to each window. Each batch carries
`lengths` = its context length, the bucket of the per-length metrics (Perplexity, PositionLoss).
Under DDP each rank evaluates its own share of the batches (`ShardedBatches`); the training
windows are split between ranks by Lightning's distributed sampler around `EpochShuffle`.

Training order and resumption: epoch e visits the windows in a permutation that is a pure function
of (seed, e), in batches of `batch_size` (the incomplete last batch dropped); Lightning takes an
optimizer step every `accumulate_grad_batches` batches and on the last batch of an epoch. A run
resumed with `--ckpt_path` from optimizer step t continues where the uninterrupted run was at step
t, in the middle of an epoch too: the position is derived from the restored `trainer.global_step`,
no extra state is saved (one process; see `TextDataModule.resume_position`).
"""

from __future__ import annotations

import itertools
import math
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from lengen.checks import require_positive_ints
from lengen.data.tasks import batches_by_length, default_cache_dir, sharded_loader

WINDOWS = ("n_ctx+1", "n_ctx")
EVAL_MODES = ("nonoverlapping", "sliding")


@dataclass
class TextBatch:
    """input_ids and labels, each (B, T): labels are the inputs shifted by one token (-100 where
    not scored). `lengths`: (B,) evaluation context length, the bucket of per-length metrics;
    None for training batches."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor | None = None


def pack_windows(token_ids: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """(N,) token ids -> (num_windows, n_ctx + 1) windows with stride n_ctx; the tail is dropped."""
    num_windows = (token_ids.numel() - 1) // n_ctx
    if num_windows < 1:
        raise ValueError(f"need at least n_ctx + 1 = {n_ctx + 1} tokens, got {token_ids.numel()}")
    starts = torch.arange(num_windows) * n_ctx
    return token_ids[starts[:, None] + torch.arange(n_ctx + 1)]  # (num_windows, n_ctx + 1)


def chop_windows(token_ids: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """The off-by-one on purpose: (N,) -> (N // n_ctx, n_ctx) disjoint windows of n_ctx tokens."""
    num_windows = token_ids.numel() // n_ctx
    if num_windows < 1:
        raise ValueError(f"need at least n_ctx = {n_ctx} tokens, got {token_ids.numel()}")
    return token_ids[: num_windows * n_ctx].view(num_windows, n_ctx)  # (num_windows, n_ctx)


def sliding_windows(
    token_ids: torch.Tensor, context: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of context + 1 tokens advancing by `stride`; labels score only the new tokens.

    Returns windows (W, context + 1) and a mask (W, context) of scored label positions: the first
    window scores all its `context` labels, each later one its last `stride`, so every token after
    the first is scored exactly once (up to the dropped tail), each with as much context as fits.
    """
    if not 1 <= stride <= context:
        raise ValueError(f"eval_stride must lie in [1, context={context}], got {stride}")
    num_windows = (token_ids.numel() - 1 - context) // stride + 1
    if num_windows < 1:
        raise ValueError(f"need at least {context + 1} held-out tokens, got {token_ids.numel()}")
    starts = torch.arange(num_windows) * stride
    windows = token_ids[starts[:, None] + torch.arange(context + 1)]  # (W, context + 1)
    scored = torch.zeros(num_windows, context, dtype=torch.bool)
    scored[0] = True
    scored[1:, context - stride :] = True
    return windows, scored


def collate_windows(rows: list[tuple[torch.Tensor]]) -> TextBatch:
    windows = torch.stack([row[0] for row in rows])  # (B, n_ctx + 1)
    return TextBatch(input_ids=windows[:, :-1], labels=windows[:, 1:])


def collate_eval(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> TextBatch:
    windows = torch.stack([row[0] for row in rows])  # (B, C + 1)
    scored = torch.stack([row[1] for row in rows])  # (B, C)
    return TextBatch(
        input_ids=windows[:, :-1],
        labels=windows[:, 1:].masked_fill(~scored, -100),
        lengths=torch.full((len(rows),), windows.shape[1] - 1),
    )


def check_corpus_files(files: list[Path]) -> None:
    """Every corpus file must exist, be a file, hold at least one byte and be UTF-8 text."""
    accepted = "give UTF-8 text (.txt) or JSON/JSONL files"
    for path in files:
        if not path.exists():
            raise ValueError(f"corpus file {path} not found; {accepted}")
        if not path.is_file():
            raise ValueError(f"corpus file {path} is a directory; {accepted}, not folders")
        data = path.read_bytes()
        if not data:
            raise ValueError(f"corpus file {path} is empty (0 bytes); {accepted}")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"corpus file {path} is not UTF-8 text (byte {error.start}: "
                f"{data[error.start : error.start + 1]!r}); {accepted}"
            ) from None


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256); documents are separated by a newline byte."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8")) + [ord("\n")]


class HubTokenizer:
    """A Hugging Face tokenizer by name; documents end with its EOS token when it has one."""

    def __init__(self, name: str) -> None:
        try:
            from transformers import AutoTokenizer  # heavy and optional: imported only here
        except ImportError as error:
            raise ValueError(
                f"tokenizer {name!r} needs the transformers package (pip install transformers); "
                "or use tokenizer: bytes"
            ) from error
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return ids + ([eos] if eos is not None else [])


def stdlib_source_files() -> list[Path]:
    """The standard library's .py files, sorted (same order on every run)."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


class EpochShuffle(Sampler[int]):
    """A permutation of range(size) that is a pure function of (seed, epoch).

    Lightning calls `set_epoch` at the start of each epoch, so a run restarted at epoch e draws
    the same order as an uninterrupted one (not dependent on the generator's history). In epoch
    `resume_epoch` the order starts at its position `resume_index` (a resumed run continues the
    epoch where it was interrupted; other epochs are whole). `len` stays `size`: Lightning counts
    a resumed epoch's batches on from the restored batch index.
    """

    def __init__(self, size: int, seed: int, resume_epoch: int = 0, resume_index: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.resume_epoch, self.resume_index = resume_epoch, resume_index

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self):
        order = self.order()
        if self.epoch == self.resume_epoch:
            order = order[self.resume_index :]
        return iter(order)

    def __len__(self) -> int:
        return self.size


class TextDataModule(L.LightningDataModule):
    """Language modelling on a text corpus (default: the standard-library source, byte tokens).

    files: local .txt (one document per file) or .json/.jsonl files (field `text_field`); dataset:
    a hub dataset name instead (with `dataset_config`, `split`, e.g. "train[:1%]"); tokenizer:
    "bytes" (built in), or a Hugging Face tokenizer: a local folder (e.g. the one given as
    `--model.hf_checkpoint`, or one `lengen export` wrote) or a hub name (needs `transformers`).
    max_tokens cuts the token stream; its last `val_fraction` is held out, the first half for val,
    the second for test (at most `eval_tokens` tokens each). window: "n_ctx+1" (correct) or
    "n_ctx" (the off-by-one, for demonstrations). eval_mode: "nonoverlapping" or "sliding"
    (stride `eval_stride`, default n_ctx // 2); eval_multiples: evaluation contexts in units of
    n_ctx.

    Resuming (`--ckpt_path`) continues the interrupted epoch at the batch the uninterrupted run
    would draw next (`resume_position`), so the per-step losses match it exactly.

    Args:
        files: local .txt, .json or .jsonl files; None: the default corpus (or `dataset`).
        dataset: a Hugging Face dataset name instead of files.
        dataset_config: the dataset's configuration name.
        split: the dataset split, e.g. "train[:1%]".
        text_field: the field holding the text in .json/.jsonl files and datasets.
        tokenizer: "bytes", or a Hugging Face tokenizer folder or name.
        n_ctx: training context length (tokens).
        window: "n_ctx+1" (correct) or "n_ctx" (the off-by-one, for demonstrations).
        batch_size: training windows per batch.
        eval_batch_size: evaluation windows per batch.
        max_tokens: the token stream is cut at this many tokens.
        val_fraction: fraction of the tokens held out (half validation, half test).
        eval_multiples: evaluation contexts in units of n_ctx; None: 1, 2, 4, 8.
        eval_mode: "nonoverlapping" or "sliding".
        eval_stride: stride of sliding evaluation; None: n_ctx // 2.
        eval_tokens: at most this many tokens per evaluation split.
        seed: seed of the training order.
        cache_dir: where tokenized corpora are cached; None: $LENGEN_CACHE_DIR or ~/.cache/lengen.
    """

    def __init__(
        self,
        files: list[str] | None = None,
        dataset: str | None = None,
        dataset_config: str | None = None,
        split: str = "train",
        text_field: str = "text",
        tokenizer: str = "bytes",
        n_ctx: int = 128,
        window: str = "n_ctx+1",
        batch_size: int = 16,
        eval_batch_size: int = 16,
        max_tokens: int = 2_000_000,
        val_fraction: float = 0.05,
        eval_multiples: list[int] | None = None,
        eval_mode: str = "nonoverlapping",
        eval_stride: int | None = None,
        eval_tokens: int = 32_768,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if files and dataset:
            raise ValueError("give either files or dataset, not both")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {', '.join(EVAL_MODES)}, got {eval_mode!r}")
        if n_ctx < 2:
            raise ValueError(f"n_ctx must be >= 2, got {n_ctx}")
        require_positive_ints(
            "TextDataModule",
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            max_tokens=max_tokens,
            eval_tokens=eval_tokens,
            **({} if eval_stride is None else {"eval_stride": eval_stride}),
        )
        eval_multiples = eval_multiples or [1, 2, 4, 8]
        if min(eval_multiples) < 1:
            raise ValueError(f"eval_multiples must be positive integers, got {eval_multiples}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.files = [Path(f) for f in files] if files else None
        self.dataset_name, self.dataset_config, self.split = dataset, dataset_config, split
        self.text_field, self.tokenizer_name = text_field, tokenizer
        self.n_ctx, self.window = n_ctx, window
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.max_tokens, self.val_fraction, self.eval_tokens = max_tokens, val_fraction, eval_tokens
        self.eval_multiples = sorted(set(eval_multiples))
        self.eval_mode, self.eval_stride = eval_mode, eval_stride or max(1, n_ctx // 2)
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "datasets"
        self._tokenizer = None
        self._tokens: torch.Tensor | None = None  # the token stream, once read
        self.eval_items: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer_name == "bytes":
                self._tokenizer = ByteTokenizer()
            else:
                self._tokenizer = HubTokenizer(self.tokenizer_name)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def train_max_length(self) -> int:
        """The training context; longer evaluation contexts are marked as beyond training."""
        return self.n_ctx

    def _load_documents(self):
        cache = str(self.cache_dir)
        if self.dataset_name:
            return datasets.load_dataset(
                self.dataset_name, self.dataset_config, split=self.split, cache_dir=cache
            )
        files = self.files or self._default_files()
        check_corpus_files(files)
        data_files = [str(path) for path in files]
        if all(path.suffix in (".json", ".jsonl") for path in files):
            return datasets.load_dataset(
                "json", data_files=data_files, split="train", cache_dir=cache
            )
        if any(path.suffix in (".json", ".jsonl") for path in files):
            raise ValueError("mix of JSON and text files; give one kind")
        return datasets.load_dataset(
            "text", data_files=data_files, sample_by="document", split="train", cache_dir=cache
        )

    def _default_files(self) -> list[Path]:
        """As many standard-library files as `max_tokens` needs (a file has >= 1 byte a token)."""
        files, total = [], 0
        for path in stdlib_source_files():
            files.append(path)
            total += path.stat().st_size
            if total >= self.max_tokens:
                break
        return files

    def token_stream(self) -> torch.Tensor:
        """(N,) the corpus as one token stream, tokenised once (cached by `datasets`)."""
        if self._tokens is None:
            self._tokens = self._read_token_stream()
        return self._tokens

    def check_input(self, stage: str) -> None:
        """Read the corpus and check it fills the training windows and the evaluation contexts
        (called by the CLI before the run starts); ValueError naming what is missing."""
        self.split_tokens(self.token_stream())

    def split_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train, val, test) token streams; ValueError when one is too short for its windows."""
        num_heldout = int(len(tokens) * self.val_fraction)
        train, heldout = tokens[: len(tokens) - num_heldout], tokens[len(tokens) - num_heldout :]
        half = len(heldout) // 2
        val, test = heldout[:half][: self.eval_tokens], heldout[half:][: self.eval_tokens]
        window = self.n_ctx + 1 if self.window == "n_ctx+1" else self.n_ctx
        train_need = (self.batch_size - 1) * self.n_ctx + window  # one full batch of windows
        eval_need = max(self.eval_multiples) * self.n_ctx + 1
        # The smallest corpus whose held-out halves hold eval_need tokens each (roughly).
        corpus_need = max(train_need + 2 * eval_need, math.ceil(2 * eval_need / self.val_fraction))
        if len(train) < train_need or min(len(val), len(test)) < eval_need:
            raise ValueError(
                f"the corpus has {len(tokens)} tokens: {len(train)} for training (one batch of "
                f"batch_size={self.batch_size} windows of n_ctx={self.n_ctx} needs {train_need}), "
                f"{len(val)} and {len(test)} held out for val and test (val_fraction="
                f"{self.val_fraction}; contexts up to {max(self.eval_multiples)} x n_ctx need "
                f"{eval_need} each); give a corpus of at least about {corpus_need} tokens, or "
                "lower n_ctx, batch_size or eval_multiples"
            )
        return train, val, test

    def _read_token_stream(self) -> torch.Tensor:
        documents = self._load_documents()
        if self.text_field not in documents.column_names:
            raise ValueError(
                f"the corpus has no field {self.text_field!r}; fields: "
                f"{', '.join(documents.column_names)} (set text_field)"
            )
        tokenizer = self.tokenizer

        def tokenize(batch: dict) -> dict:
            return {"ids": [tokenizer.encode(text) for text in batch[self.text_field]]}

        tokenized = documents.map(
            tokenize, batched=True, remove_columns=documents.column_names, desc="tokenising"
        )
        ids = list(
            itertools.islice(itertools.chain.from_iterable(tokenized["ids"]), self.max_tokens)
        )
        return torch.tensor(ids, dtype=torch.long)

    def setup(self, stage: str) -> None:
        train, val, test = self.split_tokens(self.token_stream())
        if self.window == "n_ctx+1":
            self.train_windows = pack_windows(train, self.n_ctx)  # (N, n_ctx + 1)
        else:
            self.train_windows = chop_windows(train, self.n_ctx)  # (N, n_ctx): n_ctx - 1 inputs
        for split, part in (("val", val), ("test", test)):
            self.eval_items[split] = self._eval_items(part)

    def _eval_items(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(window of C + 1 tokens, scored mask (C,)) for each evaluation context C."""
        items = []
        for multiple in self.eval_multiples:
            context = multiple * self.n_ctx
            if len(tokens) < context + 1:
                raise ValueError(
                    f"evaluation context {context} needs {context + 1} held-out tokens, have "
                    f"{len(tokens)}; raise max_tokens, val_fraction or eval_tokens"
                )
            if self.eval_mode == "sliding":
                windows, scored = sliding_windows(tokens, context, min(self.eval_stride, context))
            else:
                windows = pack_windows(tokens, context)
                scored = torch.ones(len(windows), context, dtype=torch.bool)
            items += list(zip(windows, scored))
        return items

    def resume_position(self) -> tuple[int, int]:
        """(epoch, first position in that epoch's order) of optimizer step `trainer.global_step`.

        An epoch has B = len(train_windows) // batch_size batches (drop_last; at most
        limit_train_batches) and S = ceil(B / accumulate_grad_batches) optimizer steps (Lightning
        steps on an epoch's last batch even when its accumulation group is short), so step t
        starts epoch t // S at batch (t mod S) x accumulate_grad_batches. On a fresh run t = 0;
        when resuming, t is the restored step. (0, 0) without a trainer; with several processes
        the epoch restarts from its first batch (resuming there is not exact).
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size > 1:
            return 0, 0
        batches = len(self.train_windows) // self.batch_size
        limit = trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        accumulation = trainer.accumulate_grad_batches
        epoch, step = divmod(trainer.global_step, max(1, math.ceil(batches / accumulation)))
        return epoch, step * accumulation * self.batch_size

    def train_dataloader(self) -> DataLoader:
        resume_epoch, resume_index = self.resume_position()
        # Its own generator: creating an iterator (every epoch, and once more on resume) draws
        # nothing from the global RNG, so a resumed run keeps the uninterrupted random state.
        return DataLoader(
            TensorDataset(self.train_windows),
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(self.train_windows), self.seed, resume_epoch, resume_index),
            collate_fn=collate_windows,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _eval_dataloader(self, split: str) -> DataLoader:
        items = self.eval_items[split]
        batches = batches_by_length([len(scored) for _, scored in items], self.eval_batch_size)
        return sharded_loader(items, batches, collate_eval, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")
