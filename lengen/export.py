"""`lengen export --ckpt_path CKPT --out DIR`: a lengen checkpoint as a `transformers` model.

Only configurations that `transformers` computes exactly are exported; the rest are refused in one
line naming what has no equivalent (nothing is written then):

- the RoPE family (RoPE, RoPENTK, RoPELinear, RoPEDynamicNTK, YaRN with ramp="dimension",
  RoPELlama3, LongRoPE), rotary_dim = head_dim, with norm=rmsnorm and mlp=swiglu ->
  `LlamaForCausalLM` (RoPENTK as plain RoPE with the NTK base; biases -> attention_bias and
  mlp_bias). LongRoPE picks its factors per row, transformers per call (the longest row): the
  same whenever a batch's rows have one length, as in `generate`; a fixed set (factors="short"
  or "long") exports as both lists equal;
- Learned absolute positions with norm=layernorm and mlp=gelu -> `GPT2LMHeadModel`
  (activation "gelu", the exact GELU lengen uses; bias-free linears get zero biases).

The scale a scaled RoPE exports is the one lengen evaluates with: `eval_scale` when set, else the
trained `scale` buffer. The model is written in float32 with `save_pretrained` (config.json,
model.safetensors); with vocab_size 256 a byte-level tokenizer (token id = UTF-8 byte, as lengen's
`tokenizer: bytes`) is written beside it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from lengen.argparser import OneLineArgumentParser
from lengen.model import Decoder

ROPE_TYPES = {  # lengen class name -> transformers rope_type
    "RoPE": "default",
    "RoPENTK": "default",  # a plain RoPE whose base is the NTK base
    "RoPELinear": "linear",
    "RoPEDynamicNTK": "dynamic",
    "YaRN": "yarn",
    "RoPELlama3": "llama3",
    "LongRoPE": "longrope",
}


class NotExportable(ValueError):
    """A configuration without an exact `transformers` equivalent; the message is one line."""


def _hparam(hparams: dict, name: str, default):
    value = hparams.get(name, default)
    return default if value is None else value


def _architecture(module) -> dict:
    """The architecture options of a `LengenModule` (old checkpoints lack the new ones)."""
    hp = module.hparams
    decoder: Decoder = module.decoder
    return {
        "norm": _hparam(hp, "norm", "layernorm"),
        "mlp": _hparam(hp, "mlp", "gelu"),
        "bias": bool(_hparam(hp, "bias", False)),
        "tie": decoder.lm_head.weight is decoder.token_embedding.weight,
        "vocab_size": decoder.token_embedding.num_embeddings,
        "d_model": decoder.token_embedding.embedding_dim,
        "n_layer": len(decoder.blocks),
        "n_head": decoder.n_head,
        "d_mlp": decoder.blocks[0].mlp.up.out_features,
    }


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise NotExportable(what)


def _effective_scale(encoding) -> float:
    """The scale lengen evaluates with: eval_scale when set, else the trained buffer."""
    if encoding.eval_scale is not None:
        return float(encoding.eval_scale)
    return float(encoding.scale)


def rope_parameters(encoding) -> dict:
    """transformers' rope parameters (rope_type, rope_theta, ...) equal to this lengen RoPE."""
    name = type(encoding).__name__
    rope = {"rope_type": ROPE_TYPES[name], "rope_theta": encoding.base}
    if name == "RoPENTK":
        scale = _effective_scale(encoding)
        rotary_dim = encoding.rotary_dim
        rope["rope_theta"] = encoding.base * scale ** (rotary_dim / (rotary_dim - 2))
    elif name == "RoPELinear":
        rope["factor"] = _effective_scale(encoding)
    elif name == "RoPEDynamicNTK":
        rope["factor"] = _effective_scale(encoding)
        rope["original_max_position_embeddings"] = encoding.original_max_length
    elif name == "YaRN":
        _require(
            encoding.ramp == "dimension",
            "YaRN ramp='turns' (the paper's ramp) has no transformers equivalent; "
            "ramp='dimension' exports",
        )
        rope.update(
            factor=_effective_scale(encoding),
            original_max_position_embeddings=encoding.original_max_length,
            beta_fast=encoding.beta_fast,
            beta_slow=encoding.beta_slow,
            truncate=encoding.truncate,
        )
        if encoding.attention_factor is not None:
            rope["attention_factor"] = float(encoding.attention_factor)
    elif name == "LongRoPE":
        ones = [1.0] * (encoding.rotary_dim // 2)
        short = list(encoding.short_factor or ones)
        long = list(encoding.long_factor or ones)
        if encoding.factors != "auto":  # one fixed set: both lists equal
            short = long = short if encoding.factors == "short" else long
        rope.update(
            short_factor=short,
            long_factor=long,
            original_max_position_embeddings=encoding.original_max_length,
            factor=encoding.scale,
            attention_factor=encoding.attention_scale(),  # lengen's, explicit
        )
    elif name == "RoPELlama3":
        rope.update(
            factor=_effective_scale(encoding),
            original_max_position_embeddings=encoding.original_max_length,
            low_freq_factor=encoding.low_freq_factor,
            high_freq_factor=encoding.high_freq_factor,
        )
    return rope


def _llama(module, arch: dict, max_positions: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    encoding = module.decoder.pos_encoding
    name = type(encoding).__name__
    _require(
        arch["norm"] == "rmsnorm" and arch["mlp"] == "swiglu",
        f"{name} exports as Llama, which needs norm=rmsnorm and mlp=swiglu; this model has "
        f"norm={arch['norm']}, mlp={arch['mlp']}",
    )
    head_dim = arch["d_model"] // arch["n_head"]
    _require(
        encoding.rotary_dim == head_dim,
        f"{name} with rotary_dim={encoding.rotary_dim} < head_dim={head_dim} has no Llama "
        "equivalent (Llama rotates every head dim)",
    )
    rope = rope_parameters(encoding)
    if name == "RoPEDynamicNTK":  # transformers' dynamic NTK takes L0 from max_position_embeddings
        max_positions = rope.pop("original_max_position_embeddings")
    elif "original_max_position_embeddings" in rope:  # the extended length, as transformers checks
        max_positions = round(rope["original_max_position_embeddings"] * rope["factor"])
    config = LlamaConfig(
        vocab_size=arch["vocab_size"],
        hidden_size=arch["d_model"],
        intermediate_size=arch["d_mlp"],
        num_hidden_layers=arch["n_layer"],
        num_attention_heads=arch["n_head"],
        num_key_value_heads=arch["n_head"],
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=max_positions,
        rms_norm_eps=module.decoder.ln_final.eps,
        tie_word_embeddings=arch["tie"],
        attention_bias=arch["bias"],
        mlp_bias=arch["bias"],
        rope_parameters=rope,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    decoder = module.decoder
    d = arch["d_model"]
    state = {
        "model.embed_tokens.weight": decoder.token_embedding.weight,
        "model.norm.weight": decoder.ln_final.weight,
        "lm_head.weight": decoder.lm_head.weight,
    }
    for i, block in enumerate(decoder.blocks):
        prefix = f"model.layers.{i}."
        q, k, v = block.attn.qkv.weight.split(d, dim=0)  # (C, C) each
        pairs = {
            "input_layernorm.weight": block.ln_attn.weight,
            "post_attention_layernorm.weight": block.ln_mlp.weight,
            "self_attn.q_proj.weight": q,
            "self_attn.k_proj.weight": k,
            "self_attn.v_proj.weight": v,
            "self_attn.o_proj.weight": block.attn.proj.weight,
            "mlp.gate_proj.weight": block.mlp.gate.weight,
            "mlp.up_proj.weight": block.mlp.up.weight,
            "mlp.down_proj.weight": block.mlp.down.weight,
        }
        if arch["bias"]:
            q_bias, k_bias, v_bias = block.attn.qkv.bias.split(d)
            pairs.update({
                "self_attn.q_proj.bias": q_bias,
                "self_attn.k_proj.bias": k_bias,
                "self_attn.v_proj.bias": v_bias,
                "self_attn.o_proj.bias": block.attn.proj.bias,
                "mlp.gate_proj.bias": block.mlp.gate.bias,
                "mlp.up_proj.bias": block.mlp.up.bias,
                "mlp.down_proj.bias": block.mlp.down.bias,
            })  # fmt: skip
        state.update({prefix + key: value for key, value in pairs.items()})
    return LlamaForCausalLM(config), state


def _gpt2(module, arch: dict):
    from transformers import GPT2Config, GPT2LMHeadModel

    encoding = module.decoder.pos_encoding
    _require(
        arch["norm"] == "layernorm" and arch["mlp"] == "gelu",
        f"Learned exports as GPT-2, which needs norm=layernorm and mlp=gelu; this model has "
        f"norm={arch['norm']}, mlp={arch['mlp']}",
    )
    config = GPT2Config(
        vocab_size=arch["vocab_size"],
        n_positions=encoding.max_length,
        n_embd=arch["d_model"],
        n_layer=arch["n_layer"],
        n_head=arch["n_head"],
        n_inner=arch["d_mlp"],
        activation_function="gelu",  # exact GELU (transformers' "gelu_new" is the tanh one)
        layer_norm_epsilon=module.decoder.ln_final.eps,
        tie_word_embeddings=arch["tie"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    decoder = module.decoder

    def bias(linear: torch.nn.Linear) -> torch.Tensor:
        """The linear's bias, or zeros for a bias-free one (adding zero is exact)."""
        return linear.bias if linear.bias is not None else torch.zeros(linear.out_features)

    state = {
        "transformer.wte.weight": decoder.token_embedding.weight,
        "transformer.wpe.weight": encoding.table.weight,
        "transformer.ln_f.weight": decoder.ln_final.weight,
        "transformer.ln_f.bias": decoder.ln_final.bias,
        "lm_head.weight": decoder.lm_head.weight,
    }
    for i, block in enumerate(decoder.blocks):
        prefix = f"transformer.h.{i}."
        pairs = {  # GPT-2's Conv1D stores (in, out): the transpose of nn.Linear's weight
            "ln_1.weight": block.ln_attn.weight,
            "ln_1.bias": block.ln_attn.bias,
            "attn.c_attn.weight": block.attn.qkv.weight.T,
            "attn.c_attn.bias": bias(block.attn.qkv),
            "attn.c_proj.weight": block.attn.proj.weight.T,
            "attn.c_proj.bias": bias(block.attn.proj),
            "ln_2.weight": block.ln_mlp.weight,
            "ln_2.bias": block.ln_mlp.bias,
            "mlp.c_fc.weight": block.mlp.up.weight.T,
            "mlp.c_fc.bias": bias(block.mlp.up),
            "mlp.c_proj.weight": block.mlp.down.weight.T,
            "mlp.c_proj.bias": bias(block.mlp.down),
        }
        state.update({prefix + key: value for key, value in pairs.items()})
    return GPT2LMHeadModel(config), state


def to_transformers(module, max_positions: int = 2048):
    """A `transformers` causal LM (float32, eval mode) computing what `module` computes.

    Raises `NotExportable` (one line) for a configuration without an exact equivalent.
    max_positions: Llama's max_position_embeddings (used only by transformers' bookkeeping).
    """
    arch = _architecture(module)
    encoding = module.decoder.pos_encoding
    name = type(encoding).__name__
    if name in ROPE_TYPES:
        model, state = _llama(module, arch, max_positions)
    elif name == "Learned":
        model, state = _gpt2(module, arch)
    else:
        raise NotExportable(
            f"{name} has no transformers equivalent; exportable: "
            f"{', '.join(ROPE_TYPES)} (as Llama, with norm=rmsnorm, mlp=swiglu) and Learned "
            "(as GPT-2, with norm=layernorm, mlp=gelu)"
        )
    state = {key: value.detach().float().contiguous().clone() for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not (arch["tie"] and key == "lm_head.weight")]
    if missing or unexpected:  # a bug in the mapping above, not bad input
        raise RuntimeError(f"export mapping incomplete: missing {missing}, unexpected {unexpected}")
    return model.float().eval()


def byte_level_alphabet() -> dict[int, str]:
    """byte -> the printable character GPT-2's byte-level tokenizers write it as.

    Printable Latin-1 bytes stand for themselves; the other 68 map to chr(256 + k) in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    alphabet = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in alphabet]
    alphabet.update({byte: chr(256 + k) for k, byte in enumerate(others)})
    return alphabet


def byte_tokenizer():
    """A `PreTrainedTokenizerFast` whose token ids are UTF-8 byte values (lengen's `bytes`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in byte_level_alphabet().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def export(ckpt_path: str, out: str) -> Path:
    """Write the `transformers` directory of checkpoint `ckpt_path` into `out` (new or empty)."""
    from lengen.module import LengenModule

    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; give a new one")
    if not Path(ckpt_path).is_file():
        raise ValueError(f"--ckpt_path {ckpt_path} is not a checkpoint file")
    # weights_only=False: a Lightning checkpoint pickles the encoding in its hyperparameters.
    with warnings.catch_warnings():  # Lightning's advice on saving the encoding as a hparam
        warnings.filterwarnings("ignore", message="Attribute 'pos_encoding' is an instance")
        module = LengenModule.load_from_checkpoint(
            ckpt_path, map_location="cpu", weights_only=False
        ).eval()
    train_length = None
    datamodule = torch.load(ckpt_path, map_location="cpu", weights_only=False).get(
        "datamodule_hyper_parameters", {}
    )
    for key in ("n_ctx", "train_max_length"):
        if isinstance(datamodule.get(key), int):
            train_length = datamodule[key]
    model = to_transformers(module, max_positions=train_length or 2048)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # lengen prints its own line
    try:
        model.save_pretrained(out_dir)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if model.config.vocab_size == 256:
        byte_tokenizer().save_pretrained(out_dir)
    return out_dir


def main(argv: list[str]) -> None:
    """`lengen export --ckpt_path CKPT --out DIR`; bad input raises ValueError (one line)."""
    parser = OneLineArgumentParser(prog="lengen export")
    parser.add_argument("--ckpt_path", required=True, help="a lengen (Lightning) checkpoint")
    parser.add_argument("--out", required=True, help="a new or empty folder to write")
    args = parser.parse_args(argv)
    out_dir = export(args.ckpt_path, args.out)
    print(f"exported: {out_dir}")
