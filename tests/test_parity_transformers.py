"""Parity with Hugging Face transformers: RoPE scalings, T5 buckets, ALiBi slopes (extra: parity).

Skipped when transformers is absent (`pip install -e ".[parity]"` installs it). The references are
transformers' own functions, not re-derivations: `ROPE_INIT_FUNCTIONS` and the Llama rotary
embedding, `T5Attention._relative_position_bucket`, Bloom's `build_alibi_tensor`.
transformers computes inverse frequencies and angles in float32, so lengen (float64 where it
computes the frequencies alone) is compared to 1e-6 relative.
"""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.bloom.modeling_bloom import build_alibi_tensor  # noqa: E402
from transformers.models.llama.modeling_llama import (  # noqa: E402
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

from lengen.positional import ModelDims  # noqa: E402
from lengen_plugins.positional_encodings.alibi import alibi_slopes  # noqa: E402
from lengen_plugins.positional_encodings.rope import RoPE  # noqa: E402
from lengen_plugins.positional_encodings.rope_scaling import (  # noqa: E402
    RoPEDynamicNTK,
    RoPELinear,
    RoPELlama3,
    YaRN,
)
from lengen_plugins.positional_encodings.t5_bias import relative_position_bucket  # noqa: E402

HEAD_DIM, N_HEAD = 64, 2
MAJOR = int(transformers.__version__.split(".")[0])


def hf_config(rope_type: str, base: float, max_position: int, **params) -> LlamaConfig:
    """A Llama config with this RoPE (transformers 5 `rope_parameters`, 4.x `rope_scaling`)."""
    sizes = dict(
        hidden_size=HEAD_DIM * N_HEAD, num_attention_heads=N_HEAD, head_dim=HEAD_DIM,
        max_position_embeddings=max_position,
    )  # fmt: skip
    if MAJOR >= 5:
        rope = {"rope_type": rope_type, "rope_theta": base, **params}
        return LlamaConfig(rope_parameters=rope, **sizes)
    scaling = None if rope_type == "default" else {"rope_type": rope_type, **params}
    return LlamaConfig(rope_theta=base, rope_scaling=scaling, **sizes)


# (name, lengen encoding, transformers rope_type, max_position_embeddings, parameters)
CASES = [
    ("default", lambda: RoPE(base=10000.0), "default", 2048, {}),
    ("default-base-500k", lambda: RoPE(base=500000.0), "default", 2048, {}),
    ("linear", lambda: RoPELinear(scale=4.0), "linear", 8192, {"factor": 4.0}),
    (
        "yarn",
        lambda: YaRN(scale=4.0, original_max_length=2048),
        "yarn", 8192, {"factor": 4.0, "original_max_position_embeddings": 2048},
    ),
    (
        "yarn-s16-L4096-betas",
        lambda: YaRN(scale=16.0, original_max_length=4096, beta_fast=16.0, beta_slow=2.0),
        "yarn", 65536,
        {"factor": 16.0, "original_max_position_embeddings": 4096, "beta_fast": 16.0,
         "beta_slow": 2.0},
    ),
    (
        "yarn-no-truncate",
        lambda: YaRN(scale=8.0, original_max_length=64, truncate=False),
        "yarn", 512, {"factor": 8.0, "original_max_position_embeddings": 64, "truncate": False},
    ),
    (
        "llama3",
        lambda: RoPELlama3(scale=8.0, original_max_length=8192, base=500000.0),
        "llama3", 131072,
        {"factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0},
    ),
    (
        "llama3-small",
        lambda: RoPELlama3(scale=4.0, original_max_length=64, low_freq_factor=2.0,
                           high_freq_factor=8.0),
        "llama3", 256,
        {"factor": 4.0, "original_max_position_embeddings": 64, "low_freq_factor": 2.0,
         "high_freq_factor": 8.0},
    ),
]  # fmt: skip


def bound(encoding):
    encoding.bind(ModelDims(d_model=HEAD_DIM * N_HEAD, n_head=N_HEAD, head_dim=HEAD_DIM))
    return encoding


def base_of(params_case) -> float:
    _, make, *_ = params_case
    return make().base


def hf_rotary(case) -> LlamaRotaryEmbedding:
    _, make, rope_type, max_position, params = case
    if MAJOR < 5 and "truncate" in params:
        pytest.skip("transformers 4.x has no YaRN truncate option")
    return LlamaRotaryEmbedding(hf_config(rope_type, make().base, max_position, **params))


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_inverse_frequencies_and_attention_factor_match_transformers(case):
    encoding = bound(case[1]())
    rotary = hf_rotary(case)
    ours = encoding.inverse_frequencies(torch.float64, torch.device("cpu"))
    torch.testing.assert_close(ours, rotary.inv_freq.double(), rtol=1e-6, atol=0)
    assert float(encoding.attention_scale()) == pytest.approx(rotary.attention_scaling, rel=1e-7)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_rotated_queries_and_keys_match_transformers(case):
    """float32 both sides, positions up to 4 x 512: angles agree to float32 rounding."""
    encoding = bound(case[1]())
    rotary = hf_rotary(case)
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, N_HEAD, 24, HEAD_DIM, generator=generator)
    key = torch.randn(2, N_HEAD, 24, HEAD_DIM, generator=generator)
    positions = torch.randint(0, 2048, (2, 24), generator=generator)
    cos, sin = rotary(query, positions)  # (B, T, hs), attention factor included
    expected_query, expected_key = apply_rotary_pos_emb(query, key, cos, sin)
    ours_query, ours_key = encoding.rotate(query, key, positions, positions)
    torch.testing.assert_close(ours_query, expected_query, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_key, expected_key, rtol=1e-4, atol=1e-4)
    near = positions < 64  # small angles: float32 rounding of p * theta is tiny
    torch.testing.assert_close(
        ours_query.transpose(1, 2)[near], expected_query.transpose(1, 2)[near],
        rtol=1e-6, atol=1e-6,
    )  # fmt: skip


@pytest.mark.parametrize("length", [100, 2048, 2049, 5000, 20000])
@pytest.mark.parametrize("scale", [1.0, 2.0, 4.0])
def test_dynamic_ntk_frequencies_match_transformers_for_each_length(length, scale):
    """transformers' `dynamic` is called with seq_len = max position + 1, as lengen's L."""
    encoding = bound(RoPEDynamicNTK(original_max_length=2048, scale=scale))
    config = hf_config("dynamic", 10000.0, 2048, factor=scale)
    expected, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, "cpu", seq_len=length)
    ours = encoding.inverse_frequencies_for_length(length, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(ours, expected.double(), rtol=1e-6, atol=0)


def test_dynamic_ntk_rotation_matches_transformers_rotary_embedding():
    encoding = bound(RoPEDynamicNTK(original_max_length=64, scale=2.0))
    rotary = LlamaRotaryEmbedding(hf_config("dynamic", 10000.0, 64, factor=2.0))
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(1, N_HEAD, 300, HEAD_DIM, generator=generator)
    positions = torch.arange(300)[None]  # L = 300 > 64: the dynamic base is in use
    cos, sin = rotary(query, positions)
    expected, _ = apply_rotary_pos_emb(query, query, cos, sin)
    ours, _ = encoding.rotate(query, query, positions, positions)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (16, 40), (8, 20)])
def test_t5_buckets_match_transformers_unidirectional(num_buckets, max_distance):
    relative = torch.arange(-3 * max_distance, 3 * max_distance)[None, :]  # key - query
    expected = T5Attention._relative_position_bucket(
        relative, bidirectional=False, num_buckets=num_buckets, max_distance=max_distance
    )
    ours = relative_position_bucket(relative, num_buckets, max_distance)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("n_head", [1, 2, 3, 5, 6, 7, 8, 12, 16, 20, 24, 40])
def test_alibi_slopes_match_bloom_for_any_head_count(n_head):
    """Bloom's build_alibi_tensor follows Press et al.'s code (fairseq) for non-powers of two."""
    length = 7
    alibi = build_alibi_tensor(torch.ones(1, length), n_head, torch.float64)  # (nh, 1, T)
    expected = alibi[:, 0, 1] / 1.0  # slope * key position 1
    torch.testing.assert_close(
        torch.tensor(alibi_slopes(n_head), dtype=torch.float64), expected, rtol=1e-6, atol=0
    )
    assert math.isclose(alibi_slopes(n_head)[0], float(alibi[0, 0, 1]), rel_tol=1e-6)
