"""`--model.hf_checkpoint DIR`: tiny random transformers Llama / Qwen2 / Mistral models, built in
the test (no download), saved, imported into lengen: float32 logits equal transformers' to 1e-5
inside and beyond their trained length. Extra: parity (`transformers`)."""

from __future__ import annotations

import json

import pytest
import torch
from cli_run import lengen as lengen_cli
from conftest import save_random

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lengen.export import byte_tokenizer, to_transformers  # noqa: E402
from lengen.module import LengenModule  # noqa: E402
from lengen_plugins.positional_encodings.rope import RoPE  # noqa: E402
from lengen_plugins.positional_encodings.rope_scaling import RoPELinear, YaRN  # noqa: E402

VOCAB, MAX_POSITIONS = 61, 16
SIZES = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=MAX_POSITIONS,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip


def rope(theta: float, **scaling) -> dict:
    return {"rope_parameters": {"rope_type": "default", "rope_theta": theta, **scaling}}


# (id, transformers model class, its config, the lengen encoding that reproduces it)
CASES = [
    (
        "llama-gqa-untied",
        LlamaForCausalLM,
        lambda: LlamaConfig(**SIZES, num_key_value_heads=2, tie_word_embeddings=False,
                            rms_norm_eps=1e-6, **rope(500.0)),
        lambda: RoPE(base=500.0),
    ),
    (
        "llama-biases",
        LlamaForCausalLM,
        lambda: LlamaConfig(**SIZES, attention_bias=True, mlp_bias=True, **rope(10000.0)),
        lambda: RoPE(),
    ),
    (
        "qwen2-mqa-tied",
        Qwen2ForCausalLM,
        lambda: Qwen2Config(**SIZES, num_key_value_heads=1, tie_word_embeddings=True,
                            **rope(1000.0)),
        lambda: RoPE(base=1000.0),
    ),
    (
        "mistral-no-window",
        MistralForCausalLM,
        lambda: MistralConfig(**SIZES, num_key_value_heads=2, sliding_window=None, **rope(700.0)),
        lambda: RoPE(base=700.0),
    ),
    (
        "llama-linear",
        LlamaForCausalLM,
        lambda: LlamaConfig(**SIZES, **rope(10000.0, rope_type="linear", factor=4.0)),
        lambda: RoPELinear(scale=4.0),
    ),
    (
        "llama-yarn",
        LlamaForCausalLM,
        lambda: LlamaConfig(**{**SIZES, "max_position_embeddings": 4 * MAX_POSITIONS},
                            **rope(10000.0, rope_type="yarn", factor=4.0,
                                   original_max_position_embeddings=MAX_POSITIONS)),
        lambda: YaRN(scale=4.0, original_max_length=MAX_POSITIONS),
    ),
]  # fmt: skip


@pytest.mark.parametrize("name,model_class,make_config,make_encoding", CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_imported_model_gives_transformers_logits(tmp_path, name, model_class, make_config,
                                                  make_encoding):  # fmt: skip
    reference = save_random(model_class, make_config(), tmp_path / "hf")
    module = LengenModule(
        make_encoding(), hf_checkpoint=str(tmp_path / "hf"), vocab_size=VOCAB, metrics=[]
    ).eval()
    assert module.hparams.norm == "rmsnorm" and module.hparams.mlp == "swiglu"
    assert module.hparams.vocab_size == VOCAB and module.hparams.d_model == 32
    torch.manual_seed(1)
    with torch.no_grad():
        for length in (MAX_POSITIONS // 2, MAX_POSITIONS, 4 * MAX_POSITIONS):
            ids = torch.randint(0, VOCAB, (2, length))
            expected = reference(ids).logits  # (B, T, V)
            assert expected.abs().max() > 0.1
            torch.testing.assert_close(module(ids), expected, rtol=0, atol=1e-5)

        # load_from_checkpoint rebuilds from the saved hyperparameters, without the folder.
        rebuilt = LengenModule(**dict(module.hparams))
        rebuilt.load_state_dict(module.state_dict())
        ids = torch.randint(0, VOCAB, (1, MAX_POSITIONS))
        torch.testing.assert_close(rebuilt.eval()(ids), module(ids), rtol=0, atol=0)


def test_unsupported_checkpoints_are_refused(tmp_path):
    MistralForCausalLM(MistralConfig(**SIZES, sliding_window=8)).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="uses sliding-window attention \\(8\\)"):
        LengenModule(RoPE(), hf_checkpoint=str(tmp_path / "m"), metrics=[])
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path / "g")
    with pytest.raises(ValueError, match="model_type='gpt2' is not accepted; accepted: llama"):
        LengenModule(RoPE(), hf_checkpoint=str(tmp_path / "g"), metrics=[])
    with pytest.raises(ValueError, match="is not a transformers folder \\(no config.json\\)"):
        LengenModule(RoPE(), hf_checkpoint=str(tmp_path), metrics=[])


def test_cli_evaluates_an_imported_model_with_its_tokenizer(tmp_path):
    """`lengen test` on a transformers folder (byte tokenizer beside it), no lengen checkpoint."""
    config = LlamaConfig(**{**SIZES, "vocab_size": 256}, **rope(10000.0))
    save_random(LlamaForCausalLM, config, tmp_path / "hf")
    byte_tokenizer().save_pretrained(tmp_path / "hf")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    common = [
        "--model.pos_encoding", "RoPELinear", "--model.pos_encoding.init_args.scale", "2",
        "--model.hf_checkpoint", str(tmp_path / "hf"), "--model.metrics", "[Perplexity]",
        "--data", "TextDataModule", "--data.init_args.files", f"[{corpus}]",
        "--data.init_args.n_ctx", "16", "--data.init_args.eval_multiples", "[1, 2]",
        "--data.init_args.eval_tokens", "256", "--data.init_args.cache_dir", str(tmp_path / "c"),
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    result = lengen_cli("test", *common, "--data.init_args.tokenizer", str(tmp_path / "hf"),
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lengen: hf_checkpoint" in result.stdout and "loaded llama" in result.stdout
    (results,) = (tmp_path / "runs").rglob("results.json")
    perplexity = json.loads(results.read_text())["metrics"]["perplexity"]
    assert set(perplexity) == {"16", "32"} and all(v > 1 for v in perplexity.values())

    small = LlamaConfig(**SIZES, **rope(10000.0))  # 61 tokens: too few for byte data (256)
    save_random(LlamaForCausalLM, small, tmp_path / "small")
    common[common.index(str(tmp_path / "hf"))] = str(tmp_path / "small")
    result = lengen_cli("test", *common, cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("lengen: error")]
    assert errors == [result.stderr.strip().splitlines()[-1]]  # one line, last, no traceback
    assert errors[0].startswith("lengen: error: vocab_size=256 (the data's tokenizer)")


def test_import_then_export_round_trips(tmp_path):
    """Qwen2 (grouped-query, q/k/v biases) -> lengen -> `lengen export` as Llama: same logits."""
    config = Qwen2Config(**SIZES, num_key_value_heads=2, tie_word_embeddings=False, **rope(900.0))
    reference = save_random(Qwen2ForCausalLM, config, tmp_path / "qwen2")
    module = LengenModule(
        RoPE(base=900.0), hf_checkpoint=str(tmp_path / "qwen2"), vocab_size=VOCAB, metrics=[]
    ).eval()
    exported = to_transformers(module)
    assert exported.config.model_type == "llama" and exported.config.attention_bias
    ids = torch.randint(0, VOCAB, (2, 3 * MAX_POSITIONS))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)
