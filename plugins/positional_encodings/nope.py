"""NoPE: no positional encoding at all."""

from __future__ import annotations

from lengen.positional import PositionalEncoding


class NoPE(PositionalEncoding):
    """No positional information: order comes only from the causal mask (Kazemnejad et al. 2023).

    Kazemnejad et al. 2023, "The Impact of Positional Encoding on Length Generalization in
    Transformers" (NeurIPS). Every hook is the base class identity: the token embeddings, queries
    and keys are left unchanged and no score bias is added, so the decoder keeps the fused causal
    attention kernel. Named explicitly so that "no encoding" is a choice in a config like any other.
    """

    is_relative = True
