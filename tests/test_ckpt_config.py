"""Config files at the `lengen` command: testing a checkpoint, and mistyped keys.

`lengen test --config A.yaml --config B.yaml --ckpt_path X`: the model starts from the
checkpoint's training config, and the config files' model settings apply on top of it exactly as
the same values given as `--model...` options (docs/reference/cli.md, "Testing a checkpoint").
Training-only settings (lr, warmup) are named only when given differently from the trained ones.
A tiny RoPE model is trained in the module's fixture; the CLI runs in-process
(`lengen.cli.main`), as in tests/test_bad_input.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_run import refused

from lengen.cli import main
from lengen.lightning_cli import given_model_keys

# In-process runs see pytest's own sys.argv, which LightningCLI warns about.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")  # ALiBi, n_layer 2, d_model 64, lr 0.003
ROPE = str(REPO / "configs" / "pe" / "rope.yaml")
TRAINED = {"n_layer": 1, "d_model": 32, "lr": 0.01, "warmup_steps": 2}  # and RoPE, base 500


def data_and_trainer(root: Path) -> list[str]:
    """The quickstart's data and trainer shrunk to seconds; no model settings."""
    return [
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "4",
        "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[2, 4, 8]",
        "--data.init_args.batch_size", "8",
        "--data.init_args.val_examples_per_length", "4",
        "--data.init_args.test_examples_per_length", "8",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


def write(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def model_file(root: Path, name: str, model: dict) -> list[str]:
    return ["--config", write(root / name, {"model": model})]


def as_options(model: dict, prefix: str = "--model") -> list[str]:
    """The same model settings as command-line options."""
    options = []
    for key, value in model.items():
        if isinstance(value, dict):
            options += [f"{prefix}.{key}", value["class_path"]]
            options += as_options(value.get("init_args", {}), f"{prefix}.{key}.init_args")
        else:
            options += [
                f"{prefix}.{key}",
                json.dumps(value) if not isinstance(value, str) else value,
            ]
    return options


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A RoPE model (base 500, 1 layer, d_model 32, lr 0.01, 2 warmup steps), 4 steps."""
    root = tmp_path_factory.mktemp("trained")
    trained = {**TRAINED, "pos_encoding": {"class_path": "RoPE", "init_args": {"base": 500.0}}}
    main(["fit", "--config", QUICKSTART, "--config", ROPE, *data_and_trainer(root),
          *model_file(root, "trained.yaml", trained)])  # fmt: skip
    (path,) = (root / "runs").rglob("*.ckpt")
    return path


def run_test(root: Path, checkpoint: Path, *args: str) -> dict:
    """`lengen test` of `checkpoint` with the quickstart, the trained sizes and `args`; its
    results.json."""
    root.mkdir(exist_ok=True)
    sizes = model_file(root, "sizes.yaml", {"n_layer": 1, "d_model": 32})
    main(["test", "--config", QUICKSTART, *sizes, *data_and_trainer(root), *args,
          "--ckpt_path", str(checkpoint)])  # fmt: skip
    (path,) = root.rglob("results.json")
    return json.loads(path.read_text())


# SelfExtend around the trained RoPE: an evaluation-time wrapper (docs/concepts/).
SELF_EXTEND = {
    "pos_encoding": {
        "class_path": "SelfExtend",
        "init_args": {"encoding": "RoPE", "group_size": 2, "window": 4},
    }
}


def test_a_wrapper_in_a_config_file_is_tested_as_on_the_command_line(checkpoint, tmp_path, capsys):
    from_file = run_test(
        tmp_path / "file", checkpoint, *model_file(tmp_path, "self_extend.yaml", SELF_EXTEND)
    )
    out = capsys.readouterr().out
    from_options = run_test(tmp_path / "options", checkpoint, *as_options(SELF_EXTEND))
    encoding = from_file["config"]["model"]["pos_encoding"]
    assert encoding["class_path"].endswith(".SelfExtend"), encoding
    assert encoding["init_args"]["window"] == 4 and encoding["init_args"]["group_size"] == 2
    # The wrapped RoPE is the trained one, with its training arguments (base 500, not 10000).
    assert encoding["init_args"]["encoding"]["init_args"]["base"] == 500.0
    assert from_file["pos_encoding"] == "SelfExtend"
    assert from_file["config"]["model"] == from_options["config"]["model"]
    assert from_file["metrics"] == from_options["metrics"]
    assert (
        from_file["provenance"]["model_overrides"] == from_options["provenance"]["model_overrides"]
    )
    assert (
        "pos_encoding=SelfExtend" in [line for line in out.splitlines() if "changed by" in line][0]
    )
    assert "SelfExtend" not in [line for line in out.splitlines() if "not used" in line][0]


def test_training_only_settings_are_named_only_when_given_differently(checkpoint, tmp_path, capsys):
    """The quickstart's lr 0.003 and warmup 100 are given and differ from the trained 0.01 and
    2: named as training-only. The trained values stay in the tested model's config."""
    trained_rope = {"pos_encoding": {"class_path": "RoPE", "init_args": {"base": 500.0}}}
    results = run_test(tmp_path, checkpoint, *model_file(tmp_path, "rope.yaml", trained_rope))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("lengen:")]
    (line,) = [line for line in lines if "training-only" in line]
    assert line == (
        "lengen: training-only settings, not used by test: lr=0.003 (trained: 0.01), "
        "warmup_steps=100 (trained: 2)"
    )
    model = results["config"]["model"]
    assert (model["lr"], model["warmup_steps"]) == (0.01, 2)
    assert results["provenance"]["model_overrides"] == {}  # the trained model, as trained


def test_nothing_is_named_when_the_model_is_not_given(checkpoint, tmp_path, capsys):
    """A data-and-trainer config without a model section: every model setting is the trained
    one (the parser's defaults, lr 0.001 and warmup 100, are nobody's choice)."""
    quickstart = yaml.safe_load(Path(QUICKSTART).read_text())
    no_model = write(
        tmp_path / "no_model.yaml", {k: v for k, v in quickstart.items() if k != "model"}
    )
    main(
        ["test", "--config", no_model, *data_and_trainer(tmp_path), "--ckpt_path", str(checkpoint)]
    )
    out = capsys.readouterr().out
    (said,) = [line for line in out.splitlines() if "from the training config" in line]
    assert "changed by this command" not in said
    assert "not used" not in out and "training-only" not in out
    (path,) = tmp_path.rglob("results.json")
    model = json.loads(path.read_text())["config"]["model"]
    assert model["pos_encoding"]["class_path"].endswith(".RoPE")
    assert (model["n_layer"], model["d_model"], model["lr"]) == (1, 32, 0.01)


@pytest.mark.parametrize("where", ["config file", "command line"])
def test_another_architecture_is_refused_wherever_it_is_given(checkpoint, tmp_path, capsys, where):
    given = {"n_layer": 2}
    args = model_file(tmp_path, "two.yaml", given) if where == "config file" else as_options(given)
    sizes = model_file(tmp_path, "sizes.yaml", {"n_layer": 1, "d_model": 32})
    line = refused(["test", "--config", QUICKSTART, *sizes, *data_and_trainer(tmp_path), *args,
                    "--ckpt_path", str(checkpoint)], capsys)  # fmt: skip
    source = str(tmp_path / "two.yaml") if where == "config file" else "--model.n_layer"
    assert f"n_layer=1 (this model: 2) given by {source}" in line
    assert "give the trained values (--model.n_layer 1)" in line
    assert not list(tmp_path.rglob("results.json"))


def test_an_encoding_that_is_no_context_extension_is_refused_from_a_config_file(
    checkpoint, tmp_path, capsys
):
    """The quickstart says ALiBi; the checkpoint is RoPE: refused, naming the file."""
    sizes = model_file(tmp_path, "sizes.yaml", {"n_layer": 1, "d_model": 32})
    line = refused(["test", "--config", QUICKSTART, *sizes, *data_and_trainer(tmp_path),
                    "--ckpt_path", str(checkpoint)], capsys)  # fmt: skip
    assert "trained with RoPE; testing it with ALiBi is not a context extension" in line
    assert f"leave model.pos_encoding (given by {QUICKSTART}) out" in line


def test_given_model_keys_reads_config_files_and_options_in_order(tmp_path):
    a = write(tmp_path / "a.yaml", {"model": {"n_layer": 2, "pos_encoding": "ALiBi"}, "data": {}})
    m = write(tmp_path / "m.yaml", {"lr": 0.1})
    argv = ["--config", a, "--model.n_layer=1", "--ckpt_path", "last", "--model", m,
            "-c", "{model: {pos_encoding: {class_path: RoPE, init_args: {base: 5}}}}",
            "--model.metrics+=ExactMatch"]  # fmt: skip
    assert given_model_keys(argv) == {
        "n_layer": "--model.n_layer",
        "pos_encoding": a,  # the shorthand; later keys below it come from the -c text
        "lr": "--model",
        "pos_encoding.class_path": argv[8],
        "pos_encoding.init_args.base": argv[8],
        "metrics": "--model.metrics+",
    }


# A mistyped key in a config file -> (full key, did-you-mean, accepted keys at its level or None).
TYPOS = {
    "model key": (
        {"model": {"pos_encodng": "RoPE"}},
        "model.pos_encodng is not accepted (did you mean model.pos_encoding?)",
        "; accepted in model: attention, bias, d_mlp, d_model, ",
    ),
    "data init_args": (
        {"data": {"init_args": {"batchsize": 8}}},
        "data.init_args.batchsize is not accepted (did you mean data.init_args.batch_size?)",
        "; accepted in data.init_args: batch_size, cache_dir, eval_batch_size, eval_lengths, ",
    ),
    "encoding init_args": (
        {"model": {"pos_encoding": {"class_path": "RoPE", "init_args": {"bse": 500}}}},
        "model.pos_encoding.init_args.bse is not accepted "
        "(did you mean model.pos_encoding.init_args.base?)",
        "; accepted in model.pos_encoding.init_args: base, rotary_dim",
    ),
    "task init_args": (
        {"data": {"init_args": {"task": {"class_path": "Copy", "init_args": {"vocab": 8}}}}},
        "data.init_args.task.init_args.vocab is not accepted",
        "; accepted in data.init_args.task.init_args: num_symbols",
    ),
    "top level": (
        {"modle": {"n_layer": 1}},
        "modle is not accepted (did you mean model?)",
        "; accepted: ",
    ),
    "trainer key": (
        {"trainer": {"max_step": 3}},
        "trainer.max_step is not accepted (did you mean trainer.max_steps?)",
        None,  # many keys, one close: the match only
    ),
}


@pytest.mark.parametrize("case", list(TYPOS))
def test_a_mistyped_key_in_a_config_file_names_it_and_the_accepted_keys(case, tmp_path, capsys):
    config, named, accepted = TYPOS[case]
    bad = write(tmp_path / "bad.yaml", config)
    line = refused(["fit", "--config", QUICKSTART, "--config", bad, *data_and_trainer(tmp_path)],
                   capsys)  # fmt: skip
    assert line.startswith(f"lengen: error: {named}")
    if accepted is None:
        assert line == f"lengen: error: {named}"
    else:
        assert accepted in line
    assert not (tmp_path / "runs").exists()
