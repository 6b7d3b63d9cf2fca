"""The contract suite: checks every installed positional encoding plugin must pass (tasks,
metrics and callbacks: lengen/testing_plugins.py, collected with this module).

It runs over every plugin of `lengen.positional_encodings` (lengen's own and third-party ones), so
a plugin author gets it for free once their distribution is installed:

    pytest --pyargs lengen.testing                 # every installed encoding
    pytest --pyargs lengen.testing -k MyEncoding   # only yours

Each encoding is checked once per instance of `cls.examples()` (by default `(cls.example(),)`,
and `cls.example()` is `cls()`; override `example` when the constructor needs arguments, and
`examples` to check several configurations: the randomized wrappers check themselves around RoPE
and around `XPos(centre=True)`, which cannot cache). A second instance's tests are named `Name#1`.
Properties of the instance select checks: `is_relative` (shift invariance), `checked_dtypes`
(finiteness at 8x the training length), `supports_kv_cache` (cached decoding).

An encoding whose behaviour changes past a training length (dynamic NTK, YaRN, Llama 3 scaling)
stores it as `original_max_length`; the suite sets that attribute, on the encoding and on every
module inside it, to `CONTRACT_ORIGINAL_LENGTH` (8), below every length it tests, so the
length-dependent path is the one checked (with the default of 2048 it would never run).

The models are tiny (2 layers, d_model 32) and evaluated in eval mode; float64 where the comparison
must be exact up to rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lengen.metric import EvalBatch
from lengen.model import Decoder
from lengen.plugins import discover
from lengen.positional import PositionalEncoding, PositionOutOfRange, build_bias

# The task, metric and callback suites live in lengen/testing_plugins.py and are collected here,
# so `pytest --pyargs lengen.testing` runs all four groups.
from lengen.testing_plugins import (  # noqa: F401
    test_callback_state_round_trips_through_a_checkpoint,
    test_metric_bucket_is_the_weighted_mean_of_scores_and_empty_buckets_are_nan,
    test_metric_states_are_sums_so_ranks_can_be_added,
    test_task_cache_key_is_stable_plain_data_naming_every_argument,
    test_task_examples_are_deterministic_given_the_seed,
    test_task_examples_have_the_layout_and_the_requested_length,
    test_task_uses_only_its_own_vocabulary,
)

GROUP = "lengen.positional_encodings"
VOCAB, D_MODEL, N_HEAD, N_LAYER = 13, 32, 4, 2
HEAD_DIM = D_MODEL // N_HEAD
TRAIN_LENGTH = 32  # the "training length" the 8x check refers to
SHIFT = 3000
FAR_POSITION = 16384
CONTRACT_ORIGINAL_LENGTH = 8  # below every length tested here (see the module docstring)


def encoding_names() -> list[str]:
    """Every discovered encoding name (failed plugins included: their first test reports why)."""
    return sorted(discover(GROUP))


def encoding_cases() -> list[str]:
    """One case per instance of `cls.examples()`: "Name", then "Name#1", "Name#2", ..."""
    cases = []
    for name, plugin in sorted(discover(GROUP).items()):
        count = 1
        if plugin.error is None:
            try:
                count = len(plugin.obj.examples())
            except Exception:  # reported by the first test of the case "Name"
                count = 1
        cases += [name] + [f"{name}#{index}" for index in range(1, count)]
    return cases


def _split(case: str) -> tuple[str, int]:
    name, _, index = case.partition("#")
    return name, int(index or 0)


def encoding_class(case: str) -> type[PositionalEncoding]:
    name, _ = _split(case)
    plugin = discover(GROUP)[name]
    if plugin.error is not None:
        pytest.fail(f"plugin {name} ({plugin.distribution}) failed to load: {plugin.error}")
    return plugin.obj


def build_encoding(case: str) -> PositionalEncoding:
    """The case's instance of `cls.examples()`, its training length shortened (see above)."""
    _, index = _split(case)
    encoding = encoding_class(case).examples()[index]
    for module in encoding.modules():
        if hasattr(module, "original_max_length"):
            module.original_max_length = CONTRACT_ORIGINAL_LENGTH
    return encoding


def make_model(
    name: str,
    dtype: torch.dtype = torch.float64,
    attention: str = "reference",
    seed: int = 0,
    n_head: int = N_HEAD,
) -> Decoder:
    """A tiny decoder with the encoding's example instance, in eval mode."""
    torch.manual_seed(seed)
    model = Decoder(
        VOCAB, build_encoding(name), n_layer=N_LAYER, n_head=n_head, d_model=D_MODEL,
        attention=attention,
    )  # fmt: skip
    with torch.no_grad():  # so that zero-initialised encoding parameters (CoPE's) matter
        for parameter in model.pos_encoding.parameters():
            parameter.uniform_(0.2, 1.0)
    return model.to(dtype).eval()


def random_ids(batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


def available_backends() -> list[str]:
    """The kernels to compare against the reference on this machine."""
    backends = ["sdpa"]
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return backends
    return [*backends, "flex"]


NAMES = encoding_names()
CASES = encoding_cases()
parametrize_names = pytest.mark.parametrize("name", CASES)


@parametrize_names
def test_loads_and_builds_an_example(name):
    cls = encoding_class(name)
    assert isinstance(cls, type) and issubclass(cls, PositionalEncoding), (
        f"{name} must subclass lengen.positional.PositionalEncoding"
    )
    assert isinstance(cls.example(), cls)
    assert all(isinstance(example, cls) for example in cls.examples())
    assert (cls.__doc__ or "").strip(), f"{name} needs a docstring (its summary line is listed)"


@parametrize_names
def test_hook_shapes_and_dtypes(name):
    model = make_model(name, dtype=torch.float32)
    encoding = model.pos_encoding
    batch, length = 2, 9
    positions = torch.arange(length).expand(batch, length) + 5
    embeddings = torch.randn(batch, length, D_MODEL)
    embedded = encoding.embed(embeddings, positions)
    assert embedded.shape == embeddings.shape and embedded.dtype == embeddings.dtype
    query = torch.randn(batch, N_HEAD, length, HEAD_DIM)
    key = torch.randn(batch, N_HEAD, length + 3, HEAD_DIM)
    key_positions = torch.arange(length + 3).expand(batch, length + 3)
    rotated_query, rotated_key = encoding.rotate(query, key, positions, key_positions)
    assert rotated_query.shape == query.shape and rotated_query.dtype == query.dtype
    assert rotated_key.shape == key.shape and rotated_key.dtype == key.dtype
    if encoding.has_score_bias:
        bias = build_bias(encoding, N_HEAD, positions, key_positions)
        assert bias.shape == (batch, N_HEAD, length, length + 3)
        assert bias.is_floating_point()
    for dtype in (torch.float32, torch.float64):
        logits = model.to(dtype)(random_ids(batch, length, seed=1))
        assert logits.shape == (batch, length, VOCAB) and logits.dtype == dtype


@parametrize_names
def test_outputs_finite_at_8x_the_training_length(name):
    for dtype in build_encoding(name).checked_dtypes:
        model = make_model(name, dtype=dtype, attention="sdpa")
        with torch.no_grad():
            logits = model(random_ids(2, 8 * TRAIN_LENGTH, seed=2))
        assert logits.dtype == dtype
        assert torch.isfinite(logits).all(), f"non-finite logits in {dtype}"


@parametrize_names
def test_relative_encoding_ignores_a_shift_of_all_positions(name):
    if not build_encoding(name).is_relative:
        pytest.skip(f"{name} declares is_relative = False")
    model = make_model(name)
    input_ids = random_ids(2, 24, seed=3)
    positions = torch.arange(24).expand(2, 24)
    with torch.no_grad():
        logits = model(input_ids, positions=positions)
        shifted = model(input_ids, positions=positions + SHIFT)
    torch.testing.assert_close(shifted, logits, rtol=1e-8, atol=1e-8)


def _padded(rows: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D id tensors to one width on `side` -> ids (B, T) and attention mask (B, T)."""
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[b, span], mask[b, span] = row, 1
    return ids, mask


@parametrize_names
def test_padding_left_or_right_gives_the_unpadded_logits(name):
    model = make_model(name, attention="sdpa")
    lengths = (11, 4, 8)
    rows = [random_ids(1, length, seed=10 + length)[0] for length in lengths]
    with torch.no_grad():
        expected = [model(row[None])[0] for row in rows]  # (T_b, V) each, no padding
        for side in ("left", "right"):
            ids, mask = _padded(rows, side)
            logits = model(ids, attention_mask=mask)
            for b in range(len(rows)):
                real = logits[b][mask[b].bool()]
                torch.testing.assert_close(real, expected[b], rtol=1e-9, atol=1e-9, msg=side)


@parametrize_names
def test_bfloat16_model_keeps_positions_and_angles_precise(name):
    """After model.to(bfloat16), the hooks at ~16384 match a float64 copy within 1e-2."""
    model = make_model(name, dtype=torch.float32)
    reference = copy.deepcopy(model.pos_encoding).to(torch.float64)
    encoding = model.to(torch.bfloat16).pos_encoding
    positions = FAR_POSITION + torch.tensor([[0, 1, 3, 5, 7, 129, 255, 1001]])  # not all in bf16
    length = positions.shape[1]
    # Unit vectors as queries/keys: the rotary transform's outputs are its cos/sin entries.
    basis = torch.eye(HEAD_DIM).repeat(length // HEAD_DIM + 1, 1)[:length]  # (T, hs)
    vectors = basis.expand(1, N_HEAD, length, HEAD_DIM)
    query, key = encoding.rotate(vectors.bfloat16(), vectors.bfloat16(), positions, positions)
    expected_query, expected_key = reference.rotate(
        vectors.double(), vectors.double(), positions, positions
    )
    torch.testing.assert_close(query.double(), expected_query, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(key.double(), expected_key, rtol=1e-2, atol=1e-2)
    # 16385 is not a bfloat16 number: an encoding that uses positions must tell it from 16384
    # (the float64 copy above shares any bug in the encoding's own code, so check this directly).
    probes = torch.tensor([[0, FAR_POSITION, FAR_POSITION + 1]])
    probe_vectors = torch.ones(1, N_HEAD, 3, HEAD_DIM, dtype=torch.bfloat16)
    rotated, _ = encoding.rotate(probe_vectors, probe_vectors, probes, probes)
    if not torch.equal(rotated[:, :, 0], rotated[:, :, 1]):
        assert not torch.equal(rotated[:, :, 1], rotated[:, :, 2]), "positions rounded to bf16?"
    try:
        encoding.check_positions(int(positions.max()))
    except PositionOutOfRange:
        return  # a bounded table: the embedding cannot be asked at 16384
    embeddings = torch.zeros(1, length, D_MODEL)
    embedded = encoding.embed(embeddings.bfloat16(), positions)
    expected = reference.embed(embeddings.double(), positions)
    torch.testing.assert_close(embedded.double(), expected, rtol=1e-2, atol=1e-2)
    embedded = encoding.embed(torch.zeros(1, 3, D_MODEL, dtype=torch.bfloat16), probes)
    if not torch.equal(embedded[:, 0], embedded[:, 1]):
        assert not torch.equal(embedded[:, 1], embedded[:, 2]), "positions rounded to bf16?"


@parametrize_names
def test_a_long_input_does_not_change_a_later_short_one(name):
    model = make_model(name, dtype=torch.float32, attention="sdpa")
    short, long = random_ids(2, 10, seed=4), random_ids(2, 6 * TRAIN_LENGTH, seed=5)
    with torch.no_grad():
        before = model(short)
        model(long)
        after = model(short)
    assert torch.equal(before, after), "state from the long call leaked into the short one"


@parametrize_names
def test_one_optimizer_step_trains(name):
    model = make_model(name, dtype=torch.float32, attention="sdpa").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    input_ids, targets = random_ids(4, TRAIN_LENGTH, seed=6), random_ids(4, TRAIN_LENGTH, seed=7)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    for _ in range(2):
        loss = F.cross_entropy(model(input_ids).flatten(0, 1), targets.flatten())
        assert torch.isfinite(loss), "non-finite loss"
        optimizer.zero_grad()
        loss.backward()
        for parameter_name, parameter in model.named_parameters():
            if parameter.grad is not None:
                assert torch.isfinite(parameter.grad).all(), f"non-finite gradient {parameter_name}"
        optimizer.step()
    state = model.state_dict()
    changed = [key for key in state if not torch.equal(state[key], before[key])]
    assert changed, "the optimizer step changed no weight"


def _compare_backend(
    name: str, backend: str, device: str, dtype: torch.dtype, grads: bool, n_head: int = N_HEAD
):
    encoding = build_encoding(name)
    if backend == "flex" and encoding.has_contextual_bias:
        pytest.skip(f"{name}: a contextual bias (from q and k) is no FlexAttention score_mod")
    if backend == "flex" and not encoding.flex_score_mod:
        pytest.skip(
            f"{name}: flex_score_mod is False (its score_bias is no FlexAttention score_mod)"
        )
    if device == "cuda":  # each model recompiles FlexAttention: keep clear of the limit (8)
        torch._dynamo.reset()
    reference = make_model(name, dtype, attention="reference", n_head=n_head).to(device)
    model = make_model(name, dtype, attention=backend, n_head=n_head).to(device)
    model.load_state_dict(reference.state_dict())
    input_ids = random_ids(3, 21, seed=8).to(device)
    mask = torch.ones_like(input_ids)
    mask[1, :6] = 0  # a left-padded row
    mask[2, 15:] = 0  # a right-padded row
    targets = random_ids(3, 21, seed=9).to(device).masked_fill(mask == 0, -100)
    outputs = {}
    tolerance = (
        {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    )
    for label, decoder in (("reference", reference), (backend, model)):
        with torch.set_grad_enabled(grads):
            logits = decoder(input_ids, attention_mask=mask)
            outputs[label] = logits[mask.bool()]
            if grads:
                F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    torch.testing.assert_close(outputs[backend], outputs["reference"], **tolerance)
    if not grads:
        return
    reference_parameters = dict(reference.named_parameters())
    for parameter_name, parameter in model.named_parameters():
        expected = reference_parameters[parameter_name].grad
        if expected is None:
            assert parameter.grad is None, parameter_name
            continue
        torch.testing.assert_close(parameter.grad, expected, msg=parameter_name, **tolerance)


@pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")
@pytest.mark.parametrize("backend", available_backends())
@parametrize_names
def test_backend_matches_the_reference_on_cpu(name, backend):
    """Outputs (and gradients, where the backend has a CPU backward) in float64."""
    # torch 2.13 runs FlexAttention on CPU forward only (no backward).
    _compare_backend(name, backend, "cpu", torch.float64, grads=backend != "flex")


@pytest.mark.skipif("flex" not in available_backends(), reason="no FlexAttention")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside inductor
@parametrize_names
def test_score_bias_compiles_into_a_flex_score_mod(name, monkeypatch):
    """The score bias as attention="flex" uses it on CUDA (compiled FlexAttention): lowered by
    inductor into a score_mod, here on CPU (forward; the same lowering as on CUDA), equal to the
    reference. An encoding that cannot be lowered sets `flex_score_mod = False`."""
    if not build_encoding(name).has_score_bias:
        pytest.skip(f"{name}: no score bias")
    import torch.nn.attention.flex_attention as flex

    torch._dynamo.reset()
    monkeypatch.setattr(flex, "flex_attention", torch.compile(flex.flex_attention))
    _compare_backend(name, "flex", "cpu", torch.float32, grads=False, n_head=2)
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", available_backends())
@parametrize_names
def test_backend_matches_the_reference_on_cuda(name, backend):
    """Outputs and gradients in float32, flex compiled (learned bias parameters included)."""
    n_head = N_HEAD
    if backend == "flex":  # two heads of 16 dims: the compiled kernels need head_dim >= 16
        n_head = 2
        try:
            make_model(name, torch.float32, attention="reference", n_head=n_head)
        except ValueError as error:  # e.g. LongRoPE's example: factors for head_dim 8
            pytest.skip(f"{name}: its example does not fit head_dim 16: {error}")
    _compare_backend(name, backend, "cuda", torch.float32, grads=True, n_head=n_head)


def _eval_batch(prompt_lengths: list[int], target_lengths: list[int], seed: int) -> EvalBatch:
    """A batch laid out like the task collator's: prompt then target, right-padded."""
    width = max(p + t for p, t in zip(prompt_lengths, target_lengths))
    ids = random_ids(len(prompt_lengths), width, seed=seed)
    target_width = max(target_lengths)
    targets = torch.zeros(len(prompt_lengths), target_width, dtype=torch.long)
    for b, (p, t) in enumerate(zip(prompt_lengths, target_lengths)):
        ids[b, p + t :] = 0
        targets[b, :t] = ids[b, p : p + t]
    return EvalBatch(
        input_ids=ids,
        labels=torch.full_like(ids, -100),
        targets=targets,
        prompt_lengths=torch.tensor(prompt_lengths),
        target_lengths=torch.tensor(target_lengths),
        lengths=torch.tensor(prompt_lengths),
    )


@parametrize_names
def test_cached_decoding_equals_uncached(name):
    """Cached prefill + one token at a time gives the full forward's logits, and greedy tokens."""
    from lengen.module import LengenModule

    model = make_model(name, attention="sdpa")
    sequence = random_ids(3, 14, seed=11)
    prompt_lengths = torch.tensor([5, 9, 2])
    if model.pos_encoding.supports_kv_cache:
        with torch.no_grad():
            for side in ("left", "right"):  # padded prompts of 9 tokens, then one token a step
                start = 9 - prompt_lengths[:, None] if side == "left" else torch.zeros(3, 1)
                prompt_mask = (torch.arange(9) >= start) & (
                    torch.arange(9) < start + prompt_lengths[:, None]
                )
                source = (torch.arange(9) - start).long().clamp(min=0, max=13)
                prompts = sequence.gather(1, source).masked_fill(~prompt_mask, 0)
                cache = model.new_cache()
                last = (start + prompt_lengths[:, None] - 1).long()  # (B, 1) last prompt token
                prefill = model(prompts, attention_mask=prompt_mask, cache=cache)
                logits = [prefill.gather(1, last[:, :, None].expand(3, 1, VOCAB))[:, 0]]
                for step in range(4):
                    next_ids = sequence.gather(1, (prompt_lengths + step)[:, None])
                    logits.append(model(next_ids, cache=cache)[:, -1])
                for b in range(3):
                    length = int(prompt_lengths[b])
                    full = model(sequence[b : b + 1, : length + 4])[0, length - 1 :]  # (5, V)
                    cached = torch.stack([step_logits[b] for step_logits in logits])
                    torch.testing.assert_close(cached, full, rtol=1e-9, atol=1e-9, msg=side)
    else:
        with pytest.raises(ValueError, match="supports_kv_cache"):
            model.new_cache()
    module = LengenModule(
        build_encoding(name), vocab_size=VOCAB, n_layer=N_LAYER, n_head=N_HEAD, d_model=D_MODEL,
        metrics=[],
    )  # fmt: skip
    module.decoder.load_state_dict(model.state_dict())
    module = module.to(torch.float64).eval()
    batch = _eval_batch([5, 9, 2, 7], [6, 3, 8, 1], seed=12)
    cached_tokens = module.greedy_generate(batch, use_cache=True)
    uncached_tokens = module.greedy_generate(batch, use_cache=False)
    assert torch.equal(cached_tokens, uncached_tokens)
