"""Parity with reference code that cannot be installed here: small frozen tables of its outputs.

Each table was computed once by running the reference's own computation (as written in the file
and commit named above it) on the inputs given here, in float64 unless the reference fixes
float32; the reference code itself is not part of lengen. FIRE has no public reference code (the
paper's formula is tested in test_encodings_catalogue) and Ruoss et al.'s randomized positions
are random draws (their distribution is tested in test_encodings_catalogue).
"""

from __future__ import annotations

import math

import torch

from lengen.positional import ModelDims, build_bias
from lengen_plugins.positional_encodings.cope import CoPE
from lengen_plugins.positional_encodings.kerple import KerpleLog, KerplePower
from lengen_plugins.positional_encodings.rope_giraffe import RoPEPower, RoPETruncated

# --- CoPE ---------------------------------------------------------------------------------------
# facebookresearch/RAM, projects/cope/src/cope/context_position.py, commit
# 5420e20124c73746a3d63f784928cc60e1e051e9, `ContextPosSelfAttn.forward`: `pos_logits` for one
# head of head_dim 2, npos 4, a causal mask times a key-padding mask with key 2 padded. With
# `--cope-nodiv` these logits are added to q.k / sqrt(head_dim), which is lengen's bias.
COPE_QUERY = [[0.3, -1.2], [1.1, 0.4], [-0.7, 0.9], [0.5, 0.5], [1.5, -0.3]]
COPE_KEY = [[1.0, 0.2], [-0.4, 0.8], [0.6, -1.1], [0.9, 0.9], [-1.3, 0.1]]
COPE_EMBEDDINGS = [[0.2, -0.5, 1.0, 0.3], [0.7, 0.1, -0.6, 0.4]]  # (head_dim, npos)
COPE_KEY_MASK = [True, True, False, True, True]
COPE_POS_LOGITS = [  # row i (query), column j (key); compared where j <= i and key j is real
    [-0.519591444382928, -0.78, -0.78, -0.78, -0.78],
    [-0.268768971519445, 0.016412489517677, 0.5, 0.5, 0.5],
    [0.30751598935537, 0.456511922533667, 0.49, 0.49, 0.49],
    [0.1174952098536, -0.124306051133965, 0.02494007831246, 0.02494007831246, 0.45],
    [1.606959863834782, -0.200226038367165, -0.675561660208237, -0.675561660208237,
     -0.082090156285502],
]  # fmt: skip


def test_cope_bias_equals_the_authors_position_logits_with_padding():
    encoding = CoPE(npos_max=4)
    encoding.bind(ModelDims(d_model=2, n_head=1, head_dim=2))
    encoding.double()
    with torch.no_grad():
        encoding.position_embeddings.copy_(torch.tensor(COPE_EMBEDDINGS, dtype=torch.float64))
    query = torch.tensor(COPE_QUERY, dtype=torch.float64)[None, None]  # (1, 1, 5, 2)
    key = torch.tensor(COPE_KEY, dtype=torch.float64)[None, None]
    mask = torch.tensor([COPE_KEY_MASK])
    bias = encoding.contextual_bias(query, key, key_mask=mask)[0, 0]  # (5, 5)
    for i in range(5):
        for j in range(i + 1):
            if COPE_KEY_MASK[j]:
                assert math.isclose(bias[i, j].item(), COPE_POS_LOGITS[i][j], abs_tol=1e-12)
    unmasked = encoding.contextual_bias(query, key)[0, 0]  # the padded key counted: differs
    assert abs(unmasked[1, 0].item() - COPE_POS_LOGITS[1][0]) < 1e-12  # before the pad
    assert abs(unmasked[4, 0].item() - COPE_POS_LOGITS[4][0]) > 1e-3  # across the pad


# --- KERPLE -------------------------------------------------------------------------------------
# chijames/KERPLE, megatron/mpu/layers.py, commit 73f1ee2d24722cdbe277d473899321218f5cbd00,
# `ParallelKerpleLog.forward` and `ParallelKerplePower.forward` (bias only): the bias row of query
# 4 against keys 0..4 for two heads, after the reference's in-place clamps (eps = 1e-2; the power
# exponent also <= 2). Stored values: log p = (1.5, 0.004), a = (0.3, -0.2); power multiplier
# bias_a = (0.6, -1.0), exponent bias_p = (1.4, 2.7).
KERPLE_LOG_ROW = [
    [-1.182686040546405, -0.962780829258592, -0.705005443868603, -0.393546396701237, 0.0],
    [-0.000392207131533, -0.000295588022415, -0.000198026272962, -9.9503308532e-05, 0.0],
]
KERPLE_POWER_ROW = [
    [-4.178642703821395, -2.793322033047647, -1.583409492927473, -0.6, 0.0],
    [-0.16, -0.09, -0.04, -0.01, 0.0],
]


def _kerple_row(encoding, r1, r2):
    encoding.bind(ModelDims(d_model=4, n_head=2, head_dim=2))
    encoding.double()
    with torch.no_grad():
        encoding.r1.copy_(torch.tensor(r1, dtype=torch.float64))
        encoding.r2.copy_(torch.tensor(r2, dtype=torch.float64))
    positions = encoding.transform_positions(torch.arange(5)[None])  # clamps, as each forward
    return build_bias(encoding, 2, positions, positions)[0, :, 4]  # (heads, keys)


def test_kerple_biases_equal_the_authors_after_their_clamps():
    log = _kerple_row(KerpleLog(), r1=[1.5, 0.004], r2=[0.3, -0.2])  # r1 = p, r2 = a
    expected = torch.tensor(KERPLE_LOG_ROW, dtype=torch.float64)
    torch.testing.assert_close(log, expected, rtol=1e-12, atol=1e-14)
    power = _kerple_row(KerplePower(), r1=[0.6, -1.0], r2=[1.4, 2.7])  # r1 = a, r2 = exponent
    expected = torch.tensor(KERPLE_POWER_ROW, dtype=torch.float64)
    torch.testing.assert_close(power, expected, rtol=1e-12, atol=1e-14)


# --- Giraffe ------------------------------------------------------------------------------------
# abacusai/Long-Context, python/models/interpolate.py, commit
# 11b61fbd9b738d3bfd08ecbc6c5dfea7f8c9f59e, `ScaledLlamaRotaryEmbedding.__init__` (float32) for
# dim 16, base 10000: scale_power 0.5, and truncate 40 (cutoff b = 2 pi / 40, band b / 8 .. b
# set to 2 pi / (40 * 16), below b / 8 set to 0).
GIRAFFE_POWER = [
    1.0, 0.2958039939403534, 0.08660253882408142, 0.02500000223517418, 0.007071067579090595,
    0.0019364918116480112, 0.0005000000237487257, 0.00011180340516148135,
]  # fmt: skip
GIRAFFE_TRUNCATED = [
    1.0, 0.3162277638912201, 0.009817477315664291, 0.009817477315664291, 0.0, 0.0, 0.0, 0.0,
]  # fmt: skip


def test_giraffe_power_and_truncated_bases_equal_the_authors():
    dims = ModelDims(d_model=32, n_head=2, head_dim=16)
    power = RoPEPower(power=0.5)
    power.bind(dims)
    frequencies = power.inverse_frequencies(torch.float32, torch.device("cpu"))
    torch.testing.assert_close(frequencies, torch.tensor(GIRAFFE_POWER), rtol=1e-6, atol=0)
    b = 2 * math.pi / 40
    truncated = RoPETruncated(b=b, a=b / 8, rho=2 * math.pi / (40 * 16))
    truncated.bind(dims)
    frequencies = truncated.inverse_frequencies(torch.float32, torch.device("cpu"))
    torch.testing.assert_close(frequencies, torch.tensor(GIRAFFE_TRUNCATED), rtol=1e-6, atol=0)
