"""Backend selection, the fused causal path, and chunked cached decoding."""

from __future__ import annotations

import pytest
import torch

from lengen.attention import compile_flex_attention, flex_score, sdpa_attention, select_backend
from lengen.model import Decoder
from lengen_plugins.positional_encodings.alibi import ALiBi
from lengen_plugins.positional_encodings.fire import FIRE
from lengen_plugins.positional_encodings.randomized import RandomizedPositions
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.t5_bias import T5Bias


def test_auto_is_sdpa_and_other_choices_are_kept():
    """ "auto" is SDPA on every device (measured faster than flex on an H200; select_backend)."""
    assert select_backend("auto") == "sdpa"
    assert select_backend("flex") == "flex" and select_backend("reference") == "reference"
    model = Decoder(11, ALiBi(), n_layer=1, n_head=2, d_model=16)
    assert model.backend == "sdpa" and model.attention is sdpa_attention


def test_compiled_flex_attention_compiles_twice_across_many_lengths():
    """A run whose batches vary in length must not recompile per length (dynamo's recompile
    limit, 8, would then send the rest of the run to the unfused path). Dynamo's guards do not
    depend on the compiler backend, so the "eager" backend checks them here on CPU; the CUDA
    test below runs the real kernels."""
    from torch._dynamo.utils import counters
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.reset()
    counters.clear()
    kernel = compile_flex_attention(backend="eager")
    n_head = 2
    encoding = Decoder(11, ALiBi(), n_layer=1, n_head=n_head, d_model=32).pos_encoding  # set up
    generator = torch.Generator().manual_seed(0)
    for length in range(5, 17):  # 12 lengths, each with one left-padded row
        positions = torch.arange(length).expand(2, length)
        key_mask = torch.ones(2, length, dtype=torch.bool)
        key_mask[1, :2] = False
        score = flex_score(encoding.score_bias, positions, positions, key_mask, n_head, dense=None)
        query, key, value = torch.randn(3, 2, n_head, length, 16, generator=generator)
        arguments = {"score_mod": score.score_mod, "block_mask": score.block_mask}
        compiled = kernel(query, key, value, **arguments)
        torch.testing.assert_close(compiled, flex_attention(query, key, value, **arguments))
    assert counters["frames"]["ok"] <= 2, dict(counters["frames"])
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flex_training_on_cuda_matches_the_reference_at_many_lengths():
    """Compiled FlexAttention (attention="flex" on CUDA) against the plain reference path,
    forward and gradients, at 12 lengths in one process, compiling at most three times."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    reference = Decoder(11, T5Bias(), n_layer=2, n_head=2, d_model=32, attention="reference")
    flex = Decoder(11, T5Bias(), n_layer=2, n_head=2, d_model=32, attention="flex")
    flex.load_state_dict(reference.state_dict())
    reference, flex = reference.cuda(), flex.cuda()
    for length in range(100, 340, 20):
        ids = torch.randint(0, 11, (3, length), device="cuda")
        grads = []
        for model in (reference, flex):
            model.zero_grad()
            logits = model(ids)
            logits.float().logsumexp(-1).mean().backward()
            grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
            if model is reference:
                expected = logits.detach()
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        for name, grad in grads[1].items():
            torch.testing.assert_close(grad, grads[0][name], rtol=1e-3, atol=1e-4, msg=name)
    # Static, then dynamic; one more seen on an H200 (torch 2.11). One per length before.
    assert counters["frames"]["ok"] <= 3, dict(counters["frames"])
    torch._dynamo.reset()


def test_bad_attention_choices_are_one_line_errors():
    with pytest.raises(ValueError, match="auto, sdpa, flex, reference"):
        Decoder(11, RoPE(), n_layer=1, n_head=2, d_model=16, attention="fast")
    with pytest.raises(ValueError, match="dropout"):
        Decoder(11, T5Bias(), n_layer=1, n_head=2, d_model=16, attention="flex", dropout=0.1)
    with pytest.raises(ValueError, match="FIRE's score_bias"):  # an MLP per pair: no score_mod
        Decoder(11, FIRE(), n_layer=1, n_head=2, d_model=16, attention="flex")
    wrapped = RandomizedPositions(FIRE(), max_position=64)
    with pytest.raises(ValueError, match="RandomizedPositions's score_bias"):
        Decoder(11, wrapped, n_layer=1, n_head=2, d_model=16, attention="flex")


def test_no_bias_and_no_padding_keeps_the_fused_causal_kernel(monkeypatch):
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def recording(*args, **kwargs):
        calls.append((kwargs.get("is_causal", False), kwargs.get("attn_mask") is not None))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    ids = torch.randint(0, 11, (2, 7))
    Decoder(11, RoPE(), n_layer=2, n_head=2, d_model=16)(ids)
    assert calls == [(True, False)] * 2
    calls.clear()
    Decoder(11, RoPE(), n_layer=2, n_head=2, d_model=16)(ids, attention_mask=torch.ones_like(ids))
    assert calls == [(True, False)] * 2  # an all-ones mask is no padding
    calls.clear()
    with torch.no_grad():  # with gradients, CPU runs lengen.attention.BiasedCausalAttention
        Decoder(11, ALiBi(), n_layer=2, n_head=2, d_model=16)(ids)
    assert calls == [(True, True)] * 2  # on CPU: the causal flash kernel adds the unmasked bias


@pytest.mark.parametrize("encoding", [RoPE, ALiBi])
def test_chunked_prefill_with_a_cache_equals_one_forward(encoding):
    torch.manual_seed(0)
    model = Decoder(11, encoding(), n_layer=2, n_head=2, d_model=16).double().eval()
    ids = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        chunks = [model(ids[:, start : start + 5], cache=cache) for start in (0, 5, 10)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-10, atol=1e-10)
    assert cache.positions[0].tolist() == list(range(12))


class LengthScaledRoPE(RoPE):
    """RoPE whose scale grows with the longest position of the call (like dynamic NTK scaling)."""

    supports_kv_cache = False

    def _cos_sin(self, positions, dtype):
        scale = max(1.0, (int(positions.max()) + 1) / 8)
        frequencies = self.inverse_frequencies(dtype, positions.device) / scale
        angles = positions.to(dtype)[:, None, :, None] * frequencies  # (B, 1, T, r/2)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def test_an_encoding_that_cannot_be_cached_falls_back_to_uncached_generation():
    from lengen.model import KVCache
    from lengen.module import LengenModule
    from lengen.testing import _eval_batch

    torch.manual_seed(0)
    module = LengenModule(LengthScaledRoPE(), vocab_size=13, n_layer=2, d_model=32, metrics=[])
    module = module.double().eval()
    ids = torch.randint(0, 13, (2, 16))
    with torch.no_grad():
        with pytest.raises(ValueError, match="supports_kv_cache = False"):
            module.decoder.new_cache()
        # Why the flag exists: a cache built anyway holds keys rotated with a stale scale.
        cache = KVCache()
        module.decoder(ids[:, :8], cache=cache)
        stale = module.decoder(ids[:, 8:], cache=cache)
        assert (stale - module.decoder(ids)[:, 8:]).abs().max() > 1e-6  # float64 noise: 1e-15
    batch = _eval_batch([5, 9, 2], [6, 3, 8], seed=1)
    expected = module.greedy_generate(batch, use_cache=False)
    assert torch.equal(module.greedy_generate(batch), expected)
