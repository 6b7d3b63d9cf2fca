"""FIRE: a learned function of the log-transformed, progressively normalised distance."""

from __future__ import annotations

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding


class FIRE(PositionalEncoding):
    """FIRE: bias = MLP(psi(i - j) / psi(max(L, i))), psi(x) = log(c x + 1) (Li et al. 2023).

    Li, You, Bhojanapalli, Li, Rawat, Reddi, Ye, Chern, Yu, Guo, Kumar 2023, "Functional
    Interpolation for Relative Positions Improves Long Context Transformers" (ICLR 2024). For query
    position i and key position j, the bias added to the scaled score of head h is

        f(psi(|i - j|) / (psi(max(L, i)) + eps))[h],  psi(x) = log(|c| x + 1),

    with f an MLP 1 -> mlp_width -> n_head (ReLU), c a learned scalar and L = |L_multiplier| *
    init_threshold a learned threshold (the paper's parameterisation, init c = 0.1, L = 512).
    Normalising by the query position maps every distance into [0, 1], so longer inputs
    interpolate rather than extrapolate; below L, short sequences are not over-stretched. It
    depends on i itself, so it is not shift invariant. Computed in float32 (float64 for float64
    models) from the parameters cast up; one MLP is shared by all layers.

    Args:
        mlp_width: hidden width of f (32 in the paper).
        init_c: initial c (0.1); init_threshold: initial L in positions (512).
        eps: added to the normaliser (1e-6).
    """

    def __init__(
        self,
        mlp_width: int = 32,
        init_c: float = 0.1,
        init_threshold: float = 512.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if mlp_width < 1:
            raise ValueError(f"FIRE: mlp_width={mlp_width} must be >= 1")
        if not init_c > 0:
            raise ValueError(f"FIRE: init_c={init_c} must be > 0")
        if not init_threshold > 0:
            raise ValueError(f"FIRE: init_threshold={init_threshold} must be > 0 (positions)")
        if not eps > 0:
            raise ValueError(f"FIRE: eps={eps} must be > 0")
        self.mlp_width = mlp_width
        self.init_c = float(init_c)
        self.init_threshold = float(init_threshold)
        self.eps = float(eps)

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.hidden = nn.Linear(1, self.mlp_width)
        self.out = nn.Linear(self.mlp_width, dims.n_head)
        self.c = nn.Parameter(torch.tensor(self.init_c))
        self.threshold_multiplier = nn.Parameter(torch.tensor(1.0))

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        """Broadcastable (head, q, k) tensors -> float32 bias (float64 for float64 models)."""
        dtype = torch.promote_types(torch.float32, self.c.dtype)
        c = self.c.to(dtype).abs()
        threshold = self.threshold_multiplier.to(dtype).abs() * self.init_threshold
        query = query_position.to(dtype)
        distance = torch.log(c * (query - key_position.to(dtype)).abs() + 1)
        normaliser = torch.log(c * torch.maximum(query, threshold) + 1) + self.eps
        x = distance / normaliser  # (...): broadcast of the query and key shapes
        head_dim = self._head_axis(head, x)
        if head_dim is not None:
            return self._all_heads(x, head_dim, dtype)
        x = x[..., None]  # (..., 1)
        hidden = torch.relu(x * self.hidden.weight[:, 0].to(dtype) + self.hidden.bias.to(dtype))
        per_head = hidden @ self.out.weight.to(dtype).T + self.out.bias.to(dtype)  # (..., nh)
        shape = torch.broadcast_shapes(per_head.shape[:-1], head.shape)
        index = head.long().expand(shape)[..., None]  # (..., 1)
        return per_head.expand(*shape, per_head.shape[-1]).gather(-1, index)[..., 0]

    def _head_axis(self, head: torch.Tensor, x: torch.Tensor) -> int | None:
        """The axis along which `head` is 0, 1, ..., nh - 1 while `x` has size 1 there (the
        decoder's (1, nh, 1, 1) head index), or None. Compares values: eager only."""
        if torch.compiler.is_compiling() or head.dim() != x.dim():
            return None
        axes = [axis for axis, size in enumerate(head.shape) if size != 1]
        n_head = self.out.out_features
        if len(axes) != 1 or head.shape[axes[0]] != n_head or x.shape[axes[0]] != 1:
            return None
        if not torch.equal(head.flatten(), torch.arange(n_head, device=head.device)):
            return None
        return axes[0]

    def _all_heads(self, x: torch.Tensor, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
        """f(x) for every head, with the head axis at `head_dim` (where x has size 1).

        The same MLP as `score_bias` written with the pairs as columns: [x; 1] (2, P) ->
        relu(W1 [x; 1]) (width, P) -> W2 h + b2 (nh, P), three matrix products and one
        elementwise pass, and no per-head gather (whose backward scatters into nh x nh x P).
        """
        shape = x.shape
        pairs = x.reshape(1, -1)  # (1, P)
        inputs = torch.cat((pairs, torch.ones_like(pairs)), 0)  # (2, P)
        first = torch.cat((self.hidden.weight, self.hidden.bias[:, None]), 1).to(dtype)  # (W, 2)
        hidden = torch.relu(first @ inputs)  # (W, P)
        per_head = torch.addmm(
            self.out.bias.to(dtype)[:, None], self.out.weight.to(dtype), hidden
        )  # (nh, P)
        per_head = per_head.view(-1, *shape[:head_dim], *shape[head_dim + 1 :])
        return per_head.movedim(0, head_dim)  # x's shape with nh at head_dim
