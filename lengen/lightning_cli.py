"""LightningCLI for lengen: fit, validate, test and predict (`lengen.cli.main` dispatches here).

The part of the `lengen` command that needs Lightning; lengen/cli.py imports it only for the
commands that train or evaluate (and lengen/tune.py for its trials). Every plugin is imported
before parsing, so short class names (`pos_encoding: RoPE`) resolve. Bad input raises UsageError
with one line, which lengen/cli.py prints.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import json
import os
import re
import sys
import warnings
from pathlib import Path

import torch
import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.environments import SLURMEnvironment

from lengen.argparser import UsageError
from lengen.checkpoints import NoCheckpoint, newest_readable_checkpoint
from lengen.checks import check_creatable_dir, check_run

# Imported so that configs can name the data modules by their short class names.
from lengen.data.tasks import TaskDataModule  # noqa: F401
from lengen.data.text import TextDataModule  # noqa: F401
from lengen.divergence import MODES, DivergenceGuard
from lengen.logger import ClaimingTensorBoardLogger
from lengen.module import LengenModule
from lengen.plugins import (
    GROUPS,
    available_names,
    discover_all,
    failed_plugin_message,
    plugin_fault,
)
from lengen.positional import PositionalEncoding
from lengen.provenance import EVALUATION_KEYS, flatten, training_config

# The last component of a config key that takes a plugin -> its entry-point group.
PLUGIN_KEYS = {
    "pos_encoding": GROUPS["positional_encodings"],
    "task": GROUPS["tasks"],
    "metrics": GROUPS["metrics"],
    "callbacks": GROUPS["callbacks"],
    "encoding": GROUPS["positional_encodings"],  # the encoding a wrapper encoding wraps
}


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
        if keys and UNKNOWN_KEY.match(union.group(1)):  # a class's unknown key: give its path
            return prefix_unknown_key(union.group(1), nested_key_prefix(keys[0], message))
        return union.group(1)
    lines = [re.sub(r"^- ", "", line.strip()) for line in message.splitlines()]
    line = " ".join(line for line in lines if line.strip(" -"))  # without jsonargparse's bullets
    if line.startswith("unrecognized arguments"):
        line += " (options are spelled in full; `lengen <subcommand> --help` lists them)"
    return line


# `unknown_key_line`'s line: key, closest accepted key, level, accepted keys.
UNKNOWN_KEY = re.compile(
    r"([\w.]+) is not accepted(?: \(did you mean ([\w.]+)\?\))?"
    r"(?:; accepted(?: in ([\w.]+))?: (.*))?$"
)


def level_keys(dests: list[str], prefix: str) -> list[str]:
    """The keys one level below `prefix` ("" or "model.") among a parser's destinations."""
    names = {dest[len(prefix) :].split(".")[0] for dest in dests if dest.startswith(prefix)}
    return sorted(name for name in names if name and name != "help" and not name.endswith("help"))


def unknown_key_line(key: str, accepted: list[str], close: str | None = None) -> str:
    """`key` is not accepted, with the closest accepted key at its level (when one is close)
    and the accepted keys (unless there are many and one is close)."""
    parent = key.rpartition(".")[0]
    if close is None:
        name = key.rpartition(".")[2]
        matches = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        close = f"{parent}.{matches[0]}" if parent and matches else (matches or [None])[0]
    line = f"{key} is not accepted"
    if close:
        line += f" (did you mean {close}?)"
    if accepted and (not close or len(accepted) <= 30):
        line += f"; accepted{' in ' + parent if parent else ''}: {', '.join(accepted)}"
    return line


def _key_path(value, name: str) -> list[str] | None:
    """The keys leading to `name` in nested dicts `value` (depth first), None if absent."""
    if not isinstance(value, dict):
        return None
    if name in value:
        return []
    for key, inner in value.items():
        path = _key_path(inner, name)
        if path is not None:
            return [str(key), *path]
    return None


def nested_key_prefix(key: str, message: str) -> str:
    """The path of the unknown key a class's parser reported inside `key`'s union error: found
    in the given value when it is a dict (a config file's section), else `key.init_args.`."""
    name = UNKNOWN_KEY.match(re.search(r"Errors:\n\s*- ([^\n]+)", message).group(1)).group(1)
    given = re.search(r"Given value: (\{.*\})\s*$", message, re.DOTALL)
    try:
        path = _key_path(ast.literal_eval(given.group(1)), name) if given else None
    except (ValueError, SyntaxError):
        path = None
    return ".".join([key, *path]) + "." if path is not None else key + ".init_args."


def prefix_unknown_key(line: str, prefix: str) -> str:
    """`unknown_key_line`'s line about a nested parser's key, with the key's path `prefix`
    (e.g. "data.init_args.") put in front."""
    key, close, _, accepted = UNKNOWN_KEY.match(line).groups()
    return unknown_key_line(
        prefix + key, accepted.split(", ") if accepted else [], close and prefix + close
    )


def plugin_fault_in_chain(error: BaseException | None) -> str | None:
    """`plugin_fault` of `error` or of the first exception it was raised from that names one."""
    while error is not None:
        fault = plugin_fault(error)
        if fault:
            return fault
        error = error.__cause__ or error.__context__
    return None


class ShortNamesHelpFormatter(DefaultHelpFormatter):
    """Plugins by short name in help (`ALiBi`, not its full class path), as configs name them."""

    def _get_help_string(self, action) -> str:
        from lengen.help import shorten_class_paths

        return shorten_class_paths(super()._get_help_string(action))


class LengenArgumentParser(LightningArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False  # `--trainer.max_step 7` is an error, not max_steps
        kwargs.setdefault("formatter_class", ShortNamesHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        fault = plugin_fault_in_chain(ex)
        raise UsageError(fault or self.unknown_key(message) or one_line_error(message))

    def unknown_key(self, message: str) -> str | None:
        """A mistyped key of a config file as one line with the accepted keys at its level
        (jsonargparse names the key only); None for other messages."""
        nested = re.fullmatch(r"Option '([\w.]+)' is not accepted", message.strip())
        if nested:  # a class's parser (data.init_args, an encoding's init_args, ...)
            dests = [action.dest for action in self._actions]
            return unknown_key_line(nested.group(1), level_keys(dests, ""))
        top = re.fullmatch(r"Subcommand '(\w+)' does not accept option '([\w.]+)'", message.strip())
        subcommands = getattr(self, "_subcommands_action", None)
        if top and subcommands is not None:
            parser = subcommands._name_parser_map.get(top.group(1))
            if parser is None:
                return None
            dests = [action.dest for action in parser._actions]
            parts = top.group(2).split(".")
            depth = 1  # the first component of the key that is unknown at its level
            while depth < len(parts) and level_keys(dests, ".".join(parts[:depth]) + "."):
                depth += 1
            while depth > 1 and not level_keys(dests, ".".join(parts[: depth - 1]) + "."):
                depth -= 1
            parent = ".".join(parts[: depth - 1])
            key = ".".join(parts[:depth])
            return unknown_key_line(key, level_keys(dests, parent + "." if parent else ""))
        return None


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
        """lengen's defaults: the claiming TensorBoard logger and, for fit, its callbacks. The
        up-front checks of lengen/checks.py run first, so a refused run builds no Trainer (whose
        device lines would come before the error line)."""
        self._check_run(config)
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

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Keep the command line as given: `_use_training_config` parses it again on top of the
        trained model (its config files and `--model...` options alike)."""
        if args is None:
            self._command_line = sys.argv[1:]
        else:
            self._command_line = list(args) if isinstance(args, (list, tuple)) else None
        super().parse_arguments(parser, args)

    def _use_training_config(self) -> None:
        """Test what was trained: validate/test/predict with a checkpoint start from the model
        section of the checkpoint's training config (lengen/provenance.py `training_config`);
        the command's config files and `--model...` options then apply on top of it, in their
        order, exactly alike. What they may change is evaluation-time: the encoding as a
        context extension or a wrapper (`check_encoding_change`), its evaluation arguments, the
        attention backend, the metrics. A training-time architecture value different from the
        trained one is refused in one line (`check_architecture`); training-only values (lr,
        warmup, ...) keep the trained ones, and one line names those given differently."""
        config = self.config[self.subcommand]
        if self.subcommand not in ("validate", "test", "predict") or not config.ckpt_path:
            return
        if self._command_line is None or self.subcommand not in self._command_line:
            return  # args given as a dict (or no subcommand found): nothing to re-apply
        if not Path(config.ckpt_path).is_file():  # reported by lengen/checks.py
            return
        trained, source = training_config(config.ckpt_path)
        if not trained or not trained.get("model"):
            print(
                f"lengen: warning: {config.ckpt_path} has no training config (no config.yaml "
                "beside its version folder, no hyper_parameters); the model is this command's"
            )
            return
        trained_model = {k: v for k, v in trained["model"].items() if k not in EVALUATION_KEYS}
        at = self._command_line.index(self.subcommand) + 1
        given = given_model_keys(self._command_line[at:])
        argv = [
            *self._command_line[:at],
            "--model=" + json.dumps(trained_model),
            *self._command_line[at:],
        ]
        parser = self._subcommand_parsers[self.subcommand]
        config.model = self.parser.parse_args(argv)[self.subcommand].model
        after = yaml.safe_load(parser.dump(config, skip_validation=True))["model"]
        trained_encoding = trained_model.get("pos_encoding")
        if wraps_trained_encoding(trained_encoding, after.get("pos_encoding"), list(given)):
            # A wrapper around what was trained (SelfExtend around RoPE, ...): the wrapped
            # encoding is the trained one, with its training arguments, not the class defaults.
            argv.append("--model.pos_encoding.init_args.encoding=" + json.dumps(trained_encoding))
            config.model = self.parser.parse_args(argv)[self.subcommand].model
            after = yaml.safe_load(parser.dump(config, skip_validation=True))["model"]
            print("lengen: the wrapper's encoding is the trained one, with its training arguments")
        if not trained_model.get("hf_checkpoint"):  # else the folder decides the architecture
            check_architecture(config.ckpt_path, trained_model, after, given)
        check_encoding_change(
            trained_encoding, after.get("pos_encoding"), given_source(given, "pos_encoding")
        )
        not_used = []
        for key in TRAINING_ONLY_KEYS:  # the trained values: they describe the tested model
            if key not in trained_model:
                continue
            if key in given and after.get(key) != trained_model[key]:
                not_used.append(f"{key}={after.get(key)} (trained: {trained_model[key]})")
            setattr(config.model, key, trained_model[key])
        after = yaml.safe_load(parser.dump(config, skip_validation=True))["model"]
        changed = [
            f"{key.removesuffix('.class_path')}={str(value).rsplit('.', 1)[-1]}"
            if key.endswith("class_path")
            else f"{key}={value}"
            for key, value in flatten(after).items()
            if key.split(".")[0] not in EVALUATION_KEYS and flatten(trained_model).get(key) != value
        ]
        changes = f"; changed by this command: {', '.join(changed)}" if changed else ""
        print(f"lengen: model from the training config {source}{changes}")
        if not_used:
            print(
                "lengen: training-only settings, not used by "
                f"{self.subcommand}: {', '.join(not_used)}"
            )

    def before_instantiate_classes(self) -> None:
        parser = self._subcommand_parsers[self.subcommand] if self.subcommand else self.parser
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in ("fit", "validate", "test", "predict"):
            resolve_last_checkpoint(config, self.subcommand)
        if self.subcommand:
            self._use_training_config()
        self._run_config = yaml.safe_load(parser.dump(config, skip_validation=True))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except UsageError:
            raise
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
        self.model.command_line = self._command_line

    def _check_run(self, trainer_config: dict) -> None:
        """Everything about the run that can be checked before it starts (lengen/checks.py)."""
        if self.subcommand not in ("fit", "validate", "test", "predict"):
            return
        root_dir = trainer_config.get("default_root_dir") or os.getcwd()
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        try:
            check_creatable_dir(root_dir, "trainer.default_root_dir")
            check_run(self.model, self.datamodule, self.subcommand, ckpt_path)
        except ValueError as error:  # the checks' messages are one line already
            raise UsageError(str(error)) from error


# Model settings that only training reads: a test keeps the trained values.
TRAINING_ONLY_KEYS = ("lr", "weight_decay", "warmup_steps", "min_lr_ratio", "dropout")
# Training-time architecture (besides the encoding): it comes from the checkpoint.
ARCHITECTURE_KEYS = (
    "n_layer", "n_head", "d_model", "d_mlp", "tie_embeddings", "norm", "mlp", "bias", "norm_eps",
)  # fmt: skip


def _yaml_value(value: str):
    """A config value as jsonargparse reads it: a file's contents, or YAML (JSON) text."""
    try:
        path = Path(value)
        return yaml.safe_load(path.read_text() if path.is_file() else value)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def _model_section(config_arg: str) -> dict:
    """The `model` section of a `--config` value (a file, or YAML text as jsonargparse allows)."""
    loaded = _yaml_value(config_arg)
    model = loaded.get("model") if isinstance(loaded, dict) else None
    return model if isinstance(model, dict) else {}


def given_model_keys(argv: list[str]) -> dict[str, str]:
    """{flattened model key: where it is given, a config file or `--model.KEY`} for the model
    settings that the config files and --model options of `argv` (after the subcommand) give;
    a later one wins, as when parsing."""
    given: dict[str, str] = {}
    index = 0
    while index < len(argv):
        name, has_value, value = argv[index].partition("=")
        if not has_value and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            value = argv[index + 1]
        if name in ("--config", "-c"):
            for key in flatten(_model_section(value)):
                given[key] = value
        elif name == "--model":  # the model section as a file or YAML text
            section = _yaml_value(value)
            for key in flatten(section if isinstance(section, dict) else {}):
                given[key] = name
        elif name.startswith("--model."):
            given[name.removeprefix("--model.").removesuffix("+")] = name
        index += 1
    return given


def given_source(given: dict[str, str], key: str) -> str | None:
    """Where the last setting of model `key` (or of one below it) is given; None if nowhere."""
    sources = [source for name, source in given.items() if name.split(".")[0] == key]
    return sources[-1] if sources else None


def check_architecture(ckpt_path: str, trained: dict, tested: dict, given: dict) -> None:
    """UsageError naming every training-time architecture value this command gives that differs
    from the trained one (with where it is given)."""
    keys = [
        key
        for key in ARCHITECTURE_KEYS
        if key in trained and given_source(given, key) and tested.get(key) != trained[key]
    ]
    if keys:
        differing = ", ".join(
            f"{key}={trained[key]} (this model: {tested.get(key)}) given by "
            f"{given_source(given, key)}"
            for key in keys
        )
        flags = " ".join(f"--model.{key} {json.dumps(trained[key])}" for key in keys)
        raise UsageError(
            f"--ckpt_path {ckpt_path} was trained with another model size or architecture: "
            f"{differing}; the architecture comes from the checkpoint: leave these out of this "
            f"command's config files and --model options, or give the trained values ({flags})"
        )


def _encoding_class(spec) -> type | None:
    """The class of an encoding config ({"class_path": ...} or a class path); None if unknown."""
    if isinstance(spec, dict):
        spec = spec.get("class_path")
    if not isinstance(spec, str):
        return None
    module_name, _, name = spec.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None


def is_context_extension(trained: type, tested: type) -> bool:
    """True when testing a checkpoint trained with `trained` using `tested` is a documented
    context extension: both belong to one encoding family (a common base class other than
    PositionalEncoding, e.g. RoPE for RoPE -> RoPELinear / RoPENTK / YaRN / XPos) and at least one
    of them has schedulable values (a scale, a blend) in which they may differ. The tensors are
    checked when the checkpoint loads (`LengenModule.fit_encoding_state`)."""
    common = [
        cls
        for cls in trained.__mro__
        if issubclass(tested, cls) and issubclass(cls, PositionalEncoding)
    ]
    family = common and common[0] is not PositionalEncoding
    return bool(family) and bool(trained.schedulable or tested.schedulable)


def _wrapped_spec(spec):
    """The `init_args.encoding` of a wrapper's encoding config (None if it wraps nothing)."""
    if not isinstance(spec, dict):
        return None
    return (spec.get("init_args") or {}).get("encoding")


def wraps_trained_encoding(trained_spec, tested_spec, given_keys: list[str]) -> bool:
    """True when the tested encoding is a wrapper (e.g. SelfExtend) around the trained encoding's
    class and the command (`given_keys`: its model keys, `given_model_keys`) gives the wrapped
    encoding no arguments of its own."""
    trained, tested = _encoding_class(trained_spec), _encoding_class(tested_spec)
    if trained is None or tested is trained:
        return False
    if _encoding_class(_wrapped_spec(tested_spec)) is not trained:
        return False
    return not any("pos_encoding.init_args.encoding.init_args" in key for key in given_keys)


def check_encoding_change(trained_spec, tested_spec, source: str | None = None) -> None:
    """UsageError unless the tested encoding is the trained one, a context extension of it, or a
    wrapper around it (`init_args.encoding`, e.g. SelfExtend around RoPE); `source`: where the
    tested encoding is given (a config file or an option), named in the error."""
    trained, tested = _encoding_class(trained_spec), _encoding_class(tested_spec)
    if trained is None or tested is None or trained is tested:
        return
    if _encoding_class(_wrapped_spec(tested_spec)) is trained:
        return  # a wrapper around what was trained (Self-Extend, ReRoPE, ... around RoPE)
    if not is_context_extension(trained, tested):
        given = f" (given by {source})" if source else ""
        raise UsageError(
            f"the checkpoint was trained with {trained.__name__}; testing it with "
            f"{tested.__name__} is not a context extension (allowed: another encoding of the "
            "same family with schedulable values, e.g. RoPE -> RoPELinear, RoPENTK, YaRN, XPos; "
            "or a wrapper given the trained encoding, e.g. --model.pos_encoding SelfExtend "
            "--model.pos_encoding.init_args.encoding RoPE); "
            f"leave model.pos_encoding{given} out of this command's config files and --model "
            "options to test what was trained"
        )


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


def run(argv: list[str] | None) -> None:
    """`lengen fit|validate|test|predict ...`: every plugin imported, then LightningCLI."""
    discover_all()
    LengenCLI(
        LengenModule,
        LightningDataModule,
        subclass_mode_data=True,
        parser_class=LengenArgumentParser,
        save_config_kwargs={"overwrite": False},
        args=argv,
    )
