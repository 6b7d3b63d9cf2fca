"""Fixed sinusoidal absolute position embeddings (Vaswani et al. 2017)."""

from __future__ import annotations

import torch

from lengen.positional import PositionalEncoding


class Sinusoidal(PositionalEncoding):
    """Fixed sinusoidal absolute positions added to the token embeddings (Vaswani et al. 2017).

    Vaswani et al. 2017, "Attention Is All You Need", section 3.5:

        PE[p, 2i]     = sin(p / base^(2i / d_model))
        PE[p, 2i + 1] = cos(p / base^(2i / d_model))

    multiplied by `scale`, with p the integer position and angles in radians. Computed on the fly
    from the integer positions (no table, hence no length limit) in float32, or float64 for float64
    models, then cast to the embeddings' dtype and added: (B, T, C) + (B, T, C). No parameters.

    Args:
        base: the wavelength base (10000 in the paper); wavelengths go from 2*pi to base*2*pi.
        scale: amplitude of the sinusoids (1 in the paper). The default 0.1 is lengen's choice:
            token embeddings start at std 0.02 and are not multiplied by sqrt(d_model) as in the
            paper, so unit sinusoids drown them. On Copy (configs/experiments/encodings, 1500
            steps) 1 seed of 3 learned the task at scale 1, 3 of 3 at 0.1 and at 0.03.
    """

    def __init__(self, base: float = 10000.0, scale: float = 0.1) -> None:
        super().__init__()
        if base <= 1:
            raise ValueError(f"Sinusoidal: base={base} must be > 1")
        if scale <= 0:
            raise ValueError(f"Sinusoidal: scale={scale} must be > 0")
        self.base = float(base)
        self.scale = float(scale)

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
        return token_embeddings + (self.scale * encoding).to(token_embeddings.dtype)
