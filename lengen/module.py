"""The LightningModule that hosts the decoder: training, per-length evaluation and results."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lengen.metric import EvalBatch, LengthMetric, bucket_values
from lengen.model import Decoder
from lengen.plugins import discover
from lengen.positional import PositionalEncoding
from lengen.results import figure_metrics_vs_length, format_table, write_results
from lengen.summary import summarise
from lengen.task import PAD

SPLITS = ("val", "test")


class LengenModule(L.LightningModule):
    """A decoder-only Transformer with a pluggable positional encoding.

    Optimiser: AdamW with `lr`, `weight_decay`; the learning rate warms up linearly over
    `warmup_steps` and then follows a cosine down to `min_lr_ratio * lr` at `trainer.max_steps`
    (constant when max_steps is not set). `metrics`: per-length metric plugins; None means every
    installed metric plugin with its default arguments.
    """

    def __init__(
        self,
        pos_encoding: PositionalEncoding,
        vocab_size: int = 256,
        n_layer: int = 2,
        n_head: int = 4,
        d_model: int = 128,
        d_mlp: int | None = None,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
        attention: str = "sdpa",
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        metrics: list[LengthMetric] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.decoder = Decoder(
            vocab_size=vocab_size,
            pos_encoding=pos_encoding,
            n_layer=n_layer,
            n_head=n_head,
            d_model=d_model,
            d_mlp=d_mlp,
            dropout=dropout,
            tie_embeddings=tie_embeddings,
            attention=attention,
        )
        if metrics is None:
            metrics = [
                plugin.obj()
                for plugin in discover("lengen.metrics").values()
                if plugin.error is None
            ]
        self.metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict({metric.name: copy.deepcopy(metric) for metric in metrics})
                for split in SPLITS
            }
        )
        self.run_config: dict | None = None  # set by the CLI; written into results.json

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab_size) logits."""
        return self.decoder(input_ids, positions)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the labelled tokens (labels -100 are ignored)."""
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch.input_ids), batch.labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    @torch.no_grad()
    def greedy_generate(self, batch: EvalBatch) -> torch.Tensor:
        """Greedy continuation of each prompt for exactly its target's length (EOS included).

        Returns (B, max target length) token ids laid out like `batch.targets`.
        """
        batch_size, width = batch.targets.shape
        rows = torch.arange(batch_size, device=batch.input_ids.device)
        tokens = torch.full(
            (batch_size, int(batch.prompt_lengths.max()) + width), PAD, device=rows.device
        )
        prompt_width = int(batch.prompt_lengths.max())
        prompt_mask = torch.arange(prompt_width, device=rows.device) < batch.prompt_lengths[:, None]
        tokens[:, :prompt_width] = batch.input_ids[:, :prompt_width].masked_fill(~prompt_mask, PAD)
        generated = torch.full_like(batch.targets, PAD)
        for step in range(width):
            position = batch.prompt_lengths + step  # (B,) where each row's next token goes
            logits = self(tokens[:, : int(position.max())])  # right padding never reaches a row
            next_token = logits[rows, position - 1].argmax(dim=-1)
            next_token = next_token.masked_fill(step >= batch.target_lengths, PAD)
            tokens[rows, position] = next_token
            generated[:, step] = next_token
        return generated

    def _evaluate(self, batch, split: str) -> None:
        logits = self(batch.input_ids)
        self.log(f"{split}/loss", self.loss(logits, batch.labels), batch_size=len(batch.labels))
        metrics = [metric for metric in self.metrics[split].values() if metric.accepts(batch)]
        if not metrics:
            return  # e.g. language-model training-style batches without length buckets
        needs_generation = any(metric.requires_generation for metric in metrics)
        generated = self.greedy_generate(batch) if needs_generation else None
        for metric in metrics:
            metric.update(batch, logits, generated)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Greedy generations of a task batch beside its targets and lengths."""
        generated = self.greedy_generate(batch)
        return {"lengths": batch.lengths, "generated": generated, "targets": batch.targets}

    def _finish_split(self, split: str) -> dict[str, dict[int, float]]:
        """Log per-length scalars and the figure; return {metric: {length: value}}."""
        results = {}
        for name, metric in self.metrics[split].items():
            if metric.update_count == 0:
                continue
            per_length = bucket_values(metric.compute())
            metric.reset()
            results[name] = per_length
            for length, value in per_length.items():
                self.log(f"{split}/{name}/length_{length}", value)
        if results and self.trainer.is_global_zero:
            figure = figure_metrics_vs_length(results, self._train_max_length(), title=split)
            for logger in self.loggers:
                if hasattr(logger.experiment, "add_figure"):
                    logger.experiment.add_figure(
                        f"{split}/metrics_vs_length", figure, self.global_step
                    )
        return results

    def _train_max_length(self) -> int | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, "train_max_length", None)

    def on_validation_epoch_end(self) -> None:
        self._finish_split("val")

    def on_test_epoch_end(self) -> None:
        results = self._finish_split("test")
        if not results or not self.trainer.is_global_zero:
            return
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        print(format_table(results, self._train_max_length()))
        figure = figure_metrics_vs_length(results, self._train_max_length(), title="test")
        figure.savefig(out_dir / "metrics_vs_length.png", dpi=120, bbox_inches="tight")
        write_results(
            out_dir / "results.json",
            metrics=results,
            train_max_length=self._train_max_length(),
            pos_encoding=type(self.decoder.pos_encoding).__name__,
            global_step=self.global_step,
            config=self.run_config,
            summary={  # extrapolation score and effective length of the accuracy-like metrics
                name: summarise(per_length, self._train_max_length())
                for name, per_length in results.items()
                if self.metrics["test"][name].higher_is_better
            },
        )
        print(f"results: {out_dir / 'results.json'}, figure: {out_dir / 'metrics_vs_length.png'}")

    def configure_optimizers(self):
        hp = self.hparams
        # Weight decay on matrices only (not on norms, biases or 1-D position parameters).
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        max_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else None

        def lr_factor(step: int) -> float:
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            if max_steps is None or max_steps <= hp.warmup_steps:
                return 1.0
            progress = min(1.0, (step - hp.warmup_steps) / (max_steps - hp.warmup_steps))
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return hp.min_lr_ratio + (1.0 - hp.min_lr_ratio) * cosine

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
