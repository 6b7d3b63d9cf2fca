"""RoPE context extension by a scale factor: linear (PI), NTK-aware, dynamic NTK, YaRN, Llama 3.

Each is a small subclass of `RoPE` that changes only the inverse frequencies (and, for YaRN, the
factor on cos and sin). The scale factor s is shared logic (`ScaledRoPE`): a schedulable 0-dim
float32 buffer `scale` (saved in checkpoints, moved by curriculum callbacks) used in training, and
a plain attribute `eval_scale` that, when set, replaces it in evaluation mode. So a model trained
with scale 4 can be tested at scale 8 without retraining:
`lengen test ... --model.pos_encoding.init_args.eval_scale 8`.
"""

from __future__ import annotations

import math

import torch

from lengen.positional import ModelDims
from lengen_plugins.positional_encodings.rope import RoPE


class ScaledRoPE(RoPE):
    """RoPE with a scale factor s >= 1 (1 = plain RoPE) used in training, and its eval override.

    Not a plugin itself: the base of the scaled encodings below.

    Args:
        scale: the factor s used in training (a schedulable float32 buffer).
        eval_scale: the factor used in evaluation mode; None means `scale`.
        base, rotary_dim: as for `RoPE`.
    """

    schedulable = ("scale",)

    def __init__(
        self,
        scale: float = 4.0,
        eval_scale: float | None = None,
        base: float = 10000.0,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__(base=base, rotary_dim=rotary_dim)
        name = type(self).__name__
        if not scale >= 1.0:
            raise ValueError(f"{name}: scale={scale} must be >= 1 (1 means no scaling)")
        if eval_scale is not None and not eval_scale >= 1.0:
            raise ValueError(
                f"{name}: eval_scale={eval_scale} must be >= 1 (1 means no scaling) or null"
            )
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))
        self.eval_scale = None if eval_scale is None else float(eval_scale)

    def current_scale(self) -> torch.Tensor:
        """The factor in use now: `eval_scale` in eval mode when set, else the `scale` buffer."""
        if not self.training and self.eval_scale is not None:
            return torch.tensor(self.eval_scale, dtype=torch.float32, device=self.scale.device)
        return self.scale

    def extra_repr(self) -> str:
        return f"scale={float(self.scale)}, eval_scale={self.eval_scale}, base={self.base}"


class RoPELinear(ScaledRoPE):
    """Position Interpolation: RoPE at positions p / s (Chen et al. 2023).

    Chen, Wong, Chen, Tian 2023, "Extending Context Window of Large Language Models via
    Positional Interpolation". Every angle p * theta_i becomes (p / s) * theta_i, written as the
    inverse frequencies theta_i / s; a model trained at length L then sees positions of length s*L
    inside its trained range. Abacus AI's Giraffe (Pal et al. 2023) calls it linear scaling and
    found evaluating at a larger s than trained (train 4, evaluate 8) extends further: `eval_scale`.
    """

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """theta_i / s, radians per position, (r/2,)."""
        scale = self.current_scale().to(device=device, dtype=dtype)
        return super().inverse_frequencies(dtype, device) / scale


def _ntk_base(base: float, scale: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """NTK-aware base: base * s^(r / (r - 2)), so the lowest frequency is divided by exactly s."""
    return base * scale ** (rotary_dim / (rotary_dim - 2))


def _inverse_frequencies_with_base(
    base: torch.Tensor | float, rotary_dim: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """base^(-2i / r) for i < r / 2, (r/2,)."""
    even_dims = torch.arange(0, rotary_dim, 2, dtype=dtype, device=device)  # 2i
    return 1.0 / (base ** (even_dims / rotary_dim))


class _NeedsFourRotaryDims:
    """bind check shared by the NTK variants: the exponent r / (r - 2) needs r >= 4."""

    def _check_rotary_dim(self) -> None:
        if self.rotary_dim < 4:
            raise ValueError(
                f"{type(self).__name__}: rotary_dim={self.rotary_dim} must be >= 4 "
                "(the NTK exponent r / (r - 2) is undefined for r = 2)"
            )


class RoPENTK(_NeedsFourRotaryDims, ScaledRoPE):
    """NTK-aware scaling: RoPE with the base raised to base * s^(r/(r-2)) (bloc97, 2023).

    bloc97 2023, "NTK-Aware Scaled RoPE" (r/LocalLLaMA), as formalised in Peng et al. 2023 (YaRN,
    section 3.1): theta_i = (base * s^(r / (r - 2)))^(-2i / r) with r = rotary_dim. The highest
    frequency is unchanged and the lowest is divided by s: high frequencies extrapolate, low ones
    interpolate.
    """

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self._check_rotary_dim()

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        scale = self.current_scale().to(device=device, dtype=dtype)
        base = _ntk_base(self.base, scale, self.rotary_dim)
        return _inverse_frequencies_with_base(base, self.rotary_dim, dtype, device)


class RoPEDynamicNTK(_NeedsFourRotaryDims, ScaledRoPE):
    """Dynamic NTK: the NTK base recomputed from each call's length (emozilla 2023; Peng et al.).

    emozilla 2023, "Dynamically Scaled RoPE" (r/LocalLLaMA); Peng et al. 2023 (YaRN, section 3.3),
    in the form of Hugging Face transformers' `dynamic` rope_scaling. With L = 1 + the largest
    query or key position of the row and L0 = original_max_length:
    L <= L0 is plain RoPE (bit for bit); otherwise base' = base * (s * L / L0 - (s - 1))^(r/(r-2)).
    With s = 1 the factor is L / L0. L is taken per row, so a row's output does not depend on the
    other rows of its batch or on padding (transformers takes one L, the maximum over the batch;
    the two agree when the rows share their positions, as without padding). Each call depends
    only on its own positions. Not shift
    invariant (a shift changes L), so `is_relative` is False. `supports_kv_cache` is False: a
    cached key keeps the base of the call that made it, so once positions pass L0 cached decoding
    would differ from the full forward; generation recomputes the whole sequence instead.

    Args:
        original_max_length: the training context length L0.
        scale: s (default 1); eval_scale, base, rotary_dim: as for `ScaledRoPE`.
    """

    is_relative = False
    supports_kv_cache = False  # the base depends on the whole sequence's length

    def __init__(
        self,
        original_max_length: int = 2048,
        scale: float = 1.0,
        eval_scale: float | None = None,
        base: float = 10000.0,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__(scale=scale, eval_scale=eval_scale, base=base, rotary_dim=rotary_dim)
        if original_max_length < 1:
            raise ValueError(
                f"RoPEDynamicNTK: original_max_length={original_max_length} must be >= 1"
            )
        self.original_max_length = original_max_length

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self._check_rotary_dim()

    def inverse_frequencies_for_length(
        self, length: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Inverse frequencies (r/2,) for a call whose positions span `length` = max + 1."""
        if length <= self.original_max_length:
            return self.inverse_frequencies(dtype, device)  # plain RoPE
        scale = self.current_scale().to(device=device, dtype=dtype)
        factor = scale * length / self.original_max_length - (scale - 1)
        base = _ntk_base(self.base, factor, self.rotary_dim)
        return _inverse_frequencies_with_base(base, self.rotary_dim, dtype, device)

    def rotate(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As RoPE, with one set of frequencies per row, from that row's length."""
        lengths = torch.maximum(query_positions.amax(dim=1), key_positions.amax(dim=1)) + 1  # (B,)
        dtype = torch.promote_types(torch.float32, query.dtype)
        inverse_frequencies = torch.stack(
            [self.inverse_frequencies_for_length(int(n), dtype, query.device) for n in lengths]
        )[:, None, None, :]  # (B, 1, 1, r/2): broadcasts against (B, 1, T, 1) positions
        return (
            self._apply_rotation(query, query_positions, inverse_frequencies),
            self._apply_rotation(key, key_positions, inverse_frequencies),
        )


RAMPS = ("dimension", "turns")


class YaRN(ScaledRoPE):
    """YaRN: NTK-by-parts interpolation plus an attention temperature (Peng et al. 2023).

    Peng, Quesnelle, Fan, Shippole 2023, "YaRN: Efficient Context Window Extension of Large
    Language Models", sections 3.2-3.4. With L0 = original_max_length, theta_i = base^(-2i / r)
    for pair i < r/2 (r = rotary_dim), and an extrapolation weight gamma_i in [0, 1],
    theta'_i = (1 - gamma_i) * theta_i / s + gamma_i * theta_i: pairs that turn many times within
    L0 keep their frequency, pairs that turn under beta_slow times are interpolated like PI.
    cos and sin are multiplied by the attention factor sqrt(1/t) = 0.1 * ln(s) + 1, so q.k is
    scaled by its square. Two shapes of the ramp gamma_i:

      ramp="dimension" (default): linear in the pair index i, as the authors' code
        (jquesnelle/yarn) and Hugging Face transformers' `yarn` rope_type. The index where pair i
        turns n times within L0 is d(n) = r * ln(L0 / (2 pi n)) / (2 ln base); with
        low = d(beta_fast), high = d(beta_slow), rounded outward to whole indices
        (floor, ceil) when `truncate` (transformers' default and the authors' code), then
        clipped to [0, r - 1], gamma_i = 1 - clamp((i - low) / (high - low), 0, 1).
        Equal to transformers' inverse frequencies (tests/test_parity_rope.py).
      ramp="turns": the paper's formula, linear in the number of turns r_i = L0 * theta_i / (2 pi):
        gamma_i = clamp((r_i - beta_slow) / (beta_fast - beta_slow), 0, 1), continuous.

    The two differ in shape, not by rounding: r_i is exponential in i, so the paper's ramp is
    linear in turns where the code's is linear in log(turns). For s = 4, L0 = 2048, r = 64,
    12 of 32 inverse frequencies differ, by up to 44 % (pair 15: gamma 0.11 against 0.46).

    Args:
        original_max_length: the training context length L0.
        beta_fast, beta_slow: the ramp's ends in turns (32 and 1 in the paper for LLaMA).
        attention_factor: a fixed factor on cos and sin; None means 0.1 * ln(s) + 1.
        ramp: "dimension" (authors' code, transformers) or "turns" (the paper's formula).
        truncate: with ramp="dimension", round the ramp's ends outward to whole indices.
        scale, eval_scale, base, rotary_dim: as for `ScaledRoPE`.
    """

    def __init__(
        self,
        scale: float = 4.0,
        eval_scale: float | None = None,
        original_max_length: int = 2048,
        beta_fast: float = 32.0,
        beta_slow: float = 1.0,
        attention_factor: float | None = None,
        base: float = 10000.0,
        rotary_dim: int | None = None,
        ramp: str = "dimension",
        truncate: bool = True,
    ) -> None:
        super().__init__(scale=scale, eval_scale=eval_scale, base=base, rotary_dim=rotary_dim)
        if original_max_length < 1:
            raise ValueError(f"YaRN: original_max_length={original_max_length} must be >= 1")
        if not 0 < beta_slow < beta_fast:
            raise ValueError(
                f"YaRN: beta_slow={beta_slow}, beta_fast={beta_fast}: need 0 < beta_slow "
                "< beta_fast"
            )
        if attention_factor is not None and not attention_factor > 0:
            raise ValueError(f"YaRN: attention_factor={attention_factor} must be > 0 or null")
        if ramp not in RAMPS:
            raise ValueError(f"YaRN: ramp={ramp!r}; accepted: {', '.join(RAMPS)}")
        self.original_max_length = original_max_length
        self.beta_fast = float(beta_fast)
        self.beta_slow = float(beta_slow)
        self.attention_factor = attention_factor
        self.ramp = ramp
        self.truncate = truncate

    def _index_for_turns(self, turns: float) -> float:
        """d(n) = r * ln(L0 / (2 pi n)) / (2 ln base): the pair index that turns n times in L0."""
        ratio = self.original_max_length / (turns * 2 * math.pi)
        return self.rotary_dim * math.log(ratio) / (2 * math.log(self.base))

    def extrapolation_weights(
        self, theta: torch.Tensor, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """gamma_i for the (r/2,) inverse frequencies theta: 1 keeps theta_i, 0 gives theta_i/s."""
        if self.ramp == "turns":
            turns = self.original_max_length * theta / (2 * math.pi)  # r_i = L0 / lambda_i
            return ((turns - self.beta_slow) / (self.beta_fast - self.beta_slow)).clamp(0.0, 1.0)
        low = self._index_for_turns(self.beta_fast)
        high = self._index_for_turns(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, self.rotary_dim - 1)
        if low == high:
            high += 0.001  # as transformers: avoids 0 / 0
        index = torch.arange(self.rotary_dim // 2, dtype=dtype, device=device)  # i
        return 1.0 - ((index - low) / (high - low)).clamp(0.0, 1.0)

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        theta = super().inverse_frequencies(dtype, device)  # (r/2,)
        scale = self.current_scale().to(device=device, dtype=dtype)
        gamma = self.extrapolation_weights(theta, dtype, device)  # (r/2,)
        return (1 - gamma) * theta / scale + gamma * theta

    def attention_scale(self) -> float | torch.Tensor:
        if self.attention_factor is not None:
            return self.attention_factor
        return 0.1 * torch.log(self.current_scale().double()) + 1.0  # 0-dim: keeps cos dtype


class RoPELlama3(ScaledRoPE):
    """Llama 3.1 RoPE scaling: low frequencies divided by s, high kept, a smooth band between.

    Meta 2024, "The Llama 3 Herd of Models" and the Llama 3.1 reference code (`apply_scaling`).
    With L0 = original_max_length and wavelength lambda = 2*pi / theta: lambda < L0 /
    high_freq_factor keeps theta; lambda > L0 / low_freq_factor gives theta / s; in between,
    with smooth = (L0 / lambda - low_freq_factor) / (high_freq_factor - low_freq_factor),
    theta' = (1 - smooth) * theta / s + smooth * theta.

    Args:
        scale: s (8 for Llama 3.1); original_max_length: L0 (8192 for Llama 3.1).
        low_freq_factor, high_freq_factor: 1 and 4 for Llama 3.1.
        eval_scale, base, rotary_dim: as for `ScaledRoPE`.
    """

    def __init__(
        self,
        scale: float = 8.0,
        eval_scale: float | None = None,
        original_max_length: int = 8192,
        low_freq_factor: float = 1.0,
        high_freq_factor: float = 4.0,
        base: float = 10000.0,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__(scale=scale, eval_scale=eval_scale, base=base, rotary_dim=rotary_dim)
        if original_max_length < 1:
            raise ValueError(f"RoPELlama3: original_max_length={original_max_length} must be >= 1")
        if not 0 < low_freq_factor < high_freq_factor:
            raise ValueError(
                f"RoPELlama3: low_freq_factor={low_freq_factor}, high_freq_factor="
                f"{high_freq_factor}: need 0 < low_freq_factor < high_freq_factor"
            )
        self.original_max_length = original_max_length
        self.low_freq_factor = float(low_freq_factor)
        self.high_freq_factor = float(high_freq_factor)

    def inverse_frequencies(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        theta = super().inverse_frequencies(dtype, device)  # (r/2,)
        scale = self.current_scale().to(device=device, dtype=dtype)
        wavelength = 2 * math.pi / theta
        smooth = (self.original_max_length / wavelength - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        blended = (1 - smooth) * theta / scale + smooth * theta
        high = wavelength < self.original_max_length / self.high_freq_factor
        low = wavelength > self.original_max_length / self.low_freq_factor
        return torch.where(high, theta, torch.where(low, theta / scale, blended))
