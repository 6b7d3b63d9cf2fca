"""Run `lengen` as a user would: the installed console script, or in process expecting a
one-line refusal (shared by the CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`lengen ARGS` in `cwd`; stdout and stderr captured as text; 10-minute limit."""
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    return subprocess.run([script, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def refused(args: list[str], capsys) -> str:
    """Run `lengen args` in process; assert exit 2, one `lengen: error:` line, no traceback;
    return that line."""
    import pytest

    from lengen.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("lengen: error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]
