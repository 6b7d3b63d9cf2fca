"""The LightningModule that hosts the decoder: training, per-length evaluation and results."""

from __future__ import annotations

import copy
import importlib
import json
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import nn

from lengen.metric import EvalBatch, LengthMetric, bucket_values
from lengen.model import Decoder
from lengen.plugins import discover
from lengen.positional import PositionalEncoding
from lengen.random_state import TrainingRandomState
from lengen.results import figure_metrics_vs_length, format_table, write_results
from lengen.summary import summarise
from lengen.task import PAD

SPLITS = ("val", "test")


def trained_encoding(checkpoint: dict) -> tuple[str, tuple[str, ...]]:
    """(class name, schedulable value names) of the encoding a Lightning checkpoint was trained
    with, from its hyperparameters; ("unknown", ()) when they do not say or it cannot be found."""
    encoding = (checkpoint.get("hyper_parameters") or {}).get("pos_encoding")
    if isinstance(encoding, dict):  # {"class_path": ..., "init_args": ...} from the CLI
        encoding = encoding.get("class_path")
    if isinstance(encoding, str):  # a class path
        module_name, _, name = encoding.rpartition(".")
        try:
            encoding = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError):  # ValueError: no module part
            return name, ()
    if encoding is None:
        return "unknown", ()
    cls = encoding if isinstance(encoding, type) else type(encoding)
    return cls.__name__, tuple(getattr(cls, "schedulable", ()))


class LengenModule(L.LightningModule):
    """A decoder-only Transformer with a pluggable positional encoding.

    Optimiser: AdamW with `lr`, `weight_decay`; the learning rate warms up linearly over
    `warmup_steps` and then follows a cosine down to `min_lr_ratio * lr` at `trainer.max_steps`
    (constant when max_steps is not set). `metrics`: per-length metric plugins; None means every
    installed metric plugin with its default arguments.

    `init_from`: a checkpoint (e.g. trained with another encoding) whose weights start `fit`:
    every tensor whose name and shape match is loaded, the rest (the new encoding's own parameters
    and buffers) keep their initialisation, and one line reports what was not loaded or not used.
    Applied in `setup("fit")`, so resuming with `--ckpt_path` still restores the full checkpoint.

    Args:
        pos_encoding: the positional encoding plugin (short name, e.g. RoPE, ALiBi; see
            `lengen plugins`); its own arguments via `--model.pos_encoding.help NAME`.
        vocab_size: token vocabulary size; linked from the data module by the CLI.
        n_layer: number of Transformer blocks.
        n_head: attention heads per block; must divide d_model.
        d_model: width of the residual stream (embedding size).
        d_mlp: hidden width of each MLP; None means 4 * d_model.
        dropout: dropout probability (attention and residual); 0 disables it.
        tie_embeddings: share the token embedding with the output projection.
        attention: attention kernel: auto, sdpa, flex or reference (see lengen/attention.py).
        lr: peak learning rate of AdamW (after warmup).
        weight_decay: AdamW weight decay, on matrices only.
        warmup_steps: optimizer steps of linear learning-rate warmup.
        min_lr_ratio: the cosine ends at min_lr_ratio * lr at trainer.max_steps.
        metrics: per-length metric plugins (short names); None means every installed one.
        init_from: a checkpoint whose matching weights start `fit` (fine-tuning, e.g. with
            another encoding); None starts from a fresh initialisation.
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
        attention: str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        metrics: list[LengthMetric] | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if init_from is not None and not Path(init_from).is_file():
            raise ValueError(f"init_from={init_from!r} is not a checkpoint file")
        self.init_from = init_from  # not a hyperparameter: load_from_checkpoint must not need it
        self.save_hyperparameters(ignore=["init_from"])
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
        self.checkpoint_step = 0  # optimizer steps of the loaded checkpoint (test/validate)
        # The optimizer step being accumulated: its labelled tokens and token-loss sum so far.
        self._accumulating_step = -1
        self._step_tokens = self._step_loss_sum = torch.zeros(())
        self.training_random_state = TrainingRandomState()  # in every checkpoint, per rank

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.init_from is not None:
            print(self.load_matching_weights(self.init_from))

    def load_matching_weights(self, path: str) -> str:
        """Load every tensor of checkpoint `path` whose name and shape match; return one line."""
        # weights_only=False: a Lightning checkpoint pickles the encoding in its hyperparameters.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        source = checkpoint.get("state_dict", checkpoint)
        target = self.state_dict()
        matching = {
            name: tensor
            for name, tensor in source.items()
            if name in target and target[name].shape == tensor.shape
        }
        self.load_state_dict(matching, strict=False)
        not_loaded = sorted(set(target) - set(matching))
        unused = sorted(set(source) - set(matching))
        return (
            f"lengen: init_from {path}: loaded {len(matching)}/{len(target)} tensors; "
            f"not loaded (kept initialised): {', '.join(not_loaded) or 'none'}; "
            f"unused from the checkpoint: {', '.join(unused) or 'none'}"
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab_size) logits (see `Decoder.forward`)."""
        return self.decoder(input_ids, positions, attention_mask)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the labelled tokens (labels -100 are ignored)."""
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Per-token loss over the whole optimizer step, exact under gradient accumulation.

        Micro-batches of one step (one `global_step`) may hold different numbers of labelled
        tokens (task batches; labels cut by a curriculum), so each micro-batch's mean would weight
        tokens unequally. Invariant: after each micro-batch's backward, the gradients are those of
        the mean loss over all labelled tokens of the step's micro-batches so far. Micro-batch k
        rescales the accumulated gradients by seen / (seen + n_k) and returns its token-loss sum
        times `accumulate_grad_batches` (Lightning divides by it) over (seen + n_k); so the last
        micro-batch leaves the gradient of one big batch of all the step's examples. Under DDP each
        rank normalises by its own tokens and DDP averages the ranks. Logs `train/loss`: the
        micro-batch's per-token mean; returns `step_loss`: the step's per-token mean so far.
        """
        logits = self(batch.input_ids)  # (B, T, V)
        labels = batch.labels.flatten()
        loss_sum = F.cross_entropy(logits.flatten(0, 1), labels, ignore_index=-100, reduction="sum")
        tokens = (labels != -100).sum()
        first = self.trainer.global_step != self._accumulating_step  # first micro-batch of a step
        if first:
            self._accumulating_step = self.trainer.global_step
            self._step_tokens = torch.zeros_like(tokens)
            self._step_loss_sum = torch.zeros_like(loss_sum.detach())
        seen, self._step_tokens = self._step_tokens, self._step_tokens + tokens
        total = self._step_tokens.clamp(min=1)
        if not first:  # the accumulated mean over `seen` tokens becomes one over `total`
            for parameter in self.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_((seen / total).to(parameter.grad.dtype))
        self._step_loss_sum = self._step_loss_sum + loss_sum.detach()
        self.log("train/loss", loss_sum.detach() / tokens.clamp(min=1), prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return {
            "loss": loss_sum * self.trainer.accumulate_grad_batches / total,
            "step_loss": self._step_loss_sum / total,
        }

    @torch.no_grad()
    def greedy_generate(self, batch: EvalBatch, use_cache: bool = True) -> torch.Tensor:
        """Greedy continuation of each prompt for exactly its target's length (EOS included).

        Uses a KV cache (prompts left-padded, positions from the attention mask, so every row's
        positions continue from its own prompt) unless `use_cache` is False or the encoding
        declares `supports_kv_cache = False`; then every step recomputes the whole sequence.
        Returns (B, max target length) token ids laid out like `batch.targets`.
        """
        if use_cache and self.decoder.pos_encoding.supports_kv_cache:
            return self._greedy_generate_cached(batch)
        return self._greedy_generate_uncached(batch)

    def _greedy_generate_cached(self, batch: EvalBatch) -> torch.Tensor:
        device = batch.input_ids.device
        prompt_width = int(batch.prompt_lengths.max())
        # Left-pad the prompts: row b's prompt ends at column prompt_width - 1.
        source = torch.arange(prompt_width, device=device) - (
            prompt_width - batch.prompt_lengths[:, None]
        )  # (B, P): column -> index into the row's prompt, < 0 on padding
        prompt_mask = source >= 0
        prompts = batch.input_ids.gather(1, source.clamp(min=0)).masked_fill(~prompt_mask, PAD)
        cache = self.decoder.new_cache()
        logits = self.decoder(prompts, attention_mask=prompt_mask, cache=cache)  # (B, P, V)
        generated = torch.full_like(batch.targets, PAD)
        for step in range(batch.targets.shape[1]):
            next_token = logits[:, -1].argmax(dim=-1)  # (B,)
            generated[:, step] = next_token.masked_fill(step >= batch.target_lengths, PAD)
            if step + 1 < batch.targets.shape[1]:
                logits = self.decoder(generated[:, step, None], cache=cache)  # (B, 1, V)
        return generated

    def _greedy_generate_uncached(self, batch: EvalBatch) -> torch.Tensor:
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
        prompts = [row[1 : n - 1] for row, n in zip(batch.input_ids.tolist(), batch.prompt_lengths)]
        return {
            "lengths": batch.lengths,
            "inputs": prompts,  # the input tokens, without BOS and SEP
            "generated": generated,
            "targets": batch.targets,
        }

    def on_predict_epoch_end(self) -> None:
        """Write predictions.jsonl: one line per example with its target and generation."""
        if not self.trainer.is_global_zero:
            return
        task = self.trainer.datamodule.task
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "predictions.jsonl", "w") as file:
            for batch in self.trainer.predict_loop.predictions:
                for length, inputs, generated, target in zip(
                    batch["lengths"].tolist(),
                    batch["inputs"],
                    batch["generated"].tolist(),
                    batch["targets"].tolist(),
                ):
                    record = {
                        "length": length,
                        "input": " ".join(task.decode(inputs)),
                        "target": " ".join(task.decode([t for t in target if t != PAD])),
                        "generated": " ".join(task.decode([t for t in generated if t != PAD])),
                        "exact_match": generated == target,
                    }
                    file.write(json.dumps(record) + "\n")
        print(f"predictions: {out_dir / 'predictions.jsonl'}")

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
        print("\n" + format_table(results, self._train_max_length()))  # below the progress bar
        figure = figure_metrics_vs_length(results, self._train_max_length(), title="test")
        figure.savefig(out_dir / "metrics_vs_length.png", dpi=120, bbox_inches="tight")
        write_results(
            out_dir / "results.json",
            metrics=results,
            train_max_length=self._train_max_length(),
            pos_encoding=type(self.decoder.pos_encoding).__name__,
            global_step=max(self.global_step, self.checkpoint_step),
            config=self.run_config,
            summary={  # extrapolation score and effective length of the accuracy-like metrics
                name: summarise(per_length, self._train_max_length())
                for name, per_length in results.items()
                if self.metrics["test"][name].higher_is_better
            },
        )
        print(f"results: {out_dir / 'results.json'}, figure: {out_dir / 'metrics_vs_length.png'}")

    def on_train_start(self) -> None:
        self._accumulating_step = -1  # a new fit starts a new accumulation

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint_step = checkpoint.get("global_step", 0)
        self.fit_encoding_state(checkpoint)
        self.training_random_state.load(checkpoint, self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.training_random_state.save(checkpoint, self.device)  # called on every rank

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.training_random_state.before_batch(self.device)

    def on_after_backward(self) -> None:
        self.training_random_state.after_backward(self.device)

    def fit_encoding_state(self, checkpoint: dict) -> None:
        """Let a checkpoint be loaded into a model with another encoding when the two encodings'
        tensors differ only in schedulable values, e.g. a RoPE checkpoint tested with RoPELinear
        or YaRN (context extension without fine-tuning): the configured encoding's schedulable
        values that the checkpoint lacks keep their configured values, and the trained
        encoding's schedulable values are dropped. Any other difference is a one-line error."""
        prefix = "decoder.pos_encoding."
        state = checkpoint["state_dict"]
        own = {k: v for k, v in self.state_dict().items() if k.startswith(prefix)}
        trained_name, trained_schedulable = trained_encoding(checkpoint)
        for name in self.decoder.pos_encoding.schedulable:
            state.setdefault(prefix + name, own[prefix + name].clone())
        for name in trained_schedulable:
            if prefix + name not in own:
                state.pop(prefix + name, None)
        missing = sorted(set(own) - set(state))
        unexpected = sorted(k for k in state if k.startswith(prefix) and k not in own)
        if missing or unexpected:
            raise MisconfigurationException(
                f"the checkpoint was trained with {trained_name}, whose weights do not fit "
                f"{type(self.decoder.pos_encoding).__name__} (missing: "
                f"{', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'}); "
                "test with the encoding it was trained with, or fine-tune with --model.init_from"
            )

    def on_train_end(self) -> None:
        """Save the final weights when the last checkpoint is older (max_steps is not a multiple
        of val_check_interval: the training stream is endless, so no epoch end saves them)."""
        callback = self.trainer.checkpoint_callback
        if callback is None or callback.dirpath is None or self.global_step == 0:
            return
        directory = Path(callback.dirpath)
        if not any(f"step={self.global_step}" in path.name for path in directory.glob("*.ckpt")):
            self.trainer.save_checkpoint(directory / f"final-step={self.global_step}.ckpt")

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
