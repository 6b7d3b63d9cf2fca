"""argparse for lengen's own subcommands (report, heatmap, tune): an error is one line; the
UsageError that every `lengen` command raises for bad input."""

from __future__ import annotations

import argparse


class OneLineArgumentParser(argparse.ArgumentParser):
    """Raises ValueError("<prog>: <message>") instead of printing usage and exiting; the CLI
    prints it as one `lengen: error: ...` line with exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False  # `--ou x` is an error, not --out
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise ValueError(f"{self.prog}: {message}")


class UsageError(Exception):
    """Bad input found by the `lengen` command; its message is the one line printed (exit 2)."""
