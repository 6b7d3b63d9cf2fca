"""Parity of XPos with x-transformers' xPos (extra: parity) and torchscale's formula (frozen).

x-transformers (lucidrains) ports torchscale's xPos: zeta_i = (2i + 0.4 d) / (1.4 d), queries
scaled by zeta^((t - c) / scale_base) and keys by its inverse, with c = (max position + 1) // 2,
and the interleaved pairing (x_2i, x_2i+1). lengen uses the half-split pairing and
c = (min + max) // 2, so the test permutes the head dims and uses an odd length (both centres
equal). torchscale itself is not installable here; its formula is checked by a frozen table.
"""

from __future__ import annotations

import pytest
import torch

from lengen.positional import ModelDims
from lengen_plugins.positional_encodings.xpos import XPos

HEAD_DIM, N_HEAD = 16, 2


def bound(encoding: XPos) -> XPos:
    encoding.bind(ModelDims(d_model=HEAD_DIM * N_HEAD, n_head=N_HEAD, head_dim=HEAD_DIM))
    return encoding


def to_interleaved(x: torch.Tensor) -> torch.Tensor:
    """(..., d) half-split layout (x_i, x_{i+d/2}) -> interleaved (x_2i, x_2i+1)."""
    first, second = x.chunk(2, dim=-1)
    return torch.stack((first, second), dim=-1).flatten(-2)


def test_xpos_matches_x_transformers():
    x_transformers = pytest.importorskip("x_transformers.x_transformers")
    rotary = x_transformers.RotaryEmbedding(HEAD_DIM, use_xpos=True, scale_base=512)
    length = 41  # odd: (length) // 2 == (0 + length - 1) // 2, the same centre
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, N_HEAD, length, HEAD_DIM, generator=generator, dtype=torch.float64)
    key = torch.randn(1, N_HEAD, length, HEAD_DIM, generator=generator, dtype=torch.float64)
    positions = torch.arange(length)
    freqs, scale = rotary(positions)  # (1, T, d) each
    expected_query = x_transformers.apply_rotary_pos_emb(to_interleaved(query), freqs, scale)
    expected_key = x_transformers.apply_rotary_pos_emb(to_interleaved(key), freqs, scale**-1)
    encoding = bound(XPos(scale_base=512.0, centre=True))
    ours_query, ours_key = encoding.rotate(query, key, positions[None], positions[None])
    # x-transformers computes in float32.
    torch.testing.assert_close(
        to_interleaved(ours_query), expected_query.double(), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        to_interleaved(ours_key), expected_key.double(), rtol=1e-5, atol=1e-5
    )


# torchscale's xPos: microsoft/torchscale, torchscale/component/xpos_relative_position.py, commit
# 776b070d68aef2aca447dc3e1adb64682fbec126 (class XPOS). For head_dim d its buffer is
# (arange(0, d, 2) + 0.4 d) / (1.4 d), raised to (offset from the centre) / scale_base; queries get
# the factor, keys (downscale=True) its inverse. Values computed from that expression in float64
# for d = 16, scale_base = 512, pairs i = 0, 3, 7 at offsets n = -20 and 37. (torchscale's centre
# is ceil(T / 2), lengen's floor((T - 1) / 2): a constant factor that cancels in q.k.)
TORCHSCALE_FACTORS = {
    (0, -20): 1.0501531949262668,
    (0, 37): 0.9134453782327331,
    (3, -20): 1.0233690506570896,
    (3, 37): 0.9581649595843122,
    (7, -20): 1.0036600433010503,
    (7, 37): 0.9932640697356931,
}


def test_xpos_decay_factors_equal_torchscales_formula_frozen():
    encoding = bound(XPos(scale_base=512.0, centre=False))
    zeta = encoding.decay(torch.float64, torch.device("cpu"))  # (d/2,)
    for (pair, offset), expected in TORCHSCALE_FACTORS.items():
        assert float(zeta[pair] ** (offset / 512.0)) == pytest.approx(expected, rel=1e-12)
    assert float(zeta[0] ** 0.0) == 1.0
