"""Attention analysis after Kazemnejad et al. 2023 (NeurIPS), section 5: record attention maps,
the distribution of attended distances per head, and the Jensen-Shannon divergence of each head's
attention against a reference run (e.g. NoPE).

Recording swaps the decoder's attention callable (`decoder.attention`, signature
(query, key, value, bias, dropout_p)) for the plain reference attention that also keeps its
softmax weights, and restores it afterwards; model code is unchanged. The decoder calls it once per
block, in order, so the i-th recorded map is layer i.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from matplotlib.figure import Figure
from torch import nn

from lengen.attention import causal_bias


def attention_with_weights(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference causal attention; returns (output (B, nh, T, hs), weights (B, nh, T, T))."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, nh, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(causal_bias(scores).float(), dim=-1)
    return weights.to(value.dtype) @ value, weights


@contextmanager
def recording(decoder: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of `decoder` appends one (B, nh, T, T) map per layer."""
    maps: list[torch.Tensor] = []
    original = decoder.attention

    def record(query, key, value, bias=None, dropout_p=0.0):
        output, weights = attention_with_weights(query, key, value, bias)
        maps.append(weights.detach().cpu())
        return output  # dropout is ignored: analysis runs in eval mode

    decoder.attention = record
    try:
        yield maps
    finally:
        decoder.attention = original


@torch.no_grad()
def record_attention(decoder: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) token ids -> (n_layer, B, nh, T, T) attention weights of one forward pass."""
    was_training = decoder.training
    decoder.eval()
    with recording(decoder) as maps:
        decoder(input_ids)
    decoder.train(was_training)
    return torch.stack(maps)


def distance_distribution(maps: torch.Tensor) -> torch.Tensor:
    """(..., T, T) causal attention -> (..., T) mean attention mass at distance d = query - key.

    Averaged over the T queries (each query's weights sum to 1, so each row of the result sums to
    1): entry d is the share of attention a head puts on the token d positions back.
    """
    length = maps.shape[-1]
    query = torch.arange(length)[:, None]
    key = torch.arange(length)[None, :]
    distance = (query - key).clamp(min=0)  # (T, T); the masked future has weight 0 anyway
    flat = maps.reshape(-1, length * length).double()  # (N, T*T)
    out = torch.zeros(flat.shape[0], length, dtype=torch.float64)
    out.index_add_(1, distance.flatten(), flat)
    return (out / length).reshape(*maps.shape[:-2], length)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """JSD(p || q) in bits over the last dimension (bounded by [0, 1]); broadcasts.

    JSD = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2 (Lin 1991); 0 log 0 = 0.
    """
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        return torch.where(
            a > 0, a * (torch.log2(a.clamp(min=eps)) - torch.log2(m.clamp(min=eps))), 0.0
        ).sum(-1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def head_divergence(maps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(L, B, nh, T, T) run and (L, B, nh', T, T) reference -> (L, nh, nh') mean JSD.

    Entry [l, h, h'] is the JSD between head h of the run and head h' of the reference at layer l,
    averaged over examples and query positions. Heads carry no order across runs, so the closest
    reference head of each head is `divergence.min(-1)` (Kazemnejad et al. compare each model's
    heads against NoPE's heads in the same way, by the smallest divergence).
    """
    run = maps[:, :, :, None]  # (L, B, nh, 1, T, T)
    ref = reference[:, :, None]  # (L, B, 1, nh', T, T)
    return jensen_shannon(run, ref).mean(dim=(1, 4))  # (L, nh, nh')


def figure_distances(distances: torch.Tensor, title: str) -> Figure:
    """(L, nh, T) distance distributions -> one heatmap per layer (heads x distance)."""
    layers = distances.shape[0]
    fig = Figure(figsize=(6, 1.2 + 1.6 * layers))
    axes = fig.subplots(layers, 1, squeeze=False)[:, 0]
    for layer, ax in enumerate(axes):
        image = ax.imshow(distances[layer].numpy(), aspect="auto", cmap="viridis")
        ax.set_ylabel(f"layer {layer}\nhead")
        fig.colorbar(image, ax=ax)
    axes[-1].set_xlabel("attended distance (query - key)")
    axes[0].set_title(title)
    fig.tight_layout()
    return fig


def figure_maps(maps: torch.Tensor, title: str) -> Figure:
    """(L, nh, T, T) attention of one example -> a grid of heatmaps (layers x heads)."""
    layers, heads = maps.shape[:2]
    fig = Figure(figsize=(1.8 * heads, 1.8 * layers + 0.6))
    axes = fig.subplots(layers, heads, squeeze=False)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer, head]
            ax.imshow(maps[layer, head].numpy(), cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"L{layer} H{head}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure_divergence(divergence: torch.Tensor, title: str) -> Figure:
    """(L, nh, nh') JSD -> one heatmap per layer (run heads x reference heads)."""
    layers = divergence.shape[0]
    fig = Figure(figsize=(3.2 * layers, 3))
    axes = fig.subplots(1, layers, squeeze=False)[0]
    for layer, ax in enumerate(axes):
        image = ax.imshow(divergence[layer].numpy(), cmap="magma_r", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("reference head")
        ax.set_ylabel("head")
        fig.colorbar(image, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
