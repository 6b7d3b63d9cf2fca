"""Contract suites for task, metric and callback plugins; collected through `lengen.testing`.

    pytest --pyargs lengen.testing -k MyTask      # one plugin of any group

Tasks (every `lengen.tasks` plugin, built with default arguments): examples are deterministic
given the generator's seed, laid out `BOS input SEP target EOS`, report the requested length,
refuse lengths below `min_length`, use only the task's own symbols; the cache key
(`Task.identity()`) is plain JSON data, names every constructor argument, is equal for equal
arguments and does not change when examples are generated.

Metrics (every `lengen.metrics` plugin, default arguments, on random logits and generations of
a small task batch, lengths 3 and 5 only): every state is reduced by summation (DDP-safe: two
ranks' states summed give the one-process result), a bucket's value is the weighted mean of
`score` over its examples, and buckets that saw no example are NaN. Metrics that do not accept
task batches (`accepts(EvalBatch) is False`, e.g. language-model metrics) are skipped with that
reason.

Callbacks (every `lengen.callbacks` plugin, built by `cls.example()` if defined, else `cls()`):
`state_dict()` survives `torch.save` / `torch.load(weights_only=True)` (a checkpoint) and a fresh
instance's `load_state_dict` restores it exactly; a callback with state must override
`load_state_dict`. A callback whose constructor needs arguments and that defines no
`example()` classmethod is skipped with that reason.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import random

import pytest
import torch
from lightning.pytorch import Callback

from lengen.metric import EvalBatch, LengthMetric
from lengen.plugins import GROUPS, discover
from lengen.task import BOS, EOS, PAD, SEP, SPECIAL_TOKENS, Example, Task

METRIC_LENGTHS = (3, 5)  # the buckets the metric suite fills; every other bucket must be NaN


def _names(group: str) -> list[str]:
    return sorted(discover(group))


def _plugin(group: str, name: str):
    plugin = discover(group)[name]
    if plugin.error is not None:
        pytest.fail(f"plugin {name} ({plugin.distribution}) failed to load: {plugin.error}")
    return plugin.obj


# ----------------------------------------------------------------------------- tasks


def _task(name: str) -> Task:
    cls = _plugin(GROUPS["tasks"], name)
    assert issubclass(cls, Task), f"{name} must subclass lengen.task.Task"
    return cls()


def _task_lengths(task: Task) -> list[int]:
    return sorted(
        {task.min_length, task.min_length + 1, task.min_length + 5, 2 * task.min_length + 8}
    )


@pytest.mark.parametrize("name", _names(GROUPS["tasks"]))
def test_task_examples_are_deterministic_given_the_seed(name):
    task = _task(name)
    for length in _task_lengths(task):
        first = [task.make_example(length, random.Random(f"a-{length}")) for _ in range(1)]
        again = [task.make_example(length, random.Random(f"a-{length}")) for _ in range(1)]
        assert first == again, f"{name}: the same seed gave different examples at length {length}"
        # A second instance must not depend on state left by the first (e.g. a class-level rng).
        other = type(task)().make_example(length, random.Random(f"a-{length}"))
        assert other == first[0], f"{name}: a fresh instance gave another example"


@pytest.mark.parametrize("name", _names(GROUPS["tasks"]))
def test_task_examples_have_the_layout_and_the_requested_length(name):
    task = _task(name)
    for length in _task_lengths(task):
        rng = random.Random(length)
        for _ in range(3):
            example = task.make_example(length, rng)
            assert isinstance(example, Example)
            assert example.length == length, f"{name}: asked for {length}, got {example.length}"
            assert example.prompt[0] == BOS and example.prompt[-1] == SEP
            assert example.target[-1] == EOS and len(example.target) >= 1
    if task.min_length > 1:
        with pytest.raises(ValueError):
            task.make_example(task.min_length - 1, random.Random(0))


@pytest.mark.parametrize("name", _names(GROUPS["tasks"]))
def test_task_uses_only_its_own_vocabulary(name):
    task = _task(name)
    assert task.symbols, f"{name}: `symbols` is empty"
    assert len(set(task.symbols)) == len(task.symbols), f"{name}: symbols must be distinct"
    assert not set(task.symbols) & set(SPECIAL_TOKENS), f"{name}: a symbol is a special token"
    assert task.vocab_size == len(SPECIAL_TOKENS) + len(task.symbols)
    for length in _task_lengths(task):
        example = task.make_example(length, random.Random(length))
        body = example.prompt[1:-1] + example.target[:-1]
        assert all(len(SPECIAL_TOKENS) <= i < task.vocab_size for i in body), (
            f"{name}: a token outside the task's symbols at length {length}"
        )


@pytest.mark.parametrize("name", _names(GROUPS["tasks"]))
def test_task_cache_key_is_stable_plain_data_naming_every_argument(name):
    task = _task(name)
    key = task.identity()
    text = json.dumps(key, sort_keys=True)  # raises if the key is not plain data
    assert key["class_path"].endswith(type(task).__qualname__)
    parameters = inspect.signature(type(task).__init__).parameters
    for argument in list(parameters)[1:]:  # without self
        if parameters[argument].kind in (
            parameters[argument].VAR_POSITIONAL,
            parameters[argument].VAR_KEYWORD,
        ):
            continue
        assert argument in key, (
            f"{name}: constructor argument {argument!r} is not an attribute of the same name, so "
            "the evaluation-set cache would not tell its values apart"
        )
    assert json.dumps(type(task)().identity(), sort_keys=True) == text, "equal arguments, other key"
    for length in _task_lengths(task):
        task.make_example(length, random.Random(length))
    assert json.dumps(task.identity(), sort_keys=True) == text, "generating changed the cache key"


# ----------------------------------------------------------------------------- metrics


class _DigitsTask(Task):
    """A reference task for the metric suite: copy digits."""

    symbols = tuple("0123456789")

    def generate(self, length: int, rng: random.Random) -> tuple[list[str], list[str]]:
        digits = [rng.choice(self.symbols) for _ in range(length)]
        return digits, digits


def _metric_batch(seed: int) -> tuple[EvalBatch, torch.Tensor, torch.Tensor]:
    """A task batch with lengths 3 and 5, random logits (B, T, V) and generations (B, W)."""
    from lengen.data.tasks import collate_examples

    task, rng = _DigitsTask(), random.Random(seed)
    examples = [task.make_example(METRIC_LENGTHS[i % 2], rng) for i in range(6)]
    batch = collate_examples(examples)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(*batch.input_ids.shape, task.vocab_size, generator=generator)
    generated = torch.randint(
        len(SPECIAL_TOKENS), task.vocab_size, batch.targets.shape, generator=generator
    )
    # Half of the rows copy the target exactly, so exact-match-like metrics see both outcomes.
    generated[::2] = batch.targets[::2]
    width = torch.arange(batch.targets.shape[1])
    generated[width[None, :] >= batch.target_lengths[:, None]] = PAD
    return batch, logits, generated


def _metric(name: str) -> LengthMetric:
    cls = _plugin(GROUPS["metrics"], name)
    assert issubclass(cls, LengthMetric), f"{name} must subclass lengen.metric.LengthMetric"
    metric = cls()
    batch, _, _ = _metric_batch(0)
    if not metric.accepts(batch):
        pytest.skip(f"{name} does not accept task batches (EvalBatch)")
    return metric


def _rows(batch: EvalBatch, logits, generated, index):
    return (
        EvalBatch(**{field: getattr(batch, field)[index] for field in batch.__dataclass_fields__}),
        logits[index],
        generated[index],
    )


def _update(metric, batch, logits, generated):
    metric.update(batch, logits, generated if metric.requires_generation else None)


@pytest.mark.parametrize("name", _names(GROUPS["metrics"]))
def test_metric_states_are_sums_so_ranks_can_be_added(name):
    metric = _metric(name)
    for state, reduction in metric._reductions.items():
        assert reduction is not None and reduction.__name__ == "dim_zero_sum", (
            f"{name}: state {state!r} is not reduced by summation; DDP would not add the ranks"
        )
    batch, logits, generated = _metric_batch(1)
    whole, rank0, rank1 = metric, copy.deepcopy(metric), copy.deepcopy(metric)
    _update(whole, batch, logits, generated)
    _update(rank0, *_rows(batch, logits, generated, slice(0, 3)))
    _update(rank1, *_rows(batch, logits, generated, slice(3, None)))
    for state in metric._reductions:  # what an all-reduce by summation gives
        setattr(rank0, state, getattr(rank0, state) + getattr(rank1, state))
    torch.testing.assert_close(rank0.compute(), whole.compute(), equal_nan=True)


@pytest.mark.parametrize("name", _names(GROUPS["metrics"]))
def test_metric_bucket_is_the_weighted_mean_of_scores_and_empty_buckets_are_nan(name):
    metric = _metric(name)
    batch, logits, generated = _metric_batch(2)
    _update(metric, batch, logits, generated)
    values = metric.compute()
    assert values.dim() == 1
    for length in range(values.shape[0]):
        if length not in METRIC_LENGTHS:
            assert torch.isnan(values[length]), f"{name}: empty bucket {length} is not NaN"
    # Row by row: the buckets must not depend on how examples were grouped into batches.
    by_row = _metric(name)
    for row in range(batch.input_ids.shape[0]):
        _update(by_row, *_rows(batch, logits, generated, slice(row, row + 1)))
    torch.testing.assert_close(by_row.compute(), values, equal_nan=True)
    if type(metric).compute is not LengthMetric.compute:
        return  # e.g. Perplexity exponentiates the mean: the grouping check above covers it
    for length in METRIC_LENGTHS:  # the reference: score() row by row, weighted mean in float64
        total = weight_sum = 0.0
        for row in range(batch.input_ids.shape[0]):
            if int(batch.lengths[row]) != length:
                continue
            one = _rows(batch, logits, generated, slice(row, row + 1))
            generation = one[2] if metric.requires_generation else None
            score, weight = metric.score(one[0], one[1], generation)
            total += float((score.double() * weight.double()).sum())
            weight_sum += float(weight.double().sum())
        assert weight_sum > 0
        expected = torch.tensor(total / weight_sum, dtype=torch.float64)
        torch.testing.assert_close(values[length].double(), expected)


# ----------------------------------------------------------------------------- callbacks


def _callback(name: str) -> Callback:
    cls = _plugin(GROUPS["callbacks"], name)
    assert issubclass(cls, Callback), f"{name} must subclass lightning.pytorch.Callback"
    if hasattr(cls, "example"):
        return cls.example()
    required = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        pytest.skip(f"{name} needs arguments ({', '.join(required)}); define example() to check it")
    return cls()


def _through_a_checkpoint(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save({"callbacks": {"key": state}}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["callbacks"]["key"]


def _perturbed(value):
    """The state with every number changed (ints + 1, floats * 1.5 + 0.25), structure kept."""
    if isinstance(value, dict):
        return {key: _perturbed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_perturbed(item) for item in value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.25
    if isinstance(value, torch.Tensor):
        return value + 1 if not value.is_floating_point() else value * 1.5 + 0.25
    return value


@pytest.mark.parametrize("name", _names(GROUPS["callbacks"]))
def test_callback_state_round_trips_through_a_checkpoint(name):
    callback = _callback(name)
    state = callback.state_dict()
    assert isinstance(state, dict)
    if state:
        assert type(callback).load_state_dict is not Callback.load_state_dict, (
            f"{name}: state_dict() has state but load_state_dict is Callback's no-op"
        )
    changed = _perturbed(state)  # values a fresh instance cannot have by chance
    fresh = _callback(name)
    fresh.load_state_dict(_through_a_checkpoint(copy.deepcopy(changed)))
    assert repr(fresh.state_dict()) == repr(changed), f"{name}: the state did not round-trip"
    assert fresh.state_key == callback.state_key
