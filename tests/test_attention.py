"""Backend selection, the fused causal path, and chunked cached decoding."""

from __future__ import annotations

import pytest
import torch

from lengen.attention import sdpa_attention, select_backend
from lengen.model import Decoder
from lengen_plugins.positional_encodings.alibi import ALiBi
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.t5_bias import T5Bias


def test_auto_picks_flex_only_for_bias_encodings_on_cuda():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert select_backend("auto", True, cuda) == "flex"
    assert select_backend("auto", False, cuda) == "sdpa"
    assert select_backend("auto", True, cpu) == "sdpa"
    assert select_backend("reference", True, cuda) == "reference"
    model = Decoder(11, ALiBi(), n_layer=1, n_head=2, d_model=16)
    model(torch.randint(0, 11, (2, 5)))
    assert model.backend == "sdpa" and model.attention is sdpa_attention  # CPU
    with_dropout = Decoder(11, ALiBi(), n_layer=1, n_head=2, d_model=16, dropout=0.1)
    with_dropout(torch.randint(0, 11, (2, 5)))
    assert with_dropout.backend == "sdpa"  # flex takes no dropout, so auto never picks it


def test_bad_attention_choices_are_one_line_errors():
    with pytest.raises(ValueError, match="auto, sdpa, flex, reference"):
        Decoder(11, RoPE(), n_layer=1, n_head=2, d_model=16, attention="fast")
    with pytest.raises(ValueError, match="dropout"):
        Decoder(11, T5Bias(), n_layer=1, n_head=2, d_model=16, attention="flex", dropout=0.1)


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
