"""The encoding catalogue: FIRE, Kerple, CoPE, randomized positions and every RoPE variant.

Bias encodings are checked against plain loops in float64; every encoding trains a few steps.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lengen.attention import reference_attention
from lengen.data.tasks import TrainingStream
from lengen.model import Decoder
from lengen.module import LengenModule
from lengen.plugins import discover
from lengen.positional import ModelDims, PositionalEncoding, PositionOutOfRange, build_bias
from lengen_plugins.positional_encodings.alibi import ALiBi
from lengen_plugins.positional_encodings.cope import CoPE
from lengen_plugins.positional_encodings.fire import FIRE
from lengen_plugins.positional_encodings.kerple import KerpleLog, KerplePower
from lengen_plugins.positional_encodings.randomized import (
    GiraffeRandomizedPositions,
    RandomizedPositions,
)
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.xpos import XPos
from lengen_plugins.tasks.copy import Copy

VOCAB, D_MODEL, N_HEAD = 13, 32, 4
HEAD_DIM = D_MODEL // N_HEAD
DIMS = ModelDims(d_model=D_MODEL, n_head=N_HEAD, head_dim=HEAD_DIM)

# Each new encoding with arguments that make it act at toy lengths (original lengths of 16, ...).
CATALOGUE = {
    "RoPELinear": lambda cls: cls(scale=4.0),
    "RoPENTK": lambda cls: cls(scale=4.0),
    "RoPEDynamicNTK": lambda cls: cls(original_max_length=16, scale=2.0),
    "YaRN": lambda cls: cls(scale=4.0, original_max_length=16),
    "RoPELlama3": lambda cls: cls(scale=4.0, original_max_length=32),
    "RoPEPower": lambda cls: cls(power=0.5),
    "RoPETruncated": lambda cls: cls(b=0.05, a=0.005, rho=0.002),
    "RoPEPartial": lambda cls: cls(fraction=0.5),
    # Ordered evaluation: the checks below compare deterministic evaluation outputs.
    "RandomizedPositions": lambda cls: cls(RoPE(), max_position=256, eval_positions="ordered"),
    "GiraffeRandomizedPositions": lambda cls: cls(ALiBi()),
    "FIRE": lambda cls: cls(init_threshold=16.0),
    "KerpleLog": lambda cls: cls(),
    "KerplePower": lambda cls: cls(),
    "CoPE": lambda cls: cls(npos_max=16),
}
NAMES = list(CATALOGUE)


def make_encoding(name: str):
    plugin = discover("lengen.positional_encodings")[name]
    return CATALOGUE[name](plugin.obj)


def make_decoder(name: str, dtype=torch.float32, attention: str = "sdpa", seed: int = 0):
    torch.manual_seed(seed)
    model = Decoder(
        VOCAB, make_encoding(name), n_layer=2, n_head=N_HEAD, d_model=D_MODEL, attention=attention
    )
    for parameter in model.pos_encoding.parameters():  # large enough to matter (CoPE starts at 0)
        torch.nn.init.uniform_(parameter, 0.2, 1.0)
    return model.to(dtype)


def test_every_catalogue_encoding_is_discovered_with_a_summary():
    plugins = discover("lengen.positional_encodings")
    for name in NAMES:
        assert plugins[name].error is None, plugins[name].error
        assert plugins[name].summary
    assert len([name for name, plugin in plugins.items() if plugin.error is None]) >= 20


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_finite_and_every_parameter_gets_a_gradient(name):
    model = make_decoder(name).train()
    torch.manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (3, 24))
    logits = model(input_ids)
    assert logits.shape == (3, 24, VOCAB) and torch.isfinite(logits).all()
    targets = torch.randint(0, VOCAB, input_ids.shape)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    for parameter_name, parameter in model.pos_encoding.named_parameters():
        assert parameter.grad.abs().sum() > 0, f"{parameter_name} gets no gradient"


@pytest.mark.parametrize("name", NAMES)
def test_a_long_call_then_a_short_one_gives_the_short_output_bit_for_bit(name):
    model = make_decoder(name).eval()
    torch.manual_seed(2)
    short, long = torch.randint(0, VOCAB, (2, 10)), torch.randint(0, VOCAB, (2, 100))
    with torch.no_grad():
        before = model(short)
        model(long)
        after = model(short)
    assert torch.equal(before, after)


@pytest.mark.parametrize("name", NAMES)
def test_sdpa_matches_the_reference_attention(name):
    sdpa = make_decoder(name, attention="sdpa", seed=3).eval()
    reference = make_decoder(name, attention="reference", seed=4).eval()
    reference.load_state_dict(sdpa.state_dict())
    torch.manual_seed(5)
    input_ids = torch.randint(0, VOCAB, (2, 30))
    torch.testing.assert_close(sdpa(input_ids), reference(input_ids), rtol=1e-5, atol=1e-5)


def _logits_with_offset(name: str, offset: int) -> torch.Tensor:
    model = make_decoder(name, dtype=torch.float64).eval()
    torch.manual_seed(6)
    input_ids = torch.randint(0, VOCAB, (2, 40))
    positions = torch.arange(40).expand_as(input_ids) + offset
    with torch.no_grad():
        return model(input_ids, positions=positions)


@pytest.mark.parametrize("name", NAMES)
def test_is_relative_says_whether_a_shift_of_3000_changes_the_outputs(name):
    difference = (_logits_with_offset(name, 0) - _logits_with_offset(name, 3000)).abs().max()
    if make_encoding(name).is_relative:
        assert difference < 1e-8
    else:
        assert difference > 1e-4  # FIRE normalises by the query position; dynamic NTK by length


def test_is_relative_is_declared_on_the_existing_encodings():
    plugins = discover("lengen.positional_encodings")
    flags = {name: plugins[name].obj.is_relative for name in plugins}
    assert flags["NoPE"] and flags["RoPE"] and flags["ALiBi"] and flags["T5Bias"]
    assert not flags["Learned"] and not flags["Sinusoidal"]
    assert not flags["FIRE"] and not flags["RoPEDynamicNTK"]


# Bias encodings against plain loops --------------------------------------------------------------


def random_positions(batch: int, length: int, high: int = 3000) -> torch.Tensor:
    return torch.randint(0, high, (batch, 1)) + torch.arange(length)


def test_fire_matches_a_plain_loop():
    encoding = FIRE(mlp_width=5, init_threshold=20.0)
    encoding.bind(DIMS)
    torch.manual_seed(7)
    for parameter in encoding.parameters():
        torch.nn.init.normal_(parameter)
    encoding.double()
    positions = torch.cat([torch.arange(6)[None], random_positions(1, 6, 40)])  # below and above L
    bias = build_bias(encoding, N_HEAD, positions, positions)
    assert bias.dtype == torch.float64
    w1, b1 = encoding.hidden.weight[:, 0].tolist(), encoding.hidden.bias.tolist()
    w2, b2 = encoding.out.weight.tolist(), encoding.out.bias.tolist()
    c = abs(encoding.c.item())
    threshold = abs(encoding.threshold_multiplier.item()) * 20.0
    for b in range(2):
        for i in range(6):
            for j in range(6):
                qi, kj = int(positions[b, i]), int(positions[b, j])
                x = math.log(c * abs(qi - kj) + 1) / (math.log(c * max(qi, threshold) + 1) + 1e-6)
                hidden = [max(0.0, x * w + bb) for w, bb in zip(w1, b1)]
                for h in range(N_HEAD):
                    expected = sum(a * w for a, w in zip(hidden, w2[h])) + b2[h]
                    assert bias[b, h, i, j].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("cls", [KerpleLog, KerplePower])
def test_kerple_matches_a_plain_loop(cls):
    encoding = cls()
    encoding.bind(DIMS)
    torch.manual_seed(8)
    with torch.no_grad():
        encoding.r1.uniform_(0.1, 2.0)
        encoding.r2.uniform_(0.1, 1.9)
    encoding.double()
    positions = random_positions(2, 7)
    bias = build_bias(encoding, N_HEAD, positions, positions)
    r1, r2 = encoding.r1.tolist(), encoding.r2.tolist()
    for b in range(2):
        for h in range(N_HEAD):
            for i in range(7):
                for j in range(7):
                    distance = abs(int(positions[b, i]) - int(positions[b, j]))
                    if cls is KerpleLog:
                        expected = -r1[h] * math.log(1 + r2[h] * distance)
                    else:
                        expected = -r1[h] * distance ** r2[h]
                    assert bias[b, h, i, j].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_kerple_power_clamps_r2_to_two_and_has_finite_gradients_at_distance_zero():
    encoding = KerplePower()
    encoding.bind(DIMS)
    with torch.no_grad():
        encoding.r1.fill_(1.0)
        encoding.r2.fill_(3.0)
    positions = encoding.transform_positions(torch.arange(5)[None])  # clamps, once per forward
    assert torch.equal(encoding.r2.detach(), torch.full((N_HEAD,), 2.0))  # the stored value
    bias = build_bias(encoding, N_HEAD, positions, positions)
    assert bias[0, 0, 4, 1].item() == pytest.approx(-9.0)  # 3^2, not 3^3
    with torch.no_grad():
        encoding.r2.fill_(0.5)
    build_bias(encoding, N_HEAD, positions, positions).sum().backward()
    assert torch.isfinite(encoding.r2.grad).all() and (encoding.r2.grad != 0).all()


def cope_reference(query, key, embeddings, npos_max):
    """CoPE (Golovneva et al. 2024) for one head, written out per (i, j), float64."""
    length, head_dim = query.shape
    bias = torch.zeros(length, length, dtype=torch.float64)
    for i in range(length):
        gates = [
            1 / (1 + math.exp(-float(query[i] @ key[t]) / math.sqrt(head_dim)))
            for t in range(i + 1)
        ]
        for j in range(i + 1):
            p = min(sum(gates[j : i + 1]), npos_max - 1)
            low, high = math.floor(p), math.ceil(p)
            at_low = float(query[i] @ embeddings[:, low])
            at_high = float(query[i] @ embeddings[:, high])
            bias[i, j] = (p - low) * at_high + (1 - (p - low)) * at_low
    return bias


@pytest.mark.parametrize("npos_max", [4, 16])
def test_cope_matches_a_plain_loop(npos_max):
    encoding = CoPE(npos_max=npos_max)
    encoding.bind(DIMS)
    torch.manual_seed(9)
    torch.nn.init.normal_(encoding.position_embeddings)
    encoding.double()
    query = torch.randn(2, N_HEAD, 9, HEAD_DIM, dtype=torch.float64)
    key = torch.randn(2, N_HEAD, 9, HEAD_DIM, dtype=torch.float64)
    bias = encoding.contextual_bias(query, key)
    embeddings = encoding.position_embeddings.detach()
    for b in range(2):
        for h in range(N_HEAD):
            expected = cope_reference(query[b, h], key[b, h], embeddings, npos_max)
            torch.testing.assert_close(bias[b, h], expected, rtol=1e-10, atol=1e-10)


def test_cope_with_cached_queries_matches_the_full_bias_rows():
    encoding = CoPE(npos_max=8)
    encoding.bind(DIMS)
    torch.nn.init.normal_(encoding.position_embeddings)
    query, key = torch.randn(1, N_HEAD, 10, HEAD_DIM), torch.randn(1, N_HEAD, 10, HEAD_DIM)
    full = encoding.contextual_bias(query, key)
    last = encoding.contextual_bias(query[:, :, -3:], key)  # the last 3 queries see all 10 keys
    torch.testing.assert_close(last, full[:, :, -3:])


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("name", ["FIRE", "KerpleLog", "KerplePower"])
def test_score_bias_works_elementwise_as_a_flex_attention_score_mod(name):
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention").flex_attention
    encoding = make_encoding(name)
    encoding.bind(DIMS)
    torch.manual_seed(10)
    for parameter in encoding.parameters():
        torch.nn.init.uniform_(parameter, 0.2, 1.0)
    query, key, value = (torch.randn(2, N_HEAD, 12, HEAD_DIM) for _ in range(3))
    positions = torch.arange(12).expand(2, 12)

    def causal_score_mod(score, batch, head, query_index, key_index):
        biased = score + encoding.score_bias(head, query_index, key_index)
        return torch.where(query_index >= key_index, biased, float("-inf"))

    output = flex_attention(query, key, value, score_mod=causal_score_mod)
    expected = reference_attention(
        query, key, value, build_bias(encoding, N_HEAD, positions, positions)
    )
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)


# Randomized positions ----------------------------------------------------------------------------


def test_randomized_training_positions_are_sorted_unique_and_in_range():
    wrapper = RandomizedPositions(RoPE(), max_position=64, per="row", eval_positions="ordered")
    positions = torch.arange(40).expand(500, 40)
    torch.manual_seed(11)
    drawn = wrapper.train().transform_positions(positions)
    assert drawn.dtype == torch.int64 and drawn.shape == (500, 40)
    assert (drawn[:, 1:] > drawn[:, :-1]).all()  # sorted and unique
    assert drawn.min() >= 0 and drawn.max() < 64
    assert drawn.max() == 63 and drawn[:, 0].min() == 0  # the whole range is reachable
    assert len({tuple(row) for row in drawn.tolist()}) > 490  # rows differ
    torch.manual_seed(11)
    assert torch.equal(wrapper.transform_positions(positions), drawn)  # torch's global RNG
    assert torch.equal(wrapper.eval().transform_positions(positions), positions)


def test_randomized_positions_keep_offsets_of_the_input():
    wrapper = RandomizedPositions(RoPE(), max_position=50).train()
    positions = torch.tensor([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]])
    torch.manual_seed(12)
    drawn = wrapper.transform_positions(positions)
    assert (drawn[:, 1:] > drawn[:, :-1]).all()
    with pytest.raises(PositionOutOfRange, match="max_position=50") as error:
        wrapper.transform_positions(torch.arange(51)[None])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("inner", [RoPE, ALiBi])
@pytest.mark.parametrize("wrapper_cls", [RandomizedPositions, GiraffeRandomizedPositions])
def test_the_wrapper_equals_its_encoding_at_the_drawn_positions(wrapper_cls, inner):
    wrapper = wrapper_cls(inner())
    if wrapper_cls is RandomizedPositions:
        wrapper.eval_positions = "ordered"  # the eval comparison below needs 0..n-1
    torch.manual_seed(13)
    wrapped = Decoder(VOCAB, wrapper, n_layer=2, n_head=N_HEAD, d_model=D_MODEL).train()
    plain = Decoder(VOCAB, inner(), n_layer=2, n_head=N_HEAD, d_model=D_MODEL).train()
    plain.load_state_dict(wrapped.state_dict(), strict=False)
    input_ids = torch.randint(0, VOCAB, (3, 20))
    positions = torch.arange(20).expand(3, 20)
    torch.manual_seed(14)
    logits = wrapped(input_ids)
    torch.manual_seed(14)
    drawn = wrapper.transform_positions(positions)
    torch.testing.assert_close(logits, plain(input_ids, positions=drawn))
    assert (drawn != positions).any()
    wrapped.eval(), plain.eval()
    torch.testing.assert_close(wrapped(input_ids), plain(input_ids))


def test_giraffe_positions_are_increasing_increments_rescaled_to_the_length():
    wrapper = GiraffeRandomizedPositions(RoPE()).train()
    torch.manual_seed(15)
    drawn = wrapper.transform_positions(torch.arange(30).expand(400, 30))
    assert drawn.dtype == torch.float32
    assert (drawn[:, 1:] > drawn[:, :-1]).all() and (drawn > 0).all()
    assert (drawn[:, -1] <= 30 + 1e-4).all()
    rescaled = drawn[:, -1] > 30 - 1e-4  # rows whose sum passed T end exactly at T
    assert 0 < int(rescaled.sum()) < 400
    increments = torch.diff(drawn[~rescaled], dim=1)
    assert increments.max() <= 2  # rows under T keep their raw Uniform(0, 2) increments


# Bad arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomizedPositions(RoPE(), max_position=0), "max_position=0"),
        (lambda: RandomizedPositions("RoPE"), "PositionalEncoding"),
        (lambda: FIRE(mlp_width=0), "mlp_width=0"),
        (lambda: FIRE(init_c=-1.0), "init_c=-1.0"),
        (lambda: FIRE(init_threshold=0.0), "init_threshold=0.0"),
        (lambda: CoPE(npos_max=1), "npos_max=1"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make()
    assert "\n" not in str(error.value)


# Training smoke test -----------------------------------------------------------------------------


class _RecordLoss(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", NAMES)
def test_every_encoding_trains_a_few_steps_through_the_lightning_module(name):
    L.seed_everything(16, verbose=False)
    task = Copy()
    module = LengenModule(
        make_encoding(name), vocab_size=task.vocab_size, n_layer=1, n_head=N_HEAD,
        d_model=D_MODEL, warmup_steps=1, metrics=[],
    )  # fmt: skip
    stream = TrainingStream(task, 1, 8, seed=0, batch_size=8)
    loader = DataLoader(stream, batch_size=None)  # the stream yields whole batches
    record = _RecordLoss()
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    assert len(record.losses) == 4 and all(math.isfinite(loss) for loss in record.losses)


@pytest.mark.parametrize("cls", [RandomizedPositions, GiraffeRandomizedPositions])
def test_a_wrapper_without_an_encoding_wraps_rope(cls):
    # So that `lengen fit --model.pos_encoding=RandomizedPositions` works on the quickstart.
    wrapper = cls()
    assert type(wrapper.encoding) is RoPE and wrapper.is_relative


# Reference parity fixes (issue 11) --------------------------------------------------------------


@pytest.mark.parametrize("wrapper_cls", [RandomizedPositions, GiraffeRandomizedPositions])
@pytest.mark.parametrize(
    "inner", [lambda: RoPE(), lambda: XPos(centre=True), lambda: XPos(centre=False)]
)
def test_a_wrapper_forwards_every_class_level_property_of_its_encoding(wrapper_cls, inner):
    """Every non-callable public class attribute of PositionalEncoding, read on the instance."""
    encoding = inner()
    wrapper = wrapper_cls(encoding)
    if wrapper_cls is RandomizedPositions:
        wrapper.eval_positions = "ordered"  # random evaluation cannot cache (tested below)
    names = [
        name
        for name, value in vars(PositionalEncoding).items()
        if not name.startswith("_") and not callable(value) and not isinstance(value, property)
        and not isinstance(value, classmethod)
    ]  # fmt: skip
    assert {"is_relative", "supports_kv_cache", "checked_dtypes"} <= set(names)
    for name in names:
        if name == "schedulable":  # forwarded as values: the wrapper's schedulable_values()
            assert wrapper.schedulable_values().keys() == encoding.schedulable_values().keys()
            continue
        assert getattr(wrapper, name) == getattr(encoding, name), name


def test_randomized_positions_draw_one_subset_per_batch_in_training_and_evaluation():
    """Ruoss et al.'s code draws in evaluation too, one sorted subset for the whole batch."""
    wrapper = RandomizedPositions(RoPE(), max_position=2048)
    assert wrapper.eval_positions == "random" and wrapper.per == "batch"
    assert not wrapper.supports_kv_cache  # every call draws anew
    positions = torch.arange(40).expand(3, 40)
    gaps_one, draws = 0, []
    torch.manual_seed(17)
    for mode in ("train", "eval") * 100:
        getattr(wrapper, mode)()
        drawn = wrapper.transform_positions(positions)
        assert (drawn == drawn[:1]).all()  # one subset shared by the rows
        assert (drawn[0, 1:] > drawn[0, :-1]).all() and 0 <= drawn.min() and drawn.max() < 2048
        gaps_one += int((torch.diff(drawn[0]) == 1).sum())
        draws.append(tuple(drawn[0].tolist()))
    assert len(set(draws)) == 200  # evaluation draws too
    # Adjacent gaps have mean ~2048/41 = 50; a gap of 1 is rare (about 2 %), unlike 0..n-1.
    assert gaps_one / (200 * 39) < 0.05
    per_row = RandomizedPositions(RoPE(), max_position=2048, per="row").eval()
    drawn = per_row.transform_positions(positions)
    assert not (drawn == drawn[:1]).all()
    ordered = RandomizedPositions(RoPE(), eval_positions="ordered").eval()
    assert torch.equal(ordered.transform_positions(positions), positions)
    assert ordered.supports_kv_cache


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomizedPositions(eval_positions="sorted"), "accepted: random, ordered"),
        (lambda: RandomizedPositions(per="head"), "accepted: batch, row"),
    ],
)
def test_randomized_positions_reject_unknown_modes_in_one_line(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("cls", [KerpleLog, KerplePower])
def test_kerple_parameter_below_eps_is_clamped_in_place_and_still_learns(cls):
    """The reference clamps the stored value each forward (outside the graph), so it recovers."""
    torch.manual_seed(18)
    model = Decoder(VOCAB, cls(), n_layer=1, n_head=N_HEAD, d_model=D_MODEL, attention="sdpa")
    with torch.no_grad():
        model.pos_encoding.r1.fill_(-0.5)
        model.pos_encoding.r2.fill_(-0.5)
    input_ids = torch.randint(0, VOCAB, (4, 16))
    loss = torch.nn.functional.cross_entropy(
        model(input_ids).flatten(0, 1), torch.randint(0, VOCAB, (64,))
    )
    loss.backward()
    encoding = model.pos_encoding
    eps = torch.full((N_HEAD,), encoding.eps)
    assert torch.equal(encoding.r1.detach(), eps) and torch.equal(encoding.r2.detach(), eps)
    assert (encoding.r1.grad != 0).all() and (encoding.r2.grad != 0).all()  # not stuck


def test_kerple_initial_ranges_follow_the_reference():
    """chijames/KERPLE: log p ~ U(0, 2), a ~ U(0, 1); power: exponent U(0, 2), factor U(0, 1)."""
    many = ModelDims(d_model=512, n_head=512, head_dim=1)
    log, power = KerpleLog(), KerplePower()
    torch.manual_seed(19)
    log.bind(many), power.bind(many)
    assert log.r1.max() > 1.5 and log.r1.max() < 2 and log.r2.max() < 1  # r1 multiplies
    assert power.r1.max() < 1 and power.r2.max() > 1.5 and power.r2.max() < 2  # r2 the exponent
