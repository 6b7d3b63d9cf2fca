"""The `lengen` console script: commands that need no Lightning run before it is imported.

`lengen report ...` and `lengen heatmap ...` only read results files, so they are dispatched here
without importing Lightning (several seconds); every other command goes to `lengen.cli.main`
unchanged. `lengen --help` and `lengen --version` print static text (lengen/help.py);
`lengen plugins` still imports Lightning (the callback plugins subclass Lightning's `Callback`).
"""

from __future__ import annotations

import sys
import warnings


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lengen` console script; `argv` defaults to sys.argv[1:]."""
    args = sys.argv[1:] if argv is None else argv
    from lengen.help import handle_top_level  # --help, --version: static text

    if handle_top_level(args):
        return
    if args[:1] not in (["report"], ["heatmap"]):
        from lengen.cli import main as cli_main

        cli_main(argv)
        return
    # The same handling as lengen.cli.main gives these two commands.
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        if args[0] == "report":
            from lengen.report import run_report

            run_report(args[1:])
        else:
            from lengen.heatmap import main as heatmap_main

            heatmap_main(args[1:])
    except ValueError as error:  # bad input: one line, exit 2 (as lengen.cli's UsageError)
        print(f"lengen: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
