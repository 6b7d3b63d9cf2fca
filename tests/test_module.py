"""The LightningModule: batched greedy generation against a one-example-at-a-time reference."""

from __future__ import annotations

import random

import torch

from lengen.data.tasks import collate_examples
from lengen.module import LengenModule
from lengen.task import BOS, EOS, SEP, Example
from lengen_plugins.positional_encodings.alibi import ALiBi
from lengen_plugins.positional_encodings.rope import RoPE


def reference_greedy(model: LengenModule, prompt: list[int], steps: int) -> list[int]:
    """Append the argmax token `steps` times, one example, no padding."""
    tokens = list(prompt)
    for _ in range(steps):
        logits = model(torch.tensor([tokens]))
        tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def test_batched_greedy_generation_equals_the_reference():
    torch.manual_seed(random.randrange(1 << 30))
    for encoding in (RoPE(), ALiBi()):
        model = LengenModule(encoding, vocab_size=12, n_layer=2, d_model=32).eval()
        examples = []
        for _ in range(6):
            prompt = [BOS, *(random.randrange(4, 12) for _ in range(random.randint(1, 7))), SEP]
            target = [*(random.randrange(4, 12) for _ in range(random.randint(1, 6))), EOS]
            examples.append(Example(prompt, target, len(prompt) - 2))
        batch = collate_examples(examples)
        generated = model.greedy_generate(batch)
        for row, example in enumerate(examples):
            expected = reference_greedy(model, example.prompt, len(example.target))
            assert generated[row, : len(example.target)].tolist() == expected
            assert (generated[row, len(example.target) :] == 0).all()  # PAD after the target


def test_learning_rate_warms_up_then_decays_to_the_floor():
    model = LengenModule(
        RoPE(), vocab_size=8, d_model=16, lr=1e-2, warmup_steps=10, min_lr_ratio=0.1
    )
    model.trainer = type("FakeTrainer", (), {"max_steps": 110})()
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(110):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert abs(rates[0] - 1e-3) < 1e-12 and abs(rates[9] - 1e-2) < 1e-12
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert abs(rates[-1] - 1e-3) < 1e-4
