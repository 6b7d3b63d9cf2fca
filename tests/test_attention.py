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
    Decoder(11, ALiBi(), n_layer=2, n_head=2, d_model=16)(ids)
    assert calls == [(False, True)] * 2


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
