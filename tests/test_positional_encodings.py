"""Tests of the first-party positional encodings against plain references written here."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from lengen.model import Decoder
from lengen.plugins import discover
from lengen.positional import ModelDims, PositionOutOfRange, build_bias
from lengen_plugins.positional_encodings.alibi import ALiBi, alibi_slope, alibi_slopes
from lengen_plugins.positional_encodings.learned import Learned
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.sinusoidal import Sinusoidal
from lengen_plugins.positional_encodings.t5_bias import T5Bias, relative_position_bucket

OURS = ("NoPE", "Learned", "Sinusoidal", "T5Bias", "ALiBi", "RoPE")
RELATIVE = ("NoPE", "RoPE", "ALiBi", "T5Bias")
ABSOLUTE = ("Learned", "Sinusoidal")
VOCAB, D_MODEL, N_HEAD, N_LAYER = 13, 32, 4, 2
HEAD_DIM = D_MODEL // N_HEAD
DIMS = ModelDims(d_model=D_MODEL, n_head=N_HEAD, head_dim=HEAD_DIM)


def _plugins() -> dict:
    return discover("lengen.positional_encodings")


NAMES = [name for name in _plugins() if name in OURS]


def make_encoding(name: str):
    """A fresh encoding with test-friendly arguments (a table long enough for shifted positions)."""
    cls = _plugins()[name].obj
    return cls(max_length=1100) if name == "Learned" else cls()


def make_decoder(name: str, dtype=torch.float32, attention: str = "sdpa", seed: int = 0):
    """A small decoder whose encoding parameters are large enough to matter in comparisons."""
    torch.manual_seed(seed)
    model = Decoder(
        VOCAB, make_encoding(name), n_layer=N_LAYER, n_head=N_HEAD, d_model=D_MODEL,
        attention=attention,
    )  # fmt: skip
    for parameter in model.pos_encoding.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    return model.to(dtype)


def random_batch(batch: int = 3, length: int = 24) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length))


def test_all_first_party_encodings_are_discovered():
    plugins = _plugins()
    for name in OURS:
        assert name in plugins, name
        assert plugins[name].error is None, plugins[name].error
        assert plugins[name].summary, f"{name} has no one-line summary"


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_dtype_and_finite_gradients(name):
    model = make_decoder(name)
    input_ids = random_batch()
    logits = model(input_ids)
    assert logits.shape == (*input_ids.shape, VOCAB)
    assert logits.dtype == torch.float32
    targets = torch.randint(0, VOCAB, input_ids.shape)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name


def _logits_with_offset(name: str, offset: int) -> torch.Tensor:
    model = make_decoder(name, dtype=torch.float64)
    torch.manual_seed(1)
    input_ids = random_batch()
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids) + offset
    with torch.no_grad():
        return model(input_ids, positions=positions)


@pytest.mark.parametrize("name", [name for name in NAMES if name in RELATIVE])
def test_relative_encodings_ignore_a_constant_shift_of_positions(name):
    torch.testing.assert_close(
        _logits_with_offset(name, 0), _logits_with_offset(name, 1000), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("name", [name for name in NAMES if name in ABSOLUTE])
def test_absolute_encodings_change_with_a_constant_shift_of_positions(name):
    difference = _logits_with_offset(name, 0) - _logits_with_offset(name, 1000)
    assert difference.abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_sdpa_matches_reference_attention_outputs_and_gradients(name):
    sdpa = make_decoder(name, attention="sdpa", seed=2)
    reference = make_decoder(name, attention="reference", seed=3)
    reference.load_state_dict(sdpa.state_dict())
    torch.manual_seed(4)
    input_ids = random_batch(length=40)
    positions = torch.randint(0, 60, (input_ids.shape[0], 1)) + torch.arange(input_ids.shape[1])
    targets = torch.randint(0, VOCAB, input_ids.shape)
    logits = {}
    for label, model in (("sdpa", sdpa), ("reference", reference)):
        logits[label] = model(input_ids, positions=positions)
        loss = torch.nn.functional.cross_entropy(logits[label].flatten(0, 1), targets.flatten())
        loss.backward()
    torch.testing.assert_close(logits["sdpa"], logits["reference"], rtol=1e-5, atol=1e-5)
    reference_parameters = dict(reference.named_parameters())
    for parameter_name, parameter in sdpa.named_parameters():
        torch.testing.assert_close(
            parameter.grad, reference_parameters[parameter_name].grad, rtol=1e-4, atol=1e-5
        )


# ALiBi -------------------------------------------------------------------------------------------


def test_alibi_slopes_are_the_papers():
    # n a power of two: 2^(-8/n), 2^(-16/n), ..., 2^(-8).
    assert alibi_slopes(8) == pytest.approx(
        [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8], rel=1e-12
    )
    assert alibi_slopes(16) == pytest.approx(
        [2**-0.5, 2**-1, 2**-1.5, 2**-2, 2**-2.5, 2**-3, 2**-3.5, 2**-4,
         2**-4.5, 2**-5, 2**-5.5, 2**-6, 2**-6.5, 2**-7, 2**-7.5, 2**-8],
        rel=1e-12,
    )  # fmt: skip
    # 12 heads: the 8 slopes of 8 heads, then slopes 0, 2, 4, 6 of the 16-head sequence.
    assert alibi_slopes(12) == pytest.approx(
        [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8,
         2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5],
        rel=1e-12,
    )  # fmt: skip


@pytest.mark.parametrize("n_head", range(1, 65))
def test_alibi_slope_from_the_head_index_is_the_papers_slope(n_head):
    """The elementwise slope (what ALiBi.score_bias uses) against the list, in float32 bits."""
    computed = alibi_slope(torch.arange(n_head), n_head)
    listed = torch.tensor(alibi_slopes(n_head), dtype=torch.float32)
    ulps = (computed.view(torch.int32) - listed.view(torch.int32)).abs()
    assert computed.dtype == torch.float32 and int(ulps.max()) <= 1, ulps


def test_alibi_bias_is_minus_slope_times_distance():
    encoding = ALiBi()
    encoding.bind(DIMS)
    positions = torch.randint(0, 500, (2, 7))
    bias = build_bias(encoding, N_HEAD, positions, positions)
    slopes = alibi_slopes(N_HEAD)
    for b in range(2):
        for h in range(N_HEAD):
            for i in range(7):
                for j in range(7):
                    distance = int(positions[b, i] - positions[b, j])
                    assert bias[b, h, i, j].item() == pytest.approx(-slopes[h] * distance)


def test_alibi_survives_a_bfloat16_cast():
    encoding = ALiBi()
    encoding.bind(ModelDims(d_model=48, n_head=6, head_dim=8))
    encoding.to(torch.bfloat16)
    head = torch.arange(6)
    bias = encoding.score_bias(head, torch.full((6,), 1000), torch.zeros(6, dtype=torch.long))
    assert bias.dtype == torch.float32
    expected = torch.tensor([-1000 * slope for slope in alibi_slopes(6)])
    torch.testing.assert_close(bias, expected)


# T5 ----------------------------------------------------------------------------------------------


def t5_bucket_reference(query_minus_key: int, num_buckets: int, max_distance: int) -> int:
    """Causal T5 bucketing (Mesh TensorFlow `_relative_position_bucket`, bidirectional=False)."""
    n = max(query_minus_key, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return n
    scaled = math.log(n / max_exact) / math.log(max_distance / max_exact)
    return min(max_exact + int(scaled * (num_buckets - max_exact)), num_buckets - 1)


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (2, 4)])
def test_t5_buckets_match_the_published_bucketing(num_buckets, max_distance):
    offsets = torch.arange(0, 301)  # q - k >= 0: keys in the past
    buckets = relative_position_bucket(-offsets, num_buckets, max_distance)
    expected = [t5_bucket_reference(n, num_buckets, max_distance) for n in range(301)]
    assert buckets.tolist() == expected
    assert (buckets[max_distance:] == num_buckets - 1).all()  # saturation
    future = relative_position_bucket(torch.arange(1, 50), num_buckets, max_distance)  # k > q
    assert (future == 0).all()


def test_t5_bias_reads_the_table_at_the_bucket_and_head():
    encoding = T5Bias(num_buckets=8, max_distance=20)
    encoding.bind(DIMS)
    torch.nn.init.normal_(encoding.table.weight)
    positions = torch.randint(0, 100, (2, 9))
    bias = build_bias(encoding, N_HEAD, positions, positions)
    table = encoding.table.weight.tolist()
    for b in range(2):
        for h in range(N_HEAD):
            for i in range(9):
                for j in range(9):
                    bucket = t5_bucket_reference(int(positions[b, i] - positions[b, j]), 8, 20)
                    assert bias[b, h, i, j].item() == pytest.approx(table[bucket][h])


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("name", ["T5Bias", "ALiBi"])
def test_score_bias_works_as_a_flex_attention_score_mod(name):
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention").flex_attention
    from lengen.attention import reference_attention

    encoding = make_encoding(name)
    encoding.bind(DIMS)
    for parameter in encoding.parameters():
        torch.nn.init.normal_(parameter)
    torch.manual_seed(5)
    query, key, value = (torch.randn(2, N_HEAD, 10, HEAD_DIM) for _ in range(3))
    positions = torch.arange(10).expand(2, 10)

    def causal_score_mod(score, batch, head, query_index, key_index):
        biased = score + encoding.score_bias(head, query_index, key_index)
        return torch.where(query_index >= key_index, biased, float("-inf"))

    output = flex_attention(query, key, value, score_mod=causal_score_mod)  # eager: unfused
    expected = reference_attention(
        query, key, value, build_bias(encoding, N_HEAD, positions, positions)
    )
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)


# RoPE --------------------------------------------------------------------------------------------


def rope_reference(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, base: float):
    """Rotate each pair (x_i, x_{i + r/2}), i < r/2, by p * base^(-2i/r) as a complex product."""
    out = x.double().clone()
    half = rotary_dim // 2
    batch, n_head, length, _ = x.shape
    for b in range(batch):
        for t in range(length):
            p = int(positions[b, t])
            for i in range(half):
                rotation = cmath.exp(1j * p * base ** (-2 * i / rotary_dim))
                for h in range(n_head):
                    z = complex(x[b, h, t, i], x[b, h, t, i + half]) * rotation
                    out[b, h, t, i], out[b, h, t, i + half] = z.real, z.imag
    return out


@pytest.mark.parametrize("rotary_dim", [None, 4])
def test_rope_matches_a_plain_float64_reference(rotary_dim):
    encoding = RoPE(base=500.0, rotary_dim=rotary_dim)
    encoding.bind(DIMS)
    torch.manual_seed(6)
    query = torch.randn(2, N_HEAD, 5, HEAD_DIM, dtype=torch.float64)
    key = torch.randn(2, N_HEAD, 7, HEAD_DIM, dtype=torch.float64)
    query_positions = torch.randint(0, 3000, (2, 5))
    key_positions = torch.randint(0, 3000, (2, 7))
    rotated_query, rotated_key = encoding.rotate(query, key, query_positions, key_positions)
    rotary = rotary_dim or HEAD_DIM
    expected_query = rope_reference(query, query_positions, rotary, 500.0)
    expected_key = rope_reference(key, key_positions, rotary, 500.0)
    torch.testing.assert_close(rotated_query, expected_query, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rotated_key, expected_key, rtol=1e-12, atol=1e-12)
    # Dims past rotary_dim are untouched.
    assert torch.equal(rotated_query[..., rotary:], query[..., rotary:])
    assert torch.equal(rotated_key[..., rotary:], key[..., rotary:])


def test_rope_keeps_the_dtype_and_computes_angles_in_float32():
    encoding = RoPE()
    encoding.bind(DIMS)
    torch.manual_seed(7)
    query = torch.randn(1, N_HEAD, 6, HEAD_DIM)
    positions = torch.tensor([[4001, 4003, 4005, 4007, 4009, 4011]])  # not exact in bfloat16
    expected = rope_reference(query, positions, HEAD_DIM, 10000.0)
    rotated, _ = encoding.rotate(query.bfloat16(), query.bfloat16(), positions, positions)
    assert rotated.dtype == torch.bfloat16
    torch.testing.assert_close(rotated.double(), expected, rtol=0.02, atol=0.02)
    rotated, _ = encoding.rotate(query, query, positions, positions)
    assert rotated.dtype == torch.float32
    torch.testing.assert_close(rotated.double(), expected, rtol=1e-3, atol=1e-3)


# Absolute encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize("d_model", [10, 7])
def test_sinusoidal_matches_the_formula(d_model):
    encoding = Sinusoidal(base=10000.0, scale=0.37)
    encoding.bind(ModelDims(d_model=d_model, n_head=1, head_dim=d_model))
    torch.manual_seed(8)
    embeddings = torch.randn(2, 6, d_model, dtype=torch.float64)
    positions = torch.randint(0, 5000, (2, 6))
    added = encoding.embed(embeddings, positions) - embeddings
    for b in range(2):
        for t in range(6):
            p = int(positions[b, t])
            for dim in range(d_model):
                angle = p / 10000.0 ** ((dim - dim % 2) / d_model)
                expected = 0.37 * (math.sin(angle) if dim % 2 == 0 else math.cos(angle))
                assert added[b, t, dim].item() == pytest.approx(expected, abs=1e-10)
    assert encoding.embed(embeddings.float(), positions).dtype == torch.float32


def test_learned_rejects_positions_past_its_table_in_one_line():
    encoding = Learned(max_length=16)
    encoding.bind(DIMS)
    encoding.check_positions(15)
    with pytest.raises(PositionOutOfRange) as error:
        encoding.check_positions(16)
    message = str(error.value)
    assert "\n" not in message
    assert "16" in message and "max_length" in message
    model = Decoder(VOCAB, Learned(max_length=16), n_layer=1, n_head=N_HEAD, d_model=D_MODEL)
    assert model(random_batch(length=16)).shape == (3, 16, VOCAB)
    with pytest.raises(PositionOutOfRange):
        model(random_batch(length=17))


def test_learned_adds_the_table_row_of_each_position():
    encoding = Learned(max_length=32)
    encoding.bind(DIMS)
    embeddings = torch.randn(2, 5, D_MODEL)
    positions = torch.randint(0, 32, (2, 5))
    expected = embeddings + encoding.table.weight[positions]
    torch.testing.assert_close(encoding.embed(embeddings, positions), expected)


# Bad arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RoPE(rotary_dim=3).bind(DIMS), "rotary_dim=3"),
        (lambda: RoPE(rotary_dim=2 * HEAD_DIM).bind(DIMS), "head_dim"),
        (lambda: RoPE(rotary_dim=0).bind(DIMS), "positive even"),
        (lambda: T5Bias(num_buckets=1), "num_buckets=1"),
        (lambda: T5Bias(num_buckets=32, max_distance=16), "max_distance=16"),
        (lambda: Learned(max_length=0), "max_length=0"),
        (lambda: Sinusoidal(base=1.0), "base"),
        (lambda: Sinusoidal(scale=0.0), "scale=0.0"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make()
    assert "\n" not in str(error.value)


def test_schedulable_values_stay_float32_and_are_set_by_name():
    from lengen.positional import PositionalEncoding, set_schedulable

    class Scaled(PositionalEncoding):
        schedulable = ("scale",)

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.tensor(1.37, dtype=torch.float32))

    encoding = Scaled().to(torch.bfloat16)
    assert encoding.scale.dtype == torch.float32 and float(encoding.scale) == pytest.approx(1.37)
    set_schedulable(encoding, "scale", 2.5)
    assert float(encoding.state_dict()["scale"]) == 2.5
    with pytest.raises(ValueError, match="no schedulable value 'alpha'; it has: scale"):
        set_schedulable(encoding, "alpha", 0.0)
