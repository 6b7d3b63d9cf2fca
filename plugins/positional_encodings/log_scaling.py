"""Logit scales that grow with the number of keys a query sees: log-length scaling and SSMax.

The scaled logit of a pair is factor(query) * (q.k / sqrt(hs) + bias), computed through the
per-pair hook from the wrapped encoding's scores (its own per-pair scores if it has them, e.g.
ReRoPE or Self-Extend), so any encoding can be wrapped.
n, the number of keys a query at position p sees, is p + 1 (positions count real tokens from 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding
from lengen_plugins.positional_encodings.pairwise import PairwiseWrapper


class _QueryScale(PairwiseWrapper):
    """Multiplies every logit of a query by `factor(head, query_position)`.

    A per-pair hook in form only: the wrapped encoding's scores (its per-token path, or its own
    pairwise scores) times a factor of the query's position. Written as `pairwise_scores` rather
    than as a scaled query in `rotate`, so `rotate` stays the wrapped encoding's and one hook
    covers q.k, score biases and per-pair encodings alike; the price is materialised scores.
    """

    is_relative = False  # the factor depends on the query's absolute position

    def factor(
        self, head: torch.Tensor, query_position: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """Broadcastable int head and position tensors -> the factor, elementwise, in `dtype`."""
        raise NotImplementedError

    def pairwise_scores(self, query, key, query_positions, key_positions) -> torch.Tensor:
        scores = self.view(query, key, query_positions, key_positions)  # (B, nh, Tq, Tk)
        head = torch.arange(query.shape[1], device=query.device).view(1, -1, 1, 1)
        dtype = torch.promote_types(scores.dtype, torch.float32)
        factor = self.factor(head, query_positions[:, None, :, None], dtype)  # (B, nh|1, Tq, 1)
        scaled = (scores * factor).to(scores.dtype)
        return torch.where(torch.isneginf(scores), scores, scaled)  # hidden pairs stay hidden


def _log_n(query_position: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ln(n) with n = position + 1 keys seen; positions below 0 (never real tokens) give 0."""
    return (query_position.to(dtype) + 1).clamp(min=1).log()


class LogLengthScaling(_QueryScale):
    """Log-length scaling: a query's logits times log n, n the keys it sees (Chiang & Cholak).

    Chiang & Cholak 2022, "Overcoming a Theoretical Limitation of Self-Attention" (ACL): scaling
    the attention logits by log n keeps attention sharp as the length n grows. Their code
    (ndnlp/parity, `encoder.py`'s `ScaledTransformerEncoderLayer` at commit 19ccc60) multiplies
    the input of the query projection by ln(len) / 2 (the constant 1/2 is absorbed by training)
    for a whole (bidirectional) sequence; in a causal decoder a query at position p sees
    n = p + 1 keys, so its factor is computed from its own position and cached decoding stays
    exact. With `training_length` L the factor is log_L(n) = ln(n) / ln(L), 1 at the training
    length (the "entropy-invariant" form of Su 2023, used in bojone/rerope's patches and in
    datamllab/LongLM's `scale_base`), and `floor_at_one` keeps it >= 1 as those patches do
    (`.clip(1)`), so lengths up to L are unchanged.

    The factor multiplies q.k / sqrt(hs) and the wrapped encoding's score bias (or its pairwise
    scores); it wraps any encoding except those with a contextual bias (CoPE).

    Args:
        encoding: the wrapped encoding; None means RoPE().
        training_length: L of log_L(n); None means the natural log (Chiang & Cholak).
        floor_at_one: use max(1, factor).
    """

    def __init__(
        self,
        encoding: PositionalEncoding | None = None,
        training_length: int | None = None,
        floor_at_one: bool = False,
    ) -> None:
        super().__init__(encoding)
        if training_length is not None and (
            isinstance(training_length, bool) or training_length < 2
        ):
            raise ValueError(
                f"LogLengthScaling: training_length={training_length!r}; accepted: an integer "
                ">= 2, or None for the natural log"
            )
        self.training_length = training_length
        self.floor_at_one = bool(floor_at_one)

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Around RoPE (natural log), ALiBi (the bias path) and ReRoPE (the pairwise path)."""
        from lengen_plugins.positional_encodings.alibi import ALiBi
        from lengen_plugins.positional_encodings.rerope import ReRoPE

        return (
            cls(),
            cls(ALiBi(), training_length=8, floor_at_one=True),
            cls(ReRoPE(window=4), training_length=8),
        )

    def factor(self, head, query_position, dtype) -> torch.Tensor:
        factor = _log_n(query_position, dtype)
        if self.training_length is not None:
            factor = factor / math.log(self.training_length)
        if self.floor_at_one:
            factor = factor.clamp(min=1.0)
        return factor


class ScalableSoftmax(_QueryScale):
    """Scalable-Softmax (SSMax): logits times s * log n, with s learned per head (Nakanishi).

    Nakanishi 2025, "Scalable-Softmax Is Superior for Attention" (arXiv:2501.19399): softmax over
    n inputs z_i becomes n^(s z_i) / sum_j n^(s z_j), i.e. softmax((s log n) z), which the paper
    implements by multiplying the query by s log n; s is a learnable scalar per layer and head.
    Here n = p + 1 for a query at position p (the keys it sees) and z = q.k / sqrt(hs) plus the
    wrapped encoding's bias. The encoding is shared by all layers, so lengen learns one s per
    head shared by the layers (the paper: per layer and head). No reference implementation was
    found to compare with; the test checks the paper's equation.

    Args:
        encoding: the wrapped encoding; None means RoPE().
        init: the initial s of every head; None means 1 / ln(training_length), so the logits of
            a query that sees `training_length` keys start unscaled (lengen's choice).
        training_length: used only when init is None.
    """

    def __init__(
        self,
        encoding: PositionalEncoding | None = None,
        init: float | None = None,
        training_length: int = 512,
    ) -> None:
        super().__init__(encoding)
        if isinstance(training_length, bool) or training_length < 2:
            raise ValueError(
                f"ScalableSoftmax: training_length={training_length!r}; accepted: an integer >= 2"
            )
        self.init = 1.0 / math.log(training_length) if init is None else float(init)

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Around RoPE and around ALiBi (the bias path)."""
        from lengen_plugins.positional_encodings.alibi import ALiBi

        return (cls(), cls(ALiBi(), init=0.5))

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.s = nn.Parameter(torch.full((dims.n_head,), self.init))  # (nh,)

    def factor(self, head, query_position, dtype) -> torch.Tensor:
        return self.s.to(dtype)[head] * _log_n(query_position, dtype)
