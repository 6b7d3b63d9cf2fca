"""RoPE: rotary position embedding of queries and keys (Su et al., RoFormer)."""

from __future__ import annotations

import torch

from lengen.positional import ModelDims, PositionalEncoding


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., d): (x1, x2) -> (-x2, x1) with x1, x2 the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int
) -> torch.Tensor:
    """(B, nh, T, hs) x, (B, 1, T, r) cos and sin -> (B, nh, T, hs) in x's dtype.

    The first r = rotary_dim dims of each head rotate; the others pass through.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    x_rot = x_rot * cos + rotate_half(x_rot) * sin  # (B, nh, T, r)
    return torch.cat((x_rot, x_pass), dim=-1)  # (B, nh, T, hs)


class RoPE(PositionalEncoding):
    """RoPE: queries and keys rotated by position-dependent angles (Su et al., RoFormer).

    Su, Lu, Pan, Murtadha, Wen, Liu 2021, "RoFormer: Enhanced Transformer with Rotary Position
    Embedding". Within each head, the pair of dims (x_i, x_{i + r/2}) for i < r/2 is rotated by
    the angle p * theta_i (radians), with p the integer position, r = rotary_dim and
    theta_i = base^(-2i / r). This is the "rotate_half" (half-split) pairing of GPT-NeoX and Llama,
    not the interleaved (x_{2i}, x_{2i+1}) pairing of the paper: the two are the same encoding up
    to a fixed permutation of the head dims, but checkpoints are not interchangeable. Only the
    first `rotary_dim` dims of each head rotate; the remaining head_dim - rotary_dim pass through.

    Angles are computed from the integer positions in float32 (float64 for float64 models), never
    in half precision, and cos/sin are cast to the queries' dtype at the end. No parameters.

    Args:
        base: the frequency base (10000 in the paper).
        rotary_dim: how many dims of each head rotate; even, <= head_dim; None means head_dim.
    """

    is_relative = True

    def __init__(self, base: float = 10000.0, rotary_dim: int | None = None) -> None:
        super().__init__()
        if base <= 1:
            raise ValueError(f"RoPE: base={base} must be > 1")
        self.base = float(base)
        self.requested_rotary_dim = rotary_dim  # resolved against head_dim in `bind`

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        rotary_dim = self.requested_rotary_dim
        if rotary_dim is None:
            rotary_dim = dims.head_dim
        if rotary_dim <= 0 or rotary_dim % 2 or rotary_dim > dims.head_dim:
            raise ValueError(
                f"RoPE: rotary_dim={rotary_dim} is not accepted; it must be a positive even "
                f"number <= head_dim={dims.head_dim} (or None for all of head_dim)"
            )
        self.rotary_dim = rotary_dim

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """theta_i = base^(-2i / rotary_dim) for i < rotary_dim / 2, in radians per position."""
        even_dims = torch.arange(0, self.rotary_dim, 2, dtype=dtype, device=device)  # 2i
        return 1.0 / (self.base ** (even_dims / self.rotary_dim))  # (r/2,)

    def attention_scale(self) -> float | torch.Tensor:
        """Factor multiplying cos and sin (so q.k by its square); 1 for RoPE, YaRN's mscale."""
        return 1.0

    def _cos_sin(
        self,
        positions: torch.Tensor,
        dtype: torch.dtype,
        inverse_frequencies: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) int positions -> cos, sin of shape (B, 1, T, r), computed in `dtype`.

        Computed once per forward for a positions tensor and reused by every layer's queries and
        keys (`cached_table`; an `inverse_frequencies` tensor must then be the same object too).
        """
        return self.cached_table(
            ("rope_cos_sin", dtype),
            (positions, inverse_frequencies),
            lambda: self._compute_cos_sin(positions, dtype, inverse_frequencies),
        )

    def _compute_cos_sin(
        self,
        positions: torch.Tensor,
        dtype: torch.dtype,
        inverse_frequencies: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`_cos_sin` without reuse: (B, T) int positions -> cos, sin of shape (B, 1, T, r)."""
        if inverse_frequencies is None:
            inverse_frequencies = self.inverse_frequencies(dtype, positions.device)  # (r/2,)
        angles = positions.to(dtype)[:, None, :, None] * inverse_frequencies  # (B, 1, T, r/2)
        angles = torch.cat((angles, angles), dim=-1)  # (B, 1, T, r): the same angle for both halves
        cos, sin = angles.cos(), angles.sin()
        scale = self.attention_scale()
        if isinstance(scale, torch.Tensor) or scale != 1.0:
            cos, sin = cos * scale, sin * scale
        return cos, sin

    def _apply_rotation(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        inverse_frequencies: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, nh, T, hs) x, (B, T) int positions -> (B, nh, T, hs) in x's dtype."""
        compute_dtype = torch.promote_types(torch.float32, x.dtype)
        if inverse_frequencies is None:  # the two-argument call keeps older overrides working
            cos, sin = self._cos_sin(positions, compute_dtype)
        else:
            inverse_frequencies = inverse_frequencies.to(compute_dtype)
            cos, sin = self._cos_sin(positions, compute_dtype, inverse_frequencies)
        return apply_rotary(x, cos, sin, self.rotary_dim)

    def rotate(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, nh, Tq, hs) query, (B, nh, Tk, hs) key, (B, Tq) and (B, Tk) int positions."""
        return (
            self._apply_rotation(query, query_positions),
            self._apply_rotation(key, key_positions),
        )
