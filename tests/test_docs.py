"""The documentation: the site builds with no warning, every relative link resolves, and every
`lengen ...` command quoted in the README and the docs names a real subcommand and config file.

The build test needs the `docs` extra (`pip install -e ".[docs]"`) and skips without it; the link
and command checks read the Markdown only, so they run everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from lengen.help import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN = [ROOT / "README.md", *PAGES]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`]+`")  # a code span may wrap lines
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The Markdown without code blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (MkDocs), which equals GitHub's for lengen's headings."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8")))}


def relative_links(page: Path) -> list[str]:
    targets = LINK.findall(prose(page.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # no http:, mailto:


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def lengen_commands(text: str) -> list[list[str]]:
    """Every `lengen ...` command in code blocks and inline code, as argument lists."""
    code = [block.group(0) for block in FENCE.finditer(text)]
    code += [span.strip("`") for span in INLINE_CODE.findall(FENCE.sub("", text))]
    commands = []
    for snippet in code:
        snippet = snippet.replace("\\\n", " ")
        for line in snippet.splitlines():
            line = line.split(" #", 1)[0]  # a trailing shell comment
            for part in re.split(r"&&|\|\||;|\|", line):
                words = part.split()
                while words and ("=" in words[0] or words[0] in ("env", "nice", "-n", "10")):
                    words = words[1:]  # OMP_NUM_THREADS=1, env, nice -n 10
                if len(words) >= 2 and words[0] == "lengen":
                    try:
                        commands.append(shlex.split(" ".join(words)))
                    except ValueError:  # an unbalanced quote across lines: keep the words
                        commands.append(words)
    return commands


SUBCOMMAND_NAMES = {name for name, _ in SUBCOMMANDS} | {"--help", "-h", "--version"}


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_lengen_commands_name_real_subcommands_and_configs(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    commands = lengen_commands(text)
    if page.name == "README.md":  # the quickstart: fit and test on the quickstart config
        assert {c[1] for c in commands} >= {"fit", "test"}, "the README lost its quickstart"
    wrong = []
    for command in commands:
        if command[1] not in SUBCOMMAND_NAMES:
            wrong.append(f"{' '.join(command)}: no subcommand {command[1]!r}")
        for flag, value in zip(command, command[1:]):
            # A placeholder (C.yaml, $C) is not a file; a path under configs/ must exist.
            if flag == "--config" and value.startswith("configs/"):
                if not (ROOT / value).is_file():
                    wrong.append(f"{' '.join(command)}: no config file {value}")
    assert not wrong, f"{page.relative_to(ROOT)}:\n" + "\n".join(wrong)


def test_the_readme_commands_are_checked() -> None:
    """The command extraction finds the README's quickstart, so the test above can fail."""
    commands = lengen_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert ["lengen", "fit", "--config", "configs/quickstart.yaml"] in commands
    assert lengen_commands("```bash\nlengen fitt --config configs/nope.yaml\n```") == [
        ["lengen", "fitt", "--config", "configs/nope.yaml"]
    ]


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation_and_every_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    missing = [page for page in listed if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml nav names pages that do not exist: {missing}"
    # Pages under docs/figures/ are report tables, reached from the experiment pages.
    pages = {str(p.relative_to(DOCS)) for p in PAGES if p.relative_to(DOCS).parts[0] != "figures"}
    unlisted = sorted(pages - set(listed))
    assert not unlisted, f"docs pages missing from the mkdocs.yml nav: {unlisted}"


NEEDED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


@pytest.mark.skipif(
    not all(installed(name) for name in NEEDED),
    reason='needs the docs extra: pip install -e ".[docs]"',
)
def test_site_builds_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner about MkDocs 2
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "positional" / "index.html").is_file()
