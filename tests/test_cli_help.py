"""`lengen --help` lists every subcommand main() dispatches; `lengen --version`; packaging."""

from __future__ import annotations

import math
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from cli_run import lengen as lengen_command
from lightning.pytorch.cli import LightningCLI
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lengen
from lengen.cli import main
from lengen.help import SUBCOMMANDS, top_level_help

REPO = Path(__file__).resolve().parents[1]


def dispatched_subcommands() -> set[str]:
    """LightningCLI's subcommands plus those main() handles itself (read from its source)."""
    source = (REPO / "lengen" / "cli.py").read_text()
    own = set(re.findall(r'args\[:1\] == \["(\w+)"\]', source))
    assert own, "main() no longer dispatches with args[:1] == [...]; update this test"
    return own | set(LightningCLI.subcommands())


def test_help_lists_every_subcommand_with_one_line(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    listed = {}
    for line in out.splitlines():
        match = re.match(r"  (\w+) {2,}(\S.*)$", line)
        if match:
            listed[match.group(1)] = match.group(2)
    assert dispatched_subcommands() <= set(listed), out
    assert set(listed) - {"h"} >= {name for name, _ in SUBCOMMANDS}
    assert all(len(summary) < 90 for summary in listed.values())


def test_no_arguments_prints_the_help(capsys):
    main([])
    assert "subcommands:" in capsys.readouterr().out


def test_version_is_single_sourced(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"lengen {lengen.__version__}"
    assert version("lengen") == lengen.__version__  # the installed metadata reads the package
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib needs Python 3.11)
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.MULTILINE)
    assert not re.search(r"^version = \"", pyproject, re.MULTILINE)  # only the attr = one
    assert f"version: {lengen.__version__}" in (REPO / "CITATION.cff").read_text()


def test_packaging_files():
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text()
    assert (Path(lengen.__file__).parent / "py.typed").is_file()


def tiny_run(root: Path) -> list[str]:
    return [
        "--config", str(REPO / "configs" / "quickstart.yaml"),
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.enable_progress_bar", "false",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[2, 4]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "4",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


NOISE = ("Tip:", "litlogger", "LeafSpec", "dirpath has changed", "will be overridden")


def test_optimizer_keeps_the_schedule_and_runs_print_no_adverts_or_deprecations(tmp_path):
    max_steps, warmup, lr, min_ratio = 6, 2, 0.1, 0.1
    fit = lengen_command(
        "fit", *tiny_run(tmp_path),
        "--trainer.max_steps", str(max_steps),
        "--trainer.val_check_interval", "3",
        "--trainer.log_every_n_steps", "1",
        "--trainer.callbacks+=LearningRateMonitor",
        "--model.warmup_steps", str(warmup),
        "--model.min_lr_ratio", str(min_ratio),
        "--optimizer", "SGD",
        "--optimizer.lr", str(lr),
        cwd=tmp_path,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    said = [line for line in fit.stdout.splitlines() if "--optimizer SGD" in line]
    assert said == [
        "lengen: --optimizer SGD replaces AdamW (model.lr and model.weight_decay do not apply); "
        "the model's warmup + cosine schedule is kept"
    ]
    events = EventAccumulator(str(tmp_path / "runs" / "lightning_logs" / "version_0"))
    events.Reload()
    logged = {s.step: s.value for s in events.Scalars("lr-SGD")}
    for step in range(max_steps):  # linear warmup, then cosine to min_ratio * lr (a plain formula)
        if step < warmup:
            expected = lr * (step + 1) / warmup
        else:
            progress = (step - warmup) / (max_steps - warmup)
            expected = lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert logged[step] == pytest.approx(expected, rel=1e-6), step
    test = lengen_command("test", *tiny_run(tmp_path), "--ckpt_path", "last", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "exact_match" in test.stdout  # the run did print its table
    for output in (fit.stdout + fit.stderr, test.stdout + test.stderr):
        assert not [noise for noise in NOISE if noise in output], output


@pytest.mark.parametrize(
    "cls_path",
    [
        "module.LengenModule",
        "data.tasks.TaskDataModule",
        "data.text.TextDataModule",
        "model.Decoder",
    ],
)
def test_every_model_and_data_argument_has_help_from_the_docstring(cls_path):
    import importlib
    import inspect

    from jsonargparse import ArgumentParser

    module, name = f"lengen.{cls_path}".rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "x")
    helps = {action.dest.removeprefix("x."): action.help or "" for action in parser._actions}
    parameters = list(inspect.signature(cls.__init__).parameters)[1:]
    assert parameters
    for parameter in parameters:
        text = helps.get(parameter, "")
        described = re.sub(r"\(type: .*", "", text, flags=re.DOTALL).strip()
        assert len(described) > 5, f"{name}.{parameter} has no description: {text!r}"


def test_a_deprecation_warning_from_lengen_code_fails_the_suite():
    """pyproject's filterwarnings: DeprecationWarning raised from a lengen module is an error."""
    code = compile("import warnings\nwarnings.warn('old', DeprecationWarning)", "lengen_x", "exec")
    with pytest.raises(DeprecationWarning):
        exec(code, {"__name__": "lengen.somewhere"})
    with pytest.warns(DeprecationWarning):  # elsewhere it stays a (reported) warning
        exec(code, {"__name__": "thirdparty.somewhere"})


def test_fit_help_names_plugins_by_their_short_names(tmp_path):
    result = lengen_command("fit", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lengen_plugins." not in result.stdout  # no full class paths of plugins
    known = re.search(r"\n  --model.pos_encoding POS_ENCODING\n(.*?)\n  --", result.stdout, re.S)
    names = set(re.findall(r"\b\w+\b", known.group(1)))
    assert {"ALiBi", "RoPE", "YaRN", "NoPE"} <= names
    assert "token vocabulary size" in result.stdout  # argument help from the docstrings
    # The plugin help that `lengen --help` points to works and shows the plugin's own arguments.
    hint = re.search(r"`(lengen fit --model\.\S+ RoPE)`", top_level_help()).group(1)
    plugin = lengen_command(*hint.split()[1:], cwd=tmp_path)
    assert plugin.returncode == 0, plugin.stderr[-2000:]
    assert "--model.pos_encoding.base" in plugin.stdout
