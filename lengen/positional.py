"""The one interface every positional encoding implements.

An encoding overrides only the hook of its family; the others stay identities:

- absolute (learned, sinusoidal): `embed` changes the token embeddings from integer positions;
- rotary family (RoPE, xPos, ...): `rotate` transforms queries and keys from integer positions;
- additive bias family (ALiBi, T5, ...): `score_bias` gives the bias added to the attention scores
  as an elementwise function of (head, query position, key position).

Positions are explicit integer tensors passed by the decoder, so offsets, padding and cached
decoding need no change inside an encoding. `score_bias` is written with broadcasting torch ops, so
the same function can be materialised for `scaled_dot_product_attention` (see `build_bias`) or used
as a FlexAttention `score_mod`.

Methods that remap positions per query-key pair (ReRoPE, Self-Extend, Dual Chunk Attention, the
window of attention sinks and LM-Infinite) cannot be written with the per-token hooks above: the
same key takes different positions for different queries. They override one more hook,
`pairwise_scores`, whose default is exactly what the per-token hooks give (rotate, q.k/sqrt(hs),
score bias), so every other encoding is untouched and keeps its fused kernels. A pairwise encoding
usually computes a few "views" with the default hook of the encoding it wraps, each at per-token
positions (a query at w, keys at 0, keys at floor(k / G), ...), and picks one view per pair with
`torch.where`, as the authors' reference code does. Logit scales that grow with the number of
keys a query sees (log-length scaling, Scalable-Softmax) use the same hook: a factor of the query's
position times the wrapped encoding's scores (see docs/concepts/pairwise-encodings.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

Table = TypeVar("Table")


@dataclass(frozen=True)
class ModelDims:
    """The decoder sizes an encoding may need to build its parameters."""

    d_model: int
    n_head: int
    head_dim: int


class PositionalEncoding(nn.Module):
    """Base class: every hook is an identity, so the base itself behaves as "no position".

    Values that a curriculum callback moves during training (a blend factor, a scale) are 0-dim
    float32 buffers named in `schedulable`: buffers, so they are saved in checkpoints and do not
    recompile under torch.compile; float32 even after `model.to(torch.bfloat16)` (see `_apply`).
    """

    schedulable: tuple[str, ...] = ()
    # Outputs depend only on position differences (checked by the contract suite with a shift).
    is_relative: bool = False
    # False for an encoding whose output at a position depends on the whole sequence (e.g. a
    # scale from the current length, or positions counted from the content): cached keys would go
    # stale, so generation falls back to recomputing the whole sequence at every step.
    supports_kv_cache: bool = True
    # False for an encoding whose `score_bias` cannot run inside FlexAttention's fused kernel,
    # where a score_mod is lowered elementwise (no matrix products, no new tensors): the decoder
    # then refuses attention="flex" (the default, "sdpa", materialises the bias).
    flex_score_mod: bool = True
    # Dtypes in which the contract suite checks outputs stay finite at 8x the training length.
    checked_dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)

    @classmethod
    def example(cls) -> PositionalEncoding:
        """An instance for generic checks (the contract suite); override if `cls()` needs args.

        A wrapper, say, returns `cls(encoding=SomeEncoding())`.
        """
        return cls()

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """Every instance the contract suite checks; by default `(cls.example(),)`.

        Override to check several configurations, e.g. a wrapper around a cacheable encoding and
        around one that cannot cache.
        """
        return (cls.example(),)

    def schedulable_values(self) -> dict[str, torch.Tensor]:
        """name -> 0-dim float32 buffer; a callback changes one in place with `fill_`."""
        return {name: getattr(self, name) for name in self.schedulable}

    def _apply(self, fn, recurse: bool = True):
        before = {name: getattr(self, name) for name in self.schedulable}
        super()._apply(fn, recurse)
        for name, value in before.items():  # follow the device, but never round the value
            setattr(self, name, value.to(getattr(self, name).device))
        return self

    def bind(self, dims: ModelDims) -> None:
        """Called once by the decoder before training; build parameters that depend on sizes."""
        self.dims = dims

    def transform_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) positions -> (B, T) positions every other hook sees; called once per forward."""
        return positions

    # --- token-derived positions (Abacus, position coupling): one hook, unused unless overridden
    def token_positions(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, Tk) token ids, (B, Tk) bool mask or None -> (B, Tk) int positions from the tokens.

        Only called when a subclass overrides it (see `has_token_positions`); the decoder then
        uses these positions instead of counting tokens (explicit `positions` are ignored) and
        `transform_positions` still runs after it. `input_ids` holds every token so far: with a
        KV cache, the cached tokens first and the new ones last; the decoder keeps the last T.
        mask: False on padding (None: no padding); padded tokens must not change the positions
        of real ones. For cached decoding to equal the full forward, a token's position must
        depend only on the real tokens up to it (causal); otherwise declare
        `supports_kv_cache = False`.
        """
        raise NotImplementedError

    @property
    def has_token_positions(self) -> bool:
        return type(self).token_positions is not PositionalEncoding.token_positions

    # --- end of token-derived positions ---

    def check_positions(self, max_position: int) -> None:
        """Raise `PositionOutOfRange` if `max_position` cannot be encoded (e.g. past a table)."""

    def embed(self, token_embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T, C) token embeddings, (B, T) int positions -> (B, T, C)."""
        return token_embeddings

    def rotate(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, nh, Tq, hs) query, (B, nh, Tk, hs) key, (B, Tq) and (B, Tk) int positions."""
        return query, key

    def score_bias(
        self, head: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
    ) -> torch.Tensor:
        """Bias added to the scaled score q.k/sqrt(hs), elementwise over broadcastable int tensors.

        Only called when a subclass overrides it (see `has_score_bias`).
        """
        raise NotImplementedError

    @property
    def has_score_bias(self) -> bool:
        return type(self).score_bias is not PositionalEncoding.score_bias

    def contextual_bias(
        self, query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, nh, Tq, hs) query, (B, nh, Tk, hs) key -> (B, nh, Tq, Tk) bias from their content.

        Added to the scaled scores like `score_bias`; queries are the last Tq of the Tk positions.
        key_mask: (B, Tk) bool, False on padded keys (None: no padding); padded keys are masked
        out of the attention anyway, but an encoding that aggregates over keys (CoPE's gates) must
        leave them out itself. Only called when a subclass overrides it (see
        `has_contextual_bias`).
        """
        raise NotImplementedError

    @property
    def has_contextual_bias(self) -> bool:
        return type(self).contextual_bias is not PositionalEncoding.contextual_bias

    # --- pairwise scores (per query-key pair positions): one hook, identity by default ---
    def pairwise_scores(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> torch.Tensor:
        """(B, nh, Tq, hs) query, (B, nh, Tk, hs) key, (B, Tq) and (B, Tk) positions -> scores.

        Returns the (B, nh, Tq, Tk) scores before the causal mask, the padding bias and the
        softmax: -inf marks a pair the method hides (a window, a Lambda-shaped mask); the
        decoder adds the padding bias and the causal mask. Queries and keys arrive un-rotated
        (the KV cache of a pairwise encoding keeps raw keys), so each pair may be rotated at its
        own positions. Positions may be real-valued (Leaky ReRoPE's key positions k / scale).

        The default is the per-token path: `rotate`, then q.k / sqrt(hs), plus `score_bias` when
        the encoding has one (`default_pairwise_scores`). The decoder calls this hook only when a
        subclass overrides it (see `has_pairwise_scores`); a wrapper calls it on the encoding it
        wraps to compute one view. A contextual bias (CoPE) is not part of it.
        """
        return default_pairwise_scores(self, query, key, query_positions, key_positions)

    @property
    def has_pairwise_scores(self) -> bool:
        return type(self).pairwise_scores is not PositionalEncoding.pairwise_scores

    # --- end of pairwise scores ---

    def cached_table(
        self, key: tuple, inputs: tuple[torch.Tensor | None, ...], compute: Callable[[], Table]
    ) -> Table:
        """`compute()`, reused within one forward for the same `key` and the very same `inputs`.

        Optional, for tables that every layer would otherwise recompute (RoPE's cos/sin). Reuse
        happens only inside `table_scope` (opened by the decoder around its layers, where
        positions, parameters and schedulable values cannot change) and only when each input
        tensor is the same object as before; elsewhere, and under torch.compile, this is just
        `compute()`. `key` holds plain values (a name, a dtype), never tensors.
        """
        store = self.__dict__.get("_table_store")
        if store is None or torch.compiler.is_compiling():
            return compute()
        entry = store.get(key)
        if entry is not None and len(entry[0]) == len(inputs):
            if all(old is new for old, new in zip(entry[0], inputs)):
                return entry[1]
        value = compute()
        store[key] = (inputs, value)  # holds the inputs, so their ids cannot be reused meanwhile
        return value


def set_schedulable(encoding: PositionalEncoding, name: str, value: float) -> None:
    """Set the schedulable value `name` of `encoding` in place; unknown names are a clear error."""
    values = encoding.schedulable_values()
    if name not in values:
        accepted = ", ".join(values) or "none"
        raise ValueError(
            f"{type(encoding).__name__} has no schedulable value {name!r}; it has: {accepted}"
        )
    values[name].fill_(value)


@contextmanager
def table_scope(encoding: PositionalEncoding) -> Iterator[None]:
    """Let `encoding` (and encodings it wraps) reuse `cached_table` results until the exit.

    The decoder opens one scope per forward around its layers; the tables are dropped at the
    exit, so a schedulable value changed between forwards (an xPos blend, a PI ramp) always
    gives fresh tables. Nested scopes reuse the outer one.
    """
    if torch.compiler.is_compiling():
        yield
        return
    opened = [
        module
        for module in encoding.modules()
        if isinstance(module, PositionalEncoding) and "_table_store" not in module.__dict__
    ]
    for module in opened:
        module.__dict__["_table_store"] = {}
    try:
        yield
    finally:
        for module in opened:
            module.__dict__.pop("_table_store", None)


def default_pairwise_scores(
    encoding: PositionalEncoding,
    query: torch.Tensor,
    key: torch.Tensor,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
) -> torch.Tensor:
    """The per-token scores (B, nh, Tq, Tk): rotate, q.k / sqrt(hs), plus the score bias if any.

    What `reference_attention` computes before its mask, for (B, nh, Tq, hs) query, (B, nh, Tk,
    hs) key and (B, Tq) / (B, Tk) positions; the default of `PositionalEncoding.pairwise_scores`.
    """
    query, key = encoding.rotate(query, key, query_positions, key_positions)
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, nh, Tq, Tk)
    if encoding.has_score_bias:
        bias = build_bias(encoding, query.shape[1], query_positions, key_positions)
        scores = scores + bias.to(scores.dtype)
    return scores


class PositionOutOfRange(ValueError):
    """A position beyond what an encoding can represent; the message is one line for the CLI."""


def build_bias(
    encoding: PositionalEncoding,
    n_head: int,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
) -> torch.Tensor:
    """Materialise `encoding.score_bias` for (B, Tq) and (B, Tk) positions -> (B, nh, Tq, Tk)."""
    head = torch.arange(n_head, device=query_positions.device).view(1, n_head, 1, 1)
    query = query_positions[:, None, :, None]  # (B, 1, Tq, 1)
    key = key_positions[:, None, None, :]  # (B, 1, 1, Tk)
    bias = encoding.score_bias(head, query, key)
    return bias.expand(query_positions.shape[0], n_head, query.shape[2], key.shape[3])
