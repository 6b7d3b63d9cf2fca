"""Importing a transformers checkpoint chooses the lengen encoding equal to its rope parameters.

Tiny random Llama / Qwen2 / Mistral models with each rope type transformers and lengen share
(default, linear, dynamic, yarn, llama3) are built in the test (no download), saved and imported
with no encoding given: float32 logits equal transformers' to 1e-5 at lengths inside and beyond
original_max_position_embeddings. Extra: parity (`transformers`).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_random

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lengen.module import LengenModule  # noqa: E402
from lengen_plugins.positional_encodings.rope_scaling import RoPELinear  # noqa: E402

VOCAB, ORIGINAL = 53, 16  # ORIGINAL: the pretrained length (original_max_position_embeddings)
SIZES = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip
MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": None}),
}
# rope type -> (rope parameters besides rope_type, max_position_embeddings, the lengen class)
ROPES = {
    "default": ({"rope_theta": 500.0}, ORIGINAL, "RoPE"),
    "linear": ({"rope_theta": 1000.0, "factor": 4.0}, 4 * ORIGINAL, "RoPELinear"),
    # transformers' dynamic NTK takes its original length from max_position_embeddings.
    "dynamic": ({"rope_theta": 800.0, "factor": 2.0}, ORIGINAL, "RoPEDynamicNTK"),
    "yarn": (
        {"rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": ORIGINAL,
         "beta_fast": 16.0, "beta_slow": 2.0},
        4 * ORIGINAL, "YaRN",
    ),
    "yarn-mscale": (  # DeepSeek-style: no factor (max / original), attention factor from mscales
        {"rope_theta": 2000.0, "factor": None, "original_max_position_embeddings": ORIGINAL,
         "mscale": 0.8, "mscale_all_dim": 0.5, "truncate": False},
        8 * ORIGINAL, "YaRN",
    ),
    "llama3": (
        {"rope_theta": 50000.0, "factor": 8.0, "original_max_position_embeddings": ORIGINAL,
         "low_freq_factor": 1.0, "high_freq_factor": 4.0},
        8 * ORIGINAL, "RoPELlama3",
    ),
}  # fmt: skip


def make_config(model: str, rope: str):
    config_class, _, extra = MODELS[model]
    parameters, max_positions, _ = ROPES[rope]
    rope_type = rope.split("-")[0]
    rope_parameters = {"rope_type": rope_type, **parameters}
    return config_class(
        **SIZES, **extra, max_position_embeddings=max_positions, rope_parameters=rope_parameters
    )


@pytest.mark.parametrize("rope", list(ROPES))
@pytest.mark.parametrize("model", list(MODELS))
def test_imported_rope_gives_transformers_logits(tmp_path, capsys, model, rope):
    config = make_config(model, rope)
    reference = save_random(MODELS[model][1], config, tmp_path / "hf")
    module = LengenModule(hf_checkpoint=str(tmp_path / "hf"), vocab_size=VOCAB, metrics=[]).eval()
    assert type(module.decoder.pos_encoding).__name__ == ROPES[rope][2]
    assert "replaces it" not in capsys.readouterr().out  # no encoding given: nothing overridden
    torch.manual_seed(1)
    with torch.no_grad():
        # Increasing lengths: transformers' dynamic NTK keeps the largest length seen so far.
        for length in (ORIGINAL // 2, ORIGINAL, 3 * ORIGINAL, 8 * ORIGINAL):
            ids = torch.randint(0, VOCAB, (2, length))
            expected = reference(ids).logits  # (B, T, V)
            assert expected.abs().max() > 0.1
            torch.testing.assert_close(module(ids), expected, rtol=0, atol=1e-5)

    # The chosen encoding is saved with the hyperparameters: rebuilt without the folder.
    rebuilt = LengenModule(**dict(module.hparams)).eval()
    rebuilt.load_state_dict(module.state_dict())
    ids = torch.randint(0, VOCAB, (1, 2 * ORIGINAL))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(ids), module(ids), rtol=0, atol=0)


def test_legacy_rope_scaling_config_is_read(tmp_path):
    """A config.json from before transformers 5: `rope_theta` plus `rope_scaling` with `type`."""
    config = LlamaConfig(
        **SIZES,
        max_position_embeddings=4 * ORIGINAL,
        rope_parameters={"rope_type": "linear", "rope_theta": 3000.0, "factor": 4.0},
    )
    reference = save_random(LlamaForCausalLM, config, tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    saved.pop("rope_parameters")
    saved.update(rope_theta=3000.0, rope_scaling={"type": "linear", "factor": 4.0})
    (tmp_path / "hf" / "config.json").write_text(json.dumps(saved))
    module = LengenModule(hf_checkpoint=str(tmp_path / "hf"), vocab_size=VOCAB, metrics=[]).eval()
    encoding = module.decoder.pos_encoding
    assert type(encoding).__name__ == "RoPELinear" and encoding.base == 3000.0
    ids = torch.randint(0, VOCAB, (2, 6 * ORIGINAL))
    with torch.no_grad():
        torch.testing.assert_close(module(ids), reference(ids).logits, rtol=0, atol=1e-5)


def test_command_line_encoding_replaces_the_checkpoints_with_one_line(tmp_path, capsys):
    save_random(LlamaForCausalLM, make_config("llama", "yarn"), tmp_path / "hf")
    given = RoPELinear(scale=2.0, base=10000.0)
    module = LengenModule(given, hf_checkpoint=str(tmp_path / "hf"), vocab_size=VOCAB, metrics=[])
    assert module.decoder.pos_encoding is given
    lines = [line for line in capsys.readouterr().out.splitlines() if "replaces it" in line]
    assert len(lines) == 1
    assert "its rope is YaRN(base=10000.0, scale=4.0, original_max_length=16" in lines[0]
    assert lines[0].endswith("the command line's encoding RoPELinear replaces it")

    save_random(LlamaForCausalLM, make_config("llama", "linear"), tmp_path / "theta1000")
    LengenModule(RoPELinear(scale=2.0), hf_checkpoint=str(tmp_path / "theta1000"), metrics=[],
                 vocab_size=VOCAB)  # fmt: skip
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "replaces it" in line]
    assert line.endswith(
        "replaces it (its base=10000.0 is not the checkpoint's rope_theta=1000.0: "
        "--model.pos_encoding.init_args.base 1000.0 keeps the pretrained frequencies)"
    )


def test_rope_without_lengen_equivalent_is_refused_in_one_line(tmp_path):
    # transformers' "proportional" rope (partial rotary dims, full-size frequencies): no equivalent.
    proportional = {
        "rope_type": "proportional", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
    }  # fmt: skip
    config = LlamaConfig(**SIZES, max_position_embeddings=64, rope_parameters=proportional)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError) as error:
        LengenModule(hf_checkpoint=str(tmp_path / "hf"), vocab_size=VOCAB, metrics=[])
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith(
        "rope_type='proportional' has no lengen equivalent; accepted: default, linear, "
        "dynamic, yarn, llama3, longrope"
    )
    # Under an encoding the user chooses, such a checkpoint can still be studied.
    module = LengenModule(
        RoPELinear(scale=2.0), hf_checkpoint=str(tmp_path / "hf"), vocab_size=VOCAB, metrics=[]
    )
    assert type(module.decoder.pos_encoding).__name__ == "RoPELinear"


def test_encoding_is_required_without_a_checkpoint():
    with pytest.raises(ValueError, match="model.pos_encoding is required"):
        LengenModule(metrics=[])


def test_cli_fit_without_encoding_keeps_the_checkpoints_rope_through_export(tmp_path):
    """`lengen fit --model.hf_checkpoint DIR` (no encoding) on a YaRN Llama, with a learning
    rate too small to move a float32 weight, then `lengen export`: the exported model has the
    checkpoint's rope parameters and gives the original model's logits."""
    from cli_run import lengen

    from lengen.export import byte_tokenizer

    config = LlamaConfig(
        **{**SIZES, "vocab_size": 256},
        max_position_embeddings=4 * ORIGINAL,
        rope_parameters={"rope_type": "yarn", **ROPES["yarn"][0]},
    )
    reference = save_random(LlamaForCausalLM, config, tmp_path / "hf")
    byte_tokenizer().save_pretrained(tmp_path / "hf")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 400)
    result = lengen(
        "fit", "--model.hf_checkpoint", str(tmp_path / "hf"), "--model.lr", "1e-30",
        "--model.warmup_steps", "0", "--model.metrics", "[Perplexity]",
        "--data", "TextDataModule", "--data.init_args.files", f"[{corpus}]",
        "--data.init_args.tokenizer", str(tmp_path / "hf"), "--data.init_args.n_ctx", "32",
        "--data.init_args.eval_multiples", "[1]", "--data.init_args.batch_size", "2",
        "--data.init_args.cache_dir", str(tmp_path / "c"), "--trainer.max_steps", "1",
        "--trainer.limit_val_batches", "0", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "r"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "encoding used: YaRN(" in result.stdout and "replaces it" not in result.stdout
    (checkpoint,) = (tmp_path / "r").rglob("*.ckpt")
    result = lengen("export", "--ckpt_path", str(checkpoint), "--out", str(tmp_path / "x"),
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "x").eval()
    rope = exported.config.rope_parameters
    for key, value in ROPES["yarn"][0].items():
        assert rope[key] == value, key
    ids = torch.randint(0, 256, (2, 6 * ORIGINAL))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)


def test_config_transformers_refuses_is_one_line(tmp_path):
    save_random(LlamaForCausalLM, make_config("llama", "linear"), tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    saved["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError) as error:
        LengenModule(hf_checkpoint=str(tmp_path / "hf"), vocab_size=VOCAB, metrics=[])
    assert "\n" not in str(error.value)
    assert "transformers refuses its config" in str(error.value)
    assert "low_freq_factor" in str(error.value)
