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


def test_final_weights_are_saved_when_training_stops_between_validations(tmp_path):
    import lightning as L

    from lengen.data.tasks import TaskDataModule
    from lengen_plugins.positional_encodings.nope import NoPE
    from lengen_plugins.tasks.copy import Copy

    data = TaskDataModule(
        Copy(),
        train_max_length=4,
        eval_lengths=[4],
        batch_size=4,
        val_examples_per_length=4,
        cache_dir=str(tmp_path / "cache"),
    )
    model = LengenModule(NoPE(), vocab_size=data.vocab_size, n_layer=1, d_model=16, metrics=[])
    trainer = L.Trainer(
        max_steps=5,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    saved = sorted(path.name for path in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert saved == ["epoch=0-step=3.ckpt", "final-step=5.ckpt"]
    final = torch.load(tmp_path / "checkpoints" / "final-step=5.ckpt", weights_only=False)
    assert final["global_step"] == 5
    for name, value in model.state_dict().items():
        assert torch.equal(final["state_dict"][name], value), name
