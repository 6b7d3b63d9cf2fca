"""Giraffe's modified RoPE bases: the power basis and the truncated basis (Pal et al. 2023)."""

from __future__ import annotations

import math

import torch

from lengen.positional import ModelDims
from lengen_plugins.positional_encodings.rope import RoPE


class RoPEPower(RoPE):
    """Power basis: theta_i * (1 - 2i/r)^p, low frequencies slowed more (Giraffe, Pal et al. 2023).

    Pal, Karkhanis, Roberts, Dooley, Sundararajan, Naidu 2023, "Giraffe: Adventures in Expanding
    Context Lengths in LLMs", section 3. With theta_i = base^(-2i/r), i < r/2, the frequencies
    become theta_i * (1 - 2i/r)^p: the highest (i = 0) is unchanged, the lowest shrink towards
    0 (the last to (2/r)^p times its value). p = 0 is plain RoPE.

    Args:
        power: the exponent p >= 0 (Giraffe reports 0.5).
        base, rotary_dim: as for `RoPE`.
    """

    def __init__(
        self, power: float = 0.5, base: float = 10000.0, rotary_dim: int | None = None
    ) -> None:
        super().__init__(base=base, rotary_dim=rotary_dim)
        if not power >= 0:
            raise ValueError(f"RoPEPower: power={power} must be >= 0 (0 is plain RoPE)")
        self.power = float(power)

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        even_dims = torch.arange(0, self.rotary_dim, 2, dtype=dtype, device=device)  # 2i
        shrink = (1 - even_dims / self.rotary_dim) ** self.power  # (r/2,), 1 at i = 0
        return super().inverse_frequencies(dtype, device) * shrink


class RoPETruncated(RoPE):
    """Truncated basis: keep theta_i >= b, set a < theta_i < b to rho, the rest to 0 (Giraffe).

    Pal et al. 2023, "Giraffe: Adventures in Expanding Context Lengths in LLMs", section 3.3:

        theta*_i = theta_i  if theta_i >= b
                   rho      if a < theta_i < b
                   0        if theta_i <= a

    Frequencies fast enough to turn fully within the training context are kept; the slowest are
    set to 0 (no rotation: the same at every distance) and a middle band to one small shared
    frequency rho. Frequencies are in radians per position. The defaults follow the ratios of the
    authors' release (abacusai/Long-Context): for a cutoff wavelength w, b = 2*pi / w, a = b / 8,
    rho = b / 16.

    Args:
        b: the cutoff above which frequencies are kept (default 2*pi / 2048).
        a: the cutoff at or below which frequencies become 0 (default b / 8); 0 <= a < b.
        rho: the frequency of the middle band (default b / 16); >= 0.
        base, rotary_dim: as for `RoPE`.
    """

    def __init__(
        self,
        b: float = 2 * math.pi / 2048,
        a: float | None = None,
        rho: float | None = None,
        base: float = 10000.0,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__(base=base, rotary_dim=rotary_dim)
        a = b / 8 if a is None else a
        rho = b / 16 if rho is None else rho
        if not 0 <= a < b:
            raise ValueError(f"RoPETruncated: a={a}, b={b}: need 0 <= a < b (radians/position)")
        if not rho >= 0:
            raise ValueError(f"RoPETruncated: rho={rho} must be >= 0 (radians/position)")
        self.b, self.a, self.rho = float(b), float(a), float(rho)

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        theta = super().inverse_frequencies(dtype, device)  # (r/2,)
        middle = torch.full_like(theta, self.rho)
        truncated = torch.where(theta > self.a, middle, torch.zeros_like(theta))
        return torch.where(theta >= self.b, theta, truncated)


class RoPEPartial(RoPE):
    """Partial rotary: only the first fraction of each head's dims rotate (GPT-NeoX, GPT-J).

    Black et al. 2022, "GPT-NeoX-20B" (rotary_pct = 0.25) and Wang & Komatsuzaki 2021, GPT-J.
    rotary_dim = the largest even number <= fraction * head_dim; the other dims pass through
    unchanged and carry no position.

    Args:
        fraction: the share of each head's dims that rotate, 0 < fraction <= 1.
        base: as for `RoPE`.
    """

    def __init__(self, fraction: float = 0.25, base: float = 10000.0) -> None:
        super().__init__(base=base)
        if not 0 < fraction <= 1:
            raise ValueError(f"RoPEPartial: fraction={fraction} must be in (0, 1]")
        self.fraction = float(fraction)

    def bind(self, dims: ModelDims) -> None:
        rotary_dim = 2 * int(self.fraction * dims.head_dim / 2)
        if rotary_dim == 0:
            raise ValueError(
                f"RoPEPartial: fraction={self.fraction} of head_dim={dims.head_dim} rotates no "
                f"pair of dims; raise fraction to at least {2 / dims.head_dim}"
            )
        self.requested_rotary_dim = rotary_dim
        super().bind(dims)
