"""`--model.hf_checkpoint DIR`: a `transformers` Llama-family checkpoint loaded into lengen.

Accepted: `LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM` and `Phi3ForCausalLM`
folders (config.json and weights) with SiLU gated MLPs, head_dim = hidden_size /
num_attention_heads and no sliding-window attention. They map onto lengen's `norm=rmsnorm,
mlp=swiglu` decoder exactly:
- q, k, v projections are concatenated into `qkv` (Phi-3's fused `qkv_proj` is split into them
  first, and its fused `gate_up_proj` into gate and up halves); grouped-query (fewer key/value
  heads) is expanded by repeating each key/value head for its group of query heads, as
  transformers' `repeat_kv` does, so the computation is unchanged (the weights take more memory);
- any linear bias (Qwen2's q, k, v; Llama's attention_bias / mlp_bias) turns `bias` on; linears
  without one in the checkpoint get zero biases (adding zero is exact);
- rms_norm_eps becomes `norm_eps`; tie_word_embeddings becomes `tie_embeddings`.

The positional encoding is, by default, the lengen encoding equal to the checkpoint's rope
parameters (`encoding_from_config`): rope_type default -> RoPE, linear -> RoPELinear (Position
Interpolation), dynamic -> RoPEDynamicNTK, yarn -> YaRN, llama3 -> RoPELlama3, longrope -> LongRoPE
(Phi-3's), with rope_theta as `base` and the factor as `scale`. An encoding given on the command
line replaces it (one line says so), so a RoPE model can be evaluated or fine-tuned under any RoPE
scaling. Ropes without a lengen equivalent (partial rotary dims, ...) are refused in one line.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lengen.model import Decoder
from lengen.positional import PositionalEncoding

MODEL_TYPES = ("llama", "qwen2", "mistral", "phi3")
# Those lengen computes exactly.
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


def _config(folder: str):
    from transformers import AutoConfig

    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"hf_checkpoint={folder!r} is not a transformers folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (KeyError, ValueError, OSError) as error:  # e.g. rope parameters missing a key
        detail = " ".join(str(error).split())
        message = f"hf_checkpoint {folder}: transformers refuses its config: {detail}"
        raise ValueError(message) from None
    name = f"hf_checkpoint {folder}: model_type={config.model_type!r}"
    if config.model_type not in MODEL_TYPES:
        raise ValueError(f"{name} is not accepted; accepted: {', '.join(MODEL_TYPES)}")
    if getattr(config, "sliding_window", None) is not None:
        raise ValueError(
            f"{name} uses sliding-window attention ({config.sliding_window}), which lengen lacks"
        )
    if config.hidden_act != "silu":
        raise ValueError(f"{name} has hidden_act={config.hidden_act!r}; only silu maps to swiglu")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        raise ValueError(
            f"{name} has head_dim={head_dim} * {config.num_attention_heads} heads != hidden_size="
            f"{config.hidden_size}; lengen needs head_dim = hidden_size / heads"
        )
    return config


def hf_architecture(folder: str) -> dict:
    """The `Decoder` architecture arguments of a transformers Llama-family folder."""
    config = _config(folder)
    has_bias = bool(
        getattr(config, "attention_bias", False)
        or getattr(config, "mlp_bias", False)
        or config.model_type == "qwen2"  # q, k, v biases always
    )
    return {
        "vocab_size": config.vocab_size,
        "n_layer": config.num_hidden_layers,
        "n_head": config.num_attention_heads,
        "d_model": config.hidden_size,
        "d_mlp": config.intermediate_size,
        "tie_embeddings": bool(config.tie_word_embeddings),
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "bias": has_bias,
        "norm_eps": float(config.rms_norm_eps),
    }


def rope_parameters(config) -> dict:
    """The config's rope parameters (rope_type, rope_theta, factor, ...) as a plain dict.

    transformers >= 5 keeps them in `rope_parameters`; older configs in `rope_theta` plus an
    optional `rope_scaling` dict (whose rope type may be under the older key `type`).
    """
    parameters = getattr(config, "rope_parameters", None)
    if not parameters:
        parameters = {"rope_theta": getattr(config, "rope_theta", 10000.0)}
        parameters.update(getattr(config, "rope_scaling", None) or {})
    parameters = dict(parameters)
    parameters.setdefault("rope_type", parameters.pop("type", "default"))
    return parameters


def _encoding_plugin(name: str) -> type:
    """The installed positional-encoding plugin class `name` (lengen's own RoPE family)."""
    from lengen.plugins import GROUPS, discover

    plugin = discover(GROUPS["positional_encodings"]).get(name)
    if plugin is None or plugin.error is not None:
        raise ValueError(f"hf_checkpoint needs the positional encoding plugin {name}, not loaded")
    return plugin.obj


def encoding_from_config(folder: str) -> tuple[PositionalEncoding, dict]:
    """(the lengen encoding equal to the folder's rope, its constructor arguments).

    Follows transformers' `modeling_rope_utils`: dynamic takes its original length L0 from
    max_position_embeddings; yarn's factor defaults to max_position_embeddings /
    original_max_position_embeddings and its attention factor to the ratio of the `mscale`s when
    both are given (else 0.1 ln(factor) + 1, YaRN's own default); beta_fast / beta_slow default
    to 32 / 1. Raises ValueError (one line) for a rope without a lengen equivalent.
    """
    config = _config(folder)
    rope = rope_parameters(config)
    rope_type = rope["rope_type"]
    name = f"hf_checkpoint {folder}: rope_type={rope_type!r}"
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"{name} has no lengen equivalent; accepted: {', '.join(ROPE_TYPES)}")
    if float(rope.get("partial_rotary_factor") or 1.0) != 1.0:
        raise ValueError(
            f"{name} rotates a part of each head (partial_rotary_factor="
            f"{rope['partial_rotary_factor']}), which this import does not map; accepted: 1.0"
        )
    arguments: dict = {"base": float(rope["rope_theta"])}
    if rope_type == "default":
        encoding_name = "RoPE"
    elif rope_type == "linear":
        encoding_name = "RoPELinear"
        arguments["scale"] = float(rope["factor"])
    elif rope_type == "dynamic":
        encoding_name = "RoPEDynamicNTK"
        arguments.update(
            scale=float(rope["factor"]), original_max_length=int(config.max_position_embeddings)
        )
    elif rope_type == "yarn":
        encoding_name = "YaRN"
        original = int(rope["original_max_position_embeddings"])
        factor = rope.get("factor") or config.max_position_embeddings / original
        attention_factor = rope.get("attention_factor")
        mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
        if attention_factor is None and mscale and mscale_all_dim and factor > 1:
            attention_factor = (0.1 * mscale * math.log(factor) + 1.0) / (
                0.1 * mscale_all_dim * math.log(factor) + 1.0
            )
        arguments.update(
            scale=float(factor),
            original_max_length=original,
            beta_fast=float(rope.get("beta_fast") or 32.0),
            beta_slow=float(rope.get("beta_slow") or 1.0),
            truncate=bool(rope.get("truncate", True)),
        )
        if attention_factor is not None:
            arguments["attention_factor"] = float(attention_factor)
    elif rope_type == "longrope":  # transformers' `_compute_longrope_parameters`
        encoding_name = "LongRoPE"
        # Phi-3 keeps its pretrained length outside the rope parameters; it wins, as there.
        original = int(
            getattr(config, "original_max_position_embeddings", None)
            or rope.get("original_max_position_embeddings")
            or config.max_position_embeddings
        )
        factor = rope.get("factor") or config.max_position_embeddings / original
        arguments.update(
            short_factor=[float(value) for value in rope["short_factor"]],
            long_factor=[float(value) for value in rope["long_factor"]],
            original_max_length=original,
            scale=float(max(factor, 1.0)),  # LongRoPE: a factor <= 1 means no attention factor
        )
        if rope.get("attention_factor") is not None:
            arguments["attention_factor"] = float(rope["attention_factor"])
    else:  # llama3
        encoding_name = "RoPELlama3"
        arguments.update(
            scale=float(rope["factor"]),
            original_max_length=int(rope["original_max_position_embeddings"]),
            low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
        )
    return _encoding_plugin(encoding_name)(**arguments), arguments


def describe(encoding: PositionalEncoding, arguments: dict) -> str:
    """`Name(arg=value, ...)`."""
    listed = ", ".join(f"{key}={value}" for key, value in arguments.items())
    return f"{type(encoding).__name__}({listed})"


def choose_encoding(
    folder: str, given: PositionalEncoding | None
) -> tuple[PositionalEncoding, dict | None, str | None]:
    """(the encoding to use, its constructor arguments when chosen here, a line to print or
    None): the folder's own rope unless `given`.

    A rope without a lengen equivalent is refused only when no encoding is given: under an
    encoding of the user's choice such a checkpoint can still be studied.
    """
    if given is None:
        encoding, arguments = encoding_from_config(folder)
        return encoding, arguments, None
    try:
        described = describe(*encoding_from_config(folder))
    except ValueError as error:
        described = f"no lengen equivalent ({error})"
    theta = float(rope_parameters(_config(folder))["rope_theta"])
    base = getattr(given, "base", None)
    note = ""
    if isinstance(base, (int, float)) and float(base) != theta:  # e.g. left at its default
        note = (
            f" (its base={float(base)} is not the checkpoint's rope_theta={theta}: "
            f"--model.pos_encoding.init_args.base {theta} keeps the pretrained frequencies)"
        )
    line = (
        f"lengen: hf_checkpoint {folder}: its rope is {described}; the command line's encoding "
        f"{type(given).__name__} replaces it{note}"
    )
    return given, None, line


def _repeat_heads(weight: torch.Tensor, n_kv_head: int, n_head: int) -> torch.Tensor:
    """(n_kv_head * hs, ...) key/value rows -> (n_head * hs, ...): kv head j serves query heads
    j * g .. (j + 1) * g - 1 with g = n_head / n_kv_head (transformers' `repeat_kv`)."""
    group = n_head // n_kv_head
    rows = weight.view(n_kv_head, -1, *weight.shape[1:])  # (n_kv, hs, ...)
    return rows.repeat_interleave(group, dim=0).reshape(-1, *weight.shape[1:])  # (nh * hs, ...)


@torch.no_grad()
def load_hf_weights(decoder: Decoder, folder: str) -> str:
    """Copy the weights of transformers folder `folder` into `decoder`; return one line."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    config = _config(folder)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # lengen prints its own line
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    source = model.state_dict()
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    target = {
        "token_embedding.weight": source["model.embed_tokens.weight"],
        "ln_final.weight": source["model.norm.weight"],
    }
    if not config.tie_word_embeddings:
        target["lm_head.weight"] = source["lm_head.weight"]

    def bias_or_zeros(name: str, size: int) -> torch.Tensor:
        return source.get(name, torch.zeros(size))

    for i, block in enumerate(decoder.blocks):
        hf = f"model.layers.{i}."
        attn, mlp = hf + "self_attn.", hf + "mlp."
        d_model, d_mlp = block.attn.proj.in_features, block.mlp.up.out_features
        kv_size = d_model // n_head * n_kv
        if attn + "qkv_proj.weight" in source:  # Phi-3: rows q (C), k, v (kv_size each)
            q, k, v = source[attn + "qkv_proj.weight"].split((d_model, kv_size, kv_size))
        else:
            q, k, v = (source[attn + f"{name}_proj.weight"] for name in "qkv")
        k, v = _repeat_heads(k, n_kv, n_head), _repeat_heads(v, n_kv, n_head)
        if mlp + "gate_up_proj.weight" in source:  # Phi-3: rows gate (d_mlp), then up (d_mlp)
            gate, up = source[mlp + "gate_up_proj.weight"].chunk(2)
        else:
            gate, up = source[mlp + "gate_proj.weight"], source[mlp + "up_proj.weight"]
        ours = f"blocks.{i}."
        target.update({
            ours + "ln_attn.weight": source[hf + "input_layernorm.weight"],
            ours + "ln_mlp.weight": source[hf + "post_attention_layernorm.weight"],
            ours + "attn.qkv.weight": torch.cat((q, k, v)),  # (3C, C)
            ours + "attn.proj.weight": source[attn + "o_proj.weight"],
            ours + "mlp.gate.weight": gate,
            ours + "mlp.up.weight": up,
            ours + "mlp.down.weight": source[mlp + "down_proj.weight"],
        })  # fmt: skip
        if block.attn.qkv.bias is not None:
            q_bias = bias_or_zeros(attn + "q_proj.bias", d_model)
            k_bias = _repeat_heads(bias_or_zeros(attn + "k_proj.bias", kv_size), n_kv, n_head)
            v_bias = _repeat_heads(bias_or_zeros(attn + "v_proj.bias", kv_size), n_kv, n_head)
            target.update({
                ours + "attn.qkv.bias": torch.cat((q_bias, k_bias, v_bias)),
                ours + "attn.proj.bias": bias_or_zeros(attn + "o_proj.bias", d_model),
                ours + "mlp.gate.bias": bias_or_zeros(mlp + "gate_proj.bias", d_mlp),
                ours + "mlp.up.bias": bias_or_zeros(mlp + "up_proj.bias", d_mlp),
                ours + "mlp.down.bias": bias_or_zeros(mlp + "down_proj.bias", d_model),
            })  # fmt: skip
    state = decoder.state_dict()
    for name, tensor in target.items():
        state[name].copy_(tensor)
    encoding_tensors = [name for name in state if name.startswith("pos_encoding.")]
    missing = sorted(set(state) - set(target) - set(encoding_tensors) - {"lm_head.weight"})
    if missing:  # a bug in the mapping above
        raise RuntimeError(f"hf_checkpoint mapping left tensors unset: {missing}")
    return (
        f"lengen: hf_checkpoint {folder}: loaded {config.model_type} ({len(target)} tensors; "
        f"{n_kv} key/value heads for {n_head} heads); its rope parameters: "
        f"{rope_parameters(config)}; encoding used: {decoder.pos_encoding!r}"
    )
