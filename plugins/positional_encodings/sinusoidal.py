"""Fixed sinusoidal absolute position embeddings (Vaswani et al. 2017)."""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding


class Sinusoidal(PositionalEncoding):
    """Fixed sinusoidal absolute positions added to the token embeddings (Vaswani et al. 2017).

    Vaswani et al. 2017, "Attention Is All You Need", section 3.5:

        PE[p, 2i]     = sin(p / base^(2i / d_model))
        PE[p, 2i + 1] = cos(p / base^(2i / d_model))

    with p the integer position and angles in radians. Computed on the fly from the integer
    positions (no table, hence no length limit) in float32, or float64 for float64 models, then cast
    to the embeddings' dtype and added: (B, T, C) + (B, T, C). No parameters.

    Args:
        base: the wavelength base (10000 in the paper); wavelengths go from 2*pi to base*2*pi.
    """

    def __init__(self, base: float = 10000.0) -> None:
        super().__init__()
        if base <= 1:
            raise ValueError(f"Sinusoidal: base={base} must be > 1")
        self.base = float(base)

    def embed(self, token_embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T, C) token embeddings, (B, T) int positions -> (B, T, C)."""
        d_model = token_embeddings.shape[-1]
        dtype = torch.promote_types(torch.float32, token_embeddings.dtype)
        even_dims = torch.arange(0, d_model, 2, dtype=dtype, device=positions.device)  # 2i
        inverse_frequencies = 1.0 / (self.base ** (even_dims / d_model))  # (ceil(C/2),)
        angles = positions.to(dtype)[..., None] * inverse_frequencies  # (B, T, ceil(C/2))
        # Interleave: sin at even dims, cos at odd dims; an odd d_model drops the last cos.
        encoding = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (B, T, ceil(C/2), 2)
        encoding = encoding.flatten(-2)[..., :d_model]  # (B, T, C)
        return token_embeddings + encoding.to(token_embeddings.dtype)
