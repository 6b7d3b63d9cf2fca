"""`lengen --help` and `lengen --version`: every subcommand with one line, without importing
torch or Lightning (the text is static; `lengen SUBCOMMAND --help` gives each command's options)."""

from __future__ import annotations

import re

from lengen import __version__

# (subcommand, one line). fit/validate/test/predict are LightningCLI's; the rest are lengen's own.
SUBCOMMANDS = (
    ("fit", "train a model (configs stack: --config a.yaml --config b.yaml)"),
    ("validate", "evaluate per length on the validation lengths (--ckpt_path PATH|last)"),
    ("test", "evaluate per length on the test lengths; writes results.json and a figure"),
    ("predict", "greedy generations of the test set, per length (predictions.jsonl)"),
    ("plugins", "list installed plugins per group, with their distribution (--json, --load)"),
    ("report", "compare runs: tables and a figure from their results.json files"),
    ("heatmap", "retrieval accuracy by context length x answer depth (table, PNG)"),
    ("tune", "short learning-rate x warmup trials with a stability table and figure"),
    ("export", "write a checkpoint as a transformers model folder (--ckpt_path, --out)"),
)


def version_line() -> str:
    return f"lengen {__version__}"


def top_level_help() -> str:
    width = max(len(name) for name, _ in SUBCOMMANDS) + 2
    lines = [
        "usage: lengen [-h] [--version] SUBCOMMAND ...",
        "",
        "Length generalization in decoder-only Transformers (PyTorch Lightning).",
        "",
        "subcommands:",
        *(f"  {name.ljust(width)}{summary}" for name, summary in SUBCOMMANDS),
        "",
        "options:",
        "  -h, --help    show this message and exit",
        "  --version     print the version and exit",
        "",
        "`lengen SUBCOMMAND --help` lists a subcommand's options, e.g.",
        "`lengen fit --help`, or `lengen fit --model.pos_encoding.help RoPE` for a plugin.",
    ]
    return "\n".join(lines)


def handle_top_level(args: list[str]) -> bool:
    """Print the top-level help or the version when `args` ask for it; True if handled."""
    if not args or args[0] in ("-h", "--help"):
        print(top_level_help())
        return True
    if args[0] == "--version":
        print(version_line())
        return True
    return False


# A dotted class path (lower-case module names, then a CapWords class name), e.g.
# lengen_plugins.positional_encodings.alibi.ALiBi; jsonargparse lists plugins this way.
CLASS_PATH = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+([A-Z]\w*)\b")


def shorten_class_paths(text: str) -> str:
    """Show classes by their short names, the names configs use (`ALiBi`, `Copy`)."""
    return CLASS_PATH.sub(r"\1", text)
