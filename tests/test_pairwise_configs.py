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


@pytest.mark.filterwarnings("ignore")
def test_train_with_rope_then_test_with_self_extend_from_the_checkpoint(tmp_path):
    """The inference-time use: fit with RoPE, test the checkpoint with SelfExtend around it."""
    import json

    from lengen.cli import main

    tiny = [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.max_steps", "2",
        "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[4, 16]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "4",
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    fit = ["fit", *tiny, "--config", str(REPO / "configs" / "pe" / "rope.yaml")]
    main([*fit, "--model.pos_encoding.init_args.base", "500"])
    # The test command takes the model from the training config and re-applies `--model...`.
    main([
        "test", *tiny, "--model.pos_encoding", "SelfExtend",
        "--model.pos_encoding.init_args.encoding", "RoPE",
        "--model.pos_encoding.init_args.window", "4",
        "--model.pos_encoding.init_args.group_size", "2",
        "--ckpt_path", "last",
    ])  # fmt: skip
    results_file = next((tmp_path / "runs").rglob("results.json"))
    encoding_config = json.loads(results_file.read_text())["config"]["model"]["pos_encoding"]
    assert encoding_config["class_path"].endswith("SelfExtend")
    assert encoding_config["init_args"]["window"] == 4
    # The wrapped RoPE is the trained one, with its training arguments (base 500, not 10000).
    assert encoding_config["init_args"]["encoding"]["init_args"]["base"] == 500
