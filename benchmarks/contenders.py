"""The models the benchmark compares: lengen's decoder and its peers at the same sizes.

Every builder returns a `torch.nn.Module` mapping (B, T) token ids to (B, T, vocab) logits, so one
training-step / evaluation loop measures them all. Peers come from the optional `bench` extra
(`pip install -e ".[bench]"`): `transformers` (Llama for RoPE, GPT-2 for learned absolute
positions) and `x-transformers` (NoPE, RoPE, ALiBi, T5, xPos, absolute). Choices where the
comparison needs one (named here, printed with the parameter counts):

- every model: pre-norm, MLP width 4 x d_model (Llama's gated MLP: 8/3 x d_model per matrix, the
  same weight count), no dropout, tied input/output embeddings, float32;
- attention: SDPA wherever the library offers it (lengen "sdpa", transformers "sdpa",
  x-transformers `attn_flash=True`, except for its T5 bias, which it only runs in its own
  softmax attention), so the kernels are comparable;
- lengen's XPos runs with `centre=False` to match x-transformers' uncentred `rotary_xpos`;
  x-transformers rotates the whole head (`rotary_emb_dim` = head_dim, as lengen and Llama do).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lengen.model import Decoder

LENGEN_ENCODINGS = ("NoPE", "RoPE", "ALiBi", "T5Bias", "XPos", "Learned", "FIRE", "KerpleLog")
# Encoding -> the peers that implement it (library, their name for it).
PEERS = {
    "NoPE": [("x-transformers", "NoPE")],
    "RoPE": [("transformers", "Llama"), ("x-transformers", "RoPE")],
    "ALiBi": [("x-transformers", "ALiBi")],
    "T5Bias": [("x-transformers", "T5")],
    "XPos": [("x-transformers", "xPos")],
    "Learned": [("transformers", "GPT-2"), ("x-transformers", "absolute")],
}


@dataclass(frozen=True)
class Dims:
    vocab: int
    d_model: int
    n_layer: int
    n_head: int
    max_length: int  # the longest sequence any measurement feeds (learned tables are this long)


def lengen_encoding(name: str, dims: Dims):
    """A lengen encoding plugin instance by name."""
    from lengen_plugins.positional_encodings import (
        alibi,
        fire,
        kerple,
        learned,
        nope,
        rope,
        t5_bias,
        xpos,
    )

    builders = {
        "NoPE": nope.NoPE,
        "RoPE": rope.RoPE,
        "ALiBi": alibi.ALiBi,
        "T5Bias": t5_bias.T5Bias,
        "XPos": lambda: xpos.XPos(centre=False),
        "Learned": lambda: learned.Learned(max_length=dims.max_length),
        "FIRE": fire.FIRE,
        "KerpleLog": kerple.KerpleLog,
    }
    return builders[name]()


def lengen_model(encoding: str, dims: Dims, attention: str = "sdpa") -> nn.Module:
    return Decoder(
        dims.vocab,
        lengen_encoding(encoding, dims),
        n_layer=dims.n_layer,
        n_head=dims.n_head,
        d_model=dims.d_model,
        attention=attention,
    )


class LogitsOnly(nn.Module):
    """A `transformers` causal LM as ids -> logits (no cache, no output object kept)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def transformers_model(name: str, dims: Dims) -> nn.Module:
    import transformers

    if name == "Llama":
        config = transformers.LlamaConfig(
            vocab_size=dims.vocab,
            hidden_size=dims.d_model,
            intermediate_size=8 * dims.d_model // 3,  # gated: 3 matrices ~ 2 of width 4 x d
            num_hidden_layers=dims.n_layer,
            num_attention_heads=dims.n_head,
            num_key_value_heads=dims.n_head,
            max_position_embeddings=dims.max_length,
            tie_word_embeddings=True,
            attn_implementation="sdpa",
        )
        return transformers.LlamaForCausalLM(config)
    if name == "GPT-2":
        config = transformers.GPT2Config(
            vocab_size=dims.vocab,
            n_embd=dims.d_model,
            n_layer=dims.n_layer,
            n_head=dims.n_head,
            n_positions=dims.max_length,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,  # GPT-2's own 50256 lies outside a small vocabulary
            eos_token_id=0,
            attn_implementation="sdpa",
        )
        return transformers.GPT2LMHeadModel(config)
    raise ValueError(name)


def x_transformers_model(name: str, dims: Dims) -> nn.Module:
    from x_transformers import Decoder as XDecoder
    from x_transformers import TransformerWrapper

    head_dim = dims.d_model // dims.n_head
    rotary = {"rotary_emb_dim": head_dim}  # its default rotates only half of each head
    options = {
        "NoPE": {},
        "RoPE": {"rotary_pos_emb": True, **rotary},
        "ALiBi": {"alibi_pos_bias": True},
        "T5": {"rel_pos_bias": True},
        "xPos": {"rotary_xpos": True, **rotary},
        "absolute": {},
    }[name]
    return TransformerWrapper(
        num_tokens=dims.vocab,
        max_seq_len=dims.max_length,
        use_abs_pos_emb=name == "absolute",
        tie_embedding=True,
        attn_layers=XDecoder(
            dim=dims.d_model,
            depth=dims.n_layer,
            heads=dims.n_head,
            attn_dim_head=head_dim,  # its default is 64 whatever d_model
            attn_flash=name != "T5",  # x-transformers refuses flash with its T5 bias
            **options,
        ),
    )


def build(library: str, name: str, dims: Dims) -> nn.Module:
    """A contender by (library, name); the peers' libraries are imported only here."""
    if library == "lengen":
        return lengen_model(name, dims)
    if library == "transformers":
        return transformers_model(name, dims)
    if library == "x-transformers":
        return x_transformers_model(name, dims)
    raise ValueError(library)


def as_logits_model(library: str, model: nn.Module) -> nn.Module:
    return LogitsOnly(model) if library == "transformers" else model


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
