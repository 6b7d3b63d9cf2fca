"""Each configs/pe/ file of a per-pair encoding builds it through the CLI, stacked on quickstart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule

from lengen.cli import LengenArgumentParser, LengenCLI
from lengen.module import LengenModule
from lengen.plugins import discover_all

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
CONFIGS = {
    "log_length_scaling": "LogLengthScaling",
    "scalable_softmax": "ScalableSoftmax",
    "attention_sinks": "AttentionSinks",
    "lm_infinite": "LMInfinite",
    "rerope": "ReRoPE",
    "leaky_rerope": "LeakyReRoPE",
    "self_extend": "SelfExtend",
    "dual_chunk": "DualChunkAttention",
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("config, name", list(CONFIGS.items()))
def test_each_pairwise_config_builds_its_encoding_around_rope(config, name, tmp_path):
    discover_all()
    cli = LengenCLI(
        LengenModule,
        LightningDataModule,
        subclass_mode_data=True,
        parser_class=LengenArgumentParser,
        run=False,
        args=[
            "--config", QUICKSTART,
            "--config", str(REPO / "configs" / "pe" / f"{config}.yaml"),
            "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--model.n_layer", "1",
            "--model.d_model", "32",
            "--data.init_args.cache_dir", str(tmp_path / "cache"),
        ],
    )  # fmt: skip
    encoding = cli.model.decoder.pos_encoding
    assert type(encoding).__name__ == name
    assert type(encoding.encoding).__name__ == "RoPE"  # the nested short name resolved
    assert encoding.has_pairwise_scores
    # 80 tokens: past every window, chunk and training length the files set.
    ids = torch.randint(4, cli.datamodule.vocab_size, (2, 80))
    with torch.no_grad():
        logits = cli.model.eval()(ids)
    assert torch.isfinite(logits).all()
