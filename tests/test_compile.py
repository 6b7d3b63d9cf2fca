"""torch.compile of the decoder: one graph (fullgraph=True), outputs and gradients as in eager.

The forward reads no tensor value back to the host under torch.compile: the position limit is
checked in eager calls only (and by `lengen.checks.check_run` before a CLI run), the "no padding"
shortcut and the "rows share positions" test use the layout or stay eager-only. The compiled
graphs here use the `aot_eager` backend (dynamo + AOTAutograd, no code generation: seconds, not
the minutes inductor takes on this CPU); benchmarks/run.py --sections compile times inductor.
"""

from __future__ import annotations

import pytest
import torch

from lengen.model import Decoder
from lengen.positional import PositionOutOfRange

ENCODINGS = ("NoPE", "RoPE", "ALiBi", "T5Bias")


def make_encoding(name: str):
    from lengen_plugins.positional_encodings import alibi, learned, nope, rope, t5_bias

    return {
        "NoPE": nope.NoPE,
        "RoPE": rope.RoPE,
        "ALiBi": alibi.ALiBi,
        "T5Bias": t5_bias.T5Bias,
        "Learned": lambda: learned.Learned(max_length=32),
    }[name]()


def make_decoder(name: str, seed: int) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(40, make_encoding(name), n_layer=2, n_head=4, d_model=32, attention="sdpa")


def loss_and_grads(model: torch.nn.Module, decoder: Decoder, ids, mask=None):
    decoder.zero_grad(set_to_none=True)
    logits = model(ids, attention_mask=mask)  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    grads = {name: p.grad.clone() for name, p in decoder.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize("name", ENCODINGS)
def test_decoder_forward_is_one_graph(name: str) -> None:
    torch._dynamo.reset()
    decoder = make_decoder(name, seed=len(name))
    ids = torch.randint(0, 40, (3, 24), generator=torch.Generator().manual_seed(7))
    explanation = torch._dynamo.explain(decoder)(ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", ENCODINGS)
def test_fullgraph_compile_matches_eager(name: str) -> None:
    """Training forward + backward, and a padded batch; aot_eager runs the same kernels, so the
    tolerance is float32 rounding of a re-ordered graph (1e-6 absolute, 1e-5 relative)."""
    torch._dynamo.reset()
    decoder = make_decoder(name, seed=11 + len(name))
    compiled = torch.compile(decoder, fullgraph=True, backend="aot_eager")
    generator = torch.Generator().manual_seed(len(name))
    ids = torch.randint(0, 40, (3, 24), generator=generator)
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[1, :5] = 0  # left padding in one row
    for attention_mask in (None, mask):
        eager_logits, eager_grads = loss_and_grads(decoder, decoder, ids, attention_mask)
        logits, grads = loss_and_grads(compiled, decoder, ids, attention_mask)
        torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-6)
        assert grads.keys() == eager_grads.keys()
        for key, grad in grads.items():
            torch.testing.assert_close(grad, eager_grads[key], rtol=1e-5, atol=1e-6, msg=key)


def test_positions_still_checked_in_eager_calls() -> None:
    decoder = make_decoder("Learned", seed=0)
    decoder(torch.zeros(1, 32, dtype=torch.long))  # positions 0..31: the whole table
    with pytest.raises(PositionOutOfRange, match="32 rows"):
        decoder(torch.zeros(1, 33, dtype=torch.long))


def test_default_positions_are_shared_by_layout() -> None:
    """Without positions, mask or cache the rows' positions are one expanded row (stride 0), so
    the bias is built once for the batch without reading values back."""
    from lengen.model import shared_rows

    decoder = make_decoder("ALiBi", seed=0)
    seen = []
    decoder.attention = lambda q, k, v, bias, p: (seen.append(bias.shape), q)[1]
    decoder(torch.zeros(3, 10, dtype=torch.long))
    assert seen[0] == (1, 4, 10, 10)
    rows = torch.arange(10).repeat(3, 1)  # (3, 10) equal rows, not expanded
    assert shared_rows(rows) and not shared_rows(rows + torch.arange(3)[:, None])
