"""Architecture options of the decoder: norm (layernorm | rmsnorm), mlp (gelu | swiglu), linear
biases and untied embeddings. Defaults must build exactly the model of before."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from lengen.model import Decoder
from lengen.module import LengenModule
from lengen_plugins.positional_encodings.learned import Learned
from lengen_plugins.positional_encodings.rope import RoPE

VOCAB, D_MODEL, N_HEAD = 13, 16, 2

# state_dict of Decoder(13, RoPE(), n_layer=1, n_head=2, d_model=16) before the options existed.
DEFAULT_KEYS = {
    "token_embedding.weight": (13, 16),
    "blocks.0.ln_attn.weight": (16,),
    "blocks.0.ln_attn.bias": (16,),
    "blocks.0.attn.qkv.weight": (48, 16),
    "blocks.0.attn.proj.weight": (16, 16),
    "blocks.0.ln_mlp.weight": (16,),
    "blocks.0.ln_mlp.bias": (16,),
    "blocks.0.mlp.up.weight": (64, 16),
    "blocks.0.mlp.down.weight": (16, 64),
    "ln_final.weight": (16,),
    "ln_final.bias": (16,),
    "lm_head.weight": (13, 16),
}


def test_defaults_build_the_same_tensors_as_before():
    model = Decoder(VOCAB, RoPE(), n_layer=1, n_head=N_HEAD, d_model=D_MODEL)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == DEFAULT_KEYS
    assert model.lm_head.weight is model.token_embedding.weight
    explicit = Decoder(
        VOCAB, RoPE(), n_layer=1, n_head=N_HEAD, d_model=D_MODEL,
        norm="layernorm", mlp="gelu", bias=False,
    )  # fmt: skip
    assert set(explicit.state_dict()) == set(DEFAULT_KEYS)


@pytest.mark.parametrize(
    "norm,mlp,bias,tie", list(itertools.product(["layernorm", "rmsnorm"], ["gelu", "swiglu"],
                                                [False, True], [True, False]))
)  # fmt: skip
def test_shapes_and_keys(norm, mlp, bias, tie):
    model = Decoder(
        VOCAB, RoPE(), n_layer=2, n_head=N_HEAD, d_model=D_MODEL, d_mlp=24,
        norm=norm, mlp=mlp, bias=bias, tie_embeddings=tie,
    )  # fmt: skip
    ids = torch.randint(0, VOCAB, (3, 7))
    assert model(ids).shape == (3, 7, VOCAB)
    keys = set(model.state_dict())
    assert ("blocks.0.ln_attn.bias" in keys) == (norm == "layernorm")
    assert ("blocks.1.mlp.gate.weight" in keys) == (mlp == "swiglu")
    for name in ("attn.qkv", "attn.proj", "mlp.up", "mlp.down"):
        assert (f"blocks.1.{name}.bias" in keys) == bias
    assert "lm_head.bias" not in keys
    assert (model.lm_head.weight is model.token_embedding.weight) == tie


def test_rmsnorm_and_swiglu_compute_the_plain_formulas():
    torch.manual_seed(0)
    model = Decoder(
        VOCAB, RoPE(), n_layer=1, n_head=N_HEAD, d_model=D_MODEL, d_mlp=24,
        norm="rmsnorm", mlp="swiglu", bias=True,
    ).double()  # fmt: skip
    block = model.blocks[0]
    for parameter in model.parameters():  # random non-trivial weights, biases included
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(2, 5, D_MODEL, dtype=torch.float64)
    rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * block.ln_mlp.weight
    torch.testing.assert_close(block.ln_mlp(x), rms)
    mlp = block.mlp
    gate = x @ mlp.gate.weight.T + mlp.gate.bias
    up = x @ mlp.up.weight.T + mlp.up.bias
    expected = (gate * torch.sigmoid(gate) * up) @ mlp.down.weight.T + mlp.down.bias
    torch.testing.assert_close(mlp(x), expected)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="norm='batchnorm' is not one of layernorm, rmsnorm"):
        Decoder(VOCAB, RoPE(), norm="batchnorm")
    with pytest.raises(ValueError, match="mlp='relu' is not one of gelu, swiglu"):
        Decoder(VOCAB, RoPE(), mlp="relu")


@pytest.mark.parametrize(
    "norm,mlp,bias", [("rmsnorm", "swiglu", False), ("layernorm", "gelu", True)]
)
def test_a_few_training_steps_lower_the_loss(norm, mlp, bias):
    torch.manual_seed(0)
    module = LengenModule(
        Learned(max_length=16), vocab_size=VOCAB, n_layer=1, n_head=N_HEAD, d_model=D_MODEL,
        norm=norm, mlp=mlp, bias=bias, tie_embeddings=False,
    )  # fmt: skip
    assert module.hparams.norm == norm and module.hparams.mlp == mlp
    ids = torch.randint(0, VOCAB, (4, 9))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        logits = module(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in module.decoder.parameters())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "encoding", [RoPE, lambda: Learned(max_length=32)], ids=["RoPE", "Learned"]
)
def test_padding_and_cached_decoding_hold_with_every_option(encoding):
    """Left padding gives the unpadded logits; cached one-token steps give the full forward's."""
    torch.manual_seed(0)
    model = Decoder(
        VOCAB, encoding(), n_layer=2, n_head=N_HEAD, d_model=D_MODEL, d_mlp=24,
        norm="rmsnorm", mlp="swiglu", bias=True, tie_embeddings=False, attention="sdpa",
    ).double().eval()  # fmt: skip
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
        sequence = torch.randint(0, VOCAB, (1, 12))
        full = model(sequence)  # (1, 12, V)
        padded = torch.cat((torch.zeros(1, 3, dtype=torch.long), sequence[:, :8]), dim=1)
        mask = torch.cat((torch.zeros(1, 3), torch.ones(1, 8)), dim=1)
        torch.testing.assert_close(model(padded, attention_mask=mask)[:, 3:], full[:, :8])
        cache = model.new_cache()
        steps = [model(padded, attention_mask=mask, cache=cache)[:, -1]]
        for t in range(8, 12):
            steps.append(model(sequence[:, t : t + 1], cache=cache)[:, -1])
        torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 7:])
