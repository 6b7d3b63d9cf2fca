"""Per-token loss under gradient accumulation: one optimizer step = one big batch (float64)."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lengen.data.tasks import TaskDataModule, TrainingStream
from lengen.data.text import TextBatch
from lengen.module import LengenModule
from lengen.task import PAD
from lengen_plugins.callbacks.gradient_variance import GradientVarianceMonitor
from lengen_plugins.callbacks.sequence_length_warmup import SequenceLengthWarmup, segment
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.tasks.copy import Copy

# These tests train without validation data on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:You defined a `validation_step` but have no `val_dataloader`:UserWarning"
)


class GradientRecorder(L.Callback):
    """Copies the accumulated gradients just before each optimizer step."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []
        self.weights: dict[int, dict[str, torch.Tensor]] = {}  # batch_idx -> weights before it

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.weights[batch_idx] = copy.deepcopy(pl_module.state_dict())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append(
            {
                n: p.grad.detach().clone()
                for n, p in pl_module.named_parameters()
                if p.grad is not None
            }
        )


def tiny_module(vocab_size: int) -> LengenModule:
    torch.manual_seed(0)
    return LengenModule(
        RoPE(), vocab_size=vocab_size, n_layer=1, n_head=2, d_model=16, warmup_steps=1, metrics=[]
    )


def fit(module, callbacks, accumulate: int, max_steps: int, **fit_kwargs) -> None:
    L.Trainer(
        max_steps=max_steps,
        max_epochs=1, accumulate_grad_batches=accumulate, callbacks=callbacks,
        precision="64-true", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu",
    ).fit(module, **fit_kwargs)  # fmt: skip


def stack_rows(batches: list[tuple[torch.Tensor, torch.Tensor]]):
    """Micro-batches (input_ids, labels) -> one batch of all their rows, right-padded."""
    width = max(ids.shape[1] for ids, _ in batches)
    ids = torch.cat([F.pad(i, (0, width - i.shape[1]), value=PAD) for i, _ in batches])
    labels = torch.cat([F.pad(lab, (0, width - lab.shape[1]), value=-100) for _, lab in batches])
    return ids, labels  # (sum of B, width) each


def big_batch_gradient(module: LengenModule, input_ids, labels):
    """The gradient of the mean cross-entropy over all labelled tokens of one batch."""
    module = copy.deepcopy(module).double()
    logits = module(input_ids)  # (B, T, V)
    flat_labels = labels.flatten()
    scored = flat_labels != -100
    log_probs = torch.log_softmax(logits.flatten(0, 1)[scored], dim=-1)
    loss = -log_probs.gather(1, flat_labels[scored, None]).mean()
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    return grads, float(loss.detach())


def mean_of_means_gradient(module: LengenModule, batches):
    """What accumulation did before: the average of the micro-batches' per-token means."""
    module = copy.deepcopy(module).double()
    for input_ids, labels in batches:
        (module.loss(module(input_ids), labels) / len(batches)).backward()
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def assert_same_gradients(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-9, atol=1e-12)


def differs(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[n], b[n], rtol=1e-6, atol=1e-9) for n in b)


@pytest.mark.parametrize("accumulate", [2, 3])
def test_accumulated_step_equals_one_big_batch_on_task_batches(tmp_path, accumulate):
    data = TaskDataModule(
        Copy(), train_min_length=1, train_max_length=7, batch_size=3, eval_lengths=[2],
        val_examples_per_length=1, test_examples_per_length=1, cache_dir=str(tmp_path), seed=3,
    )  # fmt: skip
    module = tiny_module(data.vocab_size)
    initial = copy.deepcopy(module)
    recorder, monitor = GradientRecorder(), GradientVarianceMonitor()
    fit(module, [recorder, monitor], accumulate, max_steps=1, datamodule=data)

    stream = TrainingStream(Copy(), 1, 7, seed=3, batch_size=3, accumulation=accumulate)
    micro = [stream.batch(b) for b in range(accumulate)]  # the first step's micro-batches
    counts = [int((batch.labels != -100).sum()) for batch in micro]
    assert len(set(counts)) > 1, f"the test needs unequal labelled-token counts, got {counts}"
    batches = [(batch.input_ids, batch.labels) for batch in micro]
    expected, expected_loss = big_batch_gradient(initial, *stack_rows(batches))
    assert_same_gradients(recorder.grads[0], expected)
    assert differs(mean_of_means_gradient(initial, batches), expected)  # the old weighting
    assert monitor.history[0]["loss"] == pytest.approx(expected_loss, rel=1e-12)


@pytest.mark.parametrize("mode", ["truncate", "segment"])
def test_accumulated_step_equals_one_big_batch_under_sequence_length_warmup(tmp_path, mode):
    accumulate, length = 3, 6
    data = TaskDataModule(
        Copy(), train_min_length=1, train_max_length=6, batch_size=2, eval_lengths=[2],
        val_examples_per_length=1, test_examples_per_length=1, cache_dir=str(tmp_path), seed=1,
    )  # fmt: skip
    module = tiny_module(data.vocab_size)
    initial = copy.deepcopy(module)
    # One increment over one warmup step: step 0 trains on length min_seq_length = 6.
    warmup = SequenceLengthWarmup(
        max_seq_length=10, min_seq_length=length, step_size=4, duration=1.0, mode=mode,
        allow_task_data=True,  # task data (Copy): the warmup refuses it by default
    )  # fmt: skip
    recorder = GradientRecorder()
    fit(module, [warmup, recorder], accumulate, max_steps=1, datamodule=data)

    stream = TrainingStream(Copy(), 1, 6, seed=1, batch_size=2, accumulation=accumulate)
    micro = [stream.batch(b) for b in range(accumulate)]
    if mode == "truncate":  # the first `length` columns of every row
        batches = [(b.input_ids[:, :length], b.labels[:, :length]) for b in micro]
    else:  # every row cut into rows of `length` tokens
        batches = [segment(b.input_ids, b.labels, length) for b in micro]
    counts = [int((labels != -100).sum()) for _, labels in batches]
    assert len(set(counts)) > 1 and sum(counts) > 0, f"unequal counts needed, got {counts}"
    expected, _ = big_batch_gradient(initial, *stack_rows(batches))
    assert_same_gradients(recorder.grads[0], expected)
    assert differs(mean_of_means_gradient(initial, batches), expected)


def test_language_model_batches_with_dropped_labels_and_a_short_last_step():
    """Five TextBatch micro-batches, acc=2: steps of 2, 2 and (epoch end) 1 micro-batches."""
    generator = torch.Generator().manual_seed(7)
    batches = []
    for index in range(5):
        windows = torch.randint(0, 32, (2, 9), generator=generator)  # (B, n_ctx + 1)
        labels = windows[:, 1:].clone()
        labels[:, : index + 1] = -100  # a different number of scored tokens per micro-batch
        batches.append(TextBatch(input_ids=windows[:, :-1], labels=labels))
    module = tiny_module(32)
    initial = copy.deepcopy(module)
    recorder = GradientRecorder()
    loader = DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)
    fit(module, [recorder], accumulate=2, max_steps=-1, train_dataloaders=loader)
    assert len(recorder.grads) == 3  # Lightning steps on the epoch's last micro-batch too
    for step, first, last in [(0, 0, 2), (1, 2, 4), (2, 4, 5)]:  # micro-batches [first, last)
        weights = copy.deepcopy(initial).double()  # the recorded weights are float64
        weights.load_state_dict(recorder.weights[first])
        rows = stack_rows([(b.input_ids, b.labels) for b in batches[first:last]])
        expected, _ = big_batch_gradient(weights, *rows)
        assert_same_gradients(recorder.grads[step], expected)
