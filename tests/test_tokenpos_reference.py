"""LongRoPE, Abacus and PositionCoupling against their references (float64, random inputs).

- LongRoPE: transformers' `ROPE_INIT_FUNCTIONS["longrope"]` and its Llama rotary embedding (the
  inference form of Ding et al. 2024 used by Phi-3); skipped without transformers.
- Abacus: the digit index of McLeish et al. 2024 as the authors' `Abacus.helper`
  (mcleish7/arithmetic, abacus.py) defines it, written here as a plain loop over the tokens.
- PositionCoupling: the ids of Cho et al. 2024 built from the known layout of lengen's reversed
  Addition (BOS a + b SEP sum EOS), not from digit runs: equal significance, equal id.
"""

from __future__ import annotations

import random

import pytest
import torch

from lengen.model import Decoder
from lengen.positional import ModelDims
from lengen.task import BOS, EOS, SEP
from lengen_plugins.positional_encodings.arithmetic_positions import Abacus, PositionCoupling
from lengen_plugins.positional_encodings.learned import Learned
from lengen_plugins.positional_encodings.longrope import LongRoPE
from lengen_plugins.positional_encodings.nope import NoPE
from lengen_plugins.tasks.addition import Addition
from lengen_plugins.tasks.multiplication import DecimalMultiplication

DIGITS = tuple(range(4, 14))
VOCAB = 16


def reference_digit_index(row: list[int], real: list[bool]) -> list[int]:
    """McLeish et al.'s digit index over the real tokens: 1-based within a run of digits, else 0.

    A padded token is skipped; it takes the index of the run so far (a value never used).
    """
    out, run = [], 0
    for token, is_real in zip(row, real):
        if is_real:
            run = run + 1 if token in DIGITS else 0
        out.append(run)
    return out


def random_rows(generator: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Ids with long digit runs: 70 % digits (4-13), the rest specials and symbols (0-3, 14, 15)."""
    digits = torch.randint(4, 14, (batch, length), generator=generator)
    others = torch.tensor([0, 1, 2, 3, 14, 15])[
        torch.randint(0, 6, (batch, length), generator=generator)
    ]
    return torch.where(torch.rand(batch, length, generator=generator) < 0.7, digits, others)


@pytest.mark.parametrize("seed", range(5))
def test_abacus_digit_index_matches_the_reference_definition(seed):
    generator = torch.Generator().manual_seed(seed)
    ids = random_rows(generator, 4, 40)
    mask = torch.rand(4, 40, generator=generator) < 0.8  # padding anywhere, also mid-sequence
    encoding = Abacus(max_offset=0).eval()
    for row_mask in (None, mask):
        got = encoding.token_positions(ids, row_mask)
        real = torch.ones_like(ids, dtype=torch.bool) if row_mask is None else row_mask
        expected = [reference_digit_index(r.tolist(), m.tolist()) for r, m in zip(ids, real)]
        assert torch.equal(got.masked_fill(~real, 0), torch.tensor(expected).masked_fill(~real, 0))


def test_abacus_training_offset_shifts_every_digit_by_one_k_per_forward():
    torch.manual_seed(3)
    ids = random_rows(torch.Generator().manual_seed(3), 3, 30)
    base = torch.tensor([reference_digit_index(r.tolist(), [True] * 30) for r in ids])
    encoding = Abacus(max_offset=20).train()
    offsets = set()
    for _ in range(40):
        got = encoding.token_positions(ids, None)
        assert torch.equal(got[base == 0], base[base == 0])  # non-digits keep 0
        shift = (got - base)[base > 0].unique()
        assert shift.numel() == 1 and 0 <= int(shift) <= 20  # one k for the whole batch
        offsets.add(int(shift))
    assert len(offsets) > 5  # k is drawn anew per forward
    assert torch.equal(encoding.eval().token_positions(ids, None), base)  # k = 0 in evaluation


def test_abacus_decoder_adds_the_table_row_of_each_digit_index():
    """Abacus decoder == NoPE decoder whose token embedding gets table[reference index] added."""
    torch.manual_seed(0)
    abacus = Decoder(VOCAB, Abacus(), n_layer=2, n_head=2, d_model=16).double().eval()
    nope = Decoder(VOCAB, NoPE(), n_layer=2, n_head=2, d_model=16).double().eval()
    state = {k: v for k, v in abacus.state_dict().items() if "pos_encoding" not in k}
    nope.load_state_dict(state)
    table = abacus.pos_encoding.table.weight.detach()
    ids = random_rows(torch.Generator().manual_seed(9), 3, 25)
    index = torch.tensor([reference_digit_index(r.tolist(), [True] * 25) for r in ids])
    hook = nope.token_embedding.register_forward_hook(lambda m, i, out: out + table[index])
    with torch.no_grad():
        expected = nope(ids)
        hook.remove()
        got = abacus(ids)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def coupled_reference(task: Addition, length: int, rng: random.Random):
    """(ids, expected ids) for one reversed Addition example, ids laid out by significance."""
    example = task.make_example(length, rng)
    ids = example.prompt + example.target  # BOS a(n) + b(n) SEP sum(n+1) EOS
    expected = [0]  # BOS
    expected += [1 + j for j in range(length)] + [0]  # a, then "+"
    expected += [1 + j for j in range(length)] + [0]  # b, then SEP
    expected += [1 + j for j in range(length + 1)] + [0]  # sum, then EOS
    assert ids[0] == BOS and ids[2 * length + 2] == SEP and ids[-1] == EOS
    return ids, expected


@pytest.mark.parametrize("seed", range(3))
def test_position_coupling_gives_equal_significance_the_same_id(seed):
    rng = random.Random(seed)
    task = Addition(reverse_digits=True)
    length = rng.randint(1, 20)
    rows = [coupled_reference(task, length, rng) for _ in range(4)]
    ids = torch.tensor([row[0] for row in rows])
    expected = torch.tensor([row[1] for row in rows])
    encoding = PositionCoupling(max_position=length + 10)
    assert torch.equal(encoding.eval().token_positions(ids, None), expected)  # s = 0
    torch.manual_seed(seed)
    starts = set()
    for _ in range(30):
        got = encoding.train().token_positions(ids, None)
        shift = got - expected  # (B, T): one start s per row
        assert torch.equal(shift, shift[:, :1].expand_as(shift))
        assert int(got.max()) < length + 10 and int(shift.min()) >= 0
        starts.update(shift[:, 0].tolist())
    assert len(starts) > 3


def test_position_coupling_decoder_equals_learned_at_the_coupled_ids():
    torch.manual_seed(1)
    rng = random.Random(1)
    task = Addition(reverse_digits=True)
    rows = [coupled_reference(task, 7, rng) for _ in range(3)]
    ids, expected = torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])
    coupled = Decoder(task.vocab_size, PositionCoupling(max_position=32), n_layer=2, n_head=2,
                      d_model=16).double().eval()  # fmt: skip
    learned = Decoder(task.vocab_size, Learned(max_length=32), n_layer=2, n_head=2, d_model=16)
    state = {k.replace("pos_encoding.encoding.", "pos_encoding."): v
             for k, v in coupled.state_dict().items()}  # fmt: skip
    learned.load_state_dict(state)
    learned = learned.double().eval()
    with torch.no_grad():
        torch.testing.assert_close(
            coupled(ids), learned(ids, positions=expected), rtol=1e-12, atol=1e-12
        )


def test_bad_arguments_are_one_clear_line():
    for make, words in (
        (lambda: Abacus(digit_ids=[]), "digit_ids"),
        (lambda: Abacus(max_length=10, max_offset=10), "max_offset"),
        (lambda: PositionCoupling(encoding=Abacus()), "own token positions"),
        (lambda: LongRoPE(long_factor=[1.0, -2.0]), "long_factor"),
        (lambda: LongRoPE(factors="medium"), "auto, short, long"),
    ):
        with pytest.raises(ValueError, match=words) as error:
            make()
        assert "\n" not in str(error.value)
    encoding = LongRoPE(short_factor=[1.0, 2.0])
    with pytest.raises(ValueError, match="rotary_dim / 2 = 4"):
        encoding.bind(ModelDims(d_model=16, n_head=2, head_dim=8))


# --- LongRoPE against transformers -------------------------------------------------------------

HEAD_DIM, N_HEAD = 32, 2


def _transformers():
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("the longrope comparison uses transformers >= 5 rope_parameters")
    return transformers


def _hf_config(base, short, long, original, factor, attention_factor=None):
    from transformers import LlamaConfig

    rope = {
        "rope_type": "longrope", "rope_theta": base, "short_factor": short,
        "long_factor": long, "original_max_position_embeddings": original, "factor": factor,
    }  # fmt: skip
    if attention_factor is not None:
        rope["attention_factor"] = attention_factor
    return LlamaConfig(
        hidden_size=HEAD_DIM * N_HEAD, num_attention_heads=N_HEAD, head_dim=HEAD_DIM,
        max_position_embeddings=int(original * factor), rope_parameters=rope,
    )  # fmt: skip


def _random_longrope_case(seed: int):
    generator = torch.Generator().manual_seed(seed)
    short = 1 + 0.5 * torch.rand(HEAD_DIM // 2, generator=generator, dtype=torch.float64)
    long = 1 + 30 * torch.rand(HEAD_DIM // 2, generator=generator, dtype=torch.float64)
    base = float(torch.randint(1000, 500000, (1,), generator=generator))
    original = int(torch.randint(64, 4096, (1,), generator=generator))
    factor = float(1 + 15 * torch.rand(1, generator=generator, dtype=torch.float64))
    return short.tolist(), sorted(long.tolist()), base, original, factor


@pytest.mark.parametrize("seed", range(4))
def test_longrope_frequencies_and_attention_factor_match_transformers(seed):
    _transformers()
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    short, long, base, original, factor = _random_longrope_case(seed)
    config = _hf_config(base, short, long, original, factor)
    encoding = LongRoPE(short, long, original_max_length=original, scale=factor, base=base)
    encoding.bind(ModelDims(d_model=HEAD_DIM * N_HEAD, n_head=N_HEAD, head_dim=HEAD_DIM))
    for seq_len, use_long in ((original, False), (original + 1, True)):
        expected, attention = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu", seq_len=seq_len)
        ours = encoding.inverse_frequencies_for(use_long, torch.float64, torch.device("cpu"))
        torch.testing.assert_close(ours, expected.double(), rtol=1e-6, atol=0)  # hf: float32
        assert encoding.attention_scale() == pytest.approx(attention, rel=1e-12)
    fixed = LongRoPE(short, long, original_max_length=original, scale=factor,
                     attention_factor=0.7, base=base)  # fmt: skip
    _, attention = ROPE_INIT_FUNCTIONS["longrope"](
        _hf_config(base, short, long, original, factor, attention_factor=0.7), "cpu", seq_len=1
    )
    assert fixed.attention_scale() == attention


@pytest.mark.parametrize("length_over_original", [False, True])
def test_longrope_rotation_matches_transformers_rotary_embedding(length_over_original):
    """At L = L0 the short factors rotate, at L0 + 1 the long ones; float32 angles on both sides."""
    _transformers()
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    short, long, base, _, factor = _random_longrope_case(7)
    original = 96
    rotary = LlamaRotaryEmbedding(_hf_config(base, short, long, original, factor))
    encoding = LongRoPE(short, long, original_max_length=original, scale=factor, base=base)
    encoding.bind(ModelDims(d_model=HEAD_DIM * N_HEAD, n_head=N_HEAD, head_dim=HEAD_DIM))
    generator = torch.Generator().manual_seed(11)
    length = original + 1 if length_over_original else original  # the boundary: L > L0
    query = torch.randn(1, N_HEAD, length, HEAD_DIM, generator=generator)
    key = torch.randn(1, N_HEAD, length, HEAD_DIM, generator=generator)
    positions = torch.arange(length)[None]
    cos, sin = rotary(query, positions)
    expected_query, expected_key = apply_rotary_pos_emb(query, key, cos, sin)
    ours_query, ours_key = encoding.rotate(query, key, positions, positions)
    torch.testing.assert_close(ours_query, expected_query, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_key, expected_key, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "task",
    [Addition(), Addition(reverse_digits=True), Addition(scratchpad=True), DecimalMultiplication()],
    ids=["addition", "reversed", "scratchpad", "multiplication"],
)
def test_default_digit_ids_are_the_digits_of_lengens_arithmetic_tasks(task):
    digits = task.encode(list("0123456789"))
    assert tuple(digits) == Abacus().digit_ids == PositionCoupling().digit_ids


def _wrappers_of(encoding):
    """Wrappers that leave an encoding without rotate or bias (Abacus) unchanged in evaluation:
    ordered positions, or per-pair positions that only a rotation or a bias would read."""
    from lengen_plugins.positional_encodings.dual_chunk import DualChunkAttention
    from lengen_plugins.positional_encodings.randomized import RandomizedPositions
    from lengen_plugins.positional_encodings.rerope import ReRoPE
    from lengen_plugins.positional_encodings.self_extend import SelfExtend

    return [RandomizedPositions(encoding, eval_positions="ordered"),
            SelfExtend(encoding, group_size=2, window=4), ReRoPE(encoding, window=4),
            DualChunkAttention(encoding, chunk_size=8, local_window=4)]  # fmt: skip


@pytest.mark.parametrize("index", range(4), ids=["randomized", "self-extend", "rerope", "dca"])
def test_a_wrapper_passes_the_wrapped_token_positions_through(index):
    """A wrapper around Abacus, in evaluation, is Abacus itself (the digit indices reach it)."""
    torch.manual_seed(1)
    wrapped = _wrappers_of(Abacus())[index]
    assert wrapped.has_token_positions and not _wrappers_of(NoPE())[index].has_token_positions
    plain = Decoder(VOCAB, Abacus(), n_layer=2, n_head=2, d_model=16).double().eval()
    around = Decoder(VOCAB, wrapped, n_layer=2, n_head=2, d_model=16).double().eval()
    state = plain.state_dict()
    deeper = {k.replace("pos_encoding.", "pos_encoding.encoding."): v for k, v in state.items()}
    around.load_state_dict(deeper)
    ids = random_rows(torch.Generator().manual_seed(4), 3, 25)
    with torch.no_grad():
        torch.testing.assert_close(around(ids), plain(ids), rtol=1e-12, atol=1e-12)
