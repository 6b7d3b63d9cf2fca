"""Positions counted from the digits: Abacus embeddings and position coupling.

Both read the token ids (the `token_positions` hook of lengen.positional): a digit's position is
its 1-based index within its run of consecutive digits, so in the reversed-digit format (least
significant digit first, `reverse_digits: true` in lengen's Addition and DecimalMultiplication)
it is 1 + the digit's significance, the same in every operand and in the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lengen.positional import ModelDims, PositionalEncoding, PositionOutOfRange
from lengen_plugins.positional_encodings.learned import Learned
from lengen_plugins.positional_encodings.rope import RoPE
from lengen_plugins.positional_encodings.wrapper import EncodingWrapper

# lengen's arithmetic tasks (Addition, DecimalMultiplication): the four special tokens
# (<pad>, <bos>, <sep>, <eos>) take ids 0-3, then the symbols "0".."9" take ids 4-13.
LENGEN_DIGIT_IDS = tuple(range(4, 14))


def _digit_ids(name: str, digit_ids: Sequence[int] | None) -> tuple[int, ...]:
    ids = LENGEN_DIGIT_IDS if digit_ids is None else tuple(digit_ids)
    if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
        raise ValueError(
            f"{name}: digit_ids={digit_ids!r}; accepted: a non-empty list of token ids >= 0, "
            "or null for lengen's arithmetic tasks (ids 4-13)"
        )
    return ids


def digit_run_index(
    input_ids: torch.Tensor, mask: torch.Tensor | None, digits: torch.Tensor
) -> torch.Tensor:
    """(B, T) ids, (B, T) bool mask or None, (D,) digit ids -> (B, T) int64 index in the run.

    A digit gets its 1-based index within its run of consecutive digits, any other token 0.
    Padded tokens (mask False) are skipped: they neither end a run nor count in it, and get the
    value of the run so far. Causal: an index depends only on the real tokens up to it.
    """
    real = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
    is_digit = torch.isin(input_ids, digits) & real  # (B, T)
    digits_so_far = is_digit.long().cumsum(dim=1)  # (B, T)
    breaks = real & ~is_digit  # a real non-digit token ends the run
    # digits counted up to the last break: non-decreasing, so a running max carries it forward
    at_last_break = torch.where(breaks, digits_so_far, 0).cummax(dim=1).values  # (B, T)
    index = digits_so_far - at_last_break
    return torch.where(is_digit, index, torch.where(breaks, 0, index))


class Abacus(PositionalEncoding):
    """Abacus embeddings: a learned vector per digit index within its number (McLeish et al. 2024).

    McLeish, Bansal, Stein, Jain, Kirchenbauer, Bartoldson, Kailkhura, Bhatele, Geiping,
    Goldblum, Goldstein 2024, "Transformers Can Do Arithmetic with the Right Embeddings";
    reference implementation: `Abacus` in the authors' repository
    mcleish7/arithmetic (abacus.py). Each digit token gets i = its 1-based index within its run of
    consecutive digits (numbers written least significant digit first, so i - 1 is the digit's
    significance); every other token gets 0. In training one offset k ~ U{0, ..., max_offset} is
    drawn per forward (the whole batch, as the reference) and added to every nonzero index, so
    the rows beyond the training length are trained too; in evaluation k = 0. The row i of a
    table `nn.Embedding(max_length, d_model)` (non-digits: row 0, a learned vector too) is added
    to the token embedding. Nothing else is positional: the paper's Abacus + NoPE combination.

    Positions come from `token_positions` (the token ids), so explicit `positions` are ignored.
    Cached decoding equals the full forward: an index depends only on the tokens up to it.

    Args:
        digit_ids: token ids of the ten digits; None means lengen's arithmetic tasks (4-13).
        max_length: rows of the table (1024 in the reference); indices up to max_length - 1.
        max_offset: the largest training offset k (99 in the reference); < max_length.
    """

    def __init__(
        self,
        digit_ids: list[int] | None = None,
        max_length: int = 1024,
        max_offset: int = 99,
    ) -> None:
        super().__init__()
        self.digit_ids = _digit_ids("Abacus", digit_ids)
        if max_length < 2:
            raise ValueError(f"Abacus: max_length={max_length} must be >= 2 (rows of the table)")
        if not 0 <= max_offset < max_length - 1:
            raise ValueError(
                f"Abacus: max_offset={max_offset} must be in 0..{max_length - 2} "
                f"(max_length={max_length} rows)"
            )
        self.max_length = max_length
        self.max_offset = max_offset
        self.register_buffer("digits", torch.tensor(self.digit_ids), persistent=False)

    def bind(self, dims: ModelDims) -> None:
        super().bind(dims)
        self.table = nn.Embedding(self.max_length, dims.d_model)
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)  # as `Learned`

    def token_positions(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, Tk) ids -> (B, Tk) digit indices (+ the training offset k on digits)."""
        index = digit_run_index(input_ids, mask, self.digits.to(input_ids.device))
        if self.training and self.max_offset > 0:
            offset = torch.randint(0, self.max_offset + 1, (), device=index.device)
            index = torch.where(index > 0, index + offset, index)
        return index

    def check_positions(self, max_position: int) -> None:
        if max_position >= self.max_length:
            raise PositionOutOfRange(
                f"Abacus table has {self.max_length} rows (digit indices 0.."
                f"{self.max_length - 1}) but index {max_position} was requested; raise "
                f"max_length to at least {max_position + 1}"
            )

    def embed(self, token_embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T, C) token embeddings, (B, T) digit indices -> (B, T, C)."""
        return token_embeddings + self.table(positions).to(token_embeddings.dtype)


class PositionCoupling(EncodingWrapper):
    """Position coupling: digits of the same significance share a position id (Cho et al. 2024).

    Cho, Cha, Awasthi, Bhojanapalli, Gupta, Yun 2024, "Position Coupling: Improving Length
    Generalization of Arithmetic Transformers Using Task Structure" (NeurIPS); reference
    implementation: `AdditionDatasetWithCoupledPositions` in HanseulJo/position-coupling
    (src/data/addition.py). Instead of 0, 1, 2, ... every token gets a position id from the
    token ids, and the wrapped encoding (default: a learned absolute table, the paper's APE) sees
    those ids. For lengen's reversed format (operands and result least significant digit first,
    operands zero-padded to one length, as the paper pads them):

      digit: s + i, with i its 1-based index in its run of digits (= 1 + significance);
      any other token (BOS, the operator, SEP, EOS): s.

    So the digits of significance j in both operands and in the result share the id s + 1 + j.
    s is drawn per row in training, uniform in 0 .. max_position - 1 - (largest i of the row), so
    every id stays below max_position and the ids beyond the training length are trained; in
    evaluation s = 0.

    Differences from the reference (which writes the operands most significant digit first and
    only the result reversed): its ids run the other way (significance j takes e - 1 - j for
    e = start + n + 1), its operator tokens take e and the result's extra top digit takes
    e - n - 1, below every operand id; here the operators take s, below every digit. Ids in the
    reference's layout depend on the operand length, which a causal rule cannot know at an
    operand's first digit; lengen's rule is causal, so cached decoding equals the full forward.
    For DecimalMultiplication the same rule couples digits by significance; Cho et al.'s own
    multiplication coupling (N x 2) is a different assignment, not implemented here.

    Args:
        encoding: the encoding that receives the coupled ids; None means
            `Learned(max_length=max_position)`.
        digit_ids: token ids of the ten digits; None means lengen's arithmetic tasks (4-13).
        max_position: ids stay below this in training (the reference's `max_position`).
    """

    def __init__(
        self,
        encoding: PositionalEncoding | None = None,
        digit_ids: list[int] | None = None,
        max_position: int = 64,
    ) -> None:
        if max_position < 2:
            raise ValueError(f"PositionCoupling: max_position={max_position} must be >= 2")
        super().__init__(Learned(max_length=max_position) if encoding is None else encoding)
        if self.encoding.has_token_positions:
            raise ValueError(
                f"PositionCoupling: encoding {type(self.encoding).__name__} computes its own "
                "token positions; wrap an encoding that takes integer positions (Learned, RoPE)"
            )
        self.digit_ids = _digit_ids("PositionCoupling", digit_ids)
        self.max_position = max_position
        self.register_buffer("digits", torch.tensor(self.digit_ids), persistent=False)

    @classmethod
    def examples(cls) -> tuple[PositionalEncoding, ...]:
        """For the contract suite: the paper's learned table, and RoPE on the coupled ids."""
        return (cls(), cls(encoding=RoPE()))

    def token_positions(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, Tk) ids -> (B, Tk) coupled ids s + digit index (s = 0 in evaluation)."""
        index = digit_run_index(input_ids, mask, self.digits.to(input_ids.device))
        if not self.training:
            return index
        real = index if mask is None else index.masked_fill(~mask, 0)
        room = self.max_position - real.amax(dim=1)  # (B,) number of admissible starts
        if bool((room < 1).any()):
            raise PositionOutOfRange(
                f"PositionCoupling: a number of {int(real.max())} digits needs "
                f"max_position > {int(real.max())}, got max_position={self.max_position}"
            )
        start = (torch.rand(room.shape, device=room.device) * room).long()  # (B,) in [0, room)
        return index + start[:, None]
