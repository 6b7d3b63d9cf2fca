"""XPos against an independent float64 reference of Sun et al.'s formula; the RoPE -> xPos blend."""

from __future__ import annotations

import cmath

import pytest
import torch

from lengen.model import Decoder
from lengen.positional import ModelDims, set_schedulable
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.xpos import XPos

HEAD_DIM = 8
DIMS = ModelDims(d_model=32, n_head=4, head_dim=HEAD_DIM)


def bound(encoding):
    encoding.bind(DIMS)
    return encoding


def reference_xpos(x, positions, centre, sign, rotary_dim, base=10000.0, scale_base=512.0):
    """One head vector per position, as complex pairs: z_i <- z_i e^{j n theta_i} zeta_i^(s n/sb).

    Written from the paper's formula alone (float64, Python complex numbers): pair i is
    (x_i, x_{i + r/2}) (the half-split pairing), theta_i = base^(-2i/r),
    zeta_i = (2i/r + 0.4) / 1.4, and the exponent is measured from `centre`.
    """
    out = x.clone().double()
    half = rotary_dim // 2
    for row in range(x.shape[0]):
        for t in range(x.shape[1]):
            n = int(positions[row, t])
            for i in range(half):
                theta = base ** (-2 * i / rotary_dim)
                zeta = (2 * i / rotary_dim + 0.4) / 1.4
                z = complex(float(x[row, t, i]), float(x[row, t, i + half]))
                z = z * cmath.exp(1j * n * theta) * zeta ** (sign * (n - centre[row]) / scale_base)
                out[row, t, i], out[row, t, i + half] = z.real, z.imag
    return out


@pytest.mark.parametrize("centre", [True, False])
def test_blend_zero_is_rope_output_for_output(centre):
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 40, HEAD_DIM), torch.randn(2, 4, 40, HEAD_DIM)
    positions = torch.randint(0, 5000, (2, 40)).sort(dim=1).values
    xpos = bound(XPos(centre=centre, blend=0.0))
    rope = bound(RoPE())
    for got, want in zip(
        xpos.rotate(q, k, positions, positions), rope.rotate(q, k, positions, positions)
    ):
        assert torch.equal(got, want)


def test_blend_zero_decoder_logits_equal_rope_decoder_logits():
    torch.manual_seed(1)
    with_rope = Decoder(11, RoPE(), n_layer=2, n_head=4, d_model=32)
    with_xpos = Decoder(11, XPos(), n_layer=2, n_head=4, d_model=32)
    state = {k: v for k, v in with_rope.state_dict().items()}
    missing = with_xpos.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == ["pos_encoding.blend", "pos_encoding.scale_base"]
    tokens = torch.randint(0, 11, (3, 50))
    set_schedulable(with_xpos.pos_encoding, "blend", 0.0)
    assert torch.equal(with_xpos(tokens), with_rope(tokens))
    set_schedulable(with_xpos.pos_encoding, "blend", 1.0)
    assert not torch.allclose(with_xpos(tokens), with_rope(tokens))


@pytest.mark.parametrize("centre", [True, False])
@pytest.mark.parametrize("rotary_dim", [None, 4])
def test_blend_one_matches_float64_reference(centre, rotary_dim):
    torch.manual_seed(2)
    q, k = torch.randn(2, 1, 30, HEAD_DIM), torch.randn(2, 1, 30, HEAD_DIM)
    positions = torch.randint(0, 3000, (2, 30)).sort(dim=1).values
    xpos = bound(XPos(rotary_dim=rotary_dim, centre=centre))
    r = rotary_dim or HEAD_DIM
    mid = [(int(p.min()) + int(p.max())) // 2 if centre else 0 for p in positions]
    want_q = reference_xpos(q[:, 0], positions, mid, +1, r)
    want_k = reference_xpos(k[:, 0], positions, mid, -1, r)
    # float64 inputs: computed in float64, equal to the formula to rounding.
    rq, rk = xpos.rotate(q.double(), k.double(), positions, positions)
    torch.testing.assert_close(rq[:, 0], want_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rk[:, 0], want_k, rtol=1e-12, atol=1e-12)
    # float32: angles n * theta in float32 carry an error up to ~n * 2^-24 rad (3000 -> 2e-4).
    rq, rk = xpos.rotate(q, k, positions, positions)
    scale = max(want_q.abs().max(), want_k.abs().max())
    torch.testing.assert_close(rq[:, 0].double(), want_q, rtol=0, atol=5e-4 * scale)
    torch.testing.assert_close(rk[:, 0].double(), want_k, rtol=0, atol=5e-4 * scale)


def test_scores_decay_with_distance_and_centring_leaves_them_unchanged():
    torch.manual_seed(3)
    q, k = torch.randn(1, 2, 64, HEAD_DIM).double(), torch.randn(1, 2, 64, HEAD_DIM).double()
    positions = torch.arange(64)[None] * 37
    centred = bound(XPos(centre=True)).rotate(q, k, positions, positions)
    plain = bound(XPos(centre=False)).rotate(q, k, positions, positions)
    torch.testing.assert_close(centred[0] @ centred[1].mT, plain[0] @ plain[1].mT)
    # Blend 0.5 halves the exponent: the scaling of q_m . k_n is zeta^(0.5 (m - n) / sb).
    half = bound(XPos(blend=0.5, scale_base=512.0))
    same = bound(XPos(scale_base=1024.0))
    torch.testing.assert_close(
        half.rotate(q, k, positions, positions), same.rotate(q, k, positions, positions)
    )


def test_schedulable_buffers_stay_float32_and_move_the_output():
    xpos = bound(XPos())
    assert set(xpos.schedulable_values()) == {"blend", "scale_base"}
    xpos.to(torch.float16)
    assert xpos.blend.dtype == torch.float32 and xpos.scale_base.dtype == torch.float32
    xpos.to(torch.float32)
    q, k = torch.randn(1, 1, 10, HEAD_DIM), torch.randn(1, 1, 10, HEAD_DIM)
    positions = torch.arange(10)[None] * 100
    before = xpos.rotate(q, k, positions, positions)[0]
    set_schedulable(xpos, "scale_base", 4096.0)
    assert not torch.allclose(xpos.rotate(q, k, positions, positions)[0], before)


def test_float16_long_sequences_stay_finite_only_with_centring():
    torch.manual_seed(4)
    q = torch.randn(1, 2, 4096, HEAD_DIM).half()
    k = torch.randn(1, 2, 4096, HEAD_DIM).half()
    positions = torch.arange(4096)[None]
    rq, rk = bound(XPos(centre=True)).rotate(q, k, positions, positions)
    assert rq.dtype == torch.float16 and torch.isfinite(rq).all() and torch.isfinite(rk).all()
    long = torch.arange(8192)[None]
    k_long = torch.randn(1, 2, 8192, HEAD_DIM).half()
    _, uncentred = bound(XPos(centre=False)).rotate(k_long, k_long, long, long)
    assert not torch.isfinite(uncentred).all()  # zeta^(-8192/512) on keys overflows float16
    model = Decoder(11, XPos(), n_layer=1, n_head=4, d_model=32).half()
    logits = model(torch.randint(0, 11, (1, 4096)))
    assert torch.isfinite(logits).all()


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="blend=2"):
        XPos(blend=2.0)
    with pytest.raises(ValueError, match="scale_base=0"):
        XPos(scale_base=0)
