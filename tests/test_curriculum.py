"""Curriculum callbacks: schedules against hand-computed values, batches, encodings, monitors."""

from __future__ import annotations

import math
import random
from collections import Counter
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from lengen.data.tasks import TaskDataModule
from lengen.data.text import TextBatch, TextDataModule
from lengen.module import LengenModule
from lengen.positional import PositionalEncoding
from lengen_plugins.callbacks.common import CurriculumConfigError
from lengen_plugins.callbacks.encoding_schedule import (
    EncodingSchedule,
    PositionInterpolationRamp,
    schedule_value,
)
from lengen_plugins.callbacks.gradient_variance import GradientVarianceMonitor
from lengen_plugins.callbacks.length_curriculum import LengthCurriculum, LengthSchedule
from lengen_plugins.callbacks.sequence_length_warmup import (
    SequenceLengthWarmup,
    segment,
    truncate,
)
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.tasks.copy import Copy


class Recorder(L.Callback):
    """Records what the training step receives (it runs after the callbacks before it)."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int, tuple[int, ...]]] = []
        self.task_lengths: list[tuple[int, list[int]]] = []
        self.scales: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.shapes.append((trainer.global_step, batch_idx, tuple(batch.input_ids.shape)))
        if getattr(batch, "lengths", None) is not None:  # task batches
            self.task_lengths.append((trainer.global_step, batch.lengths.tolist()))
        encoding = pl_module.decoder.pos_encoding
        if "scale" in encoding.schedulable:
            self.scales.append((trainer.global_step, float(encoding.scale)))


def trainer(callbacks, max_steps: int, accumulate: int = 1) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )


def task_data(tmp_path, **kwargs) -> TaskDataModule:
    """Copy task data with one tiny evaluation set cached under tmp_path."""
    return TaskDataModule(
        Copy(), eval_lengths=[2], val_examples_per_length=1, test_examples_per_length=1,
        cache_dir=str(tmp_path / "cache"), **kwargs,
    )  # fmt: skip


def tiny_module(encoding: PositionalEncoding | None = None, vocab_size: int = 256) -> LengenModule:
    torch.manual_seed(0)
    return LengenModule(
        encoding or RoPE(), vocab_size=vocab_size, n_layer=1, n_head=2, d_model=16,
        warmup_steps=1, metrics=[],
    )  # fmt: skip


# --- sequence-length warmup ---------------------------------------------------------------


def test_warmup_length_follows_the_linear_schedule():
    warmup = SequenceLengthWarmup(max_seq_length=64, min_seq_length=8, duration=0.3, step_size=8)
    warmup.setup(SimpleNamespace(max_steps=100, datamodule=None), None, "fit")
    assert warmup.warmup_steps == 30
    lengths = [warmup.length_at(step) for step in range(100)]
    for step, length in enumerate(lengths):
        # Independent form: the linear ramp 8 + 56 t / 30 rounded down to the 8-grid from 8.
        ramp = 8 + 8 * math.floor(step * 7 / 30) if step < 30 else 64
        assert length == ramp and length % 8 == 0
    assert lengths[0] == 8 and lengths[29] == 56 and lengths[30:] == [64] * 70
    assert sorted(set(lengths)) == [8, 16, 24, 32, 40, 48, 56, 64]


def test_truncate_and_segment_on_hand_made_text_batches():
    torch.manual_seed(0)
    windows = torch.randint(0, 256, (3, 21))  # (B, n_ctx + 1) with n_ctx = 20
    batch = TextBatch(input_ids=windows[:, :-1], labels=windows[:, 1:])
    inputs, labels = truncate(batch.input_ids, batch.labels, 8)
    assert torch.equal(inputs, windows[:, :8]) and torch.equal(labels, windows[:, 1:9])
    inputs, labels = segment(batch.input_ids, batch.labels, 8)
    assert inputs.shape == labels.shape == (9, 8)  # 3 rows x ceil(20 / 8) chunks
    # Every (input, next token) pair is kept exactly once; the padding is ignored by the loss.
    kept = labels != -100
    pairs = Counter(zip(inputs[kept].tolist(), labels[kept].tolist()))
    want = Counter(zip(windows[:, :-1].flatten().tolist(), windows[:, 1:].flatten().tolist()))
    assert pairs == want and int(kept.sum()) == 60
    assert torch.equal(inputs[1], windows[0, 8:16]) and torch.equal(labels[1], windows[0, 9:17])


def test_accumulated_micro_batches_give_the_per_token_mean_gradient():
    """Same length for both micro-batches of a step -> mean of means = the step's token mean."""
    module = tiny_module()
    torch.manual_seed(1)
    windows = torch.randint(0, 256, (4, 33))  # (B, n_ctx + 1)
    inputs, labels = segment(windows[:, :-1], windows[:, 1:], 12)  # padded last chunk

    def grads(loss):
        module.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in module.parameters()]

    halves = [(inputs[:6], labels[:6]), (inputs[6:], labels[6:])]  # two micro-batches of 2 rows
    accumulated = grads(sum(module.loss(module(x), y) / 2 for x, y in halves))
    whole = grads(module.loss(module(inputs), labels))
    for a, b in zip(accumulated, whole):
        torch.testing.assert_close(a, b)


def test_warmup_on_the_text_data_module_with_accumulation(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(chr(32 + (i * 7) % 90) for i in range(6000)))
    data = TextDataModule(files=[str(corpus)], n_ctx=32, batch_size=2, eval_multiples=[1])
    recorder = Recorder()
    warmup = SequenceLengthWarmup(min_seq_length=8, duration=0.5, step_size=8, mode="segment")
    trainer([warmup, recorder], max_steps=8, accumulate=2).fit(tiny_module(), datamodule=data)
    assert warmup.max_seq_length == 32  # taken from the data module's n_ctx
    by_step: dict[int, set] = {}
    for step, _, shape in recorder.shapes:
        by_step.setdefault(step, set()).add(shape)
    assert len(recorder.shapes) == 16 and sorted(by_step) == list(range(8))
    for step, shapes in by_step.items():
        (shape,) = shapes  # both micro-batches of a step have the same shape
        length = warmup.length_at(step)
        assert shape == (2 * math.ceil(32 / length), length)
    assert [warmup.length_at(s) for s in range(8)] == [8, 8, 16, 24, 32, 32, 32, 32]
    assert warmup.tokens_seen == 16 * 2 * 32  # segment mode drops no token


def test_warmup_truncates_task_batches(tmp_path):
    data = task_data(tmp_path, train_min_length=6, train_max_length=6, batch_size=4)
    recorder = Recorder()
    warmup = SequenceLengthWarmup(
        max_seq_length=16, min_seq_length=4, duration=0.8, step_size=4, allow_task_data=True
    )
    module = tiny_module(vocab_size=data.vocab_size)
    trainer([warmup, recorder], max_steps=5).fit(module, datamodule=data)
    # Copy of length 6: BOS + 6 + SEP + 6 + EOS = 15 tokens, 14 inputs. W = 4 steps, K = 3:
    # 4 + 4 floor(3 t / 4) for t < 4, then min(14, 16).
    assert [shape for _, _, shape in recorder.shapes] == [(4, 4), (4, 4), (4, 8), (4, 12), (4, 14)]


# --- task length curricula ---------------------------------------------------------------


def test_length_schedules_against_their_definitions():
    rng = random.Random(0)
    fixed = LengthSchedule("fixed", 2, 9)
    assert {fixed.sample(step, rng) for step in range(50)} == {9}
    growing = LengthSchedule("regular_increase", 2, 9, increase_every=10, increase_by=3)
    assert [growing.current_max(step) for step in (0, 9, 10, 25, 100)] == [2, 2, 5, 8, 9]
    # The reference draws min + increase_by * k, k uniform in 0..(increases so far)
    # (google-deepmind/randomized_positional_encodings, experiments/curriculum.py): only grid
    # points, never 3 or 4; past max_length the last grid point is max_length (9, not 11).
    assert {growing.sample(15, rng) for _ in range(300)} == {2, 5}
    late = Counter(growing.sample(100, rng) for _ in range(4000))
    assert set(late) == {2, 5, 8, 9}
    for length in (2, 5, 8, 9):  # k uniform over 0..3
        assert late[length] / 4000 == pytest.approx(0.25, abs=0.03)
    top_only = LengthSchedule("regular_increase", 2, 9, 10, 3, sample_all_lengths=False)
    assert {top_only.sample(25, rng) for _ in range(50)} == {8}
    uniform = LengthSchedule("uniform", 2, 5)
    assert set(Counter(uniform.sample(0, rng) for _ in range(400))) == {2, 3, 4, 5}
    reverse = LengthSchedule("reverse_exponential", 1, 4, tau=0.5)
    counts = Counter(reverse.sample(0, rng) for _ in range(20000))
    norm = sum(0.5**length for length in range(1, 5))
    for length in range(1, 5):  # P(l) = tau^l / sum_l' tau^l'
        assert counts[length] / 20000 == pytest.approx(0.5**length / norm, abs=0.015)
    assert fixed(3, rng, 5) == [9] * 5  # one length per batch


def test_length_curriculum_drives_the_task_stream(tmp_path):
    data = task_data(tmp_path, train_min_length=1, train_max_length=12, batch_size=3)
    recorder = Recorder()
    curriculum = LengthCurriculum("regular_increase", 1, None, increase_every=2, increase_by=2,
                                  sample_all_lengths=False)  # fmt: skip
    module = tiny_module(vocab_size=data.vocab_size)
    trainer([curriculum, recorder], max_steps=6, accumulate=2).fit(module, datamodule=data)
    got = [(step, lengths) for step, lengths in recorder.task_lengths]
    want = [(step, [1 + 2 * (step // 2)] * 3) for step in range(6) for _ in range(2)]
    assert got == want


def test_length_curriculum_needs_task_data():
    curriculum = LengthCurriculum()
    fake = SimpleNamespace(datamodule=TextDataModule(), max_steps=10)
    with pytest.raises(CurriculumConfigError, match="needs a task data module"):
        curriculum.setup(fake, None, "fit")


# --- encoding schedules -------------------------------------------------------------------


class ScaledPositions(PositionalEncoding):
    """A test encoding with a schedulable `scale`, standing in for RoPELinear."""

    schedulable = ("scale",)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0))

    def embed(self, token_embeddings, positions):
        return token_embeddings + (positions / self.scale)[..., None] * 0.01


@pytest.mark.parametrize("shape", ["linear", "cosine", "step"])
def test_schedule_values(shape):
    def want(step):  # written from the definitions, start 10 -> end 30, 2 -> 6
        p = min(1.0, max(0.0, (step - 10) / 20))
        f = {"linear": p, "cosine": (1 - math.cos(math.pi * p)) / 2, "step": math.floor(4 * p) / 4}
        return 2 + 4 * f[shape]

    for step in range(40):
        assert schedule_value(step, 10, 30, 2.0, 6.0, shape) == pytest.approx(want(step))


def test_position_interpolation_ramp_moves_the_buffer_each_step(tmp_path):
    recorder = Recorder()
    ramp = PositionInterpolationRamp(target_scale=4.0, start=2, end=0.75)  # steps 2 .. 6
    data = task_data(tmp_path, train_max_length=4, batch_size=2)
    module = tiny_module(ScaledPositions(), vocab_size=data.vocab_size)
    trainer([ramp, recorder], max_steps=8).fit(module, datamodule=data)
    want = [1.0, 1.0, 1.0, 1.75, 2.5, 3.25, 4.0, 4.0]
    assert recorder.scales == [(step, value) for step, value in enumerate(want)]
    assert module.decoder.pos_encoding.scale.dtype == torch.float32
    assert float(module.state_dict()["decoder.pos_encoding.scale"]) == 4.0  # in checkpoints


def test_encoding_schedule_errors_name_what_exists():
    schedule = EncodingSchedule("blend", 0.0, 1.0)
    fake = SimpleNamespace(max_steps=10, datamodule=None)
    with pytest.raises(CurriculumConfigError, match="ScaledPositions has: scale"):
        schedule.setup(fake, tiny_module(ScaledPositions()), "fit")
    with pytest.raises(CurriculumConfigError, match="set trainer.max_steps"):
        EncodingSchedule("scale", 1, 2, end=0.5).setup(
            SimpleNamespace(max_steps=-1), tiny_module(ScaledPositions()), "fit"
        )
    with pytest.raises(ValueError, match="accepted: linear, cosine, step"):
        EncodingSchedule("scale", 1, 2, shape="exponential")


# --- gradient-variance monitor ------------------------------------------------------------


def test_monitor_statistics_match_the_optimizer_state(tmp_path):
    data = task_data(tmp_path, train_max_length=6, batch_size=4)
    monitor = GradientVarianceMonitor()
    module = tiny_module(vocab_size=data.vocab_size)
    fit = trainer([monitor], max_steps=3)
    fit.fit(module, datamodule=data)
    moments = [s["exp_avg_sq"] for s in fit.optimizers[0].state.values()]
    last = monitor.history[-1]
    assert len(monitor.history) == 3 and last["step"] == 3
    assert last["adam_v_max"] == pytest.approx(float(max(m.max() for m in moments)))
    assert last["adam_v_l1"] == pytest.approx(float(sum(m.sum() for m in moments)), rel=1e-6)
    assert all(record["grad_norm"] > 0 for record in monitor.history)


def test_monitor_counts_loss_spikes_against_the_running_mean():
    monitor = GradientVarianceMonitor(spike_factor=1.5, ema_decay=0.5, ignore_first_steps=2)
    logged = {}
    module = SimpleNamespace(log=lambda name, value, **kwargs: logged.__setitem__(name, value))
    fake = SimpleNamespace(accumulate_grad_batches=1, global_step=0, optimizers=[])
    losses = [10.0, 1.0, 1.0, 1.0, 2.0, 1.0, float("nan"), 1.0]
    for index, loss in enumerate(losses):
        fake.global_step = index + 1
        monitor.on_train_batch_end(fake, module, {"loss": torch.tensor(loss)}, None, index)
    # Running means 10, 5.5, 3.25, 2.125, 2.06, 1.53: no loss exceeds 1.5x the mean before it;
    # the NaN loss is a spike.
    assert [record["spike"] for record in monitor.history] == [0, 0, 0, 0, 0, 0, 1, 0]
    monitor2 = GradientVarianceMonitor(spike_factor=1.2, ema_decay=0.5, ignore_first_steps=2)
    for index, loss in enumerate([1.0, 1.0, 1.0, 1.0, 3.0, 1.0]):
        fake.global_step = index + 1
        monitor2.on_train_batch_end(fake, module, {"loss": torch.tensor(loss)}, None, index)
    assert [record["spike"] for record in monitor2.history] == [0, 0, 0, 0, 1, 0]
    assert logged["variance/loss_spikes"] == 1.0
    state = monitor2.state_dict()
    restored = GradientVarianceMonitor()
    restored.load_state_dict(state)
    assert (restored.loss_spikes, restored.steps_seen) == (1, 6)
    assert restored.running_mean == monitor2.running_mean


def test_task_stream_is_a_pure_function_of_the_batch_index():
    """Workers and resumption change nothing: batch b is the same however it is produced."""
    from torch.utils.data import DataLoader

    from lengen.data.tasks import TrainingStream

    def first(stream, count, workers=0):
        loader = DataLoader(stream, batch_size=None, num_workers=workers)
        return [batch for batch, _ in zip(loader, range(count))]

    schedule = LengthSchedule("regular_increase", 1, 9, increase_every=1)
    stream = TrainingStream(Copy(), 1, 9, seed=3, batch_size=4, accumulation=2,
                            length_sampler=schedule)  # fmt: skip
    plain = first(stream, 6)
    with_workers = first(stream, 6, workers=2)
    resumed = first(
        TrainingStream(Copy(), 1, 9, seed=3, batch_size=4, start_batch=3, accumulation=2,
                       length_sampler=schedule),
        3,
    )  # fmt: skip
    for a, b in zip(plain, with_workers):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    for a, b in zip(plain[3:], resumed):
        assert torch.equal(a.input_ids, b.input_ids)
    # accumulation 2: batches 2b and 2b + 1 share optimizer step b and its top length 1 + b
    for index, batch in enumerate(plain):
        assert 1 <= int(batch.lengths.min()) <= int(batch.lengths.max()) <= 1 + index // 2
    assert len({tuple(batch.input_ids.flatten().tolist()) for batch in plain}) == 6


def test_warmup_refuses_task_data_unless_allowed(tmp_path):
    """Truncating BOS input SEP target EOS rows to L tokens leaves no labelled token early on."""
    data = task_data(tmp_path, train_min_length=6, train_max_length=6, batch_size=4)
    warmup = SequenceLengthWarmup(max_seq_length=16, min_seq_length=4, duration=0.8, step_size=4)
    with pytest.raises(CurriculumConfigError, match="LengthCurriculum") as error:
        warmup.setup(SimpleNamespace(max_steps=5, datamodule=data), None, "fit")
    assert "\n" not in str(error.value) and "allow_task_data: true" in str(error.value)
    # What the refusal prevents: at L = 4 a Copy-6 row (prompt of 8 tokens) keeps no label.
    batch = next(iter(data.train_dataloader()))
    _, labels = truncate(batch.input_ids, batch.labels, 4)
    assert int((batch.labels != -100).sum()) > 0 and int((labels != -100).sum()) == 0


def test_warmup_config_stacked_on_the_quickstart_says_what_to_set_in_one_line(tmp_path, capsys):
    """`lengen fit --config quickstart.yaml --config sequence_length_warmup.yaml`: exit 2."""
    from pathlib import Path

    from lengen.cli import main

    configs = Path(__file__).resolve().parents[1] / "configs"
    with pytest.raises(SystemExit) as exit_info:
        main([
            "fit", "--config", str(configs / "quickstart.yaml"),
            "--config", str(configs / "curriculum" / "sequence_length_warmup.yaml"),
            "--trainer.max_steps", "40", "--trainer.default_root_dir", str(tmp_path / "run"),
            "--data.init_args.cache_dir", str(tmp_path / "cache"),
        ])  # fmt: skip
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lengen: error")]
    assert len(errors) == 1 and "LengthCurriculum" in errors[0], stderr[-2000:]
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_xpos_scale_base_annealing_giraffe_preset_is_giraffes_callback():
    """Giraffe's AdjustXPOSCallback (abacusai/Long-Context, python/train/finetune_context.py,
    commit 11b61fbd9b738d3bfd08ecbc6c5dfea7f8c9f59e): scale_base 8192; after each step, if it is
    above 128, subtract 8. Simulated here step by step."""
    from torch import nn

    from lengen_plugins.callbacks.encoding_schedule import XPosScaleBaseAnnealing
    from lengen_plugins.positional_encodings.xpos import XPos

    expected, scale_base = [], 8192
    for _ in range(1200):
        expected.append(scale_base)  # the value the step trains with
        if scale_base > 128:
            scale_base -= 8
    annealing = XPosScaleBaseAnnealing(preset="giraffe")
    holder = nn.Module()
    holder.pos_encoding = XPos()
    annealing.setup(SimpleNamespace(max_steps=1200), holder, "fit")
    assert [annealing.value_at(step) for step in range(1200)] == expected
    default = XPosScaleBaseAnnealing()  # lengen's: 16384 -> 512 over the whole run
    default.setup(SimpleNamespace(max_steps=100), holder, "fit")
    assert [default.value_at(step) for step in (0, 50, 100)] == [16384.0, 8448.0, 512.0]
    with pytest.raises(ValueError, match="accepted: giraffe") as error:
        XPosScaleBaseAnnealing(preset="abacus")
    assert "\n" not in str(error.value)
