"""Run the installed `lengen` console script as a user would (shared by the CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`lengen ARGS` in `cwd`; stdout and stderr captured as text; 10-minute limit."""
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    return subprocess.run([script, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
