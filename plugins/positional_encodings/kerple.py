"""KERPLE: kernelized relative positional biases, logarithmic and power variants."""

from __future__ import annotations

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding


class _Kerple(PositionalEncoding):
    """Two learned positive parameters per head, kept in range as the authors' code does.

    Reference: chijames/KERPLE, megatron/mpu/layers.py (`ParallelKerpleLog`, `ParallelKerplePower`,
    commit 73f1ee2d24722cdbe277d473899321218f5cbd00). Initialisation, per head: the parameter
    that multiplies the kernel ~ U(0, 2) for the log variant (`bias_p`) and ~ U(0, 1) for the
    power variant (`bias_a`); the other ~ U(0, 1) (log: `bias_a`) or U(0, 2) (power: the
    exponent `bias_p`). At every forward the stored values are clamped in place to >= eps
    (and the power exponent to <= 2) before use, as the reference does: the clamp is outside the
    graph, so a value that reached eps still gets a gradient and can move back up (a clamp inside
    the graph would give it zero gradient for good). The clamp runs in `transform_positions`, which
    the decoder calls once per forward before any other hook; call `clamp_parameters_()` yourself
    when using `score_bias` directly.
    """

    is_relative = True
    eps = 1e-2  # the smallest value r1 and r2 take (as the reference)
    r1_init_max = 2.0  # r1 ~ U(0, r1_init_max)
    r2_init_max = 1.0  # r2 ~ U(0, r2_init_max)
    r2_max: float | None = None

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.r1 = nn.Parameter(self.r1_init_max * torch.rand(dims.n_head))
        self.r2 = nn.Parameter(self.r2_init_max * torch.rand(dims.n_head))

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        """Clamp the stored r1 >= eps and eps <= r2 (<= r2_max) in place (the reference's step)."""
        self.r1.clamp_(min=self.eps)
        self.r2.clamp_(min=self.eps, max=self.r2_max)

    def transform_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions unchanged; clamps the parameters first (once per forward, see above)."""
        self.clamp_parameters_()
        return positions

    def _parameters_for(self, head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.promote_types(torch.float32, self.r1.dtype)
        return self.r1.to(dtype)[head], self.r2.to(dtype)[head]


class KerpleLog(_Kerple):
    """KERPLE log: bias = -r1 * log(1 + r2 * |i - j|), learned r1, r2 > 0 per head (Chi et al.).

    Chi, Fan, Ramadge, Rudnicky 2022, "KERPLE: Kernelized Relative Positional Embedding for Length
    Extrapolation" (NeurIPS), the logarithmic variant of its conditionally positive definite
    kernels. Shift invariant. r1 is the reference's `bias_p` (init U(0, 2)), r2 its `bias_a`
    (init U(0, 1)).
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
    the gradient with respect to r2 is 0 (not 0 * log 0). r1 is the reference's multiplier
    `bias_a` (init U(0, 1)), r2 its exponent `bias_p` (init U(0, 2), clamped to [eps, 2]).
    """

    r1_init_max = 1.0
    r2_init_max = 2.0
    r2_max = 2.0

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        r1, r2 = self._parameters_for(head)
        distance = (query_position - key_position).abs().to(r1.dtype)
        positive = distance > 0
        power = torch.where(positive, distance, torch.ones_like(distance)) ** r2
        return -r1 * torch.where(positive, power, torch.zeros_like(power))
