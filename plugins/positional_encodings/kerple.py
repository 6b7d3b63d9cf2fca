"""KERPLE: kernelized relative positional biases, logarithmic and power variants."""

from __future__ import annotations

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding


class _Kerple(PositionalEncoding):
    """Two learned positive parameters per head: r1 ~ U(0, 2), r2 ~ U(0, 1) at init (our choice).

    Positivity (and r2 <= 2 for the power variant) is enforced by clamping in the forward pass,
    as a projection: a clamped value gets no gradient until it is back in range.
    """

    is_relative = True
    eps = 1e-2  # the smallest value r1 and r2 take
    r2_max: float | None = None

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.r1 = nn.Parameter(2 * torch.rand(dims.n_head))
        self.r2 = nn.Parameter(torch.rand(dims.n_head))

    def _parameters_for(self, head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.promote_types(torch.float32, self.r1.dtype)
        r1 = self.r1.to(dtype).clamp(min=self.eps)
        r2 = self.r2.to(dtype).clamp(min=self.eps, max=self.r2_max)
        return r1[head], r2[head]


class KerpleLog(_Kerple):
    """KERPLE log: bias = -r1 * log(1 + r2 * |i - j|), learned r1, r2 > 0 per head (Chi et al.).

    Chi, Fan, Ramadge, Rudnicky 2022, "KERPLE: Kernelized Relative Positional Embedding for Length
    Extrapolation" (NeurIPS), the logarithmic variant of its conditionally positive definite
    kernels. Shift invariant.
    """

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        r1, r2 = self._parameters_for(head)
        distance = (query_position - key_position).abs().to(r1.dtype)
        return -r1 * torch.log1p(r2 * distance)


class KerplePower(_Kerple):
    """KERPLE power: bias = -r1 * |i - j|^r2, learned r1 > 0 and 0 < r2 <= 2 per head (Chi et al.).

    Chi, Fan, Ramadge, Rudnicky 2022, "KERPLE: Kernelized Relative Positional Embedding for Length
    Extrapolation" (NeurIPS), the power variant. Shift invariant. At distance 0 the bias is 0 and
    the gradient with respect to r2 is 0 (not 0 * log 0).
    """

    r2_max = 2.0

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        r1, r2 = self._parameters_for(head)
        distance = (query_position - key_position).abs().to(r1.dtype)
        positive = distance > 0
        power = torch.where(positive, distance, torch.ones_like(distance)) ** r2
        return -r1 * torch.where(positive, power, torch.zeros_like(power))
