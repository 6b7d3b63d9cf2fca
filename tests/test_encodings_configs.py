"""Each configs/pe/*.yaml builds its encoding through the CLI; eval_scale applies at test time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule

from lengen.cli import LengenArgumentParser, LengenCLI, main
from lengen.module import LengenModule
from lengen.plugins import discover_all

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
CONFIGS = {
    "rope_linear": "RoPELinear",
    "rope_ntk": "RoPENTK",
    "rope_dynamic_ntk": "RoPEDynamicNTK",
    "yarn": "YaRN",
    "rope_llama3": "RoPELlama3",
    "rope_power": "RoPEPower",
    "rope_truncated": "RoPETruncated",
    "rope_partial": "RoPEPartial",
    "randomized_rope": "RandomizedPositions",
    "giraffe_randomized_rope": "GiraffeRandomizedPositions",
    "fire": "FIRE",
    "kerple_log": "KerpleLog",
    "kerple_power": "KerplePower",
    "cope": "CoPE",
}


def tiny(root: Path) -> list[str]:
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "2",
        "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[4, 8]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "4",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("config, name", list(CONFIGS.items()))
def test_each_encoding_config_builds_its_encoding_through_the_cli(config, name, tmp_path):
    discover_all()
    cli = LengenCLI(
        LengenModule,
        LightningDataModule,
        subclass_mode_data=True,
        parser_class=LengenArgumentParser,
        run=False,
        args=[*tiny(tmp_path), "--config", str(REPO / "configs" / "pe" / f"{config}.yaml")],
    )
    encoding = cli.model.decoder.pos_encoding
    assert type(encoding).__name__ == name
    if name.endswith("RandomizedPositions"):
        assert type(encoding.encoding).__name__ == "RoPE"  # the nested short name resolved
    logits = cli.model(torch.randint(4, cli.datamodule.vocab_size, (2, 12)))
    assert torch.isfinite(logits).all()


@pytest.mark.filterwarnings("ignore")
def test_train_at_scale_4_then_test_at_eval_scale_8_from_the_checkpoint(tmp_path, capsys):
    linear = ["--config", str(REPO / "configs" / "pe" / "rope_linear.yaml")]
    main(["fit", *tiny(tmp_path), *linear])
    main([
        "test", *tiny(tmp_path), *linear,
        "--model.pos_encoding.init_args.eval_scale", "8", "--ckpt_path", "last",
    ])  # fmt: skip
    results_file = next((tmp_path / "runs").rglob("results.json"))
    encoding_config = json.loads(results_file.read_text())["config"]["model"]["pos_encoding"]
    assert encoding_config["init_args"]["eval_scale"] == 8.0
    checkpoint = next((tmp_path / "runs").rglob("*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert float(state["decoder.pos_encoding.scale"]) == 4.0  # the trained scale is kept
