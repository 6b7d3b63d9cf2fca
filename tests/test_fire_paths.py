"""FIRE's bias for all heads at once (no per-head gather) and from one MLP evaluation per
distinct input (the (query class, distance) grid), against the formula written out in float64.

Li et al. 2024, "Functional Interpolation for Relative Positions Improves Long Context
Transformers" (ICLR): b(i, j) = f(psi(i - j) / psi(max(L, i))), psi(x) = log(c x + 1), f an MLP
1 -> width -> heads with ReLU; as in lengen, |i - j| and |c| and eps added to the normaliser.
"""

from __future__ import annotations

import pytest
import torch

from lengen.positional import ModelDims, build_bias
from lengen_plugins.positional_encodings.fire import FIRE

N_HEAD, WIDTH = 3, 6


def fire_formula(encoding: FIRE, query_positions, key_positions) -> torch.Tensor:
    """(B, Tq), (B, Tk) positions -> (B, nh, Tq, Tk) bias, the paper's formula term by term."""
    c = encoding.c.abs()
    threshold = encoding.threshold_multiplier.abs() * encoding.init_threshold
    query = query_positions.double()[:, :, None]  # (B, Tq, 1)
    key = key_positions.double()[:, None, :]  # (B, 1, Tk)
    psi_distance = torch.log(c * (query - key).abs() + 1)
    psi_normaliser = torch.log(c * torch.maximum(query, threshold) + 1) + encoding.eps
    x = psi_distance / psi_normaliser  # (B, Tq, Tk)
    w1, b1 = encoding.hidden.weight[:, 0], encoding.hidden.bias  # (W,), (W,)
    hidden = torch.relu(x[..., None] * w1 + b1)  # (B, Tq, Tk, W)
    out = torch.einsum("bqkw,hw->bhqk", hidden, encoding.out.weight)
    return out + encoding.out.bias[None, :, None, None]


def make_fire(seed: int, threshold: float) -> FIRE:
    encoding = FIRE(mlp_width=WIDTH, init_threshold=threshold)
    encoding.bind(ModelDims(d_model=12, n_head=N_HEAD, head_dim=4))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in encoding.parameters():  # every hidden unit active for some inputs
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        encoding.c.copy_(0.05 + torch.rand((), generator=generator))
        encoding.threshold_multiplier.fill_(1.0)
    return encoding.double()


def positions_for(case: str) -> torch.Tensor:
    if case == "consecutive":  # L = 12 exactly at a position: a class of its own
        return torch.arange(30)[None]
    if case == "offsets":
        return torch.arange(25)[None] + torch.tensor([[0], [7]])
    if case == "padded":  # left padding: repeated position 0, as the decoder counts
        return (torch.tensor([[0] * 5 + [1] * 20, [1] * 25]).cumsum(1) - 1).clamp(min=0)
    if case == "below L":  # one class: T evaluations
        return torch.arange(10)[None]
    if case == "real-valued":  # per pair
        return torch.arange(20)[None].double() * 1.5
    raise ValueError(case)


CASES = ["consecutive", "offsets", "padded", "below L", "real-valued"]


@pytest.mark.parametrize("case", CASES)
def test_fire_bias_and_gradients_against_the_formula(case, monkeypatch):
    encoding = make_fire(CASES.index(case), threshold=12.0)
    by_class = []
    original = FIRE._by_class
    monkeypatch.setattr(FIRE, "_by_class", lambda *a: (by_class.append(r := original(*a)), r)[1])
    positions = positions_for(case)
    bias = build_bias(encoding, N_HEAD, positions, positions)  # (B, nh, T, T)
    assert by_class == [None] if case == "real-valued" else by_class[0] is not None
    expected = fire_formula(encoding, positions, positions)
    assert bias.shape == expected.shape and bias.dtype == torch.float64
    torch.testing.assert_close(bias, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(bias.shape, generator=torch.Generator().manual_seed(1), dtype=bias.dtype)
    parameters = list(encoding.parameters())
    grads = torch.autograd.grad(bias, parameters, upstream)
    expected_grads = torch.autograd.grad(expected, parameters, upstream)
    names = [name for name, _ in encoding.named_parameters()]
    for grad, expected_grad, name in zip(grads, expected_grads, names):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10, msg=name)


def test_fire_other_head_layouts_take_the_gather():
    """A scalar head (a FlexAttention score_mod) or heads in another order: the general path,
    the same values as the formula."""
    encoding = make_fire(9, threshold=4.0)
    positions = torch.arange(9)[None]
    expected = fire_formula(encoding, positions, positions)[0]  # (nh, T, T)
    query, key = positions[0, :, None], positions[0, None, :]
    for head in range(N_HEAD):
        got = encoding.score_bias(torch.tensor(head), query, key)
        torch.testing.assert_close(got, expected[head], rtol=1e-12, atol=1e-12)
    reversed_heads = torch.arange(N_HEAD - 1, -1, -1).view(N_HEAD, 1, 1)
    got = encoding.score_bias(reversed_heads, query[None], key[None])
    torch.testing.assert_close(got, expected.flip(0), rtol=1e-12, atol=1e-12)
