"""The `lengen` console script's entry point: `lengen.cli.main`, which imports Lightning only for
the commands that train or evaluate. Kept so installs whose script names this module still work."""

from lengen.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
