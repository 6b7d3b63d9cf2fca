"""A pre-norm decoder-only Transformer that takes its positional encoding as a plugin.

Single-device model code; parallelism comes from Lightning's strategies. The decoder passes
explicit integer positions to the encoding and chooses the attention kernel once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lengen.attention import BACKENDS, reference_attention, sdpa_attention
from lengen.positional import ModelDims, PositionalEncoding, build_bias


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        pos_encoding: PositionalEncoding,
        bias: torch.Tensor | None,
        attention,
    ) -> torch.Tensor:
        batch, length, d_model = x.shape
        head_dim = d_model // self.n_head
        q, k, v = self.qkv(x).split(d_model, dim=2)
        q = q.view(batch, length, self.n_head, head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(batch, length, self.n_head, head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(batch, length, self.n_head, head_dim).transpose(1, 2)  # (B, nh, T, hs)
        q, k = pos_encoding.rotate(q, k, positions, positions)
        if pos_encoding.has_contextual_bias:  # e.g. CoPE: a bias computed from q and k
            contextual = pos_encoding.contextual_bias(q, k).to(q.dtype)  # (B, nh, T, T)
            bias = contextual if bias is None else bias + contextual
        dropout_p = self.dropout if self.training else 0.0
        y = attention(q, k, v, bias, dropout_p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(batch, length, d_model)  # (B, T, C)
        return F.dropout(self.proj(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_mlp, bias=False)
        self.down = nn.Linear(d_mlp, d_model, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.down(F.gelu(self.up(x))), self.dropout, self.training)


class Block(nn.Module):
    """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_head: int, d_mlp: int, dropout: float) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_mlp, dropout)

    def forward(self, x, positions, pos_encoding, bias, attention) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), positions, pos_encoding, bias, attention)
        return x + self.mlp(self.ln_mlp(x))


class Decoder(nn.Module):
    """Token ids (B, T) and int positions (B, T) -> next-token logits (B, T, vocab_size).

    `attention` is "sdpa" (fused kernels; the fused causal path when the encoding has no bias)
    or "reference" (plain softmax attention, the oracle in tests).
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
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        if attention not in BACKENDS:
            raise ValueError(f"attention={attention!r} is not one of {', '.join(BACKENDS)}")
        self.n_head = n_head
        self.dropout = dropout
        self.attention = sdpa_attention if attention == "sdpa" else reference_attention
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoding = pos_encoding
        pos_encoding.bind(ModelDims(d_model=d_model, n_head=n_head, head_dim=d_model // n_head))
        self.blocks = nn.ModuleList(
            Block(d_model, n_head, d_mlp or 4 * d_model, dropout) for _ in range(n_layer)
        )
        self.ln_final = nn.LayerNorm(d_model)
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

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            positions = positions.expand_as(input_ids)
        positions = self.pos_encoding.transform_positions(positions)
        self.pos_encoding.check_positions(int(positions.max()))
        x = self.token_embedding(input_ids)  # (B, T, C)
        x = self.pos_encoding.embed(x, positions)
        x = F.dropout(x, self.dropout, self.training)
        bias = None
        if self.pos_encoding.has_score_bias:
            # Built once per forward and shared by every layer: (B, nh, T, T).
            bias = build_bias(self.pos_encoding, self.n_head, positions, positions).to(x.dtype)
        for block in self.blocks:
            x = block(x, positions, self.pos_encoding, bias, self.attention)
        return self.lm_head(self.ln_final(x))
