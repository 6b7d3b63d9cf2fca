"""LongRoPE: per-dimension rescale factors for RoPE's inverse frequencies (Ding et al. 2024)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lengen.positional import ModelDims, PositionalEncoding
from lengen_plugins.positional_encodings.rope import RoPE

FACTOR_SETS = ("auto", "short", "long")


def _factor_list(name: str, values: Sequence[float] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    factors = tuple(float(value) for value in values)
    if not factors or not all(math.isfinite(value) and value > 0 for value in factors):
        raise ValueError(
            f"LongRoPE: {name}={list(values)!r}; accepted: a list of rotary_dim / 2 positive "
            "numbers, or null for all ones"
        )
    return factors


class LongRoPE(RoPE):
    """LongRoPE: RoPE with each inverse frequency divided by its own factor (Ding et al. 2024).

    Ding, Zhang, Zhang, Xu, Shang, Xu, Yang, Yang 2024, "LongRoPE: Extending LLM Context Window
    Beyond 2 Million Tokens"; reference implementations: microsoft/LongRoPE
    and its inference form in Hugging Face transformers (`ROPE_INIT_FUNCTIONS["longrope"]`, used
    by Phi-3), which this follows. With theta_i = base^(-2i / r) for pair i < r/2 (r = rotary_dim)
    and rescale factors lambda_i found by the paper's evolutionary search:

      theta'_i = theta_i / lambda_i,

    lambda = `short_factor` while a row's length L = 1 + its largest position is <= L0 =
    original_max_length, else `long_factor`. cos and sin are multiplied by the attention factor,
    by default sqrt(1 + ln(s) / ln(L0)) for s = `scale` > 1 and 1 otherwise (transformers'
    default), so q.k is scaled by its square. All ones for both lists is plain RoPE.

    L is taken per row (transformers takes one L, the largest position of the batch; the two agree
    when rows share their positions). The paper's search also keeps the first n^ positions
    unscaled; transformers' form, and this one, do not. `factors` fixes one list: "short" or
    "long" use that list at every length; "auto" (default) switches at L0 as above. With "auto"
    `supports_kv_cache` is False: keys cached with the short factors would go stale once the
    sequence passes L0, so generation recomputes the whole sequence; and `is_relative` is False
    (a shift of all positions can cross L0).

    Args:
        short_factor, long_factor: rotary_dim / 2 positive factors each; None means all ones.
        original_max_length: L0, the length up to which the short factors apply.
        scale: s, the extension factor the long factors were searched for (sets the default
            attention factor).
        attention_factor: a fixed factor on cos and sin; None means the default above.
        factors: "auto", "short" or "long" (see above).
        base, rotary_dim: as for `RoPE`.
    """

    def __init__(
        self,
        short_factor: list[float] | None = None,
        long_factor: list[float] | None = None,
        original_max_length: int = 4096,
        scale: float = 1.0,
        attention_factor: float | None = None,
        factors: str = "auto",
        base: float = 10000.0,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__(base=base, rotary_dim=rotary_dim)
        self.short_factor = _factor_list("short_factor", short_factor)
        self.long_factor = _factor_list("long_factor", long_factor)
        if original_max_length < 2:
            raise ValueError(f"LongRoPE: original_max_length={original_max_length} must be >= 2")
        if not scale >= 1.0:
            raise ValueError(f"LongRoPE: scale={scale} must be >= 1 (1 means no extension)")
        if attention_factor is not None and not attention_factor > 0:
            raise ValueError(f"LongRoPE: attention_factor={attention_factor} must be > 0 or null")
        if factors not in FACTOR_SETS:
            raise ValueError(f"LongRoPE: factors={factors!r}; accepted: {', '.join(FACTOR_SETS)}")
        self.original_max_length = original_max_length
        self.scale = float(scale)
        self.attention_factor = attention_factor
        self.factors = factors

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """For the contract suite (head_dim 8): switching at L0, and the long factors always."""
        short, long = [1.0, 1.1, 1.3, 1.6], [1.0, 2.0, 5.0, 9.0]
        return (
            cls(short_factor=short, long_factor=long, scale=4.0),
            cls(short_factor=short, long_factor=long, scale=4.0, factors="long"),
        )

    @property
    def supports_kv_cache(self) -> bool:
        return self.factors != "auto"

    @property
    def is_relative(self) -> bool:
        """A fixed set is shift invariant; "auto" is not (a shift can cross L0)."""
        return self.factors != "auto"

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        for name in ("short_factor", "long_factor"):
            values = getattr(self, name)
            if values is not None and len(values) != self.rotary_dim // 2:
                raise ValueError(
                    f"LongRoPE: {name} has {len(values)} factors; rotary_dim={self.rotary_dim} "
                    f"needs rotary_dim / 2 = {self.rotary_dim // 2}"
                )

    def inverse_frequencies_for(
        self, long: bool, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """theta_i / lambda_i with the long (or short) factors, radians per position, (r/2,)."""
        theta = super().inverse_frequencies(dtype, device)
        values = self.long_factor if long else self.short_factor
        if values is None:
            return theta
        return theta / torch.tensor(values, dtype=dtype, device=device)

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The fixed set's frequencies ("auto": the short ones, for lengths <= L0)."""
        return self.inverse_frequencies_for(self.factors == "long", dtype, device)

    def attention_scale(self) -> float:
        if self.attention_factor is not None:
            return self.attention_factor
        if self.scale <= 1.0:
            return 1.0
        return math.sqrt(1 + math.log(self.scale) / math.log(self.original_max_length))

    def rotate(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As RoPE; with factors="auto", each row takes the short or long set by its length."""
        if self.factors != "auto":
            return super().rotate(query, key, query_positions, key_positions)
        lengths = torch.maximum(query_positions.amax(dim=1), key_positions.amax(dim=1)) + 1  # (B,)
        dtype = torch.promote_types(torch.float32, query.dtype)
        short = self.inverse_frequencies_for(False, dtype, query.device)  # (r/2,)
        long = self.inverse_frequencies_for(True, dtype, query.device)
        use_long = (lengths > self.original_max_length)[:, None]  # (B, 1)
        # (B, 1, 1, r/2): broadcasts against (B, 1, T, 1) positions
        inverse_frequencies = torch.where(use_long, long, short)[:, None, None, :]
        return (
            self._apply_rotation(query, query_positions, inverse_frequencies),
            self._apply_rotation(key, key_positions, inverse_frequencies),
        )
