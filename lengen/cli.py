"""The `lengen` command: LightningCLI's fit, validate, test and predict (lengen/lightning_cli.py),
plus `lengen plugins`, `lengen report` (lengen/report.py), `lengen heatmap` (lengen/heatmap.py),
`lengen tune` (lengen/tune.py) and `lengen export` (lengen/export.py).

This module imports neither torch nor Lightning: each command imports what it needs, so
`lengen --help`, `lengen plugins` and `lengen report` start without Lightning's seconds of imports
(docs/performance.md). Bad input exits with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings

from lengen.argparser import UsageError
from lengen.plugins import GROUPS, Plugin, PluginConflict, discover, list_plugins, plugin_fault

# Exit status of a run stopped by the divergence guard (2 is bad input).
EXIT_DIVERGED = 3

# Errors of modules that import torch or Lightning, printed as one line: (module, class) -> exit
# status. They are looked up only in modules already imported (an error of an unimported module's
# class cannot have been raised), so handling them imports nothing.
ONE_LINE_ERRORS = {
    ("lengen.positional", "PositionOutOfRange"): 2,
    ("lightning.fabric.utilities.exceptions", "MisconfigurationException"): 2,
    ("lengen.divergence", "Diverged"): EXIT_DIVERGED,
}


def __getattr__(name: str):
    """The LightningCLI names (`LengenCLI`, `is_context_extension`, ...) moved to
    lengen/lightning_cli.py; `from lengen.cli import X` still finds them (importing Lightning)."""
    if not name.startswith("_"):  # not a dunder probe (import machinery, pickle, doctest)
        module = importlib.import_module("lengen.lightning_cli")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'lengen.cli' has no attribute {name!r}")


def print_plugins(as_json: bool, load: bool = False) -> None:
    """`lengen plugins`: a table per group (name, distribution, summary) or a JSON list.

    Read from the entry points and the plugins' source (`list_plugins`), nothing imported;
    `load`: import every plugin as a run does (`discover`), which also finds the failures that
    only running a plugin's module shows.
    """
    find: dict[str, dict[str, Plugin]] = {
        group: (discover if load else list_plugins)(group) for group in GROUPS.values()
    }
    rows = [
        {"group": group, **plugin}
        for group in GROUPS.values()
        for plugin in (
            {"name": p.name, "distribution": p.distribution, "error": p.error, "summary": p.summary}
            for p in find[group].values()
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


def run_plugins(args: list[str]) -> None:
    """`lengen plugins [--json] [--load]`."""
    extra = [arg for arg in args if arg not in ("--json", "--load")]
    if extra:
        raise UsageError(f"lengen plugins takes only --json and --load, got {' '.join(extra)}")
    try:
        print_plugins(as_json="--json" in args, load="--load" in args)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `lengen plugins | head`: the reader stopped early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_tool(module: str, function: str, arguments: list[str]) -> None:
    """`module.function(arguments)`, imported now; its ValueError (bad input) -> UsageError."""
    try:
        getattr(importlib.import_module(module), function)(arguments)
    except ValueError as error:  # the tools' bad-input errors are one line (NotExportable too)
        raise UsageError(str(error)) from error


def run_command(args: list[str], argv: list[str] | None) -> None:
    """Run the command `args` names; `argv` (None: sys.argv) goes to LightningCLI unchanged.
    Each command imports what it needs, here and not before."""
    if args[:1] == ["plugins"]:
        run_plugins(args[1:])
        return
    if args[:1] == ["report"]:
        run_tool("lengen.report", "run_report", args[1:])  # matplotlib only for the figure
        return
    if args[:1] == ["heatmap"]:
        run_tool("lengen.heatmap", "main", args[1:])
        return
    if args[:1] == ["export"]:
        run_tool("lengen.export", "main", args[1:])  # torch, transformers
        return
    from lengen.quiet import silence_known_noise  # Lightning's adverts, known deprecations

    silence_known_noise(args[0])
    if args[:1] == ["tune"]:
        from lengen.plugins import discover_all

        discover_all()
        run_tool("lengen.tune", "tune", args[1:])  # Lightning: trials are `lengen fit` runs
        return
    from lengen.lightning_cli import run  # fit, validate, test, predict

    run(argv)


def one_line_status(error: BaseException) -> int | None:
    """The exit status of an error printed as one line (ONE_LINE_ERRORS), else None."""
    for (module_name, class_name), status in ONE_LINE_ERRORS.items():
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if cls is not None and isinstance(error, cls):
            return status
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lengen` console script; `argv` defaults to sys.argv[1:]."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    args = sys.argv[1:] if argv is None else argv
    from lengen.help import handle_top_level  # --help, --version; imports nothing heavy

    if handle_top_level(args):
        return
    try:
        run_command(args, argv)
    except (UsageError, PluginConflict) as error:
        print(f"lengen: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        status = one_line_status(error)
        if status is not None:
            print(f"lengen: error: {error}", file=sys.stderr)
            sys.exit(status)
        # A plugin's hook failed inside the run: name the plugin (plugins run only once imported).
        message = plugin_fault(error) if discover.cache_info().currsize else None
        if message is None or os.environ.get("LENGEN_TRACEBACK"):
            raise
        print(f"lengen: error: {message} (LENGEN_TRACEBACK=1 shows where)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
