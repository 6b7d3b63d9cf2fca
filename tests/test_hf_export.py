"""`lengen export`: a trained lengen model, loaded back with `transformers.AutoModelForCausalLM`,
gives the same float32 logits (to 1e-5) inside and beyond the training length, and the same greedy
tokens from `generate` as lengen's own greedy decoding. Extra: parity (`transformers`)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from cli_run import lengen as lengen_cli

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lengen.data.text import TextBatch  # noqa: E402
from lengen.export import NotExportable, to_transformers  # noqa: E402
from lengen.metric import EvalBatch  # noqa: E402
from lengen.module import LengenModule  # noqa: E402
from lengen_plugins.positional_encodings.alibi import ALiBi  # noqa: E402
from lengen_plugins.positional_encodings.learned import Learned  # noqa: E402
from lengen_plugins.positional_encodings.longrope import LongRoPE  # noqa: E402
from lengen_plugins.positional_encodings.rope import RoPE  # noqa: E402
from lengen_plugins.positional_encodings.rope_giraffe import RoPEPartial  # noqa: E402
from lengen_plugins.positional_encodings.rope_scaling import (  # noqa: E402
    RoPEDynamicNTK,
    RoPELinear,
    RoPELlama3,
    RoPENTK,
    YaRN,
)

# These tests train without validation data on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:You defined a `validation_step` but have no `val_dataloader`:UserWarning"
)

VOCAB, TRAIN_LENGTH = 256, 8
LLAMA = {"norm": "rmsnorm", "mlp": "swiglu"}
GPT2 = {"norm": "layernorm", "mlp": "gelu"}

# (id, encoding factory, architecture options)
CASES = [
    ("rope", lambda: RoPE(), {**LLAMA}),
    ("rope-bias-untied", lambda: RoPE(base=500.0), {**LLAMA, "bias": True,
                                                    "tie_embeddings": False}),
    ("ntk", lambda: RoPENTK(scale=4.0), {**LLAMA}),
    ("linear-eval-scale", lambda: RoPELinear(scale=2.0, eval_scale=4.0), {**LLAMA}),
    ("dynamic-ntk", lambda: RoPEDynamicNTK(original_max_length=TRAIN_LENGTH, scale=2.0), {**LLAMA}),
    ("yarn", lambda: YaRN(scale=4.0, original_max_length=TRAIN_LENGTH), {**LLAMA}),
    (
        "yarn-factor-no-truncate",
        lambda: YaRN(scale=4.0, original_max_length=TRAIN_LENGTH, attention_factor=1.3,
                     truncate=False, beta_fast=8.0, beta_slow=2.0),
        {**LLAMA},
    ),
    ("llama3", lambda: RoPELlama3(scale=4.0, original_max_length=TRAIN_LENGTH), {**LLAMA}),
    # LongRoPE (head_dim 8: 4 factors each): the short set up to L0 = 8, the long one beyond.
    ("longrope", lambda: LongRoPE(short_factor=[1.0, 1.2, 1.7, 2.5], scale=4.0,
                                  long_factor=[1.0, 3.0, 6.0, 11.0],
                                  original_max_length=TRAIN_LENGTH), {**LLAMA}),
    ("longrope-long-only", lambda: LongRoPE(long_factor=[1.5, 2.0, 4.0, 7.0], factors="long",
                                            original_max_length=TRAIN_LENGTH, scale=2.0,
                                            attention_factor=1.2), {**LLAMA}),
    ("learned", lambda: Learned(max_length=64), {**GPT2}),
    ("learned-bias-untied", lambda: Learned(max_length=64), {**GPT2, "bias": True,
                                                            "tie_embeddings": False}),
]  # fmt: skip


def train_and_save(encoding, options: dict, path: Path) -> LengenModule:
    """A few AdamW steps of a tiny LengenModule through a Lightning Trainer; a real checkpoint."""
    torch.manual_seed(0)
    module = LengenModule(
        encoding, vocab_size=VOCAB, n_layer=2, n_head=2, d_model=16, d_mlp=24,
        lr=1e-2, warmup_steps=1, metrics=[], **options,
    )  # fmt: skip
    windows = torch.randint(0, VOCAB, (4, 4, TRAIN_LENGTH + 1))
    batches = [TextBatch(w[:, :-1], w[:, 1:]) for w in windows]
    trainer = L.Trainer(
        max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    trainer.save_checkpoint(path)
    return module.eval()


@pytest.mark.parametrize("name,make_encoding,options", CASES, ids=[c[0] for c in CASES])
def test_export_matches_lengen(tmp_path, name, make_encoding, options):
    module = train_and_save(make_encoding(), options, tmp_path / "model.ckpt")
    from lengen.export import export

    export(str(tmp_path / "model.ckpt"), str(tmp_path / "hf"))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    expected_type = "gpt2" if name.startswith("learned") else "llama"
    assert hf.config.model_type == expected_type
    module = LengenModule.load_from_checkpoint(
        tmp_path / "model.ckpt", weights_only=False
    ).eval()  # as exported

    torch.manual_seed(1)
    with torch.no_grad():
        # Increasing lengths: transformers' dynamic NTK keeps the frequencies of the longest call.
        for length in (TRAIN_LENGTH // 2, TRAIN_LENGTH, 2 * TRAIN_LENGTH, 4 * TRAIN_LENGTH):
            ids = torch.randint(0, VOCAB, (2, length))
            expected = module(ids)  # (B, T, V)
            actual = hf(ids).logits
            assert expected.abs().max() > 0.1  # not trivially small
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)

    prompt_length, new_tokens = TRAIN_LENGTH, 3 * TRAIN_LENGTH  # generation runs to 4x
    prompts = torch.randint(0, VOCAB, (2, prompt_length))
    batch = EvalBatch(
        input_ids=prompts,
        labels=torch.full_like(prompts, -100),
        targets=torch.zeros(2, new_tokens, dtype=torch.long),
        prompt_lengths=torch.full((2,), prompt_length),
        target_lengths=torch.full((2,), new_tokens),
        lengths=torch.full((2,), prompt_length),
    )
    lengen_tokens = module.greedy_generate(batch)  # (B, new_tokens)
    cached = module.decoder.pos_encoding.supports_kv_cache  # dynamic NTK: both recompute
    hf_tokens = hf.generate(
        prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, do_sample=False, use_cache=cached,
    )[:, prompt_length:]  # fmt: skip
    assert torch.equal(hf_tokens, lengen_tokens)
    assert len(set(lengen_tokens.flatten().tolist())) > 1  # not a constant generation


def test_byte_tokenizer_ids_are_utf8_bytes(tmp_path):
    train_and_save(RoPE(), LLAMA, tmp_path / "model.ckpt")
    from lengen.export import export

    export(str(tmp_path / "model.ckpt"), str(tmp_path / "hf"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "héllo wörld\n ünïcode ✓"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "encoding,options,message",
    [
        (ALiBi(), LLAMA, "ALiBi has no transformers equivalent"),
        (RoPE(), GPT2, "needs norm=rmsnorm and mlp=swiglu; this model has norm=layernorm"),
        (RoPE(), {"norm": "rmsnorm", "mlp": "gelu"}, "this model has norm=rmsnorm, mlp=gelu"),
        (Learned(max_length=16), LLAMA, "Learned exports as GPT-2, which needs norm=layernorm"),
        (RoPEPartial(), LLAMA, "RoPEPartial has no transformers equivalent"),
        (RoPE(rotary_dim=4), LLAMA, "rotary_dim=4 < head_dim=8 has no Llama equivalent"),
        (YaRN(ramp="turns"), LLAMA, "YaRN ramp='turns'"),
    ],
)
def test_configurations_without_an_equivalent_are_refused(encoding, options, message):
    module = LengenModule(encoding, vocab_size=VOCAB, n_layer=1, n_head=2, d_model=16, **options)
    with pytest.raises(NotExportable, match=message.replace("(", r"\(")):
        to_transformers(module)


def test_cli_export_and_refusal(tmp_path):
    train_and_save(ALiBi(), LLAMA, tmp_path / "alibi.ckpt")
    result = lengen_cli("export", "--ckpt_path", "alibi.ckpt", "--out", "hf", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("lengen: error: ALiBi has no transformers equivalent")
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "hf").exists()  # nothing written

    train_and_save(RoPE(), LLAMA, tmp_path / "rope.ckpt")
    result = lengen_cli("export", "--ckpt_path", "rope.ckpt", "--out", "hf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "llama" and (tmp_path / "hf" / "model.safetensors").is_file()

    result = lengen_cli("export", "--ckpt_path", "rope.ckpt", "--out", "hf", cwd=tmp_path)
    assert result.returncode == 2 and "exists and is not an empty folder" in result.stderr
    result = lengen_cli("export", "--ckpt_path", "rope.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "the following arguments are required: --out" in result.stderr
