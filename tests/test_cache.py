"""Evaluation-set cache integrity: a damaged entry is rebuilt with one warning, never scored; the
key follows the task's code; a zero-row set is never written."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from lengen.data.tasks import build_eval_set, load_or_build_eval_set, task_code_version
from lengen_plugins.tasks.copy import Copy


def cached(tmp_path: Path, task=None):
    task = task or Copy()
    return load_or_build_eval_set(task, [2, 5], 6, seed=1, split="val", cache_dir=tmp_path)


def entry(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "eval_sets").iterdir()
    return path


def rows(dataset) -> list[tuple]:
    return list(zip(dataset["prompt"], dataset["target"], dataset["length"]))


def expected_rows() -> list[tuple]:
    """The examples generated directly, without the cache."""
    return rows(build_eval_set(Copy(), [2, 5], 6, seed=1, split="val"))


def test_intact_entry_is_reused_without_a_warning(tmp_path, recwarn):
    cached(tmp_path)
    marker = entry(tmp_path) / "lengen_key.json"
    written = marker.stat().st_mtime_ns
    assert rows(cached(tmp_path)) == expected_rows()
    assert marker.stat().st_mtime_ns == written  # not rebuilt
    assert not [w for w in recwarn if "cached evaluation set" in str(w.message)]
    assert "checksum" in json.loads(marker.read_text())


def test_truncated_arrow_file_is_rebuilt_with_a_warning(tmp_path):
    cached(tmp_path)
    for arrow in entry(tmp_path).glob("*.arrow"):
        data = arrow.read_bytes()
        arrow.write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match=r"cached evaluation set .* (unreadable|checksum).*rebuil"):
        dataset = cached(tmp_path)
    assert rows(dataset) == expected_rows()
    assert rows(cached(tmp_path)) == expected_rows()  # the rebuilt entry is intact


def test_flipped_target_bytes_are_detected_and_rebuilt(tmp_path):
    """Change one target token in place (same file size): the checksum catches it."""
    cached(tmp_path)
    (arrow,) = entry(tmp_path).glob("*.arrow")
    data = bytearray(arrow.read_bytes())
    # The targets end with EOS (3) as int64: change the first EOS of the column data to 4.
    eos = (3).to_bytes(8, "little")
    at = data.index(eos, len(data) // 2)
    data[at] = 4
    arrow.write_bytes(bytes(data))
    import datasets

    tampered = datasets.load_from_disk(str(entry(tmp_path)))
    assert rows(tampered) != expected_rows()  # the corruption is real and loads silently
    with pytest.warns(UserWarning, match="does not match its checksum"):
        dataset = cached(tmp_path)
    assert rows(dataset) == expected_rows()


def test_missing_key_file_is_rebuilt(tmp_path):
    cached(tmp_path)
    (entry(tmp_path) / "lengen_key.json").unlink()
    with pytest.warns(UserWarning, match="unreadable"):
        assert rows(cached(tmp_path)) == expected_rows()


def test_changed_generate_gives_a_new_key(tmp_path, monkeypatch):
    """Two versions of one task module: the second's examples are built, not the first's."""
    source = """
        from lengen.task import Task

        class Toy(Task):
            symbols = ("a", "b")

            def generate(self, length, rng):
                return ["a"] * length, ["{symbol}"] * length
    """
    versions = []
    for symbol in ("a", "b"):
        folder = tmp_path / f"v_{symbol}"
        folder.mkdir()
        (folder / "toy_task.py").write_text(textwrap.dedent(source.format(symbol=symbol)))
        monkeypatch.syspath_prepend(str(folder))
        monkeypatch.delitem(sys.modules, "toy_task", raising=False)
        import toy_task

        task = toy_task.Toy()
        versions.append(task_code_version(task))
        dataset = load_or_build_eval_set(task, [3], 2, seed=0, split="val", cache_dir=tmp_path)
        assert dataset["target"][0] == [task.encode([symbol])[0]] * 3 + [3]
        sys.path.remove(str(folder))
    assert versions[0] != versions[1]
    assert len(list((tmp_path / "eval_sets").iterdir())) == 2


def test_zero_row_set_is_refused_before_it_is_written(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        load_or_build_eval_set(Copy(), [2], 0, seed=0, split="val", cache_dir=tmp_path)
    assert not (tmp_path / "eval_sets").exists() or not list((tmp_path / "eval_sets").iterdir())


def test_code_version_is_stable_and_differs_between_tasks():
    from lengen_plugins.tasks.reverse import Reverse

    assert task_code_version(Copy()) == task_code_version(Copy(num_symbols=4))
    assert task_code_version(Copy()) != task_code_version(Reverse())


def test_changed_helper_module_gives_a_new_key(tmp_path, monkeypatch):
    """A task whose generator calls a helper from a sibling module of its package."""
    package = tmp_path / "toy_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text(
        textwrap.dedent(
            """
            from lengen.task import Task
            from toy_package.helpers import symbol

            class Toy(Task):
                symbols = ("a", "b")

                def generate(self, length, rng):
                    return ["a"] * length, [symbol()] * length
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    versions = []
    for symbol in ("a", "b"):
        (package / "helpers.py").write_text(f"def symbol():\n    return {symbol!r}\n")
        for name in ("toy_package", "toy_package.task", "toy_package.helpers"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        from toy_package.task import Toy

        versions.append(task_code_version(Toy()))
    assert versions[0] != versions[1]
