"""Every experiment config (with the configs it is documented to stack on) parses and builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule

from lengen.cli import LengenArgumentParser, LengenCLI
from lengen.module import LengenModule
from lengen.plugins import discover_all

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
ENCODINGS = EXPERIMENTS / "encodings"
STACKS = {
    "alibi_vs_sinusoidal_ppl": [EXPERIMENTS / "alibi_vs_sinusoidal_ppl.yaml"],
    "finetune_rope_to_linear": [EXPERIMENTS / "finetune_rope_to_linear.yaml"],
    "off_by_one": [EXPERIMENTS / "off_by_one.yaml"],
    "off_by_one_no_fix": [EXPERIMENTS / "off_by_one.yaml", EXPERIMENTS / "off_by_one_no_fix.yaml"],
    "passkey": [EXPERIMENTS / "passkey.yaml"],
    "passkey_pi": [EXPERIMENTS / "passkey.yaml", EXPERIMENTS / "passkey_pi.yaml"],
    "warmup_lm": [EXPERIMENTS / "warmup_lm.yaml"],
    "attention_vs_nope": [
        ENCODINGS / "base.yaml",
        ENCODINGS / "copy.yaml",
        EXPERIMENTS / "attention_vs_nope.yaml",
    ],
    **{
        f"encodings/{task}": [ENCODINGS / "base.yaml", ENCODINGS / f"{task}.yaml"]
        for task in ("copy", "reverse", "addition", "scan")
    },
    **{
        f"ladder/{task}": [EXPERIMENTS / "ladder/base.yaml", EXPERIMENTS / f"ladder/{task}.yaml"]
        for task in ("copy", "reverse")
    },
    **{
        f"{name}/{task}": [EXPERIMENTS / f"{name}/base.yaml", EXPERIMENTS / f"{name}/{task}.yaml"]
        for name, tasks in {
            "arithmetic": ("addition", "addition_hints"),
            "ruler": (
                "niah_single",
                "niah_multikey",
                "niah_multivalue",
                "niah_multiquery",
                "variable_tracking",
                "common_words",
                "frequent_words",
            ),
        }.items()
        for task in tasks
    },
}


def test_every_experiment_config_is_covered():
    files = {path for stack in STACKS.values() for path in stack}
    assert files == set(EXPERIMENTS.rglob("*.yaml"))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(STACKS))
def test_experiment_config_builds(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the configs resolve here
    reference = tmp_path / "runs/compare_encodings/copy/nope/seed0"  # attention_vs_nope's
    reference.mkdir(parents=True)
    (reference / "epoch=0-step=1.ckpt").touch()  # found by name; loaded only at test end
    discover_all()
    configs = [arg for path in STACKS[name] for arg in ("--config", str(path))]
    cli = LengenCLI(
        LengenModule,
        LightningDataModule,
        subclass_mode_data=True,
        parser_class=LengenArgumentParser,
        run=False,
        args=[*configs, "--trainer.default_root_dir", str(tmp_path)],
    )
    assert cli.model.decoder.token_embedding.num_embeddings == cli.datamodule.vocab_size
