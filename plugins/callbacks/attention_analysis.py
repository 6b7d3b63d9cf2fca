"""Attention analysis at the end of `lengen test` (Kazemnejad et al. 2023, section 5)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lengen.attention_analysis import (
    distance_distribution,
    figure_distances,
    figure_divergence,
    figure_maps,
    head_divergence,
    record_attention,
)
from lengen.data.tasks import collate_examples
from lengen.distributed import output_dir


class AttentionAnalysis(Callback):
    """At test end: attention maps, attended distances and JSD against a reference, per length.

    Records attention for `examples_per_length` test examples of each length bucket (`lengths`;
    None = every test length) and writes, per length, into `<log dir>/attention/`:
    `length_<L>_maps.png` (every head of the first example), `length_<L>_distances.png` (per head,
    the share of attention at each distance query - key) and, with `reference_checkpoint` (a
    checkpoint of another run on the same task, e.g. NoPE, or its run folder: the newest *.ckpt
    below it), `length_<L>_jsd.png` (Jensen-Shannon
    divergence in bits of each head against each reference head); `attention.json` holds the
    numbers. The same figures go to TensorBoard under `attention/...`. Task runs only.
    """

    def __init__(
        self,
        examples_per_length: int = 4,
        lengths: list[int] | None = None,
        reference_checkpoint: str | None = None,
    ) -> None:
        if examples_per_length < 1:
            raise ValueError(f"examples_per_length must be >= 1, got {examples_per_length}")
        if reference_checkpoint is not None and Path(reference_checkpoint).is_dir():
            found = sorted(
                Path(reference_checkpoint).rglob("*.ckpt"), key=lambda p: p.stat().st_mtime
            )
            if not found:
                raise ValueError(f"reference_checkpoint: no *.ckpt below {reference_checkpoint}")
            reference_checkpoint = str(found[-1])  # the newest, like `--ckpt_path last`
        if reference_checkpoint is not None and not Path(reference_checkpoint).is_file():
            raise ValueError(
                f"reference_checkpoint {reference_checkpoint} is not a checkpoint file or a folder"
            )
        self.examples_per_length = examples_per_length
        self.lengths = lengths
        self.reference_checkpoint = reference_checkpoint

    def _reference(self, pl_module: LightningModule):
        if self.reference_checkpoint is None:
            return None
        # The hyperparameters hold the encoding object, so the checkpoint needs full unpickling:
        # load only checkpoints you made (as with `lengen test --ckpt_path`).
        reference = type(pl_module).load_from_checkpoint(
            self.reference_checkpoint, map_location="cpu", weights_only=False
        )
        if reference.hparams.vocab_size != pl_module.hparams.vocab_size:
            raise ValueError(
                f"reference_checkpoint has vocab_size {reference.hparams.vocab_size}, this run "
                f"{pl_module.hparams.vocab_size}: compare runs of the same task"
            )
        return reference.decoder.to(pl_module.device)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out_dir = output_dir(trainer) / "attention"  # on every rank: log_dir is a collective
        if not trainer.is_global_zero:
            return
        examples = getattr(trainer.datamodule, "eval_sets", {}).get("test")
        if not examples:
            warnings.warn(
                "AttentionAnalysis needs a task data module's test set; skipped", stacklevel=2
            )
            return
        by_length: dict[int, list] = {}
        for example in examples:
            by_length.setdefault(example.length, []).append(example)
        lengths = self.lengths or sorted(by_length)
        missing = [length for length in lengths if length not in by_length]
        if missing:
            raise ValueError(f"AttentionAnalysis lengths {missing} are not in the test set")
        reference = self._reference(pl_module)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = {"reference_checkpoint": self.reference_checkpoint, "lengths": {}}
        for length in lengths:
            batch = collate_examples(by_length[length][: self.examples_per_length])
            # Cut to the shortest row so that every analysed position holds a real token.
            width = int((batch.prompt_lengths + batch.target_lengths).min()) - 1
            input_ids = batch.input_ids[:, :width].to(pl_module.device)
            maps = record_attention(pl_module.decoder, input_ids)  # (L, B, nh, T, T)
            distances = distance_distribution(maps).mean(dim=1)  # (L, nh, T)
            steps = torch.arange(width, dtype=torch.float64)
            figures = {
                "maps": figure_maps(maps[:, 0], f"attention, length {length} (example 0)"),
                "distances": figure_distances(distances, f"attended distance, length {length}"),
            }
            entry = {"mean_distance": (distances * steps).sum(-1).tolist()}  # (L, nh)
            if reference is not None:
                divergence = head_divergence(maps, record_attention(reference, input_ids))
                entry["jsd"] = divergence.tolist()  # (L, nh, nh')
                entry["jsd_closest_reference_head"] = divergence.min(dim=-1).values.tolist()
                figures["jsd"] = figure_divergence(divergence, f"JSD vs reference, length {length}")
            summary["lengths"][str(length)] = entry
            for name, figure in figures.items():
                figure.savefig(out_dir / f"length_{length}_{name}.png", dpi=100)
                for logger in trainer.loggers:
                    if hasattr(logger.experiment, "add_figure"):
                        logger.experiment.add_figure(
                            f"attention/{name}/length_{length}", figure, trainer.global_step
                        )
        (out_dir / "attention.json").write_text(json.dumps(summary, indent=2))
        print(f"attention analysis: {out_dir}")
