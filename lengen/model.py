"""A pre-norm decoder-only Transformer that takes its positional encoding as a plugin.

Single-device model code; parallelism comes from Lightning's strategies. The decoder passes
explicit integer positions to the encoding and chooses the attention kernel once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lengen.attention import (
    BACKENDS,
    KERNELS,
    distance_bias,
    flex_score,
    padding_bias,
    pairwise_attention,
    select_backend,
)
from lengen.checks import require_positive_ints
from lengen.positional import ModelDims, PositionalEncoding, build_bias, table_scope


@dataclass
class KVCache:
    """Keys and values of every layer seen so far, for cached decoding (`Decoder.new_cache`).

    Keys are stored after the encoding's `rotate`, so a new token only rotates its own query and
    key (raw keys for an encoding with `pairwise_scores`, which rotates them per pair).
    positions: (B, Tk) int positions of the cached keys; key_mask: (B, Tk) bool, False on
    padding; next_positions: (B,) the position the next real token of each row takes.
    """

    keys: list = field(default_factory=list)  # per layer (B, nh, Tk, hs)
    values: list = field(default_factory=list)  # per layer (B, nh, Tk, hs)
    positions: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None
    next_positions: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None  # (B, Tk), kept only for `token_positions` encodings

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor):
        """Add this layer's new (B, nh, T, hs) key/value; return all keys/values so far."""
        if layer == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        else:
            self.keys[layer] = torch.cat((self.keys[layer], key), dim=2)  # (B, nh, Tk, hs)
            self.values[layer] = torch.cat((self.values[layer], value), dim=2)
        return self.keys[layer], self.values[layer]

    def extend(
        self, positions: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Record the new tokens' (B, T) positions and bool mask; return those of all keys."""
        new_mask = torch.ones_like(positions, dtype=torch.bool) if mask is None else mask
        if self.positions is None:
            key_positions, key_mask = positions, mask
        else:
            key_positions = torch.cat((self.positions, positions), dim=1)  # (B, Tk)
            key_mask = None
            if self.key_mask is not None or mask is not None:
                previous = self.key_mask
                if previous is None:
                    previous = torch.ones_like(self.positions, dtype=torch.bool)
                key_mask = torch.cat((previous, new_mask), dim=1)  # (B, Tk)
        next_positions = torch.where(new_mask, positions, -1).amax(dim=1) + 1  # (B,)
        if self.next_positions is not None:
            next_positions = torch.maximum(self.next_positions, next_positions)
        self.positions, self.key_mask, self.next_positions = key_positions, key_mask, next_positions
        return key_positions, key_mask


def shared_rows(positions: torch.Tensor) -> bool:
    """Whether every row of (B, T) positions equals the first (then one bias serves the batch).

    Decided from the layout (one row, or a batch stride of 0 as `expand` gives) without reading
    values; otherwise by comparing values, which reads them back to the host, so not under
    torch.compile (there the bias is built per row: same values, more memory).
    """
    if positions.shape[0] == 1 or positions.stride(0) == 0:
        return True
    if torch.compiler.is_compiling():
        return False
    return bool((positions == positions[:1]).all())


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool = False) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # q, k, v in this order
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        pos_encoding: PositionalEncoding,
        bias,
        attention,
        cache: KVCache | None = None,
        layer: int = 0,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length, d_model = x.shape
        head_dim = d_model // self.n_head
        q, k, v = self.qkv(x).split(d_model, dim=2)
        q = q.view(batch, length, self.n_head, head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(batch, length, self.n_head, head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(batch, length, self.n_head, head_dim).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        if pos_encoding.has_pairwise_scores:  # per-pair positions: raw keys in the cache
            if cache is not None:
                k, v = cache.append(layer, k, v)  # (B, nh, Tk, hs)
            key_positions = positions if cache is None else cache.positions  # (B, Tk)
            y = pairwise_attention(pos_encoding, q, k, v, positions, key_positions, bias, dropout_p)
            y = y.transpose(1, 2).reshape(batch, length, d_model)  # (B, T, C)
            return F.dropout(self.proj(y), self.dropout, self.training)
        q, k = pos_encoding.rotate(q, k, positions, positions)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, Tk, hs)
        if pos_encoding.has_contextual_bias:  # e.g. CoPE: a bias computed from q and k
            contextual = pos_encoding.contextual_bias(q, k, key_mask=key_mask)  # (B, nh, T, Tk)
            contextual = contextual.to(q.dtype)
            bias = contextual if bias is None else bias + contextual
        y = attention(q, k, v, bias, dropout_p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(batch, length, d_model)  # (B, T, C)
        return F.dropout(self.proj(y), self.dropout, self.training)


NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
NORM_EPS = 1e-5  # LayerNorm's default; RMSNorm uses the same unless told


def make_norm(norm: str, d_model: int, eps: float = NORM_EPS) -> nn.Module:
    """A "layernorm" (nn.LayerNorm: scale and bias) or "rmsnorm" (nn.RMSNorm: scale only)."""
    if norm == "layernorm":
        return nn.LayerNorm(d_model, eps=eps)
    return nn.RMSNorm(d_model, eps=eps)


class MLP(nn.Module):
    """down(gelu(up(x))), exact (erf) GELU."""

    def __init__(self, d_model: int, d_mlp: int, dropout: float, bias: bool = False) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_mlp, bias=bias)
        self.down = nn.Linear(d_mlp, d_model, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.down(F.gelu(self.up(x))), self.dropout, self.training)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020, as in Llama); d_mlp hidden units."""

    def __init__(self, d_model: int, d_mlp: int, dropout: float, bias: bool = False) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_mlp, bias=bias)
        self.up = nn.Linear(d_model, d_mlp, bias=bias)
        self.down = nn.Linear(d_mlp, d_model, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.gate(x)) * self.up(x)  # (B, T, d_mlp)
        return F.dropout(self.down(hidden), self.dropout, self.training)


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_mlp: int,
        dropout: float,
        norm: str = "layernorm",
        mlp: str = "gelu",
        bias: bool = False,
        norm_eps: float = NORM_EPS,
    ) -> None:
        super().__init__()
        self.ln_attn = make_norm(norm, d_model, norm_eps)
        self.attn = CausalSelfAttention(d_model, n_head, dropout, bias)
        self.ln_mlp = make_norm(norm, d_model, norm_eps)
        self.mlp = (MLP if mlp == "gelu" else SwiGLU)(d_model, d_mlp, dropout, bias)

    def forward(
        self, x, positions, pos_encoding, bias, attention, cache=None, layer=0, key_mask=None
    ) -> torch.Tensor:
        x = x + self.attn(
            self.ln_attn(x), positions, pos_encoding, bias, attention, cache, layer, key_mask
        )
        return x + self.mlp(self.ln_mlp(x))


class Decoder(nn.Module):
    """Token ids (B, T) and int positions (B, T) -> next-token logits (B, T, vocab_size).

    `attention` picks the kernel once per model (see lengen/attention.py):
    - "auto" (default): "sdpa", on every device (measured faster than "flex"; `select_backend`);
    - "sdpa": fused kernels; the fused causal kernel when the encoding has no bias and there is no
      padding, else a bias materialised once per forward and shared by every layer;
    - "flex": FlexAttention with the encoding's `score_bias` as `score_mod` and a causal block
      mask (compiled on CUDA; on CPU torch 2.13 runs it forward only, unfused);
    - "reference": plain softmax attention, the oracle in tests.
    The kernel is stored as `self.attention`, a callable (query, key, value, bias, dropout_p);
    it may be swapped (e.g. to record attention maps) and receives the bias format of
    `self.backend`.

    Architecture (defaults: GPT-2-like with bias-free linears): `norm` "layernorm" (scale and
    bias) or "rmsnorm" (scale only), both with `norm_eps`, before attention, MLP and the LM head;
    `mlp` "gelu" (exact GELU, d_mlp hidden units) or "swiglu" (gate and up, each d_mlp wide);
    `bias` adds biases to every linear layer of the blocks (never to the LM head; norms keep
    their own); `tie_embeddings` shares the token embedding with the LM head.

    Args:
        vocab_size: token vocabulary size.
        pos_encoding: the positional encoding (bound to the model sizes here).
        n_layer: number of Transformer blocks.
        n_head: attention heads per block; must divide d_model.
        d_model: width of the residual stream.
        d_mlp: hidden width of each MLP; None means 4 * d_model.
        dropout: dropout probability (attention and residual).
        tie_embeddings: share the token embedding with the output projection.
        attention: the kernel: auto, sdpa, flex or reference (above).
        norm: "layernorm" or "rmsnorm".
        mlp: "gelu" or "swiglu".
        bias: biases on every linear layer of the blocks.
        norm_eps: the norms' epsilon.
    """

    def __init__(
        self,
        vocab_size: int,
        pos_encoding: PositionalEncoding,
        n_layer: int = 2,
        n_head: int = 4,
        d_model: int = 128,
        d_mlp: int | None = None,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
        attention: str = "auto",
        norm: str = "layernorm",
        mlp: str = "gelu",
        bias: bool = False,
        norm_eps: float = NORM_EPS,
    ) -> None:
        super().__init__()
        require_positive_ints(
            "Decoder", vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, d_model=d_model
        )
        if d_mlp is not None:
            require_positive_ints("Decoder", d_mlp=d_mlp)
        if isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Decoder: dropout={dropout!r} must be a probability in [0, 1)")
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")
        if mlp not in MLPS:
            raise ValueError(f"mlp={mlp!r} is not one of {', '.join(MLPS)}")
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        if attention not in BACKENDS:
            raise ValueError(f"attention={attention!r} is not one of {', '.join(BACKENDS)}")
        if attention == "flex" and dropout:
            raise ValueError(f"attention='flex' does not support dropout={dropout}; use 'sdpa'")
        if attention == "flex" and pos_encoding.has_contextual_bias:
            raise ValueError(
                f"attention='flex' cannot add {type(pos_encoding).__name__}'s contextual bias "
                "(computed from q and k); use 'sdpa' or 'reference'"
            )
        if attention == "flex" and not pos_encoding.flex_score_mod:
            raise ValueError(
                f"attention='flex' cannot compile {type(pos_encoding).__name__}'s score_bias "
                "into a FlexAttention score_mod; use 'sdpa' or 'reference'"
            )
        self.n_head = n_head
        self.dropout = dropout
        self.backend = select_backend(attention)
        self.attention = KERNELS[self.backend]
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoding = pos_encoding
        pos_encoding.bind(ModelDims(d_model=d_model, n_head=n_head, head_dim=d_model // n_head))
        self.blocks = nn.ModuleList(
            Block(d_model, n_head, d_mlp or 4 * d_model, dropout, norm, mlp, bias, norm_eps)
            for _ in range(n_layer)
        )
        self.ln_final = make_norm(norm, d_model, norm_eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        # The encoding initialises its own parameters.
        for module in (self.token_embedding, self.blocks, self.lm_head):
            module.apply(self._init_weights)
        if tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_cache(self) -> KVCache:
        """An empty KV cache; raises ValueError if the encoding declares it cannot be cached."""
        if not self.pos_encoding.supports_kv_cache:
            raise ValueError(
                f"{type(self.pos_encoding).__name__} declares supports_kv_cache = False (its "
                "outputs depend on the whole sequence); decode without a cache"
            )
        return KVCache()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab_size) logits.

        positions: (B, T) int positions; None derives them: 0, 1, ... (continuing from `cache`),
        or from `attention_mask` as cumsum(mask) - 1 so each row's real tokens count from 0
        whatever its padding. attention_mask: (B, T) 1 for real tokens, 0 for padding (left or
        right); padded keys are masked. cache: a `KVCache` from `new_cache`, extended in place;
        the new tokens attend to every cached real token.
        """
        batch, length = input_ids.shape
        device = input_ids.device
        start = torch.zeros(batch, dtype=torch.long, device=device)
        if cache is not None and cache.next_positions is not None:
            start = cache.next_positions
        mask = None if attention_mask is None else attention_mask.bool()
        if positions is None:
            if mask is None and (cache is None or cache.next_positions is None):
                # (B, T) with batch stride 0: the rows visibly share their positions (one bias)
                positions = torch.arange(length, device=device).expand(batch, length)
            elif mask is None:
                positions = start[:, None] + torch.arange(length, device=device)  # (B, T)
            else:
                positions = start[:, None] + (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        if self.pos_encoding.has_token_positions:  # counted from the tokens (Abacus, coupling)
            positions = self._token_positions(input_ids, mask, cache)
        positions = self.pos_encoding.transform_positions(positions)  # e.g. randomized positions
        key_positions, key_mask = positions, mask
        if cache is not None:
            key_positions, key_mask = cache.extend(positions, mask)  # (B, Tk) each
        if not torch.compiler.is_compiling():  # host syncs: eager only (see docs/performance.md)
            if key_mask is not None and bool(key_mask.all()):
                key_mask = None  # no padding: keep the fused causal path
            self.pos_encoding.check_positions(int(key_positions.max()))
        x = self.token_embedding(input_ids)  # (B, T, C)
        x = self.pos_encoding.embed(x, positions)
        x = F.dropout(x, self.dropout, self.training)
        bias = self._attention_bias(positions, key_positions, key_mask, x.dtype)
        with table_scope(self.pos_encoding):  # rotary tables computed once, shared by the layers
            for layer, block in enumerate(self.blocks):
                x = block(
                    x, positions, self.pos_encoding, bias, self.attention, cache, layer, key_mask
                )
        return self.lm_head(self.ln_final(x))

    def _by_distance(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> bool:
        """Whether the bias can come from a table over distances i - j (`distance_bias`).

        A relative encoding, no cache, and every row at consecutive integer positions p, p + 1,
        ...: then bias[i, j] = score_bias(h, i - j, 0). Reads positions back, so eager only.
        """
        if not self.pos_encoding.is_relative or torch.compiler.is_compiling():
            return False
        if key_positions is not query_positions or query_positions.is_floating_point():
            return False
        steps = query_positions.diff(dim=1)  # (B, T - 1)
        return bool((steps == 1).all())

    def _token_positions(
        self, input_ids: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None
    ) -> torch.Tensor:
        """(B, T) positions of the new tokens from `pos_encoding.token_positions` over all tokens.

        With a cache, the cached token ids (and their mask) come first, so a position may depend
        on every earlier token; the new ids are stored in the cache here.
        """
        history, history_mask = input_ids, mask
        if cache is not None and cache.input_ids is not None:
            history = torch.cat((cache.input_ids, input_ids), dim=1)  # (B, Tk)
            if cache.key_mask is not None or mask is not None:
                previous = cache.key_mask
                if previous is None:
                    previous = torch.ones_like(cache.input_ids, dtype=torch.bool)
                new = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
                history_mask = torch.cat((previous, new), dim=1)  # (B, Tk)
        if cache is not None:
            cache.input_ids = history
        positions = self.pos_encoding.token_positions(history, history_mask)  # (B, Tk)
        return positions[:, history.shape[1] - input_ids.shape[1] :]  # (B, T)

    def _attention_bias(self, query_positions, key_positions, key_mask, dtype):
        """The bias of this forward in `self.backend`'s format, built once for every layer.

        Not cached across calls: learned biases change every step, schedulable values change in
        place, and a (length, device, dtype) cache would break "same input, same output" after a
        longer call. Positions shared by the batch give a (1, nh, Tq, Tk) bias, broadcast by SDPA.
        """
        encoding = self.pos_encoding

        def dense() -> torch.Tensor | None:
            bias = None
            if encoding.has_score_bias and self._by_distance(query_positions, key_positions):
                length = query_positions.shape[1]
                distance = torch.arange(length, device=query_positions.device)[None, :]
                head = torch.arange(self.n_head, device=query_positions.device)[:, None]
                table = encoding.score_bias(head, distance, torch.zeros_like(distance))  # (nh, T)
                bias = distance_bias(table.to(dtype))  # (1, nh, T, T); keeps the table mark
            elif encoding.has_score_bias:
                shared = shared_rows(query_positions) and shared_rows(key_positions)
                rows = slice(0, 1) if shared else slice(None)
                bias = build_bias(
                    encoding, self.n_head, query_positions[rows], key_positions[rows]
                ).to(dtype)  # (B or 1, nh, Tq, Tk)
            if key_mask is not None:
                padding = padding_bias(key_mask, query_positions.shape[1], dtype)  # (B, 1, Tq, Tk)
                bias = padding if bias is None else bias + padding
            return bias

        if self.backend != "flex":
            return dense()
        bias_fn = encoding.score_bias if encoding.has_score_bias else None
        return flex_score(bias_fn, query_positions, key_positions, key_mask, self.n_head, dense)
