"""Plugin discovery: first-party plugins, a third-party distribution, a broken one, a duplicate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import write_distribution

from lengen.plugins import GROUPS, PluginConflict, available_names, discover

THIRD_PARTY_PE = """
    from lengen.positional import PositionalEncoding

    class Shifted(PositionalEncoding):
        \"\"\"A third-party encoding that adds a constant.\"\"\"

        def __init__(self, offset: float = 1.0) -> None:
            super().__init__()
            self.offset = offset

        def embed(self, token_embeddings, positions):
            return token_embeddings + self.offset
"""


def test_first_party_plugins_are_discovered_with_their_distribution(fresh_discovery):
    encodings = discover(GROUPS["positional_encodings"])
    expected = {"NoPE", "Learned", "Sinusoidal", "T5Bias", "ALiBi", "RoPE"}
    assert expected <= set(encodings)
    assert {encodings[name].distribution for name in expected} == {"lengen"}
    assert all(encodings[name].error is None for name in expected)
    assert {"ExactMatch", "TokenAccuracy"} <= set(available_names(GROUPS["metrics"]))


def test_third_party_distribution_is_discovered(tmp_path, monkeypatch, fresh_discovery):
    write_distribution(
        tmp_path,
        "lengen-extra",
        "[lengen.positional_encodings]\nShifted = extra_pe:Shifted\n",
        {"extra_pe": THIRD_PARTY_PE},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = discover(GROUPS["positional_encodings"])["Shifted"]
    assert plugin.distribution == "lengen-extra"
    assert plugin.error is None
    assert plugin.summary == "A third-party encoding that adds a constant."
    assert plugin.obj(offset=2.0).offset == 2.0


def test_broken_plugin_is_reported_and_the_rest_still_load(tmp_path, monkeypatch, fresh_discovery):
    write_distribution(
        tmp_path,
        "lengen-broken",
        "[lengen.tasks]\nBroken = broken_task:Broken\n",
        {"broken_task": "raise ImportError('needs a library that is not installed')\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="Broken.*failed to load.*not installed"):
        tasks = discover(GROUPS["tasks"])
    assert tasks["Broken"].error == "ImportError: needs a library that is not installed"
    assert tasks["Copy"].error is None
    assert "Broken" not in available_names(GROUPS["tasks"])


def test_duplicate_name_from_two_distributions_is_an_error_naming_both(
    tmp_path, monkeypatch, fresh_discovery
):
    write_distribution(
        tmp_path,
        "lengen-impostor",
        "[lengen.positional_encodings]\nRoPE = extra_pe:Shifted\n",
        {"extra_pe": THIRD_PARTY_PE},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginConflict) as error:
        discover(GROUPS["positional_encodings"])
    message = str(error.value)
    assert "'RoPE'" in message and "'lengen'" in message and "'lengen-impostor'" in message


def lengen(*args: str, extra_path: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script."""
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    return subprocess.run([script, *args], capture_output=True, text=True, env=env, timeout=300)


def test_lengen_plugins_json_lists_every_group_with_distribution_and_error(tmp_path):
    write_distribution(
        tmp_path,
        "lengen-extra",
        "[lengen.positional_encodings]\nShifted = extra_pe:Shifted\n"
        "[lengen.metrics]\nBroken = no_such_module:Broken\n",
        {"extra_pe": THIRD_PARTY_PE},
    )
    result = lengen("plugins", "--json", extra_path=str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(set(row) >= {"group", "name", "distribution", "error"} for row in rows)
    by_name = {(row["group"], row["name"]): row for row in rows}
    assert by_name[("lengen.positional_encodings", "Shifted")]["distribution"] == "lengen-extra"
    assert by_name[("lengen.positional_encodings", "ALiBi")]["error"] is None
    assert by_name[("lengen.tasks", "Copy")]["distribution"] == "lengen"
    assert "ModuleNotFoundError" in by_name[("lengen.metrics", "Broken")]["error"]
    assert "Broken" in result.stderr and "failed to load" in result.stderr


def test_lengen_plugins_table():
    result = lengen("plugins")
    assert result.returncode == 0, result.stderr
    for group in GROUPS.values():
        assert group in result.stdout
    encoding_lines = [
        line for line in result.stdout.splitlines() if line.strip().startswith("ALiBi")
    ]
    assert len(encoding_lines) == 1 and "lengen" in encoding_lines[0]


def test_lengen_plugins_into_a_closed_pipe_prints_no_traceback():
    """`lengen plugins | head -1`: the reader leaves before lengen writes."""
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "lengen"), "plugins"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # closed before the child, still importing, can write
    stderr = process.stderr.read()
    assert process.wait() == 0, stderr
    assert stderr == ""
