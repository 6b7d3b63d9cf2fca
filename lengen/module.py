"""The LightningModule that hosts the decoder: training, per-length evaluation and results."""

from __future__ import annotations

import copy
import importlib
import json
import math
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from lengen import tb_logging
from lengen.checks import require_finite
from lengen.distributed import (
    compute_on_every_rank,
    gather_batches,
    ignore_unsynced_epoch_log_warning,
    output_dir,
)
from lengen.metric import BatchWeightedMean, EvalBatch, LengthMetric, bucket_values
from lengen.model import Decoder
from lengen.plugins import discover
from lengen.positional import PositionalEncoding
from lengen.provenance import gather
from lengen.random_state import TrainingRandomState
from lengen.results import figure_metrics_vs_length, write_outputs
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


def default_metrics() -> list[LengthMetric]:
    """Every installed metric plugin with its default arguments; one whose constructor fails is
    left out with a warning (a broken optional plugin must not break a run that does not ask for
    it; a run that names it in model.metrics gets the error)."""
    metrics = []
    for plugin in discover("lengen.metrics").values():
        if plugin.error is not None:
            continue  # already warned about by discover
        try:
            metrics.append(plugin.obj())
        except Exception as error:
            warnings.warn(
                f"metric plugin {plugin.name!r} (from distribution {plugin.distribution!r}) left "
                f"out: its constructor failed: {type(error).__name__}: {error}",
                stacklevel=2,
            )
    return metrics


def check_optimizer_arguments(
    lr: float, weight_decay: float, warmup_steps: int, min_lr_ratio: float
) -> None:
    """One-line ValueError for a learning rate, decay, warm-up or floor out of range."""
    require_finite("LengenModule", "lr", lr, 0.0, low_open=True)
    require_finite("LengenModule", "weight_decay", weight_decay, 0.0, low_open=False)
    require_finite("LengenModule", "min_lr_ratio", min_lr_ratio, 0.0, low_open=False)
    if min_lr_ratio > 1:
        raise ValueError(f"LengenModule: min_lr_ratio={min_lr_ratio} must lie in [0, 1]")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"LengenModule: warmup_steps={warmup_steps!r} must be an integer >= 0")


class LengenModule(L.LightningModule):
    """A decoder-only Transformer with a pluggable positional encoding.

    Architecture: `norm` (layernorm | rmsnorm), `mlp` (gelu | swiglu), `bias` (biases in the
    blocks' linear layers) and `tie_embeddings`, as documented on `Decoder`.

    Optimiser: AdamW with `lr`, `weight_decay`; the learning rate warms up linearly over
    `warmup_steps` and then follows a cosine down to `min_lr_ratio * lr` at `trainer.max_steps`
    (constant when max_steps is not set). `metrics`: per-length metric plugins; None means every
    installed metric plugin with its default arguments.

    `init_from`: a checkpoint (e.g. trained with another encoding) whose weights start `fit`:
    every tensor whose name and shape match is loaded, the rest (the new encoding's own parameters
    and buffers) keep their initialisation, and one line reports what was not loaded or not used.
    Applied in `setup("fit")`, so resuming with `--ckpt_path` still restores the full checkpoint.

    `hf_checkpoint`: a `transformers` Llama-family folder (Llama, Qwen2, Mistral without sliding
    window; see lengen/hf_import.py) whose config replaces the architecture arguments and whose
    weights are loaded at construction (so fit, validate, test and predict all start from them),
    under the positional encoding given here, or by default the one equal to its rope parameters.

    Args:
        pos_encoding: the positional encoding plugin (short name, e.g. RoPE, ALiBi; see
            `lengen plugins`); its own arguments via `--model.pos_encoding.help NAME`. None
            (only with hf_checkpoint): the lengen encoding equal to the checkpoint's rope.
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
        norm: "layernorm" or "rmsnorm" (see Decoder).
        mlp: "gelu" or "swiglu" (see Decoder).
        bias: biases on every linear layer of the blocks.
        norm_eps: the norms' epsilon (Qwen2 checkpoints use 1e-6).
        hf_checkpoint: a `transformers` Llama-family folder to import (above); None: none.
    """

    def __init__(
        self,
        pos_encoding: PositionalEncoding | None = None,
        vocab_size: int = 256,
        n_layer: int = 2,
        n_head: int = 4,
        d_model: int = 128,
        d_mlp: int | None = None,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
        attention: str = "auto",
        norm: str = "layernorm",
        mlp: str = "gelu",
        bias: bool = False,
        norm_eps: float = 1e-5,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        metrics: list[LengthMetric] | None = None,
        init_from: str | None = None,
        hf_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        check_optimizer_arguments(lr, weight_decay, warmup_steps, min_lr_ratio)
        if pos_encoding is None and hf_checkpoint is None:
            raise ValueError(
                "model.pos_encoding is required (e.g. --model.pos_encoding RoPE); it may be left "
                "out only with --model.hf_checkpoint, whose rope parameters then choose it"
            )
        if init_from is not None and not Path(init_from).is_file():
            raise ValueError(f"init_from={init_from!r} is not a checkpoint file")
        self.init_from = init_from  # not a hyperparameter: load_from_checkpoint must not need it
        # logger=False: Lightning would log every argument (and LightningCLI's `_instantiator`)
        # with a placeholder `hp_metric`; lengen logs its own HParams (`_log_run_hparams`).
        # pos_encoding (an nn.Module) stays in them on purpose: a checkpoint records the encoding
        # it was trained with (`trained_encoding`), so Lightning's advice to ignore it is muted.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Attribute 'pos_encoding' is an instance")
            self.save_hyperparameters(ignore=["init_from", "hf_checkpoint"], logger=False)
        architecture = dict(
            vocab_size=vocab_size,
            n_layer=n_layer,
            n_head=n_head,
            d_model=d_model,
            d_mlp=d_mlp,
            tie_embeddings=tie_embeddings,
            norm=norm,
            mlp=mlp,
            bias=bias,
            norm_eps=norm_eps,
        )
        if hf_checkpoint is not None:  # the transformers config decides the architecture
            from lengen.hf_import import choose_encoding, hf_architecture

            pos_encoding, arguments, line = choose_encoding(hf_checkpoint, pos_encoding)
            if line:
                print(line)
            if arguments is not None:  # chosen here: saved, so load_from_checkpoint needs no folder
                cls = type(pos_encoding)
                self.hparams["pos_encoding"] = (  # as the CLI saves a plugin, else the instance
                    {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": arguments}
                    if "_instantiator" in self.hparams
                    else pos_encoding
                )

            imported = hf_architecture(hf_checkpoint)
            if vocab_size > imported["vocab_size"]:  # e.g. linked from the data's tokenizer
                raise ValueError(
                    f"vocab_size={vocab_size} (the data's tokenizer) is larger than the vocabulary "
                    f"of hf_checkpoint {hf_checkpoint} ({imported['vocab_size']}); use its "
                    f"tokenizer (--data.init_args.tokenizer {hf_checkpoint})"
                )
            architecture.update(imported)
            self.hparams.update(architecture)  # so load_from_checkpoint needs no folder
        self.decoder = Decoder(
            pos_encoding=pos_encoding, dropout=dropout, attention=attention, **architecture
        )
        if hf_checkpoint is not None:
            from lengen.hf_import import load_hf_weights

            print(load_hf_weights(self.decoder, hf_checkpoint))
        self._default_metrics = metrics is None
        if metrics is None:
            metrics = default_metrics()
        self.metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict({metric.name: copy.deepcopy(metric) for metric in metrics})
                for split in SPLITS
            }
        )
        # {split}/loss over all ranks, logged at the end of each evaluation (_finish_split).
        self.eval_loss = nn.ModuleDict({split: BatchWeightedMean() for split in SPLITS})
        self.run_config: dict | None = None  # set by the CLI; written into results.json
        self.test_results: dict[str, dict[int, float]] = {}  # of the last test (lengen.api)
        self.checkpoint_step = 0  # optimizer steps of the loaded checkpoint (test/validate)
        self.command_line: list[str] | None = None  # set by the CLI; provenance in results.json
        # The optimizer step being accumulated: its labelled tokens and token-loss sum so far.
        self._accumulating_step = -1
        self._step_tokens = self._step_loss_sum = torch.zeros(())
        self.training_random_state = TrainingRandomState()  # in every checkpoint, per rank

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.init_from is not None:
            print(self.load_matching_weights(self.init_from))
        self._check_metrics_read_the_tokens()

    def _check_metrics_read_the_tokens(self) -> None:
        """With a `transformers` tokenizer on the data, metrics that read ids as bytes would give
        meaningless numbers: left out of the default metric set (one line), refused when asked."""
        from lengen.data.tokenized import TokenizedTask

        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if not isinstance(getattr(datamodule, "task", None), TokenizedTask):
            return
        byte_level = sorted(
            {type(m).__name__ for m in self.metrics["test"].values() if m.byte_level}
        )
        if not byte_level:
            return
        if not self._default_metrics:
            raise MisconfigurationException(
                f"{', '.join(byte_level)} read token ids as bytes and cannot score the ids of "
                "--data.init_args.tokenizer; use PresenceAccuracy or ExactMatch with a tokenizer"
            )
        for split in SPLITS:
            for name in [n for n, m in self.metrics[split].items() if m.byte_level]:
                del self.metrics[split][name]
        print(
            f"lengen: left out with a tokenizer (they read ids as bytes): {', '.join(byte_level)}"
        )

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
        # sync_dist: the mean over ranks of their per-token means (what DDP's averaged gradient
        # optimises); every rank runs every training step, so the all-reduce never waits alone.
        self.log(
            "train/loss", loss_sum.detach() / tokens.clamp(min=1), prog_bar=True, sync_dist=True
        )
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
        self.eval_loss[split].update(self.loss(logits, batch.labels), len(batch.labels))
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

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> list[dict]:
        """One record per example of a task batch: its length, input, target and generation."""
        generated = self.greedy_generate(batch).tolist()
        task = self.trainer.datamodule.task
        records = []
        for row, prompt_length, length, target, generation in zip(
            batch.input_ids.tolist(),
            batch.prompt_lengths.tolist(),
            batch.lengths.tolist(),
            batch.targets.tolist(),
            generated,
        ):
            records.append(
                {
                    "length": length,
                    "input": task.to_text(task.decode(row[1 : prompt_length - 1])),  # no BOS, SEP
                    "target": task.to_text(task.decode([t for t in target if t != PAD])),
                    "generated": task.to_text(task.decode([t for t in generation if t != PAD])),
                    "exact_match": generation == target,
                }
            )
        return records

    def on_predict_epoch_end(self) -> None:
        """Write predictions.jsonl (rank 0): one line per example, every rank's, in set order."""
        batches = gather_batches(self.trainer.predict_loop.predictions)  # on every rank
        out_dir = output_dir(self.trainer)  # on every rank: a collective
        if not self.trainer.is_global_zero:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "predictions.jsonl", "w") as file:
            for records in batches:
                for record in records:
                    file.write(json.dumps(record) + "\n")
        print(f"predictions: {out_dir / 'predictions.jsonl'}")

    def _finish_split(self, split: str) -> dict[str, dict[int, float]]:
        """Log the loss, per-length scalars and the figure; return {metric: {length: value}}.

        Values are over all ranks: every rank computes every metric (a collective), also one it
        never updated; a metric with no example on any rank is left out."""
        ignore_unsynced_epoch_log_warning()  # the values below are the same on every rank
        loss, rows = compute_on_every_rank(self.eval_loss[split]).tolist()
        self.eval_loss[split].reset()
        loss = loss if rows > 0 else None
        if loss is not None:  # loggers: `_log_split`, at its step
            self.log(f"{split}/loss", loss, logger=False)
        results = {}
        for name, metric in self.metrics[split].items():
            per_length = bucket_values(compute_on_every_rank(metric))
            metric.reset()
            if not per_length:
                continue  # e.g. ExactMatch on language-model batches
            results[name] = per_length
            for length, value in per_length.items():  # loggers: `_log_split`, at its step
                self.log(tb_logging.length_tag(split, name, length), value, logger=False)
        self._log_split(split, results, loss)
        return results

    def _step(self) -> int:
        """The optimizer steps behind the current weights: the training step while fitting, the
        checkpoint's step when validating or testing a checkpoint."""
        return max(self.global_step, self.checkpoint_step)

    def _figure_title(self, split: str) -> str:
        datamodule = getattr(self.trainer, "datamodule", None)
        task = getattr(datamodule, "task", None)
        task_name = type(task).__name__ if task is not None else type(datamodule).__name__
        encoding = type(self.decoder.pos_encoding).__name__
        return f"{split}: {encoding}, {task_name}, step {self._step()}"

    def _log_split(
        self, split: str, results: dict[str, dict[int, float]], loss: float | None
    ) -> None:
        """Per-length and summary scalars and the figure, all at `_step()` (lengen/tb_logging.py).
        Test results go into the training run's TensorBoard folder when the checkpoint has one."""
        if not results or not self.trainer.is_global_zero:
            return
        train_max_length = self._train_max_length()
        summarised = [name for name in results if self.metrics[split][name].higher_is_better]
        values = tb_logging.scalars(split, results, summarised, train_max_length)
        if loss is not None:  # the example-weighted mean loss over all ranks
            values[f"{split}/loss"] = loss
        figure = figure_metrics_vs_length(
            results, train_max_length, title=self._figure_title(split)
        )
        figures = {f"{split}/metrics_vs_length": figure}
        folder = tb_logging.training_run_folder(self.trainer.ckpt_path) if split == "test" else None
        written = folder is not None and tb_logging.write_to_training_run(
            folder, self._step(), values, figures
        )
        if written:
            print(f"lengen: test scalars and figure added to the training run {folder}")
        for logger in self.loggers:
            if written and isinstance(logger, TensorBoardLogger):
                continue
            logger.log_metrics(values, step=self._step())
            if hasattr(logger.experiment, "add_figure"):
                for tag, each in figures.items():
                    logger.experiment.add_figure(tag, each, self._step(), close=False)

    def on_fit_start(self) -> None:
        self._log_run_hparams()

    def _log_run_hparams(self) -> None:
        """HParams for comparing runs (lengen/tb_logging.py): the run's settings, and the summary
        scores of validation and test as metrics; other loggers get the same settings."""
        if not self.trainer.is_global_zero:
            return
        params = tb_logging.run_hparams(self, self.run_config)
        tags = tb_logging.metric_tags(
            [name for name, metric in self.metrics["val"].items() if metric.higher_is_better]
        )
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.hparams.update(params)  # hparams.yaml
                tb_logging.write_hparams(logger.experiment, params, tags)
            else:
                logger.log_hyperparams(params)

    def _train_max_length(self) -> int | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, "train_max_length", None)

    def on_validation_epoch_end(self) -> None:
        results = self._finish_split("val")
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # `lengen validate`, not during fit
            self._write_outputs("validate", "val", results)

    def on_test_epoch_end(self) -> None:
        results = self._finish_split("test")
        self.test_results = results  # over all ranks
        self._write_outputs("test", "test", results)

    def _write_outputs(self, command: str, split: str, results: dict) -> None:
        """The terminal table, the PNG and results.json of `lengen test` / `lengen validate`
        (lengen/results.py), with provenance (lengen/provenance.py)."""
        out_dir = output_dir(self.trainer)  # on every rank: a collective
        if not results or not self.trainer.is_global_zero:
            return
        train_max_length = self._train_max_length()
        payload = {
            "split": split,
            "metrics": results,
            "train_max_length": train_max_length,
            "pos_encoding": type(self.decoder.pos_encoding).__name__,
            "global_step": self._step(),
            "config": self.run_config,
            "summary": {  # in-range mean, extrapolation score, effective length
                name: summarise(per_length, train_max_length)
                for name, per_length in results.items()
                if self.metrics[split][name].higher_is_better
            },
            "provenance": gather(
                self.trainer,
                self.trainer.ckpt_path,
                self.checkpoint_step,
                self.command_line,
                (self.run_config or {}).get("model"),
            ),
        }
        figure = figure_metrics_vs_length(
            results, train_max_length, title=self._figure_title(split)
        )
        write_outputs(out_dir, command, payload, figure)

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
        encoding's schedulable values are dropped. A wrapper around the trained encoding (e.g.
        SelfExtend around FIRE) takes its weights one module deeper. Any other difference is a
        one-line error."""
        prefix = "decoder.pos_encoding."
        state = checkpoint["state_dict"]
        own = {k: v for k, v in self.state_dict().items() if k.startswith(prefix)}
        inner = prefix + "encoding."  # a wrapper's wrapped encoding (SelfExtend around FIRE)
        if any(k.startswith(inner) for k in own) and not any(k.startswith(inner) for k in state):
            for key in [k for k in state if k.startswith(prefix)]:  # trained without the wrapper
                state[inner + key.removeprefix(prefix)] = state.pop(key)
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
