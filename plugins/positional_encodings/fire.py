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

    # Its MLP is a matrix product per pair, which a FlexAttention score_mod cannot lower (torch
    # 2.11 on an H200: "Buffers cannot be created while lowering a pointwise subgraph").
    flex_score_mod = False

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
        shape = torch.broadcast_shapes(query_position.shape, key_position.shape)
        head_dim = self._head_axis(head, shape)
        if head_dim is not None:  # every head at once: (nh, P) with P pairs
            per_head = self._by_class(query_position, key_position, c, threshold, dtype)
            if per_head is None:
                x = self._input(query_position, key_position, c, threshold, dtype)
                per_head = self._all_heads(x)
            per_head = per_head.reshape(-1, *shape[:head_dim], *shape[head_dim + 1 :])
            return per_head.movedim(0, head_dim)  # the pairs' shape with nh at head_dim
        x = self._input(query_position, key_position, c, threshold, dtype)[..., None]  # (..., 1)
        hidden = torch.relu(x * self.hidden.weight[:, 0].to(dtype) + self.hidden.bias.to(dtype))
        per_head = hidden @ self.out.weight.to(dtype).T + self.out.bias.to(dtype)  # (..., nh)
        shape = torch.broadcast_shapes(per_head.shape[:-1], head.shape)
        index = head.long().expand(shape)[..., None]  # (..., 1)
        return per_head.expand(*shape, per_head.shape[-1]).gather(-1, index)[..., 0]

    def _input(self, query_position, key_position, c, threshold, dtype) -> torch.Tensor:
        """The MLP's input psi(|i - j|) / (psi(max(i, L)) + eps), broadcast over the pairs."""
        query = query_position.to(dtype)
        distance = torch.log(c * (query - key_position.to(dtype)).abs() + 1)
        normaliser = torch.log(c * torch.maximum(query, threshold) + 1) + self.eps
        return distance / normaliser

    def _head_axis(self, head: torch.Tensor, shape: torch.Size) -> int | None:
        """The axis along which `head` is 0, 1, ..., nh - 1 while the pairs' `shape` is 1 there
        (the decoder's (1, nh, 1, 1) head index), or None. Reads values: eager only."""
        if torch.compiler.is_compiling() or head.dim() != len(shape):
            return None
        axes = [axis for axis, size in enumerate(head.shape) if size != 1]
        n_head = self.out.out_features
        if len(axes) != 1 or head.shape[axes[0]] != n_head or shape[axes[0]] != 1:
            return None
        if not torch.equal(head.flatten(), torch.arange(n_head, device=head.device)):
            return None
        return axes[0]

    def _all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(...) inputs -> (nh, P) outputs of every head, P = x.numel().

        The same MLP as `score_bias` with the inputs as columns: [x; 1] (2, P) -> relu(W1 [x; 1])
        (width, P) -> W2 h + b2 (nh, P): matrix products and one elementwise pass, and no
        per-head gather (whose backward scatters into an nh x nh x P tensor).
        """
        pairs = x.reshape(1, -1)  # (1, P)
        inputs = torch.cat((pairs, torch.ones_like(pairs)), 0)  # (2, P)
        dtype = x.dtype
        first = torch.cat((self.hidden.weight, self.hidden.bias[:, None]), 1).to(dtype)  # (W, 2)
        hidden = torch.relu(first @ inputs)  # (W, P)
        return torch.addmm(self.out.bias.to(dtype)[:, None], self.out.weight.to(dtype), hidden)

    def _by_class(self, query_position, key_position, c, threshold, dtype) -> torch.Tensor | None:
        """(nh, P) biases from the MLP evaluated once per distinct input, or None.

        For integer positions the input depends on the pair only through d = |i - j| and the
        normaliser's argument max(i, L), which every query below L shares. The MLP runs once per
        (class, d) (classes: each query position >= L, plus one for all below L; per class the
        distances 0 .. its queries' farthest key, a ragged grid flattened) and each pair reads
        its value; the inputs are computed by the same operations as per pair, so the values are
        the same. With positions 0 .. T - 1: T evaluations for T <= L; for T = 1024, L = 512,
        394k instead of 1.05M. None (evaluate per pair) for real-valued positions or when the
        grid would not be smaller than the pairs (a cache, positions far apart).
        """
        if query_position.is_floating_point() or key_position.is_floating_point():
            return None
        distance = (query_position - key_position).abs()  # (...) the pairs, integer
        pairs = distance.numel()
        if pairs == 0:
            return None
        # queries below L share psi(L): class -1 (exactly at L: its own class, as maximum's
        # gradient splits there)
        below = query_position.to(dtype) < threshold.detach()
        classes, row_class = torch.unique(
            torch.where(below, -1, query_position), return_inverse=True
        )  # (C,), the query positions' shape
        # per class, the distances 0 .. its queries' farthest key (a ragged grid, flattened)
        query_shape = (1,) * (distance.dim() - query_position.dim()) + query_position.shape
        key_axes = [
            axis for axis, size in enumerate(distance.shape) if size != 1 and query_shape[axis] == 1
        ]
        farthest = distance.amax(key_axes, keepdim=True) if key_axes else distance
        spans = torch.zeros(classes.numel(), dtype=torch.long, device=distance.device)
        spans.scatter_reduce_(0, row_class.flatten(), farthest.flatten() + 1, "amax")  # (C,)
        evaluations = int(spans.sum())
        if evaluations >= pairs:
            return None
        starts = spans.cumsum(0) - spans  # (C,) where each class's distances begin
        entry_class = torch.repeat_interleave(spans)  # (U,) class of each grid entry
        steps = torch.arange(evaluations, device=distance.device) - starts[entry_class]  # (U,) d
        normaliser = torch.log(c * torch.maximum(classes.to(dtype), threshold) + 1) + self.eps
        grid = torch.log(c * steps.to(dtype) + 1) / normaliser[entry_class]  # (U,)
        per_class = self._all_heads(grid)  # (nh, U)
        index = starts[row_class.view(query_shape)] + distance  # (...): entry of each pair
        return per_class.index_select(1, index.flatten())  # (nh, P)
