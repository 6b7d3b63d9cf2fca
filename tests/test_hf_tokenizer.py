"""`--data.init_args.tokenizer DIR`: the language-model and retrieval tasks in the ids of a
`transformers` tokenizer built in the test (a byte-level BPE trained with `tokenizers` on the
standard-library corpus, and the byte-level tokenizer `lengen export` writes): no download.
The expected ids and texts come from the tokenizer itself. Extra: parity (`transformers`)."""

from __future__ import annotations

import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from lengen.data.tasks import TaskDataModule, collate_examples  # noqa: E402
from lengen.data.text import TextDataModule  # noqa: E402
from lengen.export import byte_tokenizer  # noqa: E402
from lengen_plugins.metrics.exact_match import ExactMatch  # noqa: E402
from lengen_plugins.metrics.presence_accuracy import PresenceAccuracy  # noqa: E402
from lengen_plugins.tasks.copy import Copy  # noqa: E402
from lengen_plugins.tasks.line_retrieval import LineRetrieval  # noqa: E402
from lengen_plugins.tasks.needle_qa import NeedleQA  # noqa: E402
from lengen_plugins.tasks.passkey import Passkey  # noqa: E402
from lengen_plugins.tasks.retrieval import stdlib_corpus  # noqa: E402

EOS = "<|endoftext|>"


def bpe_folder(folder, vocab_size: int = 500) -> str:
    """A byte-level BPE (GPT-2 style) trained on 200 kB of the standard library, saved."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = stdlib_corpus()[:200_000].decode("utf-8", errors="replace")
    tokenizer.train_from_iterator([corpus], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> str:
    return bpe_folder(tmp_path_factory.mktemp("bpe"))


def task_data(task, length: int, cache_dir, tokenizer: str | None, **args) -> TaskDataModule:
    """A TaskDataModule training and evaluating `task` at `length` only."""
    return TaskDataModule(
        task,
        train_min_length=length,
        train_max_length=length,
        eval_lengths=[length],
        cache_dir=str(cache_dir),
        tokenizer=tokenizer,
        **args,
    )


def text_of(symbols: list[str]) -> str:
    return "".join(symbols).encode("latin-1").decode("utf-8", errors="replace")


TASKS = [
    (Passkey(), 300),
    (NeedleQA(location="middle"), 400),
    (LineRetrieval(location="end"), 300),
]


@pytest.mark.parametrize("task,length", TASKS, ids=[type(t).__name__ for t, _ in TASKS])
def test_examples_are_the_tokenizers_ids_of_the_tasks_text(tmp_path, bpe, task, length):
    tokenizer = AutoTokenizer.from_pretrained(bpe)
    data = task_data(task, length, tmp_path, bpe)
    assert data.vocab_size == len(tokenizer) == 500
    for seed in range(5):
        inputs, answer = task.generate(length, random.Random(seed))  # the byte task's own text
        context, answer = text_of(inputs), text_of(answer)
        example = data.task.make_example(length, random.Random(seed))
        # The whole sequence is the tokenizer's tokenization of context + answer, then EOS.
        joint = tokenizer(context + answer, add_special_tokens=False)["input_ids"]
        assert example.prompt + example.target == joint + [tokenizer.eos_token_id]
        # The prompt decodes to the context up to the answer's boundary token, the target to
        # the rest: the answer, decoded, is what the task asks for.
        prompt_text = tokenizer.decode(example.prompt)
        target_text = tokenizer.decode(example.target[:-1])
        assert prompt_text + target_text == context + answer
        assert target_text.strip() == answer and context.startswith(prompt_text)
        assert example.length == length


def test_answers_are_scored_on_what_a_model_writes(tmp_path, bpe):
    """PresenceAccuracy: a generation that writes the pass key as text (the tokenizer's ids of
    " KEY", whatever the prompt's last token) has it, one with another key has not. ExactMatch:
    the tokenizer's continuation of the prompt to `context + KEY`, then EOS, is exact."""
    tokenizer = AutoTokenizer.from_pretrained(bpe)
    task = Passkey()
    data = task_data(task, 300, tmp_path, bpe)
    seeds = range(6)
    examples = [data.task.make_example(300, random.Random(seed)) for seed in seeds]
    batch = collate_examples(examples)
    contexts, keys = [], []
    for seed in seeds:
        inputs, key = task.generate(300, random.Random(seed))
        contexts.append(text_of(inputs))
        keys.append(text_of(key))
    wrong_keys = [str(int(key) % 99999 + 1) for key in keys]

    def generations(rows: list[list[int]]) -> torch.Tensor:
        generated = torch.zeros_like(batch.targets)  # (B, max target length), PAD after
        for row, ids in enumerate(rows):
            ids = ids[: generated.shape[1]]
            generated[row, : len(ids)] = torch.tensor(ids)
        return generated

    def spaced(key: str) -> list[int]:
        return tokenizer(" " + key, add_special_tokens=False)["input_ids"]

    def continuation(row: int, key: str) -> list[int]:
        ids = tokenizer(contexts[row] + key, add_special_tokens=False)["input_ids"]
        return ids[len(examples[row].prompt) :] + [tokenizer.eos_token_id]

    cases = [
        (PresenceAccuracy, [spaced(key) for key in keys], 1.0),
        (PresenceAccuracy, [spaced(key) for key in wrong_keys], 0.0),
        (ExactMatch, [continuation(row, key) for row, key in enumerate(keys)], 1.0),
        (ExactMatch, [continuation(row, key) for row, key in enumerate(wrong_keys)], 0.0),
    ]
    for metric_class, rows, expected in cases:
        values, _ = metric_class().score(batch, None, generations(rows))
        assert values.tolist() == [expected] * len(keys), (metric_class.__name__, expected)


def test_exported_byte_tokenizer_gives_byte_ids(tmp_path):
    """lengen export's byte-level tokenizer: token id = UTF-8 byte; no EOS, so "\\n" ends."""
    byte_tokenizer().save_pretrained(tmp_path / "bytes")
    task = Passkey()
    data = task_data(task, 200, tmp_path, str(tmp_path / "bytes"))
    assert data.vocab_size == 256
    inputs, answer = task.generate(200, random.Random(3))
    example = data.task.make_example(200, random.Random(3))
    assert example.prompt == list("".join(inputs).encode("latin-1"))
    assert example.target == [*"".join(answer).encode("latin-1"), ord("\n")]


def test_evaluation_sets_are_cached_per_tokenizer(tmp_path, bpe):
    other = bpe_folder(tmp_path / "other", vocab_size=400)
    sets = []
    for tokenizer in (bpe, other, None):
        data = task_data(Passkey(), 200, tmp_path / "cache", tokenizer, test_examples_per_length=3)
        data.prepare_data()
        data.setup("test")
        sets.append([example.prompt for example in data.eval_sets["test"]])
    assert len({str(prompts) for prompts in sets}) == 3
    assert len(list((tmp_path / "cache" / "eval_sets").glob("*-test-*"))) == 3


def test_a_non_text_task_is_refused_in_one_line(tmp_path, bpe):
    with pytest.raises(ValueError) as error:
        TaskDataModule(Copy(), cache_dir=str(tmp_path), tokenizer=bpe)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("data.tokenizer: Copy is not a text task")
    with pytest.raises(ValueError, match="could not be loaded"):
        task_data(Passkey(), 200, tmp_path, str(tmp_path / "none"))


def test_language_model_data_uses_the_tokenizer(tmp_path, bpe):
    tokenizer = AutoTokenizer.from_pretrained(bpe)
    documents = ["def add(a, b):\n    return a + b\n", "class Point:\n    x = 1\n    y = 2\n"]
    files = []
    for index, text in enumerate(documents * 20):
        files.append(tmp_path / f"doc{index}.txt")
        files[-1].write_text(text)
    data = TextDataModule(
        files=[str(f) for f in files], tokenizer=bpe, n_ctx=8, cache_dir=str(tmp_path / "c")
    )
    assert data.vocab_size == len(tokenizer)
    for text in documents:
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert data.tokenizer.encode(text) == expected + [tokenizer.eos_token_id]


def test_byte_level_metrics_are_left_out_or_refused_with_a_tokenizer(tmp_path, bpe):
    """StringMatchAll/Part read ids as bytes: with a tokenizer they would score nonsense."""
    from types import SimpleNamespace

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lengen.module import LengenModule
    from lengen_plugins.metrics.string_match import StringMatchAll
    from lengen_plugins.positional_encodings.rope import RoPE

    tokenized = task_data(Passkey(), 128, tmp_path / "a", bpe)
    plain = task_data(Passkey(), 128, tmp_path / "b", None)

    def module(metrics, datamodule) -> LengenModule:
        built = LengenModule(RoPE(), vocab_size=600, n_layer=1, d_model=16, metrics=metrics)
        built._trainer = SimpleNamespace(datamodule=datamodule)
        return built

    defaults = module(None, tokenized)
    assert "string_match_all" in defaults.metrics["test"]
    defaults.setup("test")
    assert "string_match_all" not in defaults.metrics["test"]
    assert "presence_accuracy" in defaults.metrics["test"]
    with pytest.raises(MisconfigurationException, match="StringMatchAll read token ids as bytes"):
        module([StringMatchAll()], tokenized).setup("test")
    byte_task = module([StringMatchAll()], plain)
    byte_task.setup("test")  # byte-level task data: kept
    assert "string_match_all" in byte_task.metrics["test"]
