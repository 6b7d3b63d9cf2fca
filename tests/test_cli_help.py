"""`lengen --help` lists every subcommand main() dispatches; `lengen --version`; packaging."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

import lengen
from lengen.cli import main
from lengen.help import SUBCOMMANDS

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
