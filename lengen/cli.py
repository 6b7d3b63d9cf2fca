"""The `lengen` command: LightningCLI's fit, validate, test and predict, plus `lengen plugins`,
`lengen report` (lengen/report.py), `lengen heatmap` (lengen/heatmap.py) and `lengen tune`
(lengen/tune.py).

Every plugin is imported before parsing, so short class names (`pos_encoding: RoPE`) resolve. Bad
input exits non-zero with one line on stderr, no traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from pathlib import Path

import torch
import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.environments import SLURMEnvironment

from lengen.checkpoints import NoCheckpoint, newest_readable_checkpoint

# Imported so that configs can name the data modules by their short class names.
from lengen.data.tasks import TaskDataModule  # noqa: F401
from lengen.data.text import TextDataModule  # noqa: F401
from lengen.divergence import MODES, Diverged, DivergenceGuard
from lengen.logger import ClaimingTensorBoardLogger
from lengen.module import LengenModule
from lengen.plugins import GROUPS, PluginConflict, available_names, discover, discover_all
from lengen.positional import PositionOutOfRange

# The last component of a config key that takes a plugin -> its entry-point group.
PLUGIN_KEYS = {
    "pos_encoding": GROUPS["positional_encodings"],
    "task": GROUPS["tasks"],
    "metrics": GROUPS["metrics"],
    "callbacks": GROUPS["callbacks"],
}


class UsageError(Exception):
    """Bad input found by the CLI; its message is the one line printed."""


def one_line_error(message: str) -> str:
    """Turn jsonargparse's multi-line error into one line; name the choices for a plugin key."""
    nested = re.search(r"unknown \w+ '[^']*'; available in [^\n]*", message)
    if nested:  # raised by the parser of a nested class (e.g. the task inside data)
        return nested.group(0)
    union = re.search(r"Union subtypes\n.*?Errors:\n\s*- ([^\n]+)", message, re.DOTALL)
    if union:  # e.g. trainer.callbacks: the first subtype's error is the constructor's message
        return union.group(1)
    unknown = re.search(r"Expected a path but (\S+) either not accessible", message)
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    if unknown and keys:
        key = keys[-1].split(".")[-1]
        if key in PLUGIN_KEYS:
            group = PLUGIN_KEYS[key]
            names = ", ".join(available_names(group)) or "none installed"
            return f"unknown {key} {unknown.group(1)!r}; available in {group}: {names}"
    return " ".join(line.strip(" -") for line in message.splitlines() if line.strip(" -"))


class ShortNamesHelpFormatter(DefaultHelpFormatter):
    """Plugins by short name in help (`ALiBi`, not its full class path), as configs name them."""

    def _get_help_string(self, action) -> str:
        from lengen.help import shorten_class_paths

        return shorten_class_paths(super()._get_help_string(action))


class LengenArgumentParser(LightningArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", ShortNamesHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        raise UsageError(one_line_error(message))


# Exit status of a run stopped by the divergence guard (2 is bad input).
EXIT_DIVERGED = 3
# Gradient clipping (by global norm) unless the config says otherwise; `null` turns it off.
DEFAULT_GRADIENT_CLIP_VAL = 1.0


class LengenCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.set_defaults({"trainer.gradient_clip_val": DEFAULT_GRADIENT_CLIP_VAL})

    @staticmethod
    def configure_optimizers(lightning_module, optimizer, lr_scheduler=None):
        """`--optimizer X` alone keeps LengenModule's warmup + cosine schedule around X;
        `--lr_scheduler Y` replaces the schedule as well (Lightning's behaviour)."""
        if lr_scheduler is not None or not isinstance(lightning_module, LengenModule):
            return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)
        own = LengenModule.configure_optimizers(lightning_module)  # its AdamW is discarded
        lr_factor = own["lr_scheduler"]["scheduler"].lr_lambdas[0]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """Say in one line what `--optimizer` / `--lr_scheduler` replace (instead of Lightning's
        warning that configure_optimizers is overridden)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*configure_optimizers` will be overridden")
            super()._add_configure_optimizers_method_to_model(subcommand)
        replaced = self.model.__dict__.get("configure_optimizers")
        if replaced is None:
            return
        optimizer = type(replaced.__func__.keywords["optimizer"]).__name__
        scheduler = replaced.__func__.keywords["lr_scheduler"]
        if scheduler is None:
            print(
                f"lengen: --optimizer {optimizer} replaces AdamW (model.lr and model.weight_decay "
                "do not apply); the model's warmup + cosine schedule is kept"
            )
        else:
            print(
                f"lengen: --optimizer {optimizer} and --lr_scheduler {type(scheduler).__name__} "
                "replace AdamW and the model's warmup + cosine schedule"
            )

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("validate", "test"):
            parser.set_defaults(verbose=False)  # lengen prints its own per-length table
        if subcommand == "fit":
            add_fit_arguments(parser)
        return parser

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> Trainer:
        """lengen's defaults: the claiming TensorBoard logger and, for fit, its callbacks."""
        if config.get("logger") in (None, True):
            config["logger"] = default_logger(config.get("default_root_dir"))
        if self.subcommand == "fit":
            callbacks = [*callbacks, *fit_callbacks(self.config_init["fit"])]
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        """Keep the command line's model: the checkpoint gives weights and buffers only.

        Lightning would replace the model config by the checkpoint's hyperparameters, silently
        undoing overrides such as `--model.pos_encoding.init_args.eval_scale 8` at test time (and
        only for an explicit path, not for `--ckpt_path last`, which lengen resolves later).
        """

    def before_instantiate_classes(self) -> None:
        parser = self._subcommand_parsers[self.subcommand] if self.subcommand else self.parser
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in ("fit", "validate", "test", "predict"):
            resolve_last_checkpoint(config, self.subcommand)
        self._run_config = yaml.safe_load(parser.dump(config, skip_validation=True))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # constructors validate their arguments with one-line errors
            raise UsageError(one_line_error(str(error))) from error
        self.model.run_config = self._run_config


def add_fit_arguments(parser: LightningArgumentParser) -> None:
    """`fit`'s own top-level options: periodic checkpoints and the divergence guard's mode."""
    parser.add_argument(
        "--checkpoint_every_n_steps",
        type=int | None,
        default=None,
        help="save a checkpoint every N optimizer steps (step=N.ckpt, all kept) in the run's "
        "checkpoints folder; default: Lightning's (after each validation, newest only)",
    )
    parser.add_argument(
        "--on_nonfinite",
        type=str,
        default="stop",
        help=f"on a non-finite loss or gradient: {', '.join(MODES)} (default stop)",
    )


def fit_callbacks(config) -> list[Callback]:
    """The callbacks `lengen fit` always adds: the divergence guard and, when asked, a
    ModelCheckpoint every `checkpoint_every_n_steps` optimizer steps."""
    if config.on_nonfinite not in MODES:
        raise UsageError(f"--on_nonfinite {config.on_nonfinite!r}; accepted: {', '.join(MODES)}")
    callbacks: list[Callback] = [DivergenceGuard(config.on_nonfinite)]
    every = config.checkpoint_every_n_steps
    if every is not None:
        if every < 1:
            raise UsageError(f"--checkpoint_every_n_steps {every}: expected a step count >= 1")
        callbacks.append(
            ModelCheckpoint(every_n_train_steps=every, save_top_k=-1, filename="{step}")
        )
    return callbacks


def default_logger(root_dir: str | None) -> ClaimingTensorBoardLogger:
    """Lightning's default logger (TensorBoard under default_root_dir/lightning_logs, the SLURM
    job id as version under SLURM), with its version folder claimed atomically."""
    return ClaimingTensorBoardLogger(
        save_dir=root_dir or os.getcwd(), version=SLURMEnvironment.job_id()
    )


def resolve_last_checkpoint(config, subcommand: str) -> None:
    """`--ckpt_path last`: the newest readable checkpoint of any version folder below
    trainer.default_root_dir (Lightning would look only in this run's new folder)."""
    if config.ckpt_path != "last":
        return
    config.ckpt_path = str(newest_checkpoint(config.trainer.default_root_dir or "."))
    verb = "resuming from" if subcommand == "fit" else "using"
    print(f"lengen: {verb} the newest checkpoint {config.ckpt_path}")


def newest_checkpoint(root_dir: str) -> Path:
    """The most recently written readable *.ckpt below `root_dir` (what `--ckpt_path last`
    means); unreadable ones are skipped with a line saying so."""
    try:
        return newest_readable_checkpoint(root_dir)
    except NoCheckpoint as error:
        raise UsageError(str(error)) from error


def print_plugins(as_json: bool) -> None:
    """`lengen plugins`: a table per group (name, distribution, summary) or a JSON list."""
    rows = [
        {"group": group, **plugin}
        for group in GROUPS.values()
        for plugin in (
            {"name": p.name, "distribution": p.distribution, "error": p.error, "summary": p.summary}
            for p in discover(group).values()
        )
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for group in GROUPS.values():
        group_rows = [row for row in rows if row["group"] == group]
        print(f"{group} ({len(group_rows)})")
        if not group_rows:
            print("  (none installed)")
        name_width = max((len(row["name"]) for row in group_rows), default=0) + 2
        dist_width = max((len(row["distribution"]) for row in group_rows), default=0) + 2
        for row in group_rows:
            name = row["name"].ljust(name_width)
            print(f"  {name}{row['distribution'].ljust(dist_width)}{row['summary']}")
        print()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lengen` console script; `argv` defaults to sys.argv[1:]."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    args = sys.argv[1:] if argv is None else argv
    from lengen.help import handle_top_level  # --help, --version; imports nothing heavy

    if handle_top_level(args):
        return
    from lengen.quiet import silence_known_noise  # Lightning's adverts, known deprecations

    silence_known_noise(args[0])
    try:
        if args[:1] == ["plugins"]:
            extra = [arg for arg in args[1:] if arg != "--json"]
            if extra:
                raise UsageError(f"lengen plugins takes only --json, got {' '.join(extra)}")
            try:
                print_plugins(as_json="--json" in args)
                sys.stdout.flush()
            except BrokenPipeError:  # e.g. `lengen plugins | head`: the reader stopped early
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        if args[:1] == ["report"]:
            from lengen.report import run_report  # matplotlib only when asked for

            try:
                run_report(args[1:])
            except ValueError as error:
                raise UsageError(str(error)) from error
            return
        if args[:1] == ["heatmap"]:
            from lengen.heatmap import main as heatmap_main  # matplotlib only when asked for

            try:
                heatmap_main(args[1:])
            except ValueError as error:
                raise UsageError(str(error)) from error
            return
        if args[:1] == ["tune"]:
            from lengen.tune import tune  # matplotlib and the trial machinery only when asked

            discover_all()
            try:
                tune(args[1:])
            except ValueError as error:
                raise UsageError(str(error)) from error
            return
        discover_all()
        LengenCLI(
            LengenModule,
            LightningDataModule,
            subclass_mode_data=True,
            parser_class=LengenArgumentParser,
            save_config_kwargs={"overwrite": False},
            args=argv,
        )
    except (
        UsageError,
        PluginConflict,
        PositionOutOfRange,
        MisconfigurationException,
    ) as error:
        print(f"lengen: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Diverged as error:
        print(f"lengen: error: {error}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)


if __name__ == "__main__":
    main()
