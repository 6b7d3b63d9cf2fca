"""Bad input never costs a traceback or a result: every case exits with status 2 and one line
`lengen: error: ...` naming what was wrong and what is accepted, and (when it can be checked before
the run) writes nothing: no version folder, no cache entry.

The CLI runs in-process (`lengen.cli.main`) to keep these fast; plugin range checks are driven
through their constructors, and one per plugin group through the CLI.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from cli_run import refused

from lengen.cli import main
from lengen.plugins import GROUPS, discover

# In-process runs see pytest's own sys.argv, which LightningCLI warns about.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def tiny(root: Path) -> list[str]:
    """The quickstart config shrunk to seconds (as in test_cli.py)."""
    return [
        "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "2",
        "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data.init_args.train_max_length", "4",
        "--data.init_args.eval_lengths", "[2, 4, 8]",
        "--data.init_args.batch_size", "4",
        "--data.init_args.val_examples_per_length", "2",
        "--data.init_args.test_examples_per_length", "2",
        "--data.init_args.cache_dir", str(root / "cache"),
    ]  # fmt: skip


def text_run(root: Path, corpus: Path | str, *extra: str) -> list[str]:
    """A tiny language-model run on `corpus`."""
    return [
        "fit",
        "--trainer.default_root_dir", str(root / "runs"),
        "--trainer.max_steps", "2",
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--model.pos_encoding", "NoPE",
        "--model.n_layer", "1",
        "--model.d_model", "32",
        "--data", "TextDataModule",
        "--data.init_args.files", f"[{corpus}]",
        "--data.init_args.n_ctx", "8",
        "--data.init_args.batch_size", "2",
        "--data.init_args.eval_multiples", "[1, 2]",
        "--data.init_args.cache_dir", str(root / "cache"),
        *extra,
    ]  # fmt: skip


def assert_nothing_written(root: Path) -> None:
    assert not list((root / "runs").rglob("version_*")), "a version folder was written"
    assert not list((root / "cache").rglob("eval_sets/*")), "an evaluation set was cached"


# (extra arguments, words the one line must hold)
MODEL_AND_DATA_CASES = {
    "batch_size 0": (["--data.init_args.batch_size", "0"], ["batch_size=0", ">= 1"]),
    "eval_batch_size 0": (["--data.init_args.eval_batch_size", "0"], ["eval_batch_size=0"]),
    "val_examples 0": (
        ["--data.init_args.val_examples_per_length", "0"],
        ["val_examples_per_length=0", ">= 1"],
    ),
    "test_examples 0": (
        ["--data.init_args.test_examples_per_length", "0"],
        ["test_examples_per_length=0"],
    ),
    "num_workers -1": (["--data.init_args.num_workers", "-1"], ["num_workers=-1", ">= 0"]),
    "lr negative": (["--model.lr", "-0.001"], ["lr=-0.001", "finite number > 0"]),
    "lr zero": (["--model.lr", "0"], ["lr=0", "> 0"]),
    "lr inf": (["--model.lr", "inf"], ["lr=inf", "finite number"]),
    "lr nan": (["--model.lr", "nan"], ["lr=nan", "finite number"]),
    "weight_decay negative": (["--model.weight_decay", "-1"], ["weight_decay=-1", ">= 0"]),
    "min_lr_ratio 2": (["--model.min_lr_ratio", "2"], ["min_lr_ratio=2", "[0, 1]"]),
    "d_model 0": (["--model.d_model", "0"], ["d_model=0", ">= 1"]),
    "n_head 0": (["--model.n_head", "0"], ["n_head=0", ">= 1"]),
    "n_head not dividing": (["--model.n_head", "3"], ["divisible by n_head=3"]),
    "d_mlp 0": (["--model.d_mlp", "0"], ["d_mlp=0", ">= 1"]),
    "dropout 1.5": (["--model.dropout", "1.5"], ["dropout=1.5", "[0, 1)"]),
    "dropout negative": (["--model.dropout", "-0.1"], ["dropout=-0.1"]),
    "n_layer 0": (["--model.n_layer", "0"], ["n_layer=0", ">= 1"]),
    "n_layer -1": (["--model.n_layer", "-1"], ["n_layer=-1", ">= 1"]),
    "warmup_steps -1": (["--model.warmup_steps", "-1"], ["warmup_steps=-1", ">= 0"]),
    "abbreviation": (["--trainer.max_step", "7"], ["--trainer.max_step", "spelled in full"]),
    "metric max_length 0": (
        ["--model.metrics", '[{"class_path": "ExactMatch", "init_args": {"max_length": 0}}]'],
        ["ExactMatch", "max_length=0"],
    ),
    "metric max_length below the eval lengths": (
        ["--model.metrics", '[{"class_path": "ExactMatch", "init_args": {"max_length": 4}}]'],
        ["ExactMatch", "max_length=4", "length 8"],
    ),
    "learned table shorter than the evaluation": (
        ["--model.pos_encoding", "Learned", "--model.pos_encoding.init_args.max_length", "12"],
        ["Learned", "12 rows", "raise max_length"],
    ),
    "unknown encoding": (["--model.pos_encoding", "Rope2"], ["'Rope2'", "ALiBi, "]),
    "unknown wrapped encoding": (
        [
            "--model.pos_encoding",
            "RandomizedPositions",
            "--model.pos_encoding.init_args.encoding",
            "Foo",
        ],
        ["unknown encoding 'Foo'", "available in lengen.positional_encodings", "RoPE"],
    ),  # fmt: skip
    "unknown metric": (["--model.metrics", "[Foo]"], ["unknown metrics 'Foo'", "ExactMatch"]),
    "unknown callback": (
        ["--trainer.callbacks+=Foo"],
        ["unknown callbacks 'Foo'", "LengthCurriculum"],
    ),
    "encoding range check": (
        ["--model.pos_encoding", "XPos", "--model.pos_encoding.init_args.gamma", "0"],
        ["XPos: gamma=0"],
    ),
    "task range check": (["--data.init_args.task.init_args.num_symbols", "1"], ["num_symbols=1"]),
    "callback range check": (
        [
            "--trainer.callbacks+=GradientVarianceMonitor",
            "--trainer.callbacks.init_args.spike_factor",
            "1",
        ],
        ["spike_factor=1"],
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(MODEL_AND_DATA_CASES))
def test_bad_argument_is_one_line_before_anything_is_written(case, tmp_path, capsys):
    extra, words = MODEL_AND_DATA_CASES[case]
    line = refused(["fit", *tiny(tmp_path), *extra], capsys)
    for word in words:
        assert word in line, line
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("value", ["0", ".inf", ".nan", "-1.0e-3"])
def test_bad_lr_from_yaml_is_refused(value, tmp_path, capsys):
    config = tmp_path / "lr.yaml"
    config.write_text(f"model:\n  lr: {value}\n")
    line = refused(["fit", *tiny(tmp_path), "--config", str(config)], capsys)
    assert "lr=" in line and "finite number > 0" in line
    assert_nothing_written(tmp_path)


def test_scan_length_without_a_command_is_refused_before_the_run(tmp_path, capsys):
    from lengen_plugins.tasks.scan import commands_by_output_length

    lengths = commands_by_output_length()
    missing = next(n for n in range(1, max(lengths)) if n not in lengths)
    args = [
        *tiny(tmp_path),
        "--data.init_args.task", "Scan",
        "--data.init_args.eval_lengths", f"[4, {missing}]",
    ]  # fmt: skip
    line = refused(["fit", *args], capsys)
    assert f"no command has {missing} actions" in line and "lengths: [1, 2" in line
    assert_nothing_written(tmp_path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of the tiny model (d_model 32)."""
    root = tmp_path_factory.mktemp("ckpt")
    main(["fit", *tiny(root), "--trainer.enable_checkpointing", "true"])
    return next((root / "runs").rglob("*.ckpt"))


def broken_checkpoint(kind: str, good: Path, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not a checkpoint":
        path.write_text("model weights, honestly\n")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("empty", "is empty"),
        ("not a checkpoint", "cannot be read as a checkpoint"),
        ("truncated", "cannot be read as a checkpoint"),
    ],
)
def test_bad_checkpoint_file_is_one_line(kind, words, checkpoint, tmp_path, capsys):
    path = broken_checkpoint(kind, checkpoint, tmp_path)
    line = refused(["test", *tiny(tmp_path), "--ckpt_path", str(path)], capsys)
    assert words in line and f"--ckpt_path {path}" in line and "lengen fit" in line
    assert "weights_only" not in line
    assert_nothing_written(tmp_path)


def test_truncated_init_from_checkpoint_is_one_line(checkpoint, tmp_path, capsys):
    path = broken_checkpoint("truncated", checkpoint, tmp_path)
    line = refused(["fit", *tiny(tmp_path), "--model.init_from", str(path)], capsys)
    assert f"--model.init_from {path} cannot be read as a checkpoint" in line
    assert_nothing_written(tmp_path)


def test_checkpoint_of_another_model_size_is_one_line_naming_the_sizes(
    checkpoint, tmp_path, capsys
):
    args = [*tiny(tmp_path), "--model.d_model", "64", "--ckpt_path", str(checkpoint)]
    line = refused(["test", *args], capsys)
    assert "another model size" in line and "d_model=32 (this model: 64)" in line
    assert_nothing_written(tmp_path)


def test_a_good_checkpoint_still_tests(checkpoint, tmp_path, capsys):
    main(["test", *tiny(tmp_path), "--ckpt_path", str(checkpoint)])
    assert (tmp_path / "runs" / "lightning_logs" / "version_0" / "results.json").is_file()


CORPUS_CASES = {
    "missing": (None, "not found"),
    "directory": ("dir", "is a directory"),
    "empty": (b"", "is empty"),
    "shorter than a window": (b"hello world", "the corpus has 12 tokens"),
    "not UTF-8": (b"caf\xe9 au lait\n" * 400, "is not UTF-8 text (byte 3"),
}


@pytest.mark.parametrize("case", list(CORPUS_CASES))
def test_corpus_problem_is_one_line_before_the_run(case, tmp_path, capsys):
    content, words = CORPUS_CASES[case]
    corpus = tmp_path / "corpus.txt"
    if content == "dir":
        corpus.mkdir()
    elif content is not None:
        corpus.write_bytes(content)
    line = refused(text_run(tmp_path, corpus), capsys)
    assert words in line and "got 0" not in line
    assert not list((tmp_path / "runs").rglob("version_*"))


def test_short_corpus_names_what_it_needs(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("x" * 300)  # enough for training windows, too few held out
    line = refused(text_run(tmp_path, corpus), capsys)
    assert "the corpus has 301 tokens" in line and "at least about" in line


def test_text_run_with_a_sufficient_corpus_is_not_refused(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    main(text_run(tmp_path, corpus, "--data.init_args.val_fraction", "0.2"))
    assert list((tmp_path / "runs").rglob("version_0"))


def a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    return blocker


def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    args = [*tiny(tmp_path), "--trainer.default_root_dir", str(a_file(tmp_path) / "runs")]
    line = refused(["fit", *args], capsys)
    assert "trainer.default_root_dir" in line and "is a file, not a directory" in line
    assert_nothing_written(tmp_path)


def test_cache_folder_that_cannot_be_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LENGEN_CACHE_DIR", str(a_file(tmp_path) / "cache"))
    args = [arg for arg in tiny(tmp_path) if "cache_dir" not in arg][:-1]  # drop cache_dir
    assert "--data.init_args.cache_dir" not in args
    line = refused(["fit", *args], capsys)
    assert "LENGEN_CACHE_DIR" in line and "is a file, not a directory" in line
    assert not list((tmp_path / "runs").rglob("version_*"))


def test_report_out_that_cannot_be_created(tmp_path, capsys):
    line = refused(["report", str(tmp_path), "--out", str(a_file(tmp_path) / "report")], capsys)
    assert "--out" in line and "is a file, not a directory" in line


def test_report_options_are_spelled_in_full(tmp_path, capsys):
    line = refused(["report", str(tmp_path), "--ou", str(tmp_path / "r")], capsys)
    assert "unrecognized arguments: --ou" in line


def test_length_a_task_cannot_make_is_refused_before_the_run(tmp_path, capsys):
    """Lego needs one variable per clause: 12 clauses with 8 variables cannot be made."""
    args = [
        *tiny(tmp_path),
        "--data.init_args.task", "Lego",
        "--data.init_args.task.init_args.num_variables", "8",
        "--data.init_args.eval_lengths", "[2, 4, 12]",
    ]  # fmt: skip
    line = refused(["fit", *args], capsys)
    assert "Lego: length 12" in line and "num_variables=8" in line
    assert_nothing_written(tmp_path)


def test_learned_table_too_short_for_evaluation_fails_before_step_0(tmp_path, capsys):
    """Training lengths fit the table (4 + 4 + 2 tokens), the evaluation length 8 does not."""
    extra = ["--model.pos_encoding", "Learned", "--model.pos_encoding.init_args.max_length", "12"]
    line = refused(["fit", *tiny(tmp_path), *extra], capsys)
    assert "Learned position table has 12 rows" in line
    assert_nothing_written(tmp_path)  # no version folder: nothing trained, nothing cached


# ---- every built-in plugin's range check, through its constructor ----

# (group, plugin, arguments, words of the one-line message)
RANGE_CHECKS = [
    ("positional_encodings", "Learned", {"max_length": 0}, "max_length=0"),
    ("positional_encodings", "CoPE", {"npos_max": 1}, "npos_max=1"),
    ("positional_encodings", "FIRE", {"mlp_width": 0}, "mlp_width=0"),
    ("positional_encodings", "FIRE", {"init_c": 0.0}, "init_c=0.0"),
    ("positional_encodings", "FIRE", {"init_threshold": 0.0}, "init_threshold=0.0"),
    ("positional_encodings", "FIRE", {"eps": 0.0}, "eps=0.0"),
    ("positional_encodings", "RandomizedPositions", {"max_position": 0}, "max_position=0"),
    ("positional_encodings", "RandomizedPositions", {"encoding": 3}, "must be a PositionalEnc"),
    ("positional_encodings", "GiraffeRandomizedPositions", {"encoding": 3}, "must be a Positi"),
    ("positional_encodings", "RoPE", {"base": 1.0}, "base=1.0"),
    ("positional_encodings", "RoPELinear", {"scale": 0.5}, "scale=0.5"),
    ("positional_encodings", "RoPELinear", {"eval_scale": 0.5}, "eval_scale=0.5"),
    ("positional_encodings", "RoPENTK", {"scale": 0.5}, "scale=0.5"),
    ("positional_encodings", "RoPEDynamicNTK", {"original_max_length": 0}, "original_max_length=0"),
    ("positional_encodings", "YaRN", {"original_max_length": 0}, "original_max_length=0"),
    ("positional_encodings", "YaRN", {"beta_slow": 64.0}, "beta_slow"),
    ("positional_encodings", "YaRN", {"attention_factor": 0.0}, "attention_factor=0.0"),
    ("positional_encodings", "RoPELlama3", {"original_max_length": 0}, "original_max_length=0"),
    ("positional_encodings", "RoPELlama3", {"low_freq_factor": 5.0}, "low_freq_factor"),
    ("positional_encodings", "RoPEPower", {"power": -1.0}, "power=-1.0"),
    ("positional_encodings", "RoPETruncated", {"b": 0.5, "a": 1.0}, "a=1.0, b=0.5"),
    ("positional_encodings", "RoPETruncated", {"rho": -1.0}, "rho=-1.0"),
    ("positional_encodings", "RoPEPartial", {"fraction": 0.0}, "fraction=0.0"),
    ("positional_encodings", "Sinusoidal", {"base": 1.0}, "base=1.0"),
    ("positional_encodings", "Sinusoidal", {"scale": 0.0}, "scale=0.0"),
    ("positional_encodings", "T5Bias", {"num_buckets": 1}, "num_buckets=1"),
    ("positional_encodings", "T5Bias", {"max_distance": 8}, "max_distance=8"),
    ("positional_encodings", "XPos", {"scale_base": 0.0}, "scale_base=0.0"),
    ("positional_encodings", "XPos", {"gamma": 0.0}, "gamma=0.0"),
    ("positional_encodings", "XPos", {"blend": 2.0}, "blend=2.0"),
    ("callbacks", "SequenceLengthWarmup", {"mode": "grow"}, "mode='grow'; accepted"),
    ("callbacks", "SequenceLengthWarmup", {"duration": 0.0}, "duration=0.0"),
    ("callbacks", "SequenceLengthWarmup", {"min_seq_length": 0}, "min_seq_length"),
    ("callbacks", "SequenceLengthWarmup", {"step_size": 0}, "step_size"),
    ("callbacks", "GradientVarianceMonitor", {"spike_factor": 1.0}, "spike_factor=1.0"),
    ("callbacks", "GradientVarianceMonitor", {"ema_decay": 1.0}, "ema_decay=1.0"),
    ("callbacks", "GradientVarianceMonitor", {"ignore_first_steps": -1}, "ignore_first_steps"),
    ("callbacks", "GradientVarianceMonitor", {"every_n_steps": 0}, "every_n_steps"),
    ("callbacks", "AttentionAnalysis", {"examples_per_length": 0}, "examples_per_length"),
    ("callbacks", "AttentionAnalysis", {"reference_checkpoint": "/no/such.ckpt"}, "/no/such"),
    ("callbacks", "EncodingSchedule", {"name": "blend", "start_value": 0.0, "end_value": 1.0,
                                       "shape": "zigzag"}, "shape='zigzag'; accepted"),
    ("callbacks", "EncodingSchedule", {"name": "blend", "start_value": 0.0, "end_value": 1.0,
                                       "num_steps": 0}, "num_steps=0"),
    ("callbacks", "XPosScaleBaseAnnealing", {"start_value": 0.0}, "XPosScaleBaseAnnealing"),
    ("callbacks", "PositionInterpolationRamp", {"target_scale": 0.0}, "target_scale"),
    ("callbacks", "PositionInterpolationRamp", {"target_scale": 2.0, "start_value": 0.0},
     "start_value"),
    ("callbacks", "LengthCurriculum", {"schedule": "zigzag"}, "zigzag"),
    ("callbacks", "LengthCurriculum", {"increase_every": 0}, "increase_every"),
    ("callbacks", "LengthCurriculum", {"increase_by": 0}, "increase_by"),
    ("callbacks", "LengthCurriculum", {"tau": 0.0}, "tau=0.0"),
    ("metrics", "ExactMatch", {"max_length": 0}, "max_length=0"),
    ("metrics", "TokenAccuracy", {"max_length": 0}, "max_length=0"),
    ("metrics", "PresenceAccuracy", {"max_length": 0}, "max_length=0"),
    ("metrics", "EditDistance", {"max_length": 0}, "max_length=0"),
    ("metrics", "Perplexity", {"max_length": 0}, "max_length=0"),
    ("metrics", "PositionLoss", {"max_length": 0}, "max_length=0"),
    ("metrics", "PositionLoss", {"context_length": 0}, "context_length=0"),
    ("tasks", "Copy", {"num_symbols": 1}, "num_symbols=1"),
    ("tasks", "Reverse", {"num_symbols": 1}, "num_symbols=1"),
    ("tasks", "Sorting", {"num_symbols": 1}, "num_symbols=1"),
    ("tasks", "Summation", {"modulus": 1}, "modulus=1"),
    ("tasks", "Summation", {"scratchpad": True, "scratchpad_input": False,
                            "scratchpad_computation": False, "scratchpad_output": False,
                            "scratchpad_intermediate": False, "scratchpad_remaining": False},
     "at least one scratchpad part"),
    ("tasks", "PolynomialEvaluation", {"modulus": 1}, "modulus=1"),
    ("tasks", "PolynomialEvaluation", {"max_value": 0}, "max_value"),
    ("tasks", "PolynomialEvaluation", {"max_degree": -1}, "max_degree"),
    ("tasks", "Lego", {"num_variables": 1}, "num_variables=1"),
    ("tasks", "Pcfg", {"num_letters": 1}, "num_letters=1"),
    ("tasks", "Pcfg", {"max_leaf_length": 0}, "max_leaf_length"),
    ("tasks", "Pcfg", {"max_output_length": 2}, "max_output_length"),
    ("tasks", "Passkey", {"num_digits": 0}, "num_digits=0"),
    ("tasks", "Passkey", {"location": "top"}, "location='top'; accepted"),
    ("tasks", "NeedleQA", {"location": "top"}, "location='top'; accepted"),
    ("tasks", "LineRetrieval", {"label_digits": 0}, "label_digits"),
    ("tasks", "LineRetrieval", {"value_digits": 0}, "value_digits"),
    ("tasks", "LineRetrieval", {"location": "top"}, "location='top'; accepted"),
    ("tasks", "BucketSort", {"num_symbols": 1}, "num_symbols=1"),
    ("tasks", "CycleNavigation", {"cycle_length": 1}, "cycle_length=1"),
    ("tasks", "ModularArithmetic", {"modulus": 1}, "modulus=1"),
    ("tasks", "ModularArithmeticBrackets", {"modulus": 1}, "modulus=1"),
    ("tasks", "SolveEquation", {"modulus": 1}, "modulus=1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("group", "name", "arguments", "words"),
    RANGE_CHECKS,
    ids=[f"{name}-{'-'.join(arguments)}" for _, name, arguments, _ in RANGE_CHECKS],
)
def test_plugin_range_check(group, name, arguments, words):
    cls = discover(GROUPS[group])[name].obj
    with pytest.raises(ValueError) as error:
        cls(**arguments)
    message = str(error.value)
    assert "\n" not in message and words in message, message


def test_attention_analysis_reference_folder_without_checkpoints(tmp_path):
    cls = discover(GROUPS["callbacks"])["AttentionAnalysis"].obj
    with pytest.raises(ValueError, match=r"^reference_checkpoint: no \*\.ckpt below "):
        cls(reference_checkpoint=str(tmp_path))


# Checks that need the model's sizes run when the decoder binds the encoding.
BIND_CHECKS = [
    ("RoPE", {"rotary_dim": 3}, "rotary_dim=3"),
    ("RoPENTK", {"rotary_dim": 2}, "rotary_dim=2 must be >= 4"),
    ("RoPEPartial", {"fraction": 0.01}, "RoPEPartial"),
]


@pytest.mark.parametrize(("name", "arguments", "words"), BIND_CHECKS)
def test_encoding_range_check_against_the_model_sizes(name, arguments, words):
    from lengen.model import Decoder

    encoding = discover(GROUPS["positional_encodings"])[name].obj(**arguments)
    with pytest.raises(ValueError) as error:
        Decoder(vocab_size=8, pos_encoding=encoding, n_layer=1, n_head=2, d_model=16)
    assert "\n" not in str(error.value) and words in str(error.value)


def test_nothing_left_behind_by_the_refused_runs(tmp_path):
    """The helper itself can fail: a folder with a version is seen."""
    (tmp_path / "runs" / "lightning_logs" / "version_0").mkdir(parents=True)
    with pytest.raises(AssertionError):
        assert_nothing_written(tmp_path)
    shutil.rmtree(tmp_path / "runs")
    assert_nothing_written(tmp_path)


# ---- plugin faults: named with their distribution; a broken optional plugin is left out ----

FAULTY_PLUGINS = """
    from lightning.pytorch.callbacks import Callback

    from lengen.metric import LengthMetric
    from lengen.positional import PositionalEncoding


    class ExplodingEncoding(PositionalEncoding):
        '''An encoding whose constructor fails.'''

        def __init__(self, base: float = 2.0) -> None:
            super().__init__()
            raise RuntimeError("needs a library that is missing")


    class Exploding(LengthMetric):
        '''A metric whose constructor fails.'''

        def __init__(self, max_length: int = 4096) -> None:
            raise RuntimeError("needs a library that is missing")


    class FailingHook(Callback):
        '''A callback that fails inside the run.'''

        def on_train_start(self, trainer, pl_module) -> None:
            raise RuntimeError("hook exploded")
"""


@pytest.fixture
def faulty_distribution(tmp_path, monkeypatch, fresh_discovery):
    """lengen-faulty: a metric that fails to import, one whose constructor fails, and a callback
    whose hook fails."""
    from conftest import write_distribution

    root = tmp_path / "site"
    write_distribution(
        root,
        "lengen-faulty",
        "[lengen.metrics]\nExploding = faulty_plugins:Exploding\n"
        "BrokenImport = faulty_missing_module:Broken\n"
        "[lengen.tasks]\nBrokenTask = faulty_missing_module:Broken\n"
        "[lengen.positional_encodings]\nBrokenEncoding = faulty_missing_module:Broken\n"
        "ExplodingEncoding = faulty_plugins:ExplodingEncoding\n"
        "[lengen.callbacks]\nFailingHook = faulty_plugins:FailingHook\n",
        {"faulty_plugins": FAULTY_PLUGINS},
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(__import__("sys").modules, "faulty_plugins", raising=False)
    return root


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        ("metrics", ["--model.metrics", "[BrokenImport]"]),
        ("task", ["--data.init_args.task", "BrokenImport"]),
        ("pos_encoding", ["--model.pos_encoding", "BrokenImport"]),
    ],
)
def test_plugin_that_failed_to_import_is_said_so_not_unknown(
    key, extra, faulty_distribution, tmp_path, capsys
):
    name = {"metrics": "BrokenImport", "task": "BrokenTask", "pos_encoding": "BrokenEncoding"}[key]
    extra = [arg.replace("BrokenImport", name) for arg in extra]
    # Every broken plugin of the distribution warns once (all groups are discovered); this one's
    # warning must be among them. (pytest.warns would re-emit the other two.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = refused(["fit", *tiny(tmp_path), *extra], capsys)
    assert any(f"'{name}'" in str(w.message) and "failed to load" in str(w.message) for w in caught)
    assert "unknown" not in line
    assert f"{key} '{name}' is installed (distribution 'lengen-faulty') but failed to" in line
    assert "ModuleNotFoundError" in line
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("group", "name", "extra"),
    [
        ("lengen.metrics", "Exploding", ["--model.metrics", "[Exploding]"]),
        ("lengen.positional_encodings", "ExplodingEncoding", ["--model.pos_encoding",
                                                               "ExplodingEncoding"]),
    ],
)  # fmt: skip
def test_failing_plugin_constructor_names_plugin_and_distribution(
    group, name, extra, faulty_distribution, tmp_path, capsys
):
    with pytest.warns(UserWarning):
        line = refused(["fit", *tiny(tmp_path), *extra], capsys)
    assert f"plugin '{name}' ({group}, from distribution 'lengen-faulty')" in line
    assert "failed in its constructor: RuntimeError: needs a library that is missing" in line
    assert_nothing_written(tmp_path)


def test_failing_plugin_hook_inside_a_run_names_plugin_and_distribution(
    faulty_distribution, tmp_path, capsys
):
    with pytest.warns(UserWarning), pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny(tmp_path), "--trainer.callbacks+=FailingHook"])
    assert exit_info.value.code == 1  # a fault of the plugin, not bad input
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("lengen: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "plugin 'FailingHook' (lengen.callbacks, from distribution 'lengen-faulty')" in errors[0]
    assert "failed in its on_train_start(): RuntimeError: hook exploded" in errors[0]


def test_broken_optional_plugins_do_not_break_a_run_that_does_not_ask_for_them(
    faulty_distribution, tmp_path, capsys
):
    """Without model.metrics every installed metric is built: the broken ones are left out."""
    with pytest.warns(UserWarning) as warned:
        main(["fit", *tiny(tmp_path), "--model.metrics", "null"])
    messages = [str(w.message) for w in warned]
    assert any("'Exploding' (from distribution 'lengen-faulty') left out" in m for m in messages)
    assert any("'BrokenImport'" in m and "failed to load" in m for m in messages)
    assert list((tmp_path / "runs").rglob("version_0"))


@pytest.mark.parametrize("case", ["lr", "checkpoint", "corpus"])
def test_the_error_is_the_only_line_printed(tmp_path, case):
    """As a user sees it (a `lengen` process): the one error line and nothing before it, no
    seed line, no device lines of a Trainer, no progress bars."""
    import subprocess
    import sys

    (tmp_path / "short.txt").write_text("   \n")
    args = {
        "lr": ["fit", *tiny(tmp_path), "--model.lr", "inf"],
        "checkpoint": ["test", *tiny(tmp_path), "--ckpt_path", str(tmp_path / "none.ckpt")],
        "corpus": [*text_run(tmp_path, tmp_path / "short.txt"), "--seed_everything", "0"],
    }[case]
    lengen = Path(sys.executable).parent / "lengen"
    result = subprocess.run(
        [str(lengen), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("lengen: error: "), lines
    assert_nothing_written(tmp_path)
