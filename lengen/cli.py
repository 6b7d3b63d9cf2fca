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

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lengen.checks import check_creatable_dir, check_run

# Imported so that configs can name the data modules by their short class names.
from lengen.data.tasks import TaskDataModule  # noqa: F401
from lengen.data.text import TextDataModule  # noqa: F401
from lengen.module import LengenModule
from lengen.plugins import (
    GROUPS,
    PluginConflict,
    available_names,
    discover,
    discover_all,
    failed_plugin_message,
    plugin_fault,
)
from lengen.positional import PositionOutOfRange

# The last component of a config key that takes a plugin -> its entry-point group.
PLUGIN_KEYS = {
    "pos_encoding": GROUPS["positional_encodings"],
    "task": GROUPS["tasks"],
    "metrics": GROUPS["metrics"],
    "callbacks": GROUPS["callbacks"],
    "encoding": GROUPS["positional_encodings"],  # the encoding a wrapper encoding wraps
}


class UsageError(Exception):
    """Bad input found by the CLI; its message is the one line printed."""


def one_line_error(message: str) -> str:
    """Turn jsonargparse's multi-line error into one line; name the choices for a plugin key."""
    nested = re.search(
        r"unknown \w+ '[^']*'; available in [^\n]*|\w+ '[^']*' is installed \(distribution [^\n]*",
        message,
    )
    if nested:  # raised by the parser of a nested class (e.g. the task inside data)
        return nested.group(0)
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    unknown = re.search(r"Expected a path but \[?'?([\w.]+)", message)
    not_a_path = re.search(r"Expected a dot import path string: ([\w.]+)", message)
    name = (not_a_path or unknown).group(1) if (not_a_path or unknown) else None
    if keys and name and keys[-1].split(".")[-1] in PLUGIN_KEYS:
        key = keys[-1].split(".")[-1]
        group = PLUGIN_KEYS[key]
        failed = failed_plugin_message(group, name, key)
        if failed:
            return failed
        names = ", ".join(available_names(group)) or "none installed"
        return f"unknown {key} {name!r}; available in {group}: {names}"
    typed = re.fullmatch(
        r'Parser key "([\w.]+)":\s*Expected a <class \'(\w+)\'>\. Got value: (.*)', message.strip()
    )
    if typed:  # e.g. `--model.lr inf`: jsonargparse refuses non-finite floats on the command line
        key, kind, value = typed.groups()
        expected = "a finite number" if kind == "float" else f"a value of type {kind}"
        return f"{key}={value} is not accepted: expected {expected}"
    union = re.search(r"Union subtypes\n.*?Errors:\n\s*- ([^\n]+)", message, re.DOTALL)
    if union:  # e.g. trainer.callbacks: the first subtype's error is the constructor's message
        return union.group(1)
    lines = [re.sub(r"^- ", "", line.strip()) for line in message.splitlines()]
    line = " ".join(line for line in lines if line.strip(" -"))  # without jsonargparse's bullets
    if line.startswith("unrecognized arguments"):
        line += " (options are spelled in full; `lengen <subcommand> --help` lists them)"
    return line


def plugin_fault_in_chain(error: BaseException | None) -> str | None:
    """`plugin_fault` of `error` or of the first exception it was raised from that names one."""
    while error is not None:
        fault = plugin_fault(error)
        if fault:
            return fault
        error = error.__cause__ or error.__context__
    return None


class LengenArgumentParser(LightningArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False  # `--trainer.max_step 7` is an error, not max_steps
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        fault = plugin_fault_in_chain(ex)
        raise UsageError(fault or one_line_error(message))


class LengenCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("validate", "test"):
            parser.set_defaults(verbose=False)  # lengen prints its own per-length table
        return parser

    def _parse_ckpt_path(self) -> None:
        """Keep the command line's model: the checkpoint gives weights and buffers only.

        Lightning would replace the model config by the checkpoint's hyperparameters, silently
        undoing overrides such as `--model.pos_encoding.init_args.eval_scale 8` at test time (and
        only for an explicit path, not for `--ckpt_path last`, which lengen resolves later).
        """

    def before_instantiate_classes(self) -> None:
        parser = self._subcommand_parsers[self.subcommand] if self.subcommand else self.parser
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in ("validate", "test", "predict") and config.ckpt_path == "last":
            config.ckpt_path = str(newest_checkpoint(config.trainer.default_root_dir or "."))
            print(f"lengen: using the newest checkpoint {config.ckpt_path}")
        self._run_config = yaml.safe_load(parser.dump(config, skip_validation=True))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # constructors validate their arguments with one-line errors
            cause = error.__cause__ or error.__context__  # jsonargparse wraps what it builds
            fault = None if isinstance(cause, ValueError) else plugin_fault_in_chain(cause)
            raise UsageError(fault or one_line_error(str(error))) from error
        except Exception as error:  # a plugin's constructor failed: name it and its distribution
            message = plugin_fault_in_chain(error)
            if message is None:
                raise
            raise UsageError(message) from error
        self.model.run_config = self._run_config
        if self.subcommand in ("fit", "validate", "test", "predict"):
            config = self.config[self.subcommand]
            try:
                check_creatable_dir(self.trainer.default_root_dir, "trainer.default_root_dir")
                check_run(self.model, self.datamodule, self.subcommand, config.get("ckpt_path"))
            except ValueError as error:  # the checks' messages are one line already
                raise UsageError(str(error)) from error


def newest_checkpoint(root_dir: str) -> Path:
    """The most recently written *.ckpt below `root_dir` (what `--ckpt_path last` means)."""
    checkpoints = list(Path(root_dir).rglob("*.ckpt"))
    if not checkpoints:
        raise UsageError(
            f"--ckpt_path last: no checkpoint (*.ckpt) below {root_dir}; run `lengen fit` with "
            "the same trainer.default_root_dir first, or pass a checkpoint path"
        )
    return max(checkpoints, key=lambda path: path.stat().st_mtime)


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
    except Exception as error:  # a plugin's hook failed inside the run: name the plugin
        message = plugin_fault(error)
        if message is None or os.environ.get("LENGEN_TRACEBACK"):
            raise
        print(f"lengen: error: {message} (LENGEN_TRACEBACK=1 shows where)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
