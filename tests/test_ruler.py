"""RULER tasks and string-match metrics, checked by parsing the generated text with the test's
own readers and by RULER's metric definitions (NVIDIA/RULER scripts/eval/synthetic/constants.py)
written here on plain strings."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from lengen.metric import EvalBatch
from lengen.task import BOS, EOS, PAD, SEP
from lengen_plugins.metrics.string_match import StringMatchAll, StringMatchPart
from lengen_plugins.tasks.ruler_aggregation import RulerCommonWords, RulerFrequentWords
from lengen_plugins.tasks.ruler_niah import RulerNIAH
from lengen_plugins.tasks.ruler_variable_tracking import RulerVariableTracking

FRACTIONS = {"start": (0.0, 0.1), "middle": (0.45, 0.55), "end": (0.9, 1.0), "any": (0.0, 1.0)}
NEEDLE = re.compile(r"\nOne of the special magic (\w+) for ([\w-]+) is: ([\w-]+)\.\n")


def samples(task, lengths, per_length=6, seed=0):
    """(length, context text, answer text) decoded from the token ids."""
    rng = random.Random(seed)
    for length in lengths:
        for _ in range(per_length):
            example = task.make_example(length, rng)
            assert example.prompt[0] == BOS and example.prompt[-1] == SEP
            assert example.target[-1] == EOS
            context = bytes(i - 4 for i in example.prompt[1:-1]).decode("latin-1")
            answer = bytes(i - 4 for i in example.target[:-1]).decode("latin-1")
            assert len(context) == length
            yield length, context, answer


# --- needle in a haystack -------------------------------------------------------------------


NIAH_CASES = [
    dict(),
    dict(num_keys=4),
    dict(num_values=3, location="middle"),
    dict(num_keys=2, num_queries=3, location="end"),
    dict(haystack="essay", key_type="uuids", value_type="words", location="start"),
    dict(haystack="needle", key_type="numbers", value_type="uuids", num_values=2),
]


@pytest.mark.parametrize("arguments", NIAH_CASES, ids=lambda a: json.dumps(a))
def test_niah_answers_recomputed_from_the_needles(arguments):
    task = RulerNIAH(**arguments)
    low, high = FRACTIONS[arguments.get("location", "any")]
    for length, context, answer in samples(task, (task.min_length, 600, 1500)):
        question = re.search(
            r"\nWhat are all the special magic (\w+) for (.+)\? Answer: $", context
        )
        assert question and question.group(1) == task.value_type
        asked = re.split(r", and |, ", question.group(2))
        assert len(asked) == task.num_queries
        found = [(m.start(), m.group(2), m.group(3)) for m in NEEDLE.finditer(context)]
        values = {key: [v for _, k, v in found if k == key] for key in asked}
        assert all(len(v) == task.num_values for v in values.values())
        # Asked keys in the question's order, each key's values in the context's order.
        assert answer.split(",") == [v for key in asked for v in values[key]]
        if task.haystack != "needle":  # the only needles are the task's own keys
            assert len({k for _, k, _ in found}) == task.num_keys
            assert len(found) == task.num_keys * task.num_values
        # Needles sit inside the location: offsets in the haystack before insertion.
        own = [item for item in found if item[1] in asked] if task.haystack == "needle" else found
        size = len(NEEDLE.search(context).group(0))
        room = length - task.num_keys * task.num_values * size - len(question.group(0))
        for start, _key, _ in own:
            before = sum(1 for s, k, _ in own if s < start)
            offset = start - before * size
            slack = size if task.haystack == "needle" else 1  # snapped back to a line start
            assert low * room - slack <= offset <= high * room + 1


def test_niah_needle_haystack_is_full_of_distractors():
    task = RulerNIAH(haystack="needle")
    for _, context, answer in samples(task, (1000,)):
        found = NEEDLE.findall(context)
        size = len(NEEDLE.search(context).group(0))
        question = len(context) - context.rindex("\nWhat are all")
        assert len(found) == (1000 - size - question) // size + 1  # distractors + the needle
        keys = Counter(k for _, k, _ in found)
        assert max(keys.values()) == 1  # distractor keys differ from the asked one
        assert sum(v == answer for _, _, v in found) == 1


# --- variable tracking ----------------------------------------------------------------------


def resolve(context: str) -> dict[str, str]:
    """The value every variable ends up with, read from the statements in the text."""
    direct = dict(re.findall(r"\nVAR ([A-Z]{5}) = (\d{5})\n", context))
    links = dict(re.findall(r"\nVAR ([A-Z]{5}) = VAR ([A-Z]{5})\n", context))
    values = dict(direct)
    for name in links:
        source, hops = name, 0
        while source in links:
            source, hops = links[source], hops + 1
            assert hops < 100
        values[name] = direct[source]
    return values


@pytest.mark.parametrize("arguments", [dict(), dict(num_chains=3, num_hops=2, haystack="essay")])
def test_variable_tracking_answer_recomputed_by_resolving_the_chains(arguments):
    task = RulerVariableTracking(**arguments)
    for _, context, answer in samples(task, (task.min_length, 500, 1200)):
        value = re.search(r"the value (\d{5})\. Answer: $", context).group(1)
        values = resolve(context)
        assert len(values) == (task.num_hops + 1) * task.num_chains
        expected = [name for name, v in values.items() if v == value]
        assert sorted(answer.split(",")) == sorted(expected)
        positions = [context.index(f"\nVAR {name} =") for name in answer.split(",")]
        assert positions == sorted(positions)  # the chain is written in order


# --- aggregation ----------------------------------------------------------------------------


@pytest.mark.parametrize("arguments", [dict(), dict(num_common=2, common_repeats=3)])
def test_common_words_answer_recomputed_by_counting(arguments):
    task = RulerCommonWords(**arguments)
    for _, context, answer in samples(task, (task.min_length, 400, 1000)):
        listing = context[: context.index("\nWhat are the")].lstrip(" ")
        items = re.findall(r"(\d+)\. ([a-z]+)", listing)
        assert [int(n) for n, _ in items] == list(range(1, len(items) + 1))
        assert listing == " ".join(f"{n}. {w}" for n, w in items)
        counts = Counter(w for _, w in items)
        common = [w for w, c in counts.items() if c == task.common_repeats]
        assert len(common) == task.num_common
        assert all(c in (task.common_repeats, task.uncommon_repeats) for c in counts.values())
        first_seen = sorted(common, key=[w for _, w in items].index)
        assert answer.split(",") == first_seen


def test_common_words_fill_the_context():
    task = RulerCommonWords()
    for _, context, _ in samples(task, (300, 700)):
        padding = len(context) - len(context.lstrip(" "))
        next_item = len(" 999. ") + task.word_letters  # an upper bound on one more item
        assert padding < next_item


def test_frequent_words_answer_recomputed_by_counting():
    task = RulerFrequentWords()
    for _, context, answer in samples(task, (task.min_length, 400, 1000, 2000)):
        text = context[: context.index("\nWhat are the three")]
        counts = Counter(text.split())
        ranked = [w for w, _ in counts.most_common() if w != "..."]
        assert counts["..."] == max(counts.values())
        top = ranked[:3]
        rest = [counts[w] for w in ranked[3:]]
        assert min(counts[w] for w in top) > max(rest, default=0)  # a unique answer
        assert sorted(answer.split(",")) == sorted(top)
        assert [counts[w] for w in answer.split(",")] == sorted(
            (counts[w] for w in top), reverse=True
        )


@pytest.mark.parametrize(
    "task",
    [RulerNIAH(num_keys=3), RulerVariableTracking(), RulerCommonWords(), RulerFrequentWords()],
    ids=lambda t: type(t).__name__,
)
def test_deterministic_per_seed_and_exact_length(task):
    for length in (task.min_length, task.min_length + 1, 777):
        first = task.make_example(length, random.Random(f"seed-{length}"))
        assert first == task.make_example(length, random.Random(f"seed-{length}"))
        assert len(first.prompt) == length + 2
    other = task.make_example(777, random.Random("another seed"))
    assert other != task.make_example(777, random.Random("seed-777"))


def test_bad_arguments_name_what_is_accepted():
    with pytest.raises(ValueError, match="haystack='book'; accepted: 'noise', 'essay', 'needle'"):
        RulerNIAH(haystack="book")
    with pytest.raises(ValueError, match="num_hops=0"):
        RulerVariableTracking(num_hops=0)
    with pytest.raises(ValueError, match="uncommon_repeats=4"):
        RulerCommonWords(common_repeats=4, uncommon_repeats=4)
    with pytest.raises(ValueError, match="location='deep'"):
        RulerNIAH(location="deep")


# --- RULER's metrics ------------------------------------------------------------------------


def ruler_string_match_all(preds: list[str], refs: list[list[str]]) -> float:
    """RULER's definition (without its x100 and rounding)."""
    per = [sum(r.lower() in p.lower() for r in ref) / len(ref) for p, ref in zip(preds, refs)]
    return sum(per) / len(preds)


def ruler_string_match_part(preds: list[str], refs: list[list[str]]) -> float:
    return sum(max(r.lower() in p.lower() for r in ref) for p, ref in zip(preds, refs)) / len(preds)


def batch_of(answers: list[str], generations: list[str], length: int = 100) -> tuple:
    """An EvalBatch of byte-task targets and the generated rows (PAD-padded)."""
    width = max(len(a) for a in answers) + 1
    targets = torch.full((len(answers), width), PAD)
    for row, answer in enumerate(answers):
        targets[row, : len(answer) + 1] = torch.tensor([4 + ord(c) for c in answer] + [EOS])
    gen_width = max(len(g) for g in generations)
    generated = torch.full((len(generations), gen_width), PAD)
    for row, text in enumerate(generations):
        generated[row, : len(text)] = torch.tensor([4 + ord(c) for c in text])
    n = len(answers)
    batch = EvalBatch(
        input_ids=torch.zeros(n, 1, dtype=torch.long),
        labels=torch.zeros(n, 1, dtype=torch.long),
        targets=targets,
        prompt_lengths=torch.ones(n, dtype=torch.long),
        target_lengths=torch.tensor([len(a) + 1 for a in answers]),
        lengths=torch.full((n,), length),
    )
    return batch, generated


def test_string_match_hand_computed_cases():
    answers = ["1234,5678", "1234,5678", "ABC", "11,22,33", "7"]
    generations = ["5678,0000", "x1234y5678", "abc..", "33,11,9", "8"]
    # all: 1/2, 1, 1 (case folded), 2/3, 0 -> mean 3.1667 / 5; part: 1, 1, 1, 1, 0 -> 4 / 5
    batch, generated = batch_of(answers, generations)
    for metric_class, expected in (
        (StringMatchAll, (0.5 + 1 + 1 + 2 / 3) / 5),
        (StringMatchPart, 0.8),
    ):
        metric = metric_class()
        metric.update(batch, None, generated)
        assert float(metric.compute()[100]) == pytest.approx(expected)


def test_string_match_against_ruler_definitions_on_random_strings():
    rng = random.Random(0)
    refs = [[str(rng.randrange(10, 1000)) for _ in range(rng.randint(1, 4))] for _ in range(200)]
    preds = []
    for ref in refs:
        kept = [r for r in ref if rng.random() < 0.5]
        noise = [str(rng.randrange(10, 1000)) for _ in range(rng.randint(0, 2))]
        preds.append(",".join(rng.sample(kept + noise, len(kept + noise))))
    preds = [p or "0" for p in preds]
    batch, generated = batch_of([",".join(r) for r in refs], preds)
    for metric_class, reference in (
        (StringMatchAll, ruler_string_match_all),
        (StringMatchPart, ruler_string_match_part),
    ):
        metric = metric_class()
        metric.update(batch, None, generated)
        assert float(metric.compute()[100]) == pytest.approx(reference(preds, refs))


def test_string_match_rejects_a_separator_that_is_not_one_byte():
    with pytest.raises(ValueError, match="separator=';;' must be one byte"):
        StringMatchAll(separator=";;")


# --- the CLI: fit, test per location, heatmap -------------------------------------------------


def test_cli_fit_test_and_heatmap_on_a_ruler_task(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    repo = Path(__file__).resolve().parents[1]
    common = [
        "--config", str(repo / "configs" / "quickstart.yaml"),
        "--config", str(repo / "configs" / "tasks" / "ruler_niah_single.yaml"),
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.max_steps", "2",
        "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--model.n_layer", "1",
        "--model.d_model", "16",
        "--model.n_head", "2",
        "--data.init_args.train_min_length", "128",
        "--data.init_args.train_max_length", "160",
        "--data.init_args.eval_lengths", "[128, 160]",
        "--data.init_args.batch_size", "4",
        "--data.init_args.val_examples_per_length", "2",
        "--data.init_args.test_examples_per_length", "2",
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
    ]  # fmt: skip

    def run(*args):
        result = subprocess.run([script, *args], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run("fit", *common)
    run("test", *common, "--ckpt_path", "last", "--data.init_args.task.init_args.location", "end")
    (result,) = sorted((tmp_path / "runs").rglob("results.json"))
    metrics = json.loads(result.read_text())["metrics"]
    assert set(metrics["string_match_all"]) == {"128", "160"}
    assert all(0.0 <= v <= 1.0 for v in metrics["string_match_all"].values())

    from lengen.cli import main  # the heatmap in-process: one interpreter start less

    out = tmp_path / "heatmap"
    main(["heatmap", str(tmp_path / "runs"), "--metric", "string_match_all", "--out", str(out)])
    table = (out / "heatmap.md").read_text().splitlines()
    assert table[0] == "| string_match_all | 128 | 160 |"
    assert table[2].startswith("| end | ")  # the row is the needle location of the test run
