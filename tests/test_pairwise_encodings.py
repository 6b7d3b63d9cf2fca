"""Per-pair encodings and logit scales against the papers' equations, re-derived here.

Every expected score is computed from scratch in float64 from fresh random queries and keys: a
RoPE score from the complex form of the rotation (Re(q conj(k) e^{i d theta})), an ALiBi bias
from the paper's slopes, and each method's effective distance (and visibility) from its paper's
equations, written out pair by pair. The reference implementations merge several attention
passes (Self-Extend, DCA) or evict keys (StreamingLLM); these tests compare the per-pair scores
those passes amount to. Where the reference code differs from the paper, the docstrings of the
plugins say which one is followed.
"""

from __future__ import annotations

import math

import pytest
import torch

from lengen.attention import padding_bias, pairwise_attention, reference_attention
from lengen.model import Decoder
from lengen.plugins import discover
from lengen.positional import ModelDims, PositionalEncoding, build_bias
from lengen_plugins.positional_encodings.alibi import ALiBi
from lengen_plugins.positional_encodings.cope import CoPE
from lengen_plugins.positional_encodings.dual_chunk import DualChunkAttention
from lengen_plugins.positional_encodings.log_scaling import LogLengthScaling, ScalableSoftmax
from lengen_plugins.positional_encodings.rerope import LeakyReRoPE, ReRoPE
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.self_extend import SelfExtend
from lengen_plugins.positional_encodings.sinks import AttentionSinks, LMInfinite

N_HEAD, HEAD_DIM = 4, 8
DIMS = ModelDims(d_model=N_HEAD * HEAD_DIM, n_head=N_HEAD, head_dim=HEAD_DIM)
PAIRWISE = (
    "LogLengthScaling", "ScalableSoftmax", "AttentionSinks", "LMInfinite", "ReRoPE",
    "LeakyReRoPE", "SelfExtend", "DualChunkAttention",
)  # fmt: skip


def bound(encoding: PositionalEncoding) -> PositionalEncoding:
    encoding.bind(DIMS)
    return encoding


def random_qk(seed: int, batch: int, query_len: int, key_len: int):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, N_HEAD, query_len, HEAD_DIM, generator=generator).double()
    key = torch.randn(batch, N_HEAD, key_len, HEAD_DIM, generator=generator).double()
    return query, key


def rope_score(query, key, distance, base: float = 10000.0) -> torch.Tensor:
    """q.k / sqrt(hs) with q rotated d positions ahead of k (RoFormer, half-split pairs).

    query (B, nh, Tq, hs), key (B, nh, Tk, hs), distance (B, Tq, Tk) -> (B, nh, Tq, Tk): pair i
    of a head is the complex number x_i + 1j * x_{i + hs/2}, turned by angle d * base^(-2i/hs).
    """
    half = HEAD_DIM // 2
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / HEAD_DIM)  # (hs/2,)
    q = torch.complex(query[..., :half], query[..., half:])  # (B, nh, Tq, hs/2)
    k = torch.complex(key[..., :half], key[..., half:])  # (B, nh, Tk, hs/2)
    phase = torch.exp(1j * distance[:, None, :, :, None].double() * theta)  # (B, 1, Tq, Tk, hs/2)
    products = q[:, :, :, None, :] * k[:, :, None, :, :].conj() * phase
    return products.real.sum(-1) / math.sqrt(HEAD_DIM)


def alibi_bias(distance) -> torch.Tensor:
    """-m_h * d with the slopes of Press et al. for 4 heads: 2^(-2), 2^(-4), 2^(-6), 2^(-8)."""
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / N_HEAD) for h in range(N_HEAD)]).double()
    return -slopes[None, :, None, None] * distance[:, None].double()


def pairs(query_positions, key_positions):
    """(B, Tq), (B, Tk) -> q and p as (B, Tq, Tk) float64 grids."""
    q = query_positions[:, :, None].double().expand(-1, -1, key_positions.shape[1])
    p = key_positions[:, None, :].double().expand(-1, query_positions.shape[1], -1)
    return q, p


def positions_case(seed: int):
    """Queries the last 7 of 40 keys in row 0, all 40 in row 1, starting at 0 or at 13."""
    generator = torch.Generator().manual_seed(seed)
    key_positions = torch.arange(40).expand(2, 40) + torch.tensor([[0], [13]])
    query_len = int(torch.randint(5, 40, (1,), generator=generator))
    return key_positions[:, -query_len:], key_positions


def expected_scores(query, key, distance, visible, wrapped: str) -> torch.Tensor:
    scores = rope_score(query, key, distance) if wrapped == "rope" else None
    if wrapped == "alibi":
        scores = query @ key.transpose(-2, -1) / math.sqrt(HEAD_DIM) + alibi_bias(distance)
    return scores.masked_fill(~visible[:, None], float("-inf"))


def check(encoding, distance_fn, seed: int, wrapped: str = "rope"):
    """Compare `pairwise_scores` with the scores at distance_fn(q, p) -> (distance, visible)."""
    query_positions, key_positions = positions_case(seed)
    query, key = random_qk(seed, 2, query_positions.shape[1], key_positions.shape[1])
    got = bound(encoding).pairwise_scores(query, key, query_positions, key_positions)
    q, p = pairs(query_positions, key_positions)
    distance, visible = distance_fn(q, p)
    causal = p <= q
    expected = expected_scores(query, key, distance, visible, wrapped)
    tolerance = 1e-6 if wrapped == "alibi" else 1e-10  # ALiBi's bias is float32 by design
    torch.testing.assert_close(
        got.masked_fill(~causal[:, None], 0), expected.masked_fill(~causal[:, None], 0),
        rtol=tolerance, atol=tolerance,
    )  # fmt: skip


def everything(q):
    return torch.ones_like(q, dtype=torch.bool)


# --- the interface: identity default, one path ---


def test_existing_encodings_keep_the_per_token_path():
    """Every encoding that is not one of the per-pair plugins leaves `pairwise_scores` alone."""
    for name, plugin in discover("lengen.positional_encodings").items():
        if name in PAIRWISE or plugin.error is not None:
            continue
        for example in plugin.obj.examples():
            assert not example.has_pairwise_scores, name
    assert not PositionalEncoding().has_pairwise_scores


@pytest.mark.parametrize("encoding", [RoPE(), ALiBi()], ids=["RoPE", "ALiBi"])
def test_the_default_scores_through_the_pairwise_path_equal_the_reference_kernel(encoding):
    """pairwise_attention with the default hook = reference attention on the per-token hooks."""
    encoding = bound(encoding)
    query, key = random_qk(1, 2, 9, 12)
    value = torch.randn(2, N_HEAD, 12, HEAD_DIM, generator=torch.Generator().manual_seed(2))
    key_positions = torch.arange(12).expand(2, 12) + torch.tensor([[0], [5]])
    query_positions = key_positions[:, -9:]
    key_mask = torch.ones(2, 12, dtype=torch.bool)
    key_mask[1, :2] = False
    padding = padding_bias(key_mask, 9, torch.float64)
    got = pairwise_attention(
        encoding, query, key, value.double(), query_positions, key_positions, padding
    )
    rotated_query, rotated_key = encoding.rotate(query, key, query_positions, key_positions)
    bias = padding
    if encoding.has_score_bias:
        bias = build_bias(encoding, N_HEAD, query_positions, key_positions).double() + padding
    expected = reference_attention(rotated_query, rotated_key, value.double(), bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_rope_score_helper_matches_rotating_queries_and_keys():
    """The complex-form helper agrees with lengen's RoPE at plain positions (both from RoFormer)."""
    encoding = bound(RoPE())
    query_positions, key_positions = positions_case(3)
    query, key = random_qk(3, 2, query_positions.shape[1], key_positions.shape[1])
    q, p = pairs(query_positions, key_positions)
    got = encoding.pairwise_scores(query, key, query_positions, key_positions)
    torch.testing.assert_close(got, rope_score(query, key, q - p), rtol=1e-10, atol=1e-10)


# --- each method against its paper ---


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("wrapped", ["rope", "alibi"])
def test_rerope_clamps_distances_at_the_window(seed, wrapped):
    window = 6
    inner = ALiBi() if wrapped == "alibi" else RoPE()
    check(ReRoPE(inner, window=window), lambda q, p: ((q - p).clamp(max=window), everything(q)),
          seed, wrapped)  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("wrapped", ["rope", "alibi"])
def test_leaky_rerope_compresses_distances_beyond_the_window(seed, wrapped):
    window, k = 5, 3.0
    inner = ALiBi() if wrapped == "alibi" else RoPE()

    def distance(q, p):
        d = q - p
        return torch.where(d < window, d, window + (d - window) / k), everything(q)

    check(LeakyReRoPE(inner, window=window, scale=k), distance, seed, wrapped)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("wrapped", ["rope", "alibi"])
def test_self_extend_groups_positions_beyond_the_neighbour_window(seed, wrapped):
    group, window = 3, 6  # window a multiple of the group, as in the paper
    inner = ALiBi() if wrapped == "alibi" else RoPE()

    def distance(q, p):
        d = q - p
        grouped = (torch.floor(q / group) + window - window / group) - torch.floor(p / group)
        return torch.where(d < window, d, grouped), everything(q)

    check(SelfExtend(inner, group_size=group, window=window), distance, seed, wrapped)


def test_self_extend_regions_meet_at_the_window():
    """At d = W the grouped distance is exactly W when G divides W (what the shift is for)."""
    group, window = 4, 8
    q = torch.arange(20, 200).double()
    grouped = torch.floor(q / group) + window - window / group - torch.floor((q - window) / group)
    assert torch.equal(grouped, torch.full_like(q, float(window)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("wrapped", ["rope", "alibi"])
@pytest.mark.parametrize("size, window", [(7, 2), (3, 4)])
def test_dual_chunk_attention_uses_positions_within_chunks(seed, wrapped, size, window):
    inner = ALiBi() if wrapped == "alibi" else RoPE()

    def distance(q, p):
        q_in, p_in = q - torch.floor(q / size) * size, p - torch.floor(p / size) * size
        apart = torch.floor(q / size) - torch.floor(p / size)
        intra = q_in - p_in
        successive = torch.minimum(q_in + size, torch.full_like(q, size + window)) - p_in
        inter = min(2 * size - 1, size + window) - p_in
        d = torch.where(apart == 0, intra, torch.where(apart == 1, successive, inter))
        return d, everything(q)

    check(DualChunkAttention(inner, chunk_size=size, local_window=window), distance, seed, wrapped)


def test_dual_chunk_attention_defaults_follow_the_reference():
    """replace_with_chunkllama(L): chunk_size + local_window = 3L/4 and local_window = L/16."""
    encoding = DualChunkAttention(training_length=4096)
    assert encoding.local_window == 256 and encoding.chunk_size + 256 == 3072


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("wrapped", ["rope", "alibi"])
def test_attention_sinks_keep_sinks_and_a_window_at_cache_positions(seed, wrapped):
    sinks, window = 3, 6
    inner = ALiBi() if wrapped == "alibi" else RoPE()

    def distance(q, p):
        # The cache of a query at q: keys 0..S-1 and q-R+1..q; positions are cache indices.
        in_window = (q - p) < window
        visible = in_window | (p < sinks)
        cache_size = torch.minimum(q + 1, torch.full_like(q, sinks + window))
        query_index = cache_size - 1
        key_index = torch.where(in_window, query_index - (q - p), p)
        return query_index - key_index, visible

    check(AttentionSinks(inner, sink_tokens=sinks, window=window), distance, seed, wrapped)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("wrapped", ["rope", "alibi"])
@pytest.mark.parametrize("limit", [None, 4])
def test_lm_infinite_lambda_mask_and_distance_ceiling(seed, wrapped, limit):
    local, global_tokens = 7, 2
    inner = ALiBi() if wrapped == "alibi" else RoPE()
    ceiling = local if limit is None else limit

    def distance(q, p):
        visible = (p < global_tokens) | ((q - p) < local)
        return (q - p).clamp(max=ceiling), visible

    encoding = LMInfinite(inner, local_window=local, global_tokens=global_tokens,
                          distance_limit=limit)  # fmt: skip
    check(encoding, distance, seed, wrapped)


# --- logit scales ---


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "training_length, floor", [(None, False), (16, False), (16, True)], ids=["ln", "logL", "clip"]
)
def test_log_length_scaling_multiplies_logits_by_log_n(seed, training_length, floor):
    query_positions, key_positions = positions_case(seed)
    query, key = random_qk(seed, 2, query_positions.shape[1], key_positions.shape[1])
    encoding = bound(LogLengthScaling(RoPE(), training_length=training_length, floor_at_one=floor))
    got = encoding.pairwise_scores(query, key, query_positions, key_positions)
    q, p = pairs(query_positions, key_positions)
    factor = torch.log(q + 1)  # n = q + 1 keys seen (Chiang & Cholak: logits times log n)
    if training_length is not None:
        factor = factor / math.log(training_length)
    if floor:
        factor = factor.clamp(min=1)
    expected = factor[:, None] * rope_score(query, key, q - p)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_log_length_scaling_over_alibi_scales_the_bias_too():
    query_positions, key_positions = positions_case(4)
    query, key = random_qk(4, 2, query_positions.shape[1], key_positions.shape[1])
    got = bound(LogLengthScaling(ALiBi())).pairwise_scores(
        query, key, query_positions, key_positions
    )
    q, p = pairs(query_positions, key_positions)
    plain = query @ key.transpose(-2, -1) / math.sqrt(HEAD_DIM) + alibi_bias(q - p)
    torch.testing.assert_close(got, torch.log(q + 1)[:, None] * plain, rtol=1e-6, atol=1e-6)


def test_log_length_scaling_composes_with_self_extend():
    """Scale over a per-pair encoding: log n times Self-Extend's scores; hidden pairs stay -inf."""
    query_positions, key_positions = positions_case(5)
    query, key = random_qk(5, 2, query_positions.shape[1], key_positions.shape[1])
    q, p = pairs(query_positions, key_positions)
    inner = SelfExtend(group_size=2, window=4)
    encoding = bound(LogLengthScaling(inner, training_length=8))
    got = encoding.pairwise_scores(query, key, query_positions, key_positions)
    expected = inner.pairwise_scores(query, key, query_positions, key_positions)
    expected = expected * (torch.log(q + 1) / math.log(8))[:, None]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    sinks = bound(LogLengthScaling(AttentionSinks(sink_tokens=1, window=3)))
    scores = sinks.pairwise_scores(query, key, query_positions, key_positions)
    hidden = (p >= 1) & (q - p >= 3)
    assert torch.isneginf(scores[hidden[:, None].expand_as(scores)]).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_scalable_softmax_is_softmax_of_s_log_n_times_the_logits(seed):
    query_positions, key_positions = positions_case(seed)
    query, key = random_qk(seed, 2, query_positions.shape[1], key_positions.shape[1])
    encoding = bound(ScalableSoftmax(RoPE())).double()  # s in float64, as in a float64 model
    s = torch.rand(N_HEAD, generator=torch.Generator().manual_seed(seed + 10)).double() + 0.2
    with torch.no_grad():
        encoding.s.copy_(s)
    got = encoding.pairwise_scores(query, key, query_positions, key_positions)
    q, p = pairs(query_positions, key_positions)
    z = rope_score(query, key, q - p)  # (B, nh, Tq, Tk)
    # SSMax: n^(s z_i) / sum_j n^(s z_j): compare the normalised weights over the visible keys.
    n = (q + 1)[:, None]  # (B, 1, Tq, Tk)
    powers = (n ** (s[None, :, None, None] * z)).masked_fill(~(p <= q)[:, None], 0)
    expected = powers / powers.sum(-1, keepdim=True)
    weights = torch.softmax(got.masked_fill(~(p <= q)[:, None], float("-inf")), dim=-1)
    torch.testing.assert_close(weights, expected, rtol=1e-10, atol=1e-12)


def test_scalable_softmax_default_s_leaves_the_training_length_unscaled():
    encoding = bound(ScalableSoftmax(training_length=64))
    assert torch.allclose(encoding.s * math.log(64), torch.ones(N_HEAD))


# --- the decoder, bad input ---


def test_a_pairwise_encoding_changes_the_decoder_only_past_its_window():
    """ReRoPE with a window longer than the input is plain RoPE; a short window changes logits."""
    ids = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(7))
    logits = {}
    for label, encoding in (("rope", RoPE()), ("wide", ReRoPE(window=64)),
                            ("narrow", ReRoPE(window=3))):  # fmt: skip
        torch.manual_seed(0)
        model = Decoder(11, encoding, n_layer=2, n_head=N_HEAD, d_model=N_HEAD * HEAD_DIM)
        with torch.no_grad():
            logits[label] = model.double().eval()(ids)
    torch.testing.assert_close(logits["wide"], logits["rope"], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(logits["narrow"], logits["rope"], atol=1e-4)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: SelfExtend(group_size=0), "SelfExtend: group_size=0"),
        (lambda: ReRoPE(window=-1), "ReRoPE: window=-1"),
        (lambda: LeakyReRoPE(scale=1.0), "LeakyReRoPE: scale=1.0"),
        (lambda: DualChunkAttention(chunk_size=0), "DualChunkAttention: chunk_size=0"),
        (lambda: AttentionSinks(window=0), "AttentionSinks: window=0"),
        (lambda: LMInfinite(global_tokens=0), "LMInfinite: global_tokens=0"),
        (lambda: LogLengthScaling(training_length=1), "LogLengthScaling: training_length=1"),
        (lambda: SelfExtend(CoPE()), "SelfExtend: cannot wrap CoPE"),
        (lambda: ReRoPE("RoPE"), "ReRoPE: encoding must be a PositionalEncoding"),
    ],
)
def test_bad_arguments_are_one_clear_line(build, match):
    with pytest.raises(ValueError, match=match) as error:
        build()
    assert "\n" not in str(error.value)


# --- attention as the references compute it: evicted caches, per-chunk passes merged ---


def rope_rotate(x: torch.Tensor, position: float, base: float = 10000.0) -> torch.Tensor:
    """(hs,) vector rotated to `position` (RoFormer, half-split pairs), via complex numbers."""
    half = HEAD_DIM // 2
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / HEAD_DIM)
    z = torch.complex(x[:half], x[half:]) * torch.exp(1j * position * theta)
    return torch.cat((z.real, z.imag))


def attend(query_vector, keys, values, query_position, key_positions):
    """One query over a list of keys at given positions -> (output (hs,), logsumexp)."""
    q = rope_rotate(query_vector, query_position)
    scores = torch.stack([q @ rope_rotate(k, p) for k, p in zip(keys, key_positions)]) / math.sqrt(
        HEAD_DIM
    )
    weights = torch.softmax(scores, dim=0)
    return weights @ torch.stack(values), torch.logsumexp(scores, dim=0)


def random_qkv(seed: int, length: int):
    generator = torch.Generator().manual_seed(seed)
    shape = (1, N_HEAD, length, HEAD_DIM)
    return [torch.randn(shape, generator=generator).double() for _ in range(3)]


def test_attention_sinks_equal_decoding_with_an_evicted_cache():
    """StreamingLLM decodes token by token with a cache of S sinks and the R latest tokens,
    every key at its index in the cache and the query last (kv_cache.py, pos_shift)."""
    sinks, window, length = 2, 5, 19
    query, key, value = random_qkv(11, length)
    positions = torch.arange(length)[None]
    got = pairwise_attention(
        bound(AttentionSinks(sink_tokens=sinks, window=window)),
        query, key, value, positions, positions,
    )  # fmt: skip
    for h in range(N_HEAD):
        for t in range(length):
            cache = [p for p in range(t + 1) if p < sinks or t - p < window]  # evicted the rest
            output, _ = attend(
                query[0, h, t], [key[0, h, p] for p in cache], [value[0, h, p] for p in cache],
                len(cache) - 1, list(range(len(cache))),
            )  # fmt: skip
            torch.testing.assert_close(got[0, h, t], output, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_len, local_window", [(5, 2), (3, 4)])
def test_dual_chunk_attention_equals_the_reference_merge_of_three_passes(chunk_len, local_window):
    """ChunkLlama: per query chunk, an intra, a successive and an inter attention pass, each with
    its own query positions, merged with weights exp(lse_pass) / sum exp(lse) (its
    merge_attn_outputs)."""
    length = 23
    chunk_size = chunk_len + local_window  # the reference's chunk_size: the largest position
    query, key, value = random_qkv(12, length)
    positions = torch.arange(length)[None]
    encoding = bound(DualChunkAttention(chunk_size=chunk_len, local_window=local_window))
    got = pairwise_attention(encoding, query, key, value, positions, positions)
    q_t = list(range(chunk_len))  # intra query positions
    qc_t = [min(t + chunk_len, chunk_size) for t in q_t]  # successive / inter query positions
    for h in range(N_HEAD):
        for t in range(length):
            chunk, within = divmod(t, chunk_len)
            passes = [  # (keys, query position)
                (range(chunk * chunk_len, t + 1), q_t[within]),
                (range((chunk - 1) * chunk_len, chunk * chunk_len), qc_t[within]),
                (range(0, (chunk - 1) * chunk_len), qc_t[chunk_len - 1]),
            ]
            outputs, lses = [], []
            for keys, query_position in passes:
                keys = [p for p in keys if p >= 0]
                if not keys:
                    continue
                output, lse = attend(
                    query[0, h, t], [key[0, h, p] for p in keys], [value[0, h, p] for p in keys],
                    query_position, [p % chunk_len for p in keys],
                )  # fmt: skip
                outputs.append(output)
                lses.append(lse)
            weights = torch.softmax(torch.stack(lses), dim=0)
            expected = (weights[:, None] * torch.stack(outputs)).sum(0)
            torch.testing.assert_close(got[0, h, t], expected, rtol=1e-10, atol=1e-10)


def test_scalable_softmax_learns_its_scale_through_the_decoder():
    torch.manual_seed(0)
    model = Decoder(11, ScalableSoftmax(), n_layer=1, n_head=N_HEAD, d_model=N_HEAD * HEAD_DIM)
    ids = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(8))
    loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    gradient = model.pos_encoding.s.grad
    assert gradient is not None and gradient.shape == (N_HEAD,) and (gradient != 0).all()


def test_randomized_positions_forward_a_wrapped_pairwise_encoding():
    """RandomizedPositions(SelfExtend(...)) keeps Self-Extend's scores (ordered in evaluation)."""
    from lengen_plugins.positional_encodings.randomized import RandomizedPositions

    inner = SelfExtend(group_size=2, window=4)
    outer = bound(RandomizedPositions(inner, eval_positions="ordered")).eval()
    assert outer.has_pairwise_scores and not outer.has_score_bias
    query_positions, key_positions = positions_case(6)
    query, key = random_qk(6, 2, query_positions.shape[1], key_positions.shape[1])
    torch.testing.assert_close(
        outer.pairwise_scores(query, key, query_positions, key_positions),
        inner.pairwise_scores(query, key, query_positions, key_positions),
    )
