"""The CPU fast paths of biased causal attention against float64 formulas and the plain path.

- a bias without gradient (ALiBi, padding): one causal SDPA call with the unmasked bias;
- a bias with gradient (T5, Kerple, FIRE, CoPE): `BiasedCausalAttention` (flash forward and
  backward, the bias gradient recomputed in blocks of query rows);
- without torch's private CPU flash ops: the plain masked SDPA call.
Each is checked, forward and gradients, against softmax(q k^T / sqrt(hs) + bias + causal) v
written out here in float64, on fresh random inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from lengen import attention
from lengen.attention import sdpa_attention
from lengen.model import Decoder

TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}


def float64_attention(query, key, value, bias):
    """softmax(q k^T / sqrt(hs) + bias, future keys removed) v in float64, (B, nh, T, hs)."""
    length = query.shape[-2]
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1]) + bias  # (B, nh, T, T)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ value


def random_case(generator, batch, n_head, length, bias_batch, bias_heads, dtype, padded):
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    query, key, value = (randn(batch, n_head, length, 8) for _ in range(3))
    bias = 2 * randn(bias_batch, bias_heads, length, length)
    if padded:  # -inf on the first keys of row 0, as the decoder's padding bias (own key kept)
        keys = torch.arange(length)
        hidden = (keys[None, :] < 3) & (keys[None, :] != keys[:, None])  # (T, T)
        bias = bias.expand(batch, bias_heads, length, length).clone()
        bias[0, :, hidden] = float("-inf")
    return query, key, value, bias


CASES = [  # batch, n_head, length, bias batch, bias heads, padded
    (1, 4, 23, 1, 4, False),
    (3, 2, 40, 1, 2, False),
    (2, 3, 17, 2, 3, True),
    (2, 4, 19, 2, 1, False),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("needs_grad", [False, True])
@pytest.mark.parametrize("flash_ops", [True, False])
def test_biased_causal_attention_against_float64(case, dtype, needs_grad, flash_ops, monkeypatch):
    monkeypatch.setattr(attention, "BIAS_GRAD_CHUNK", 7)  # several blocks, a ragged last one
    if not flash_ops:
        monkeypatch.setattr(attention, "_cpu_flash_ops", lambda: None)
    generator = torch.Generator().manual_seed(hash((case, str(dtype), needs_grad)) % 2**31)
    inputs = random_case(generator, *case[:5], dtype=dtype, padded=case[5])
    inputs = [tensor.requires_grad_() for tensor in inputs[:3]] + [
        inputs[3].requires_grad_(needs_grad)
    ]
    out = sdpa_attention(*inputs)
    grad_out = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(dtype)
    wanted = [tensor for tensor in inputs if tensor.requires_grad]
    grads = torch.autograd.grad(out, wanted, grad_out)

    exact = [tensor.detach().double().requires_grad_(tensor.requires_grad) for tensor in inputs]
    expected = float64_attention(*exact)
    expected_grads = torch.autograd.grad(
        expected, [t for t in exact if t.requires_grad], grad_out.double()
    )
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tolerance, atol=tolerance)
    assert len(grads) == (4 if needs_grad else 3)
    for grad, expected_grad, name in zip(grads, expected_grads, ("q", "k", "v", "bias")):
        torch.testing.assert_close(
            grad.double(), expected_grad, rtol=tolerance, atol=tolerance, msg=name
        )


def test_learned_bias_takes_the_flash_function(monkeypatch):
    """The fast path is the one taken (not the math fallback), and the fallback without the ops."""
    calls = []
    original = attention.BiasedCausalAttention.apply
    monkeypatch.setattr(
        attention.BiasedCausalAttention, "apply", lambda *a: (calls.append(1), original(*a))[1]
    )
    query = torch.randn(1, 2, 9, 8, requires_grad=True)
    bias = torch.randn(1, 2, 9, 9, requires_grad=True)
    sdpa_attention(query, query, query, bias).sum().backward()
    assert calls == [1]
    with torch.no_grad():  # no gradient wanted: the plain causal call
        sdpa_attention(query, query, query, bias)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # flash switched off: the plain masked call
        expected = sdpa_attention(query, query, query, bias)
        with torch.no_grad():
            torch.testing.assert_close(sdpa_attention(query, query, query, bias), expected)
    monkeypatch.setattr(attention, "_cpu_flash_ops", lambda: None)
    torch.testing.assert_close(sdpa_attention(query, query, query, bias), expected)
    assert calls == [1]


@pytest.mark.parametrize("length", [1, 2, 9, 31])
def test_distance_bias_against_indexing(length):
    """bias[h, i, j] = table[h, max(i - j, 0)] by plain indexing in float64, value and gradient."""
    generator = torch.Generator().manual_seed(length)
    table = torch.randn(3, length, generator=generator, dtype=torch.float64, requires_grad=True)
    index = torch.arange(length)
    expected = table[:, (index[:, None] - index[None, :]).clamp(min=0)][None]  # (1, nh, T, T)
    bias = attention.distance_bias(table)
    assert torch.equal(bias, expected)
    grad = torch.randn(2, 3, length, length, generator=generator, dtype=torch.float64)
    (got,) = torch.autograd.grad(bias.expand(2, 3, length, length), table, grad)
    (want,) = torch.autograd.grad(expected.expand(2, 3, length, length), table, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


ENCODINGS = ["T5Bias", "KerpleLog", "FIRE", "ALiBi"]


@pytest.mark.parametrize("name", ENCODINGS)
def test_decoder_training_gradients_equal_the_plain_path(name, monkeypatch):
    """A float64 decoder on the fast paths (distance table, flash kernels) against the plain path
    (bias by `build_bias`, reference attention), with shared, offset and padded positions."""
    from lengen_plugins.positional_encodings import alibi, fire, kerple, t5_bias

    encodings = {
        "T5Bias": lambda: t5_bias.T5Bias(num_buckets=8, max_distance=16),
        "KerpleLog": kerple.KerpleLog,
        "FIRE": lambda: fire.FIRE(init_threshold=8.0),
        "ALiBi": alibi.ALiBi,
    }
    generator = torch.Generator().manual_seed(len(name))
    ids = torch.randint(0, 30, (2, 37), generator=generator)
    mask = torch.ones(2, 37, dtype=torch.long)
    mask[1, :4] = 0
    offsets = torch.arange(37) + torch.tensor([[0], [5]])  # (2, 37) rows at other offsets
    results = {}
    for path in ("fast", "plain"):
        torch.manual_seed(3)
        backend = "sdpa" if path == "fast" else "reference"
        decoder = Decoder(30, encodings[name](), n_layer=2, n_head=4, d_model=32, attention=backend)
        decoder.double()
        if path == "plain":
            monkeypatch.setattr(decoder, "_by_distance", lambda *positions: False)
        outputs = []
        for positions, attention_mask in ((None, None), (offsets, None), (None, mask)):
            logits = decoder(ids, positions, attention_mask)  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()
            )
            loss.backward()
            outputs.append(logits.detach())
        grads = {n: p.grad for n, p in decoder.named_parameters()}
        results[path] = outputs, grads
    for got, want in zip(results["fast"][0], results["plain"][0]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for key, grad in results["plain"][1].items():
        torch.testing.assert_close(results["fast"][1][key], grad, rtol=1e-9, atol=1e-11, msg=key)


def test_distance_table_is_taken_for_relative_encodings(monkeypatch):
    from lengen_plugins.positional_encodings import fire, t5_bias

    calls = []
    original = attention.DistanceBias.apply
    monkeypatch.setattr(
        attention.DistanceBias, "apply", lambda *a: (calls.append(1), original(*a))[1]
    )
    ids = torch.zeros(2, 12, dtype=torch.long)
    Decoder(30, t5_bias.T5Bias(), n_layer=1, n_head=2, d_model=16)(ids)
    assert calls == [1]
    Decoder(30, fire.FIRE(), n_layer=1, n_head=2, d_model=16)(ids)  # not relative
    assert calls == [1]
    positions = torch.tensor([[0, 1, 2, 4] * 3])  # a gap: not consecutive
    Decoder(30, t5_bias.T5Bias(), n_layer=1, n_head=2, d_model=16)(ids[:1], positions)
    assert calls == [1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steep_distance_bias_and_the_denormal_state(dtype):
    """An ALiBi-like bias (-8 per position: most probabilities far below float32's smallest
    normal number) against float64, and the thread's denormal mode is left as it was."""

    def flushed() -> bool:
        return float(torch.full((1,), 1e-39) * 2.0) == 0.0

    assert not flushed()
    generator = torch.Generator().manual_seed(5)
    query, key, value = (
        torch.randn(2, 2, 33, 8, generator=generator, dtype=dtype).requires_grad_()
        for _ in range(3)
    )
    index = torch.arange(33)
    bias = -8.0 * (index[:, None] - index[None, :]).clamp(min=0).to(dtype)[None, None]
    out = sdpa_attention(query, key, value, bias)
    grads = torch.autograd.grad(out, (query, key, value), torch.ones_like(out))
    assert not flushed()
    exact = [t.detach().double().requires_grad_() for t in (query, key, value)]
    expected = float64_attention(*exact, bias.double())
    expected_grads = torch.autograd.grad(expected, exact, torch.ones_like(expected))
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tolerance, atol=tolerance)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad.double(), expected_grad, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1, 4, 23), (3, 2, 40), (2, 3, 7), (2, 2, 1)])
@pytest.mark.parametrize("variant", ["table", "padded", "no flash ops"])
def test_distance_table_gradient_against_float64(shape, dtype, variant, monkeypatch):
    """A bias from `distance_bias`: the table's gradient reduced inside the attention backward
    (no (nh, T, T) gradient), against indexing the table and softmax attention in float64.
    With padding added (a new tensor) or without the private ops, the general path runs."""
    monkeypatch.setattr(attention, "BIAS_GRAD_CHUNK", 7)  # several blocks, a ragged last one
    if variant == "no flash ops":
        monkeypatch.setattr(attention, "_cpu_flash_ops", lambda: None)
    by_distance = []
    original = attention.causal_bias_grad
    monkeypatch.setattr(
        attention,
        "causal_bias_grad",
        lambda *a, **k: (by_distance.append(k.get("by_distance", False)), original(*a, **k))[1],
    )
    batch, n_head, length = shape
    generator = torch.Generator().manual_seed(hash((shape, str(dtype), variant)) % 2**31)

    def randn(*size):
        return torch.randn(*size, generator=generator, dtype=torch.float64).to(dtype)

    query, key, value = (randn(batch, n_head, length, 8).requires_grad_() for _ in range(3))
    table = (2 * randn(n_head, length)).requires_grad_()
    bias = attention.distance_bias(table)  # (1, nh, T, T)
    padding = torch.zeros(batch, 1, length, length, dtype=dtype)
    if variant == "padded":  # the first keys of row 0 hidden (own key kept)
        keys = torch.arange(length)
        padding[0, :, (keys[None, :] < 3) & (keys[None, :] != keys[:, None])] = float("-inf")
        bias = bias + padding
    out = sdpa_attention(query, key, value, bias)
    grad_out = randn(*out.shape)
    grads = torch.autograd.grad(out, (query, key, value, table), grad_out)
    if variant == "table":
        assert by_distance == [True]
    else:
        assert True not in by_distance

    exact = [t.detach().double().requires_grad_() for t in (query, key, value, table)]
    index = torch.arange(length)
    exact_bias = exact[3][:, (index[:, None] - index[None, :]).clamp(min=0)] + padding.double()
    expected = float64_attention(*exact[:3], exact_bias)
    expected_grads = torch.autograd.grad(expected, exact, grad_out.double())
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tolerance, atol=tolerance)
    for grad, expected_grad, name in zip(grads, expected_grads, ("q", "k", "v", "table")):
        assert grad.dtype == dtype, name
        torch.testing.assert_close(
            grad.double(), expected_grad, rtol=tolerance, atol=tolerance, msg=name
        )


def test_distance_table_needs_a_table_per_head():
    """A one-head table broadcast over the heads, and a table without gradient (ALiBi), keep
    the general path; `_distance_table` reads the mark only off the very tensor."""
    query = torch.randn(1, 3, 9, 8)
    shared = attention.distance_bias(torch.randn(1, 9, requires_grad=True))
    assert attention._distance_table(shared, query) is None
    fixed = attention.distance_bias(torch.randn(3, 9))
    assert attention._distance_table(fixed, query) is None
    table = torch.randn(3, 9, requires_grad=True)
    bias = attention.distance_bias(table)
    assert attention._distance_table(bias, query) is table
    assert attention._distance_table(bias * 1.0, query) is None
    assert attention._distance_table(bias, query[:, :, :5]) is None


# torch's own modules imported by the first compile of a process call torch.jit.script_method
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_distance_bias_under_compile():
    """`distance_bias` and `sdpa_attention` trace with fullgraph (no mark read or set there: the
    general path), with the eager gradients."""
    generator = torch.Generator().manual_seed(11)
    query, key, value = (
        torch.randn(1, 2, 8, 4, generator=generator, requires_grad=True) for _ in range(3)
    )
    table = torch.randn(2, 8, generator=generator, requires_grad=True)

    def run(query, key, value, table):
        return sdpa_attention(query, key, value, attention.distance_bias(table))

    compiled = torch.compile(run, fullgraph=True)
    inputs = (query, key, value, table)
    got = torch.autograd.grad(compiled(*inputs).sum(), inputs)
    want = torch.autograd.grad(run(*inputs).sum(), inputs)
    for grad, expected in zip(got, want):
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
