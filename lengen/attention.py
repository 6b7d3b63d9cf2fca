"""Causal self-attention kernels: fused SDPA, FlexAttention, and the plain reference for tests.

Every backend is a callable `(query, key, value, bias, dropout_p) -> (B, nh, Tq, hs)` with
(B, nh, Tq, hs) queries and (B, nh, Tk, hs) keys/values, Tq <= Tk: the queries are the last Tq of
the Tk positions (cached decoding), so query i sees keys <= i + Tk - Tq.

`bias` is what the decoder built once per forward for the chosen backend and shares by all layers:
- sdpa / reference: None (no encoding bias, no padding: the fused causal kernel), or an additive
  float tensor broadcastable to (B, nh, Tq, Tk) added to the scaled scores q.k/sqrt(hs) before the
  causal mask and the softmax (padded keys carry -inf there);
- flex: a `FlexScore` (the encoding's `score_bias` as a `score_mod` and a causal block mask).

An encoding with per-pair scores (`PositionalEncoding.pairwise_scores`: ReRoPE, Self-Extend, ...)
takes `pairwise_attention` instead, whatever the backend: its scores are materialised.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "flex", "reference")


def select_backend(requested: str) -> str:
    """Resolve "auto" to "sdpa", on every device.

    Measured on an H200 (benchmarks/RESULTS_GPU.md: bf16 training step, T = 1024), compiled
    FlexAttention took 1.3x SDPA's time with ALiBi and 30x with T5's learned bias, so "flex" is
    opt-in: it never materialises the (B, nh, Tq, Tk) bias, which may pay at long context.
    """
    return "sdpa" if requested == "auto" else requested


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Fused attention; without a bias it keeps the fused causal kernel (`is_causal=True`)."""
    query_len, key_len = query.shape[-2], key.shape[-2]
    if bias is None and query_len == key_len:
        return F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout_p, is_causal=True
        )
    if bias is None and query_len == 1:  # one new token attends to every cached key
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p)
    if bias is None:  # is_causal aligns top-left; cached decoding needs bottom-right
        bias = query.new_zeros(query_len, key_len)
    table = _distance_table(bias, query)  # before any conversion makes a new tensor
    bias = bias.to(query.dtype)  # (B or 1, nh or 1, Tq, Tk)
    if query_len == key_len and _cpu_flash_usable(query, key, value, dropout_p):
        # The CPU flash kernel adds an unmasked bias and skips the blocks above the diagonal
        # itself; masking the bias first (below) would cost a (Tq, Tk) masked_fill per layer.
        wants_grad = torch.is_grad_enabled() and any(
            tensor.requires_grad for tensor in (query, key, value, bias)
        )
        if wants_grad and bias.dim() == 4 and _cpu_flash_ops() is not None:
            if table is not None:  # the gradient goes straight to the (nh, T) distance table
                return BiasedCausalAttention.apply(query, key, value, bias.detach(), table)
            return BiasedCausalAttention.apply(query, key, value, bias)
        if not (bias.requires_grad and torch.is_grad_enabled()):
            # detached: SDPA picks its math kernel (which refuses is_causal with a mask) for
            # any mask that requires grad, even under no_grad
            flushed = _flush_denormals()
            try:
                return F.scaled_dot_product_attention(
                    query, key, value, attn_mask=bias.detach(), is_causal=True
                )
            finally:
                _restore_denormals(flushed)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=causal_bias(bias), dropout_p=dropout_p
    )


def _flush_denormals() -> bool:
    """Flush denormal floats to zero on this thread; True if this call switched it on.

    A distance bias such as ALiBi's (-slope * distance, down to hundreds) makes many attention
    probabilities denormal (below 1.2e-38), which x86 CPUs process far more slowly:
    the flash backward of ALiBi at T = 1024 took 3x the time of NoPE's without this. Values that
    small are zero against a softmax row sum of at least 1. Eager only (not traceable); torch
    offers no getter, so the current state is probed with one tiny multiplication.
    """
    if torch.compiler.is_compiling():
        return False
    if float(torch.full((1,), 1e-39) * 2.0) == 0.0:  # already flushed
        return False
    return torch.set_flush_denormal(True)


def _restore_denormals(flushed: bool) -> None:
    if flushed:
        torch.set_flush_denormal(False)


def _cpu_flash_usable(query, key, value, dropout_p: float) -> bool:
    """Whether SDPA takes its CPU flash kernel for these inputs (its conditions, torch 2.13)."""
    return (
        query.device.type == "cpu"
        and not dropout_p
        # the global switch (CPU included); dynamo cannot read it, compiled code assumes it on
        and (torch.compiler.is_compiling() or torch.backends.cuda.flash_sdp_enabled())
        and query.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
        and query.shape[:2] == key.shape[:2] == value.shape[:2]
        and query.shape[-1] == key.shape[-1] == value.shape[-1]
        and query.stride(-1) == key.stride(-1) == value.stride(-1) == 1
    )


def _cpu_flash_ops() -> tuple[Callable, Callable] | None:
    """torch's private CPU flash-attention forward and backward ops, or None if this torch lacks
    them (then a learned bias takes the plain masked SDPA call)."""
    forward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is None or backward is None:
        return None
    return forward, backward


BIAS_GRAD_CHUNK = 256  # query rows per block when the bias gradient is recomputed


def _distance_table(bias: torch.Tensor, query: torch.Tensor) -> torch.Tensor | None:
    """The (nh, T) table `bias` was expanded from by `distance_bias`, if it is that very tensor
    (not a sum with a padding or contextual bias, which is a new tensor without the mark), the
    table has one entry per head of `query` and it needs a gradient; else None."""
    if torch.compiler.is_compiling():
        return None
    table = getattr(bias, "_lengen_distance_table", None)
    if table is None or not table.requires_grad:
        return None
    n_head, length = query.shape[1], query.shape[2]
    if bias.shape != (1, n_head, length, length) or table.shape != (n_head, length):
        return None
    return table


class BiasedCausalAttention(torch.autograd.Function):
    """Causal attention with an additive bias on the CPU flash kernel, with gradients.

    `F.scaled_dot_product_attention` runs its math kernel whenever the mask requires grad: every
    (B, nh, T, T) intermediate is kept and the masked upper triangle is computed too. Here the
    flash kernel computes the output and the gradients of q, k, v; the bias gradient
    dS = P * (dP - rowsum(dO * O)), with P = exp(S - logsumexp) and dP = dO V^T, is recomputed
    in blocks of query rows, each over the keys it can see only, and summed over the dimensions
    the bias broadcasts. Inputs: (B, nh, T, hs) query/key/value, (B or 1, nh or 1, T, T) bias.
    Also used for a fixed bias (ALiBi), for the denormal flush in the backward (see
    `_flush_denormals`).

    `table`: for a bias that is a function of i - j (`distance_bias`; then `bias` is passed
    detached, (1, nh, T, T)), the (nh, T) table by distance it was expanded from: its gradient
    is reduced from each block along the diagonals, so no (nh, T, T) bias gradient exists.
    """

    @staticmethod
    def forward(ctx, query, key, value, bias, table=None):
        flash_forward, _ = _cpu_flash_ops()
        flushed = _flush_denormals()
        try:
            out, logsumexp = flash_forward(query, key, value, 0.0, True, attn_mask=bias.detach())
        finally:
            _restore_denormals(flushed)
        ctx.save_for_backward(query, key, value, bias, out, logsumexp)
        ctx.table_dtype = None if table is None else table.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, bias, out, logsumexp = ctx.saved_tensors
        _, flash_backward = _cpu_flash_ops()
        grad_out = grad_out.contiguous()
        flushed = _flush_denormals()
        try:
            grad_query, grad_key, grad_value = flash_backward(
                grad_out, query, key, value, out, logsumexp, 0.0, True, attn_mask=bias.detach()
            )
            grad_bias = grad_table = None
            if ctx.needs_input_grad[3]:
                grad_bias = causal_bias_grad(query, key, value, bias, out, logsumexp, grad_out)
            if len(ctx.needs_input_grad) > 4 and ctx.needs_input_grad[4]:
                grad_table = causal_bias_grad(
                    query, key, value, bias, out, logsumexp, grad_out, by_distance=True
                ).to(ctx.table_dtype)
        finally:
            _restore_denormals(flushed)
        return grad_query, grad_key, grad_value, grad_bias, grad_table


def causal_bias_grad(
    query, key, value, bias, out, logsumexp, grad_out, chunk=None, by_distance=False
):
    """d loss / d bias of causal softmax(q k^T / sqrt(hs) + bias) v, shaped like `bias`.

    dS = P * (dP - delta) with P = exp(q k^T / sqrt(hs) + bias - logsumexp), dP = dO v^T and
    delta = rowsum(dO * O). Per batch row and block of `chunk` query rows [i0, i1), over the keys
    [0, i1) only; logsumexp and delta ride along as an extra column of q / dO (against a column
    of ones in k / v), so each block costs two matrix products and two elementwise passes.
    Computed in float32 (float64 for float64 inputs) whatever the input dtype; 0 above the
    diagonal. (B, nh, T, hs) inputs, (B, nh, T) logsumexp, (B or 1, nh or 1, T, T) bias.

    by_distance: for a (1, nh, T, T) bias[h, i, j] = table[h, i - j], the gradient of the (nh, T)
    table instead, grad[h, d] = sum over i of dS[h, i, i - d] (and the batch): each block is
    reduced along its diagonals by a strided view, so no (nh, T, T) gradient is formed.
    """
    chunk = chunk or BIAS_GRAD_CHUNK
    batch, n_head, length, _ = query.shape
    compute = torch.promote_types(query.dtype, torch.float32)
    blocks = _score_grad_blocks(query, key, value, bias, out, logsumexp, grad_out, chunk)
    if by_distance:
        # reversed[h, T - 1 - d]: distance d, so that each block adds to a suffix
        reversed_grad = query.new_zeros(n_head, length, dtype=compute)
        for _, start, stop, grad_scores in blocks:  # (nh, c, i1), zero above the diagonal
            rows = stop - start
            # Rows r >= 1: view[h, e, r - 1] = grad_scores[h, r, start + r - d] with
            # d = stop - 1 - e, at offset r * (i1 + 1) + start - d. Where that key index is
            # negative, the view reads row r - 1 beyond its own query (above the diagonal: 0).
            head_stride = rows * stop
            diagonals = grad_scores.as_strided(
                (n_head, stop, rows - 1),
                (head_stride, 1, stop + 1),
                grad_scores.storage_offset() + start + 2,
            )
            reversed_grad[:, length - stop :] += diagonals.sum(-1)
            # row 0 (query `start`): key j is distance start - j
            reversed_grad[:, length - 1 - start :] += grad_scores[:, 0, : start + 1]
        return reversed_grad.flip(-1)  # (nh, T)
    grad_bias = torch.empty(bias.shape, dtype=compute, device=bias.device)
    bias_heads = bias.shape[1]
    accumulate = bias.shape[0] != batch  # a bias shared by the batch sums the rows
    for row, start, stop, grad_scores in blocks:
        grad_row = grad_bias[row if bias.shape[0] == batch else 0]  # (nh or 1, T, T)
        rows = slice(start, stop)
        if bias_heads != n_head:
            grad_scores = grad_scores.sum(0, keepdim=True)  # (1, c, i1)
        if accumulate and row > 0:
            grad_row[:, rows, :stop] += grad_scores
        else:
            grad_row[:, rows, :stop] = grad_scores
            grad_row[:, rows, stop:] = 0.0
    return grad_bias.to(bias.dtype)


def _score_grad_blocks(query, key, value, bias, out, logsumexp, grad_out, chunk):
    """Yield (batch row, i0, i1, dS[row, :, i0:i1, :i1]) of causal attention with `bias`.

    dS: (nh, i1 - i0, i1), contiguous, zero above the diagonal, in float32 (float64 for float64
    inputs); `causal_bias_grad` has the formulas and the shapes. Every block is written into the
    same two buffers (fresh large allocations page-fault on every block): use one block before
    asking for the next.
    """
    compute = torch.promote_types(query.dtype, torch.float32)
    batch, n_head, length, head_dim = query.shape
    ones = query.new_ones(batch, n_head, length, 1, dtype=compute)
    delta = (grad_out.to(compute) * out.to(compute)).sum(-1, keepdim=True)  # (B, nh, T, 1)
    scaled_query = query.to(compute) / math.sqrt(head_dim)
    query_aug = torch.cat((scaled_query, -logsumexp[..., None].to(compute)), -1)  # (B, nh, T, hs+1)
    key_aug = torch.cat((key.to(compute), ones), -1)  # (B, nh, T, hs + 1)
    grad_out_aug = torch.cat((grad_out.to(compute), -delta), -1)  # (B, nh, T, hs + 1)
    value_aug = torch.cat((value.to(compute), ones), -1)  # (B, nh, T, hs + 1)
    buffers = query_aug.new_empty(2, n_head * min(chunk, length) * length)
    for row in range(batch):
        bias_row = bias[row if bias.shape[0] == batch else 0]  # (nh or 1, T, T)
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            rows = slice(start, stop)
            size = n_head * (stop - start) * stop
            probs, grad_probs = buffers[:, :size].view(2, n_head, stop - start, stop).unbind(0)
            # (nh, c, i1): q k^T / sqrt(hs) + bias - logsumexp, then P in place
            torch.baddbmm(
                bias_row[:, rows, :stop].to(compute),
                query_aug[row, :, rows],
                key_aug[row, :, :stop].transpose(-2, -1),
                out=probs,
            ).exp_()
            probs[:, :, start:stop].tril_()  # the diagonal block: 0 above the diagonal
            torch.bmm(
                grad_out_aug[row, :, rows],
                value_aug[row, :, :stop].transpose(-2, -1),
                out=grad_probs,
            )  # (nh, c, i1): dP - delta
            yield row, start, stop, probs.mul_(grad_probs)


class DistanceBias(torch.autograd.Function):
    """(nh, T) bias by distance d = i - j >= 0 -> (1, nh, T, T), bias[h, i, j] = table[h, i - j].

    For an encoding whose bias depends on i - j only (`is_relative`) and causal attention, where
    the keys above the diagonal are masked anyway: there the bias repeats table[h, 0] (finite,
    and its gradient flows back to table[h, 0]). Forward: one strided view copied; backward: the
    (…, nh, T, T) gradient reduced to the table by diagonal sums (a strided view), with no index
    tensor and no scatter, unlike indexing a (T, T) distance matrix.
    """

    @staticmethod
    def forward(ctx, table):
        n_head, length = table.shape
        # u[k] = table[T - 1 - k] for k < T, table[0] beyond: bias[i, j] = u[T - 1 - i + j]
        padded = torch.cat((table.flip(-1), table[:, :1].expand(n_head, length - 1)), -1)
        skewed = padded.as_strided((n_head, length, length), (2 * length - 1, 1, 1))
        return skewed.flip(1)[None]  # (1, nh, T, T): row i reads u[T - 1 - i + j]

    @staticmethod
    def backward(ctx, grad):
        grad = grad.sum(0) if grad.dim() == 4 else grad  # (nh, T, T)
        n_head, length = grad.shape[0], grad.shape[-1]
        # Below T zero rows, the strided view [h, d, k] = grad[h, d + k, k] walks diagonal d.
        padded = grad.new_empty(n_head, 2 * length, length)  # (nh, 2T, T)
        padded[:, :length] = grad
        padded[:, length:] = 0.0
        diagonals = padded.as_strided(
            (n_head, length, length), (2 * length * length, length, length + 1)
        )
        grad_table = diagonals.sum(-1)  # (nh, T): distances 0 .. T - 1
        # above the diagonal (read as table[h, 0]): what the diagonals below leave of the total
        grad_table[:, 0] += grad.sum((-2, -1)) - grad_table.sum(-1)
        return grad_table


def distance_bias(table: torch.Tensor) -> torch.Tensor:
    """(nh, T) bias by distance -> (1, nh, T, T) causal-attention bias (see `DistanceBias`).

    The result carries its table, so that `sdpa_attention` on CPU can send the bias gradient
    straight to the table (`BiasedCausalAttention`); any op on it (a dtype change, adding padding)
    gives a tensor without the mark, which takes the general path.
    """
    bias = DistanceBias.apply(table)
    if not torch.compiler.is_compiling():  # eager only: dynamo cannot trace the attribute
        bias._lengen_distance_table = table
    return bias


def reference_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q.k^T / sqrt(hs) + bias + causal mask) v, written out step by step."""
    if isinstance(bias, FlexScore):
        bias = bias.dense()
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, nh, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    scores = causal_bias(scores)
    compute_dtype = torch.promote_types(scores.dtype, torch.float32)  # float64 stays float64
    weights = torch.softmax(scores, dim=-1, dtype=compute_dtype).to(value.dtype)
    weights = F.dropout(weights, p=dropout_p)
    return weights @ value  # (B, nh, Tq, hs)


def causal_bias(bias: torch.Tensor) -> torch.Tensor:
    """Add -inf above the diagonal of a (..., Tq, Tk) score bias.

    Queries are the last Tq of the Tk positions (cached decoding): query i sees keys <= i + Tk - Tq.
    """
    query_len, key_len = bias.shape[-2:]
    future = torch.ones(query_len, key_len, dtype=torch.bool, device=bias.device).triu(
        key_len - query_len + 1
    )
    return bias.masked_fill(future, float("-inf"))


def padding_bias(key_mask: torch.Tensor, query_len: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, Tk) bool mask of real keys -> (B, 1, Tq, Tk) additive bias, -inf on padded keys.

    A padded query still sees itself, so no row is all -inf (its output is garbage, never NaN).
    """
    key_len = key_mask.shape[1]
    key_index = torch.arange(key_len, device=key_mask.device)
    query_index = torch.arange(query_len, device=key_mask.device) + key_len - query_len
    own_position = query_index[:, None] == key_index  # (Tq, Tk)
    visible = key_mask[:, None, None, :] | own_position  # (B, 1, Tq, Tk)
    bias = torch.zeros(visible.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~visible, float("-inf"))


@dataclass
class FlexScore:
    """What the flex backend needs: the encoding's bias as a `score_mod` plus a block mask.

    `score_mod` indexes the (B, Tq) / (B, Tk) positions, so offsets, padding and cached decoding
    work as in the other backends; learned bias parameters receive gradients through it.
    """

    score_mod: Callable | None
    block_mask: object
    dense: Callable[[], torch.Tensor]  # the same bias materialised (B, nh, Tq, Tk), for recorders


def flex_score(
    bias_fn: Callable | None,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_mask: torch.Tensor | None,
    n_head: int,
    dense: Callable[[], torch.Tensor],
) -> FlexScore:
    """Build the score_mod and the causal (and key padding) block mask for one forward.

    bias_fn: `encoding.score_bias(head, query_position, key_position)` or None (no bias).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    batch, query_len = query_positions.shape
    key_len = key_positions.shape[1]
    offset = key_len - query_len
    score_mod = None
    if bias_fn is not None:

        def score_mod(score, b, h, q_idx, kv_idx):
            bias = bias_fn(h, query_positions[b, q_idx], key_positions[b, kv_idx])
            return score + bias.to(score.dtype)

    if key_mask is None:

        def mask_mod(b, h, q_idx, kv_idx):
            return q_idx + offset >= kv_idx

        mask_batch = None
    else:

        def mask_mod(b, h, q_idx, kv_idx):
            causal = q_idx + offset >= kv_idx
            return causal & (key_mask[b, kv_idx] | (q_idx + offset == kv_idx))

        mask_batch = batch
    block_mask = create_block_mask(
        mask_mod, mask_batch, None, query_len, key_len, device=query_positions.device
    )
    return FlexScore(score_mod, block_mask, dense)


def compile_flex_attention(backend: str = "inductor") -> Callable:
    """FlexAttention under `torch.compile`, with dynamo's automatic dynamic shapes.

    The first sequence length compiles static kernels; a second one recompiles once with the
    lengths symbolic, and later lengths reuse that. With `dynamic=False` every new length
    compiled anew, and past dynamo's recompile limit (8) the rest of the run fell back to the
    unfused path, which materialises every (B, nh, Tq, Tk) score.
    """
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, backend=backend)


_compiled_flex_attention = functools.cache(compile_flex_attention)


def flex_attention_backend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: FlexScore,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """FlexAttention with the encoding's score_mod and a causal block mask.

    Compiled (fused) on CUDA. On CPU, torch 2.13 runs FlexAttention forward only and unfused
    (eager), which the tests use to check it against the reference; CPU training uses SDPA.
    """
    from torch.nn.attention.flex_attention import flex_attention

    if dropout_p:
        raise ValueError("attention='flex' does not support dropout; use attention='sdpa'")
    kernel = _compiled_flex_attention() if query.device.type == "cuda" else flex_attention
    return kernel(query, key, value, score_mod=bias.score_mod, block_mask=bias.block_mask)


def pairwise_attention(
    encoding,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    bias=None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(encoding.pairwise_scores + bias + causal mask) v, for per-pair encodings.

    The one path for encodings that override `PositionalEncoding.pairwise_scores` (ReRoPE,
    Self-Extend, ...): their scores are materialised (B, nh, Tq, Tk), whatever the backend.
    (B, nh, Tq, hs) un-rotated query, (B, nh, Tk, hs) un-rotated key and value, (B, Tq) and
    (B, Tk) positions; `bias` is the decoder's padding bias in any backend's format (or None).
    """
    if isinstance(bias, FlexScore):
        bias = bias.dense()
    scores = encoding.pairwise_scores(query, key, query_positions, key_positions)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    scores = causal_bias(scores)  # (B, nh, Tq, Tk)
    compute_dtype = torch.promote_types(scores.dtype, torch.float32)
    weights = torch.softmax(scores, dim=-1, dtype=compute_dtype).to(value.dtype)
    weights = F.dropout(weights, p=dropout_p)
    return weights @ value  # (B, nh, Tq, hs)


KERNELS = {
    "sdpa": sdpa_attention,
    "flex": flex_attention_backend,
    "reference": reference_attention,
}
