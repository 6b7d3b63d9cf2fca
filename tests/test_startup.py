"""Start-up: which commands import Lightning (and torch), and plugin listing without imports.

Checked through the modules a command has loaded (`sys.modules` when it ends), not timings; the
times are in benchmarks/run.py's start-up section and docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import warnings

import pytest
from conftest import write_distribution

from lengen.plugins import GROUPS, discover, list_plugins


def imported_modules(*args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules in `sys.modules` after `lengen ARGS`, run through the console script's entry
    point in a fresh interpreter (written to a file when the command ends, even by SystemExit)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "modules.json")
        code = textwrap.dedent(
            f"""
            import json, sys
            from lengen.launcher import main
            sys.argv[0] = "lengen"
            try:
                main({list(args)!r})
            finally:
                with open({path!r}, "w") as file:
                    json.dump(sorted(sys.modules), file)
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        with open(path) as file:
            return set(json.load(file)), result


def loaded(modules: set[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in modules)


@pytest.mark.parametrize(
    ("args", "forbidden"),
    [
        (("--help",), ("lightning", "torch")),
        (("--version",), ("lightning", "torch")),
        (("plugins",), ("lightning", "torch")),
        (("plugins", "--json"), ("lightning", "torch")),
        (("report", "--help"), ("lightning",)),
        (("heatmap", "--help"), ("lightning",)),
    ],
)
def test_command_does_not_import(args: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    modules, result = imported_modules(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    for package in forbidden:
        assert not loaded(modules, package), f"`lengen {' '.join(args)}` imports {package}"


def test_the_check_sees_lightning_when_it_is_imported() -> None:
    """The same check on a command that needs Lightning: it must see it (the test can fail)."""
    modules, result = imported_modules("fit", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert loaded(modules, "lightning") and loaded(modules, "torch")


def test_plugins_load_imports_every_plugin() -> None:
    modules, result = imported_modules("plugins", "--load")
    assert result.returncode == 0, result.stderr[-2000:]
    assert loaded(modules, "lengen_plugins.callbacks.sequence_length_warmup")
    assert loaded(modules, "lightning")


def test_listing_matches_imported_plugins(fresh_discovery) -> None:
    """Names, distributions and summaries read from source equal those of the imported objects
    (whose `__doc__` Python sets); every first-party plugin listed without error."""
    for group in GROUPS.values():
        listed, imported = list_plugins(group), discover(group)
        assert listed.keys() == imported.keys()
        for name, plugin in listed.items():
            assert plugin.obj is None
            assert plugin.error is None and imported[name].error is None, name
            assert plugin.distribution == imported[name].distribution
            assert plugin.summary == imported[name].summary, name
            assert plugin.summary, f"{name} has no docstring"


def test_listing_reads_source_in_a_fresh_interpreter() -> None:
    """In-process the plugins may be imported already (read from their objects); a fresh
    interpreter reads the source, and its listing equals the imported objects' one."""
    code = textwrap.dedent(
        """
        import json, sys
        from lengen.plugins import GROUPS, list_plugins
        rows = {g: {n: [p.error, p.summary] for n, p in list_plugins(g).items()}
                for g in GROUPS.values()}
        from importlib.metadata import entry_points
        named = {e.module for g in GROUPS.values() for e in entry_points(group=g)}
        assert not named & set(sys.modules), sorted(named & set(sys.modules))
        print(json.dumps(rows))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    for group in GROUPS.values():
        imported = discover(group)
        assert rows[group] == {n: [p.error, p.summary] for n, p in imported.items()}


BROKEN_MODULES = {
    "needs_missing": """
        import numpy
        import no_such_dependency_xyz

        class NeedsMissing:
            '''Needs a package that is not installed.'''
    """,
    "syntax_error": """
        class SyntaxBroken:
            '''Cannot be parsed.'''
            def f(self:
    """,
    "lacks_name": """
        class SomethingElse:
            '''Not the class the entry point names.'''
    """,
    "optional_dependency": """
        try:
            import no_such_dependency_xyz
        except ImportError:
            no_such_dependency_xyz = None

        class Optional:
            '''Works without its optional dependency.'''
    """,
}


@pytest.fixture
def third_party(tmp_path, monkeypatch, fresh_discovery):
    """lengen-thirdparty: broken plugins of each kind the source shows, and a package whose
    `__init__` re-exports a class from a submodule."""
    root = tmp_path / "site"
    write_distribution(
        root,
        "lengen-thirdparty",
        "[lengen.metrics]\n"
        "NoModule = no_such_module_xyz:Broken\n"
        "NeedsMissing = needs_missing:NeedsMissing\n"
        "SyntaxBroken = syntax_error:SyntaxBroken\n"
        "LacksName = lacks_name:Missing\n"
        "Optional = optional_dependency:Optional\n"
        "Reexported = reexporting:Deep\n",
        BROKEN_MODULES,
    )
    package = root / "reexporting"
    package.mkdir()
    (package / "__init__.py").write_text("from .impl import Deep\n\n__all__ = ['Deep']\n")
    (package / "impl.py").write_text("class Deep:\n    '''Defined one module down.'''\n")
    monkeypatch.syspath_prepend(str(root))
    for module in [*BROKEN_MODULES, "reexporting", "reexporting.impl"]:
        monkeypatch.delitem(sys.modules, module, raising=False)
    return root


def test_listing_reports_what_importing_raises(third_party) -> None:
    """Each broken plugin gets the error type that importing it gives (the reference: Python's
    import, run by `discover` afterwards); the working ones get their docstring."""
    with pytest.warns(UserWarning, match="failed to load") as caught:
        listed = list_plugins(GROUPS["metrics"])
    warned = " ".join(str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imported = discover(GROUPS["metrics"])
    for name in ("NoModule", "NeedsMissing", "SyntaxBroken", "LacksName"):
        assert imported[name].error is not None, name
        expected_type = imported[name].error.split(":")[0]
        assert listed[name].error.split(":")[0] == expected_type, (name, listed[name].error)
        assert name in warned
    assert "no_such_dependency_xyz" in listed["NeedsMissing"].error
    assert "no_such_module_xyz" in listed["NoModule"].error
    for name in ("Optional", "Reexported"):
        assert listed[name].error is None and imported[name].error is None
    assert listed["Optional"].summary == "Works without its optional dependency."
    assert listed["Optional"].summary == imported["Optional"].summary
    assert listed["Reexported"].summary == imported["Reexported"].summary
    assert listed["Reexported"].summary == "Defined one module down."
