"""Language-model data: byte-level tokens of local text, packed into windows of n_ctx + 1 tokens.

A window of n_ctx + 1 tokens gives inputs w[:-1] and targets w[1:] that fill all n_ctx positions
(with windows of n_ctx tokens the model would only ever see n_ctx - 1 positions, and the last row of
a learned absolute table would never be trained). Consecutive windows share one token, so every
token after the first is a target exactly once.

The default corpus is the running interpreter's own standard-library source: real text on every
machine, no download.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


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


def collate_windows(rows: list[tuple[torch.Tensor]]) -> TextBatch:
    windows = torch.stack([row[0] for row in rows])  # (B, n_ctx + 1)
    return TextBatch(input_ids=windows[:, :-1], labels=windows[:, 1:])


def stdlib_source_files() -> list[Path]:
    """The standard library's .py files, sorted (same order on every run)."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


class TextDataModule(L.LightningDataModule):
    """Byte-level language modelling on local text files (default: the standard-library source).

    files: paths of UTF-8 text files; max_bytes caps the corpus size; the last `val_fraction` of
    the windows is held out for validation.
    """

    vocab_size = 256  # bytes

    def __init__(
        self,
        files: list[str] | None = None,
        n_ctx: int = 128,
        batch_size: int = 16,
        max_bytes: int = 2_000_000,
        val_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.files = [Path(f) for f in files] if files else None
        self.n_ctx, self.batch_size = n_ctx, batch_size
        self.max_bytes, self.val_fraction, self.seed = max_bytes, val_fraction, seed

    def setup(self, stage: str) -> None:
        corpus = bytearray()
        for path in self.files or stdlib_source_files():
            corpus += path.read_bytes() + b"\n"
            if len(corpus) >= self.max_bytes:
                break
        token_ids = torch.frombuffer(corpus[: self.max_bytes], dtype=torch.uint8).long()
        windows = pack_windows(token_ids, self.n_ctx)
        num_val = max(1, int(len(windows) * self.val_fraction))
        self.train_windows, self.val_windows = windows[:-num_val], windows[-num_val:]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            TensorDataset(self.train_windows),
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=collate_windows,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.val_windows), batch_size=self.batch_size, collate_fn=collate_windows
        )
