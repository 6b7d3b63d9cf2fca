"""xPos: RoPE with a per-dimension exponential decay of the scores (Sun et al. 2023)."""

from __future__ import annotations

import torch

from lengen_plugins.positional_encodings.rope import RoPE, apply_rotary


class XPos(RoPE):
    """xPos: RoPE whose queries and keys are also scaled so that scores decay with distance.

    Sun, Dong, Patra, Ma, Huang, Benhaim, Chaudhary, Song, Wei 2023, "A Length-Extrapolatable
    Transformer" (ACL). Each rotary pair i < r/2 (r = rotary_dim) gets the decay
    zeta_i = (2i / r + gamma) / (1 + gamma) with gamma = 0.4; a query at position n is scaled by
    zeta_i^(n / scale_base) and a key at position n by zeta_i^(-n / scale_base), so the score of
    query m and key n carries zeta_i^((m - n) / scale_base), a decay with the relative distance.
    The rotation itself is `RoPE`'s (same pairing and frequencies).

    `centre=True` measures the scaling exponent from c = the middle of each row's key positions,
    (min + max) // 2, for both queries and keys: the product above is unchanged, but the factors
    stay within zeta^(+-L/2 / scale_base) instead of reaching zeta^(-L / scale_base), which
    overflows float16 at long lengths. The rotation always uses the positions themselves.

    Schedulable (0-dim float32 buffers, see `PositionalEncoding.schedulable`):
      blend: alpha multiplies the decay exponent; alpha = 0 is exactly RoPE (every factor is 1),
        alpha = 1 exactly xPos. `RopeToXPosBlend` moves it from 0 to 1 during training.
      scale_base: the decay length; Giraffe's annealing moves it from a large value to the target.
    Scales are computed in float32 (float64 for float64 models) and folded into cos/sin before the
    cast to the queries' dtype.

    Args:
        base: RoPE's frequency base.
        rotary_dim: as in `RoPE`.
        scale_base: the decay length in positions (512 in the paper).
        gamma: the decay offset (0.4 in the paper).
        centre: centre the scaling exponent (see above).
        blend: the initial alpha (1.0 = xPos).
    """

    schedulable = ("blend", "scale_base")
    is_relative = True  # scores depend on m - n only (rotation and decay alike)
    checked_dtypes = (torch.float32, torch.bfloat16, torch.float16)

    def __init__(
        self,
        base: float = 10000.0,
        rotary_dim: int | None = None,
        scale_base: float = 512.0,
        gamma: float = 0.4,
        centre: bool = True,
        blend: float = 1.0,
    ) -> None:
        super().__init__(base=base, rotary_dim=rotary_dim)
        if scale_base <= 0:
            raise ValueError(f"XPos: scale_base={scale_base} must be > 0")
        if gamma <= 0:
            raise ValueError(f"XPos: gamma={gamma} must be > 0")
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"XPos: blend={blend} must be in [0, 1] (0 = RoPE, 1 = xPos)")
        self.gamma = float(gamma)
        self.centre = centre
        # The centre moves as keys are appended, so cached keys would carry stale scales.
        self.supports_kv_cache = not centre
        self.register_buffer("blend", torch.tensor(float(blend), dtype=torch.float32))
        self.register_buffer("scale_base", torch.tensor(float(scale_base), dtype=torch.float32))

    def decay(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """zeta_i = (2i / r + gamma) / (1 + gamma) for i < r / 2 -> (r/2,)."""
        even_dims = torch.arange(0, self.rotary_dim, 2, dtype=dtype, device=device)  # 2i
        return (even_dims / self.rotary_dim + self.gamma) / (1.0 + self.gamma)

    def _scale(self, offsets: torch.Tensor, sign: float, dtype: torch.dtype) -> torch.Tensor:
        """(B, T) int offsets from the centre -> (B, 1, T, r) factors zeta^(sign * a * n / sb)."""
        zeta = self.decay(dtype, offsets.device)  # (r/2,)
        exponent = offsets.to(dtype) * (sign * self.blend.to(dtype) / self.scale_base.to(dtype))
        scale = zeta ** exponent[:, None, :, None]  # (B, 1, T, r/2)
        return torch.cat((scale, scale), dim=-1)  # (B, 1, T, r): both halves of a pair

    def _rotate_and_scale(
        self, x: torch.Tensor, positions: torch.Tensor, centre: torch.Tensor, sign: float
    ) -> torch.Tensor:
        """(B, nh, T, hs) x, (B, T) int positions, (B, 1) centre -> (B, nh, T, hs) in x's dtype."""
        compute_dtype = torch.promote_types(torch.float32, x.dtype)
        cos, sin = self._cos_sin(positions, compute_dtype)  # (B, 1, T, r)
        scale = self._scale(positions - centre, sign, compute_dtype)  # (B, 1, T, r)
        return apply_rotary(x, cos * scale, sin * scale, self.rotary_dim)

    def rotate(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, nh, Tq, hs) query, (B, nh, Tk, hs) key, (B, Tq) and (B, Tk) int positions.

        The scaled cos/sin tables are computed once per forward and reused by every layer
        (`cached_table`); the blend and scale_base read at that time hold for the whole forward.
        """
        compute_dtype = torch.promote_types(torch.float32, query.dtype)
        cos_q, sin_q, cos_k, sin_k = self.cached_table(
            ("xpos_tables", compute_dtype),
            (query_positions, key_positions),
            lambda: self._tables(query_positions, key_positions, compute_dtype),
        )
        return (
            apply_rotary(query, cos_q, sin_q, self.rotary_dim),
            apply_rotary(key, cos_k, sin_k, self.rotary_dim),
        )

    def _centre(self, key_positions: torch.Tensor) -> torch.Tensor:
        """(B, Tk) int key positions -> (B, 1) the offset the scaling exponent is measured from."""
        if self.centre:
            low, high = key_positions.amin(dim=1), key_positions.amax(dim=1)
            return torch.div(low + high, 2, rounding_mode="floor")[:, None]  # (B, 1)
        return torch.zeros_like(key_positions[:, :1])  # (B, 1)

    def _tables(
        self, query_positions: torch.Tensor, key_positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> cos, sin for the queries (B, 1, Tq, r) and for the keys (B, 1, Tk, r), scaled."""
        centre = self._centre(key_positions)  # (B, 1)
        cos_q, sin_q = self._cos_sin(query_positions, dtype)  # (B, 1, Tq, r)
        scale_q = self._scale(query_positions - centre, +1.0, dtype)  # (B, 1, Tq, r)
        cos_k, sin_k = self._cos_sin(key_positions, dtype)  # (B, 1, Tk, r)
        scale_k = self._scale(key_positions - centre, -1.0, dtype)  # (B, 1, Tk, r)
        return cos_q * scale_q, sin_q * scale_q, cos_k * scale_k, sin_k * scale_k
