"""Fast paths against their plain references: the cached symbol table of tasks, RoPE tables."""

from __future__ import annotations

import random
from importlib.metadata import entry_points

import pytest

from lengen.task import SPECIAL_TOKENS, Task

TASK_CLASSES = sorted((entry.name, entry) for entry in entry_points(group="lengen.tasks"))


def linear_search_encode(task: Task, symbols: list[str]) -> list[int]:
    """The former `Task.encode`: a linear search of `task.symbols` per token."""
    return [len(SPECIAL_TOKENS) + tuple(task.symbols).index(symbol) for symbol in symbols]


def task_instances() -> list[tuple[str, Task]]:
    instances = []
    for name, entry in TASK_CLASSES:
        cls = entry.load()
        instances.append((name, cls()))
    from lengen_plugins.tasks.copy import Copy
    from lengen_plugins.tasks.reverse import Reverse

    instances += [("Copy-252", Copy(num_symbols=252)), ("Reverse-97", Reverse(num_symbols=97))]
    return instances


def task_id(value: object) -> str:
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize(("name", "task"), task_instances(), ids=task_id)
def test_cached_encode_equals_linear_search(name: str, task: Task) -> None:
    if type(task).encode is not Task.encode:
        pytest.skip(f"{name} has its own encode")
    rng = random.Random(f"perf-{name}")
    checked = 0
    for _ in range(12):
        length = rng.randint(task.min_length, task.min_length + 24)
        try:
            inputs, target = task.generate(length, rng)
        except ValueError:  # a length the task cannot make (e.g. Scan's gaps)
            continue
        assert task.encode(inputs) == linear_search_encode(task, inputs)
        assert task.encode(target) == linear_search_encode(task, target)
        assert task.decode(task.encode(inputs)) == list(inputs)
        checked += len(inputs) + len(target)
    assert checked > 0
    assert "_symbol_table_cache" not in task.identity()  # the cache is not an argument


def test_copy_draws_the_same_symbols_as_before() -> None:
    """Copy draws from the cached tuple; the former code drew from a fresh equal tuple."""
    from lengen_plugins.tasks.copy import Copy

    task = Copy(num_symbols=252)
    inputs, target = task.generate(1024, random.Random(7))
    rng = random.Random(7)
    expected = [rng.choice(tuple(f"s{i}" for i in range(252))) for _ in range(1024)]
    assert inputs == expected and target == expected
    example = task.make_example(1024, random.Random(7))
    assert example.prompt[1:-1] == [len(SPECIAL_TOKENS) + int(s[1:]) for s in expected]


def test_symbol_cache_follows_changed_arguments() -> None:
    from lengen_plugins.tasks.copy import Copy

    task = Copy(num_symbols=3)
    assert task.encode(["s2"]) == [len(SPECIAL_TOKENS) + 2]
    with pytest.raises(ValueError, match="s7"):
        task.encode(["s7"])
    task.num_symbols = 9  # an argument changed after first use: the table is rebuilt
    assert task.encode(["s7"]) == [len(SPECIAL_TOKENS) + 7]
    assert task.vocab_size == len(SPECIAL_TOKENS) + 9
    assert task.identity() == {"class_path": "lengen_plugins.tasks.copy.Copy", "num_symbols": 9}


# --- RoPE / xPos tables computed once per forward, against a plain per-layer computation ---


class PlainRotary:
    """Textbook rotary encodings, recomputed for every call (the reference, float64)."""

    def __init__(self, kind: str, rotary_dim: int, **values: float) -> None:
        self.kind, self.rotary_dim, self.values = kind, rotary_dim, values

    def angles(self, positions):  # (B, T) -> (B, 1, T, r/2)
        import torch

        r = self.rotary_dim
        theta = 10000.0 ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)  # (r/2,)
        scaled = positions.double() / self.values.get("scale", 1.0)
        return scaled[:, None, :, None] * theta

    def rotate(self, x, positions, exponent_sign=0.0, centre=None):
        import torch

        r = self.rotary_dim
        angle = self.angles(positions)
        cos, sin = angle.cos(), angle.sin()  # (B, 1, T, r/2)
        if self.kind == "xpos":
            zeta = (torch.arange(0, r, 2, dtype=torch.float64) / r + 0.4) / 1.4  # (r/2,)
            exponent = exponent_sign * self.values["blend"] * (positions - centre).double()
            factor = zeta ** (exponent / self.values["scale_base"])[:, None, :, None]
            cos, sin = cos * factor, sin * factor
        first, second = x[..., : r // 2], x[..., r // 2 : r]  # the half-split pairs
        rotated = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
        return torch.cat((rotated, x[..., r:]), dim=-1)


def reference_encoding(plain: PlainRotary):
    from lengen.positional import PositionalEncoding

    class Reference(PositionalEncoding):
        def rotate(self, query, key, query_positions, key_positions):
            if plain.kind != "xpos":
                return plain.rotate(query, query_positions), plain.rotate(key, key_positions)
            low, high = key_positions.amin(dim=1), key_positions.amax(dim=1)
            centre = ((low + high) // 2)[:, None]  # (B, 1)
            return (
                plain.rotate(query, query_positions, +1.0, centre),
                plain.rotate(key, key_positions, -1.0, centre),
            )

    return Reference()


def twin_decoders(encoding, plain: PlainRotary):
    import torch

    from lengen.model import Decoder

    torch.manual_seed(0)
    model = Decoder(19, encoding, n_layer=3, n_head=2, d_model=32).double()
    reference = Decoder(19, reference_encoding(plain), n_layer=3, n_head=2, d_model=32).double()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("pos_encoding.")}
    reference.load_state_dict(weights)
    return model, reference


def assert_same_forward_and_grads(model, reference, ids, positions=None) -> None:
    import torch

    model.zero_grad()
    reference.zero_grad()
    logits = model(ids, positions=positions)
    expected = reference(ids, positions=positions)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    target = torch.randn_like(logits)
    (logits * target).sum().backward()
    (expected * target).sum().backward()
    reference_grads = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(
            parameter.grad, reference_grads[name].grad, rtol=1e-9, atol=1e-10
        )


@pytest.mark.parametrize("name", ["RoPE", "RoPEPartial", "RoPELinear", "XPos", "XPos-uncentred"])
def test_rotary_tables_shared_by_layers_match_per_layer_computation(name: str) -> None:
    import torch

    from lengen.positional import set_schedulable
    from lengen_plugins.positional_encodings.rope import RoPE
    from lengen_plugins.positional_encodings.rope_giraffe import RoPEPartial
    from lengen_plugins.positional_encodings.rope_scaling import RoPELinear
    from lengen_plugins.positional_encodings.xpos import XPos

    encodings = {
        "RoPE": (RoPE(), PlainRotary("rope", 16)),
        "RoPEPartial": (RoPEPartial(fraction=0.5), PlainRotary("rope", 8)),
        "RoPELinear": (RoPELinear(scale=4.0), PlainRotary("rope", 16, scale=4.0)),
        "XPos": (
            XPos(scale_base=64.0, blend=0.25),
            PlainRotary("xpos", 16, blend=0.25, scale_base=64.0),
        ),
        "XPos-uncentred": (
            XPos(scale_base=64.0, centre=False),
            PlainRotary("xpos", 16, blend=1.0, scale_base=64.0),
        ),
    }
    encoding, plain = encodings[name]
    model, reference = twin_decoders(encoding, plain)
    torch.manual_seed(1)
    ids = torch.randint(0, 19, (3, 24))
    assert_same_forward_and_grads(model, reference, ids)
    offset = torch.randint(0, 40, (3, 1)) + torch.arange(24)  # per-row positions
    assert_same_forward_and_grads(model, reference, ids, positions=offset)
    # A schedulable value changed between forwards (a PI ramp, an xPos blend): fresh tables.
    # (Values exact in float32, as the buffers are float32 and the reference float64.)
    if name == "RoPELinear":
        set_schedulable(encoding, "scale", 2.0)
        plain.values["scale"] = 2.0
    if name == "XPos":
        set_schedulable(encoding, "blend", 0.75)
        plain.values["blend"] = 0.75
    assert_same_forward_and_grads(model, reference, ids, positions=offset)


def test_rope_tables_are_computed_once_per_forward(monkeypatch) -> None:
    import torch

    from lengen.model import Decoder
    from lengen_plugins.positional_encodings.rope import RoPE

    encoding = RoPE()
    calls = []
    original = RoPE._compute_cos_sin

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RoPE, "_compute_cos_sin", counting)
    model = Decoder(11, encoding, n_layer=4, n_head=2, d_model=16)
    model(torch.randint(0, 11, (2, 9)))
    assert len(calls) == 1  # once, not 2 (q and k) x 4 layers
    model(torch.randint(0, 11, (2, 9)))
    assert len(calls) == 2  # a new forward computes afresh
    encoding.rotate(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8), *[torch.arange(3)[None]] * 2)
    assert len(calls) == 4  # outside a forward's scope nothing is reused
    assert "_table_store" not in encoding.__dict__


# --- start-up: `lengen report` and `lengen heatmap` without Lightning ---

LAUNCH = """
import sys
from lengen.{module} import main
try:
    main({argv!r})
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print("lightning imported:", "lightning" in sys.modules, "exit:", code)
"""


def run_entry(module: str, argv: list[str]):
    import subprocess
    import sys

    code = LAUNCH.format(module=module, argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["report", "heatmap"])
def test_light_commands_do_not_import_lightning(command: str) -> None:
    result = run_entry("launcher", [command, "--help"])
    assert "usage:" in result.stdout
    assert result.stdout.strip().endswith("lightning imported: False exit: 0"), result.stderr


def test_launcher_reports_bad_input_as_the_cli_does(tmp_path) -> None:
    argv = ["report", str(tmp_path / "missing")]
    light, full = run_entry("launcher", argv), run_entry("cli", argv)
    assert light.stdout.strip().endswith("lightning imported: False exit: 2")
    assert full.stdout.strip().endswith("exit: 2")
    assert light.stderr.startswith("lengen: error: ") and light.stderr.count("\n") == 1
    assert light.stderr == full.stderr


@pytest.mark.parametrize(("name", "task"), task_instances(), ids=task_id)
def test_cached_min_length_equals_the_property(name: str, task: Task) -> None:
    """make_example checks lengths against `min_length` computed once; the property is the
    reference, recomputed here on every call."""
    for _ in range(2):  # the first call fills the cache, the second reads it
        with pytest.raises(ValueError, match=f"needs length >= {task.min_length}, "):
            task.make_example(task.min_length - 1, random.Random(0))
    assert task._min_length() == task.min_length
    assert "_min_length_cache" not in task.identity()


def test_min_length_cache_follows_changed_arguments() -> None:
    from lengen_plugins.tasks.ruler_aggregation import RulerFrequentWords

    task = RulerFrequentWords(word_letters=3)
    short = task.min_length
    task.make_example(short, random.Random(0))
    task.word_letters = 12  # longer words need more bytes: the old minimum is now refused
    assert task.min_length > short
    with pytest.raises(ValueError, match=f"needs length >= {task.min_length}, got {short}"):
        task.make_example(short, random.Random(0))
