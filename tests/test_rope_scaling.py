"""RoPE context extensions against their papers' formulas, written here in plain Python."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from lengen.positional import ModelDims, set_schedulable
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.rope_giraffe import RoPEPartial, RoPEPower, RoPETruncated
from lengen_plugins.positional_encodings.rope_scaling import (
    RoPEDynamicNTK,
    RoPELinear,
    RoPELlama3,
    RoPENTK,
    YaRN,
)

N_HEAD, HEAD_DIM = 2, 16
DIMS = ModelDims(d_model=N_HEAD * HEAD_DIM, n_head=N_HEAD, head_dim=HEAD_DIM)


def bound(encoding):
    encoding.bind(DIMS)
    return encoding


def plain(base: float, r: int) -> list[float]:
    """RoPE's theta_i = base^(-2i/r), i < r/2 (Su et al.)."""
    return [base ** (-2 * i / r) for i in range(r // 2)]


def linear_reference(s: float, base: float, r: int) -> list[float]:
    """Position Interpolation (Chen et al. 2023): angle (p / s) * theta_i."""
    return [theta / s for theta in plain(base, r)]


def ntk_reference(s: float, base: float, r: int) -> list[float]:
    """NTK-aware (bloc97; Peng et al. 2023 eq. 16): base' = base * s^(r/(r-2))."""
    return plain(base * s ** (r / (r - 2)), r)


def dynamic_reference(s: float, length: int, original: int, base: float, r: int) -> list[float]:
    """Dynamic NTK as in transformers: base * (s*L/L0 - (s-1))^(r/(r-2)) when L > L0."""
    if length <= original:
        return plain(base, r)
    return plain(base * (s * length / original - (s - 1)) ** (r / (r - 2)), r)


def yarn_reference(s, original, beta_fast, beta_slow, base, r) -> tuple[list[float], float]:
    """YaRN (Peng et al. 2023, eqs. 18-20, 22): NTK-by-parts frequencies and sqrt(1/t)."""
    frequencies = []
    for theta in plain(base, r):
        turns = original / (2 * math.pi / theta)
        if turns < beta_slow:
            gamma = 0.0
        elif turns > beta_fast:
            gamma = 1.0
        else:
            gamma = (turns - beta_slow) / (beta_fast - beta_slow)
        frequencies.append((1 - gamma) * theta / s + gamma * theta)
    return frequencies, 0.1 * math.log(s) + 1


def llama3_reference(s, original, low, high, base, r) -> list[float]:
    """Llama 3.1 `apply_scaling` (Meta 2024)."""
    out = []
    for theta in plain(base, r):
        wavelength = 2 * math.pi / theta
        if wavelength < original / high:
            out.append(theta)
        elif wavelength > original / low:
            out.append(theta / s)
        else:
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * theta / s + smooth * theta)
    return out


def power_reference(p: float, base: float, r: int) -> list[float]:
    """Giraffe power basis (Pal et al. 2023): theta_i * (1 - 2i/r)^p."""
    return [theta * (1 - 2 * i / r) ** p for i, theta in enumerate(plain(base, r))]


def truncated_reference(a: float, b: float, rho: float, base: float, r: int) -> list[float]:
    """Giraffe truncated basis (Pal et al. 2023, sec. 3.3)."""
    return [theta if theta >= b else rho if theta > a else 0.0 for theta in plain(base, r)]


def frequencies(encoding) -> list[float]:
    return encoding.inverse_frequencies(torch.float64, torch.device("cpu")).tolist()


GOLDEN = [
    (lambda: RoPELinear(scale=4.0), linear_reference(4.0, 10000.0, HEAD_DIM)),
    (lambda: RoPELinear(scale=2.5, base=500.0), linear_reference(2.5, 500.0, HEAD_DIM)),
    (lambda: RoPENTK(scale=8.0), ntk_reference(8.0, 10000.0, HEAD_DIM)),
    (lambda: RoPENTK(scale=3.0, rotary_dim=8), ntk_reference(3.0, 10000.0, 8)),
    (
        lambda: RoPELlama3(scale=8.0, original_max_length=8192, base=500000.0),
        llama3_reference(8.0, 8192, 1.0, 4.0, 500000.0, HEAD_DIM),
    ),
    (
        lambda: RoPELlama3(4.0, original_max_length=64, low_freq_factor=2, high_freq_factor=8),
        llama3_reference(4.0, 64, 2.0, 8.0, 10000.0, HEAD_DIM),
    ),
    (lambda: RoPEPower(power=0.5), power_reference(0.5, 10000.0, HEAD_DIM)),
    (lambda: RoPEPower(power=2.0, base=100.0), power_reference(2.0, 100.0, HEAD_DIM)),
    (
        lambda: RoPETruncated(b=0.05, a=0.004, rho=0.002),
        truncated_reference(0.004, 0.05, 0.002, 10000.0, HEAD_DIM),
    ),
    (
        lambda: RoPETruncated(b=2 * math.pi / 64),  # a = b/8, rho = b/16 by default
        truncated_reference(2 * math.pi / 64 / 8, 2 * math.pi / 64, 2 * math.pi / 64 / 16, 1e4, 16),
    ),
]


@pytest.mark.parametrize("make, expected", GOLDEN)
def test_inverse_frequencies_are_the_formulas(make, expected):
    encoding = bound(make())
    assert frequencies(encoding) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_golden_cases_exercise_every_branch():
    # Llama 3 at L0 = 64: kept, blended and divided frequencies all occur.
    theta = plain(10000.0, HEAD_DIM)
    scaled = llama3_reference(4.0, 64, 2.0, 8.0, 10000.0, HEAD_DIM)
    kinds = {
        "kept" if x == t else "divided" if x == pytest.approx(t / 4) else "blended"
        for x, t in zip(scaled, theta)
    }
    assert kinds == {"kept", "divided", "blended"}
    truncated = truncated_reference(0.004, 0.05, 0.002, 10000.0, HEAD_DIM)
    assert {0.0, 0.002} <= set(truncated) and any(x == t for x, t in zip(truncated, theta))
    yarn, _ = yarn_reference(4.0, 2048, 32.0, 1.0, 10000.0, HEAD_DIM)
    assert yarn[0] == theta[0] and yarn[-1] == pytest.approx(theta[-1] / 4)
    assert any(t / 4 < x < t for x, t in zip(yarn, theta))  # inside the ramp


@pytest.mark.parametrize(
    "s, original, beta_fast, beta_slow", [(4.0, 64, 32.0, 1.0), (16.0, 2048, 32.0, 1.0)]
)
def test_yarn_frequencies_and_attention_factor_are_the_papers(s, original, beta_fast, beta_slow):
    """ramp="turns" is the paper's formula (the default, the authors' code, is in test_parity)."""
    encoding = bound(
        YaRN(
            scale=s,
            original_max_length=original,
            beta_fast=beta_fast,
            beta_slow=beta_slow,
            ramp="turns",
        )
    )
    expected, mscale = yarn_reference(s, original, beta_fast, beta_slow, 10000.0, HEAD_DIM)
    assert frequencies(encoding) == pytest.approx(expected, rel=1e-12)
    assert float(encoding.attention_scale()) == pytest.approx(mscale, rel=1e-6)
    assert bound(YaRN(scale=s, attention_factor=1.25)).attention_scale() == 1.25


def rotation_reference(x: torch.Tensor, positions, inverse_frequencies, factor=1.0):
    """Rotate each pair (x_i, x_{i + r/2}) by p * f_i as a complex product, then scale by factor."""
    out = x.double().clone()
    half = len(inverse_frequencies)
    for b in range(x.shape[0]):
        for t in range(x.shape[2]):
            p = int(positions[b, t])
            for i, f in enumerate(inverse_frequencies):
                rotation = factor * cmath.exp(1j * p * f)
                for h in range(x.shape[1]):
                    z = complex(x[b, h, t, i], x[b, h, t, i + half]) * rotation
                    out[b, h, t, i], out[b, h, t, i + half] = z.real, z.imag
    return out


@pytest.mark.parametrize(
    "make, reference",
    [
        (lambda: RoPELinear(scale=4.0), lambda: (linear_reference(4.0, 1e4, HEAD_DIM), 1.0)),
        (lambda: RoPENTK(scale=4.0), lambda: (ntk_reference(4.0, 1e4, HEAD_DIM), 1.0)),
        (
            lambda: YaRN(scale=8.0, original_max_length=128, ramp="turns"),
            lambda: yarn_reference(8.0, 128, 32.0, 1.0, 1e4, HEAD_DIM),
        ),
        (
            lambda: RoPELlama3(scale=8.0, original_max_length=256),
            lambda: (llama3_reference(8.0, 256, 1.0, 4.0, 1e4, HEAD_DIM), 1.0),
        ),
    ],
)
def test_rotation_matches_a_float64_reference_and_differs_from_plain_rope(make, reference):
    encoding, (expected_frequencies, factor) = bound(make()), reference()
    torch.manual_seed(0)
    query = torch.randn(2, N_HEAD, 5, HEAD_DIM, dtype=torch.float64)
    positions = torch.tensor([[0, 3, 17, 400, 2999], [0, 1, 2, 5000, 12000]])
    rotated, _ = encoding.rotate(query, query, positions, positions)
    expected = rotation_reference(query, positions, expected_frequencies, factor)
    torch.testing.assert_close(rotated, expected, rtol=1e-10, atol=1e-10)
    unscaled, _ = bound(RoPE()).rotate(query, query, positions, positions)
    torch.testing.assert_close(rotated[:, :, 0], factor * query[:, :, 0])  # position 0
    differs = (rotated - unscaled).abs().amax(dim=(1, 3))  # (B, T)
    assert (differs[:, 1:] > 1e-6).all()


def test_scale_one_is_plain_rope_bit_for_bit():
    torch.manual_seed(1)
    query = torch.randn(2, N_HEAD, 7, HEAD_DIM)
    positions = torch.randint(0, 5000, (2, 7))
    expected = bound(RoPE()).rotate(query, query, positions, positions)
    for encoding in (RoPELinear(scale=1.0), RoPENTK(scale=1.0), YaRN(scale=1.0)):
        got = bound(encoding).rotate(query, query, positions, positions)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


# Dynamic NTK -------------------------------------------------------------------------------------


def test_dynamic_ntk_below_the_original_length_is_plain_rope_bit_for_bit():
    torch.manual_seed(2)
    query, key = torch.randn(2, N_HEAD, 9, HEAD_DIM), torch.randn(2, N_HEAD, 9, HEAD_DIM)
    positions = torch.arange(9).expand(2, 9) + torch.tensor([[0], [55]])  # max position 63
    dynamic = bound(RoPEDynamicNTK(original_max_length=64, scale=2.0))
    got = dynamic.rotate(query, key, positions, positions)
    expected = bound(RoPE()).rotate(query, key, positions, positions)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("s", [1.0, 2.0])
def test_dynamic_ntk_above_the_original_length_uses_the_length_of_the_call(s):
    dynamic = bound(RoPEDynamicNTK(original_max_length=64, scale=s))
    for length in (65, 100, 1000):
        got = dynamic.inverse_frequencies_for_length(length, torch.float64, torch.device("cpu"))
        expected = dynamic_reference(s, length, 64, 10000.0, HEAD_DIM)
        assert got.tolist() == pytest.approx(expected, rel=1e-12)
    torch.manual_seed(3)
    query = torch.randn(1, N_HEAD, 4, HEAD_DIM, dtype=torch.float64)
    positions = torch.tensor([[0, 10, 50, 99]])  # length 100
    rotated, _ = dynamic.rotate(query, query, positions, positions)
    reference = rotation_reference(query, positions, dynamic_reference(s, 100, 64, 1e4, HEAD_DIM))
    torch.testing.assert_close(rotated, reference, rtol=1e-10, atol=1e-10)


def test_dynamic_ntk_keeps_no_state_between_calls():
    dynamic = bound(RoPEDynamicNTK(original_max_length=16))
    torch.manual_seed(4)
    short = torch.randn(1, N_HEAD, 10, HEAD_DIM)
    long = torch.randn(1, N_HEAD, 300, HEAD_DIM)
    short_positions, long_positions = torch.arange(10)[None], torch.arange(300)[None]
    before = dynamic.rotate(short, short, short_positions, short_positions)
    dynamic.rotate(long, long, long_positions, long_positions)
    after = dynamic.rotate(short, short, short_positions, short_positions)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


# Scale at training and at evaluation -------------------------------------------------------------


@pytest.mark.parametrize("cls", [RoPELinear, RoPENTK, YaRN, RoPELlama3, RoPEDynamicNTK])
def test_eval_scale_replaces_the_trained_scale_only_in_eval_mode(cls):
    trained = bound(cls(scale=4.0))
    evaluated = bound(cls(scale=4.0, eval_scale=8.0))
    at_eight = bound(cls(scale=8.0))
    assert evaluated.training
    assert frequencies(evaluated) == frequencies(trained)
    evaluated.eval()
    assert frequencies(evaluated) == frequencies(at_eight.eval())
    if cls is not RoPEDynamicNTK:  # dynamic NTK only scales past its original length
        assert frequencies(evaluated) != frequencies(trained.eval())
    # The trained scale is a float32 buffer in the state dict; eval_scale is config, not state.
    state = evaluated.state_dict()
    assert list(state) == ["scale"] and state["scale"].dtype == torch.float32
    assert float(state["scale"]) == 4.0


def test_the_scale_is_schedulable_and_survives_bfloat16():
    encoding = bound(RoPELinear(scale=1.0)).to(torch.bfloat16)
    set_schedulable(encoding, "scale", 3.3)
    assert encoding.scale.dtype == torch.float32
    assert frequencies(encoding) == pytest.approx(
        [x / float(torch.tensor(3.3)) for x in plain(1e4, HEAD_DIM)], rel=1e-7
    )


def test_a_checkpoint_brings_the_scale_and_the_config_brings_eval_scale():
    trained = bound(RoPELinear(scale=4.0))
    restored = bound(RoPELinear(scale=1.0, eval_scale=8.0))
    restored.load_state_dict(trained.state_dict())
    assert float(restored.scale) == 4.0
    restored.eval()
    assert frequencies(restored) == pytest.approx(linear_reference(8.0, 1e4, HEAD_DIM), rel=1e-12)


# Partial rotary ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction, rotary_dim", [(0.25, 4), (0.5, 8), (0.3, 4), (1.0, 16)])
def test_partial_rotary_rotates_only_its_fraction(fraction, rotary_dim):
    encoding = bound(RoPEPartial(fraction=fraction))
    assert encoding.rotary_dim == rotary_dim
    torch.manual_seed(5)
    query = torch.randn(2, N_HEAD, 6, HEAD_DIM, dtype=torch.float64)
    positions = torch.randint(0, 4000, (2, 6))
    rotated, _ = encoding.rotate(query, query, positions, positions)
    assert torch.equal(rotated[..., rotary_dim:], query[..., rotary_dim:])
    expected = rotation_reference(query[..., :rotary_dim], positions, plain(1e4, rotary_dim))
    torch.testing.assert_close(rotated[..., :rotary_dim], expected, rtol=1e-10, atol=1e-10)


# Bad arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RoPELinear(scale=0.5), "scale=0.5"),
        (lambda: RoPENTK(eval_scale=0.0), "eval_scale=0.0"),
        (lambda: RoPENTK(rotary_dim=2).bind(DIMS), "rotary_dim=2"),
        (lambda: RoPEDynamicNTK(original_max_length=0), "original_max_length=0"),
        (lambda: YaRN(beta_fast=1.0, beta_slow=2.0), "beta_slow=2.0"),
        (lambda: YaRN(attention_factor=0.0), "attention_factor=0.0"),
        (lambda: YaRN(ramp="log"), "accepted: dimension, turns"),
        (lambda: RoPELlama3(low_freq_factor=4.0, high_freq_factor=1.0), "low_freq_factor=4.0"),
        (lambda: RoPEPower(power=-1.0), "power=-1.0"),
        (lambda: RoPETruncated(b=0.01, a=0.02), "a=0.02"),
        (lambda: RoPETruncated(rho=-1.0), "rho=-1.0"),
        (lambda: RoPEPartial(fraction=0.0), "fraction=0.0"),
        (lambda: RoPEPartial(fraction=0.1).bind(DIMS), "fraction=0.1"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make()
    assert "\n" not in str(error.value)
