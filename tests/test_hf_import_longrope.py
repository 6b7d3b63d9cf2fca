"""Importing a transformers checkpoint with rope type `longrope` (Phi-3's) chooses LongRoPE.

Tiny random Phi-3 (fused qkv_proj / gate_up_proj) and Llama models with fresh random short and
long factors are built in the test (no download), saved and imported with no encoding given:
float32 logits equal transformers' to 1e-5 at lengths below and above
original_max_position_embeddings, where transformers switches from the short to the long factors.
Both config formats are read: `rope_parameters` (transformers >= 5) and the older `rope_theta` +
`rope_scaling` with `type` in config.json. Extra: parity (`transformers`).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import save_random

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
)

from lengen.module import LengenModule  # noqa: E402

VOCAB, ORIGINAL, MAX = 53, 16, 64  # ORIGINAL: original_max_position_embeddings; MAX: the extended
SIZES = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip
PAIRS = 32 // 4 // 2  # head_dim / 2 factors per list
# Below ORIGINAL, exactly at it (still short), just beyond and well beyond (long).
LENGTHS = (ORIGINAL // 2, ORIGINAL, ORIGINAL + 1, 3 * ORIGINAL)


def random_factors(generator: torch.Generator) -> dict:
    """Fresh short factors near 1 and long factors between 1 and 8, one per rotary pair."""
    short = 1.0 + 0.3 * torch.rand(PAIRS, generator=generator, dtype=torch.float64)
    long = 1.0 + 7.0 * torch.rand(PAIRS, generator=generator, dtype=torch.float64)
    return {"short_factor": short.tolist(), "long_factor": long.tolist()}


def assert_same_logits(module: LengenModule, reference: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for length in LENGTHS:
            ids = torch.randint(0, VOCAB, (2, length))
            expected = reference(ids).logits  # (B, T, V)
            assert expected.abs().max() > 0.1
            torch.testing.assert_close(module(ids), expected, rtol=0, atol=1e-5)


def import_folder(folder) -> LengenModule:
    return LengenModule(hf_checkpoint=str(folder), vocab_size=VOCAB, metrics=[]).eval()


@pytest.mark.parametrize("attention_factor", [None, 1.3])
def test_phi3_longrope_gives_transformers_logits(tmp_path, attention_factor):
    """Phi3Config(rope_scaling={"type": "longrope", ...}) as Phi-3 checkpoints spell it, with
    Phi-3's top-level original_max_position_embeddings and no factor (MAX / ORIGINAL)."""
    generator = torch.Generator().manual_seed(torch.seed())
    rope_scaling = {"type": "longrope", **random_factors(generator)}
    if attention_factor is not None:
        rope_scaling["attention_factor"] = attention_factor
    config = Phi3Config(
        **SIZES, max_position_embeddings=MAX, original_max_position_embeddings=ORIGINAL,
        rope_theta=2000.0, rope_scaling=rope_scaling,
    )  # fmt: skip
    reference = save_random(Phi3ForCausalLM, config, tmp_path / "hf")
    assert "qkv_proj.weight" in " ".join(reference.state_dict())  # the fused layout is imported
    module = import_folder(tmp_path / "hf")
    encoding = module.decoder.pos_encoding
    assert type(encoding).__name__ == "LongRoPE"
    assert (encoding.base, encoding.original_max_length) == (2000.0, ORIGINAL)
    # The default attention factor of the paper / transformers: sqrt(1 + ln(s) / ln(L0)).
    expected_factor = attention_factor or math.sqrt(1 + math.log(MAX / ORIGINAL) / math.log(16))
    assert encoding.attention_scale() == pytest.approx(expected_factor, rel=1e-12)
    assert_same_logits(module, reference)

    # The chosen encoding is saved with the hyperparameters: rebuilt without the folder.
    rebuilt = LengenModule(**dict(module.hparams)).eval()
    rebuilt.load_state_dict(module.state_dict())
    ids = torch.randint(0, VOCAB, (1, 2 * ORIGINAL))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(ids), module(ids), rtol=0, atol=0)


def test_llama_longrope_rope_parameters_with_a_factor(tmp_path):
    """A Llama config with longrope `rope_parameters` (the transformers >= 5 format) and an
    explicit factor, which sets the attention factor instead of MAX / ORIGINAL."""
    generator = torch.Generator().manual_seed(torch.seed())
    rope = {
        "rope_type": "longrope", "rope_theta": 500.0, "factor": 2.0,
        "original_max_position_embeddings": ORIGINAL, **random_factors(generator),
    }  # fmt: skip
    config = LlamaConfig(**SIZES, max_position_embeddings=MAX, rope_parameters=rope)
    reference = save_random(LlamaForCausalLM, config, tmp_path / "hf")
    module = import_folder(tmp_path / "hf")
    encoding = module.decoder.pos_encoding
    assert type(encoding).__name__ == "LongRoPE" and encoding.scale == 2.0
    assert encoding.short_factor == pytest.approx(rope["short_factor"], rel=0, abs=0)
    assert_same_logits(module, reference)


def test_legacy_rope_scaling_in_config_json_is_read(tmp_path):
    """A Phi-3 config.json from before transformers 5 (as Phi-3-mini-128k's): `rope_theta` and
    `rope_scaling` with the key `type`."""
    generator = torch.Generator().manual_seed(torch.seed())
    factors = random_factors(generator)
    config = Phi3Config(
        **SIZES, max_position_embeddings=MAX, original_max_position_embeddings=ORIGINAL,
        rope_parameters={"rope_type": "longrope", "rope_theta": 3000.0, **factors},
    )  # fmt: skip
    reference = save_random(Phi3ForCausalLM, config, tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    saved.pop("rope_parameters")
    saved.update(rope_theta=3000.0, rope_scaling={"type": "longrope", **factors})
    (tmp_path / "hf" / "config.json").write_text(json.dumps(saved))
    module = import_folder(tmp_path / "hf")
    encoding = module.decoder.pos_encoding
    assert type(encoding).__name__ == "LongRoPE" and encoding.base == 3000.0
    assert_same_logits(module, reference)
