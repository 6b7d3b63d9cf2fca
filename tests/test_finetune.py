"""Fine-tuning from a checkpoint trained with another encoding, and evaluation-time scale overrides.

The scaled encoding is defined here (`ToyScaledRoPE`, the pattern of a scaled RoPE: a `scale`
buffer saved in checkpoints and a plain `eval_scale` attribute that is not), so the test does not
depend on any particular first-party scaled encoding.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from lengen.module import LengenModule
from lengen_plugins.positional_encodings.alibi import ALiBi
from lengen_plugins.positional_encodings.learned import Learned
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.rope_scaling import RoPELinear
from lengen_plugins.positional_encodings.t5_bias import T5Bias

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")

TOY_MODULE = '''
import torch
from lengen_plugins.positional_encodings.rope import RoPE


class ToyScaledRoPE(RoPE):
    """RoPE of positions / scale; `eval_scale` (if set) replaces the scale outside training."""

    def __init__(self, scale: float = 1.0, eval_scale: float | None = None) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.eval_scale = eval_scale
        self.reported = False

    def current_scale(self) -> float:
        if not self.training and self.eval_scale is not None:
            return float(self.eval_scale)
        return float(self.scale)

    def _cos_sin(self, positions, dtype):
        if not self.training and not self.reported:
            self.reported = True
            print(f"toy: scale={float(self.scale)} used={self.current_scale()}", flush=True)
        frequencies = self.inverse_frequencies(dtype, positions.device) / self.current_scale()
        angles = positions.to(dtype)[:, None, :, None] * frequencies
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()
'''


def lengen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), "lengen")
    env = {**os.environ, "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [script, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env
    )


def tiny(root: Path, run: str) -> list[str]:
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / run),
        "--trainer.max_steps", "4",
        "--trainer.val_check_interval", "4",
        "--trainer.enable_progress_bar", "false",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[4, 8]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "4",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


def checkpoint(root: Path, run: str) -> Path:
    (path,) = (root / run).rglob("*.ckpt")
    return path


def test_fine_tune_from_another_encoding_then_test_with_another_eval_scale(tmp_path):
    (tmp_path / "toy_scaled.py").write_text(textwrap.dedent(TOY_MODULE))
    toy = ["--model.pos_encoding", "toy_scaled.ToyScaledRoPE"]
    result = lengen("fit", *tiny(tmp_path, "rope"), "--model.pos_encoding", "RoPE", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    pretrained = checkpoint(tmp_path, "rope")

    result = lengen(
        "fit", *tiny(tmp_path, "toy"), *toy, "--model.pos_encoding.init_args.scale", "4",
        "--model.init_from", str(pretrained), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (report,) = [line for line in result.stdout.splitlines() if "init_from" in line]
    loaded, total = map(int, re.search(r"loaded (\d+)/(\d+) tensors", report).groups())
    assert loaded == total - 1  # everything but the new encoding's buffer
    assert "not loaded (kept initialised): decoder.pos_encoding.scale;" in report
    assert report.endswith("unused from the checkpoint: none")
    # The fine-tuned run started from the pretrained weights: a frozen-in-time check on a matrix
    # the 4 fine-tuning steps move only a little (lr warms up from lr/100).
    start = torch.load(pretrained, weights_only=False)["state_dict"]
    tuned = torch.load(checkpoint(tmp_path, "toy"), weights_only=False)["state_dict"]
    name = "decoder.blocks.0.mlp.up.weight"
    assert (tuned[name] - start[name]).abs().max() < 0.01
    assert tuned["decoder.pos_encoding.scale"].item() == 4.0

    result = lengen(
        "test", *tiny(tmp_path, "toy"), *toy, "--model.pos_encoding.init_args.eval_scale", "8",
        "--ckpt_path", str(checkpoint(tmp_path, "toy")), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "toy: scale=4.0 used=8.0" in result.stdout  # trained scale restored, eval scale from CLI


def test_missing_init_from_file_is_a_clear_error(tmp_path):
    # The CLI prints a constructor's ValueError as one line `lengen: error: ...` (test_cli.py).
    with pytest.raises(ValueError, match=r"^init_from='.*nope.ckpt' is not a checkpoint file$"):
        LengenModule(RoPE(), init_from=str(tmp_path / "nope.ckpt"))


def test_load_matching_weights_skips_shape_mismatches(tmp_path):
    torch.manual_seed(0)
    source = LengenModule(Learned(max_length=64), vocab_size=10, n_layer=1, d_model=16, metrics=[])
    torch.save({"state_dict": source.state_dict()}, tmp_path / "source.ckpt")
    target = LengenModule(RoPE(), vocab_size=10, n_layer=1, d_model=16, metrics=[])
    report = target.load_matching_weights(str(tmp_path / "source.ckpt"))
    assert "\n" not in report
    assert "unused from the checkpoint: decoder.pos_encoding.table.weight" in report
    assert "not loaded (kept initialised): none" in report
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name


def checkpoint_of(module: LengenModule, encoding) -> dict:
    """What Lightning saves for `module` as far as fit_encoding_state reads it."""
    class_path = f"{type(encoding).__module__}.{type(encoding).__name__}"
    return {
        "state_dict": copy.deepcopy(module.state_dict()),
        "hyper_parameters": {"pos_encoding": {"class_path": class_path, "init_args": {}}},
    }


def test_a_rope_checkpoint_loads_into_a_scaled_rope_keeping_the_configured_scale():
    torch.manual_seed(1)
    source = LengenModule(RoPE(), vocab_size=10, n_layer=1, d_model=16, metrics=[])
    checkpoint = checkpoint_of(source, RoPE())
    target = LengenModule(RoPELinear(scale=2.0), vocab_size=10, n_layer=1, d_model=16, metrics=[])
    target.on_load_checkpoint(checkpoint)
    target.load_state_dict(checkpoint["state_dict"])  # strict: every tensor accounted for
    assert float(target.decoder.pos_encoding.scale) == 2.0
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[name]), name


def test_a_scaled_rope_checkpoint_loads_into_plain_rope_without_its_scale():
    source = LengenModule(RoPELinear(scale=3.0), vocab_size=10, n_layer=1, d_model=16, metrics=[])
    checkpoint = checkpoint_of(source, RoPELinear())
    target = LengenModule(RoPE(), vocab_size=10, n_layer=1, d_model=16, metrics=[])
    target.on_load_checkpoint(checkpoint)
    assert "decoder.pos_encoding.scale" not in checkpoint["state_dict"]
    target.load_state_dict(checkpoint["state_dict"])


def test_encoding_weights_that_do_not_fit_are_a_one_line_error():
    source = LengenModule(T5Bias(), vocab_size=10, n_layer=1, d_model=16, n_head=2, metrics=[])
    target = LengenModule(ALiBi(), vocab_size=10, n_layer=1, d_model=16, n_head=2, metrics=[])
    with pytest.raises(MisconfigurationException) as error:
        target.on_load_checkpoint(checkpoint_of(source, T5Bias()))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "the checkpoint was trained with T5Bias, whose weights do not fit ALiBi"
    )
    assert "unexpected: decoder.pos_encoding." in message


def test_a_checkpoint_loads_into_a_wrapper_around_its_encoding_with_every_weight():
    """FIRE trained without a wrapper, tested inside LogLengthScaling: FIRE's own weights."""
    from lengen_plugins.positional_encodings.fire import FIRE
    from lengen_plugins.positional_encodings.log_scaling import LogLengthScaling

    torch.manual_seed(2)
    source = LengenModule(FIRE(), vocab_size=10, n_layer=1, d_model=16, n_head=2, metrics=[])
    checkpoint = checkpoint_of(source, FIRE())
    wrapper = LogLengthScaling(FIRE(), training_length=8)
    target = LengenModule(wrapper, vocab_size=10, n_layer=1, d_model=16, n_head=2, metrics=[])
    target.on_load_checkpoint(checkpoint)
    target.load_state_dict(checkpoint["state_dict"])  # strict: every tensor accounted for
    trained = source.decoder.pos_encoding.state_dict()
    assert trained  # FIRE has weights, so the test can fail
    for name, tensor in trained.items():
        assert torch.equal(target.decoder.pos_encoding.encoding.state_dict()[name], tensor), name
