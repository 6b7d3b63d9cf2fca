"""The lengen benchmark: lengen against `transformers` and `x-transformers`, in one process.

    OMP_NUM_THREADS=1 python benchmarks/run.py            # the measurement of benchmarks/RESULTS.md
    python benchmarks/run.py --quick --output /tmp/r.md   # seconds: the smallest settings

Sections (`--sections`): training (step time and peak memory of lengen's encodings, their peers
and NoPE), bias (bias encodings on the CPU fast paths against the plain path), compile
(torch.compile against eager), precision (bf16-mixed against float32), eval (forward-only at
1x-8x the training length), generation (greedy, with and without the KV cache), data
(training-batch generation and collation against their former code, and as a share of the
quickstart step), startup (`lengen` commands as subprocesses).
Contenders are alternated within each repeat, with the same dimensions, batch, length, dtype
(float32) and threads; ratios are paired: the median and the min over repeats of a / b.
Peers need the optional extra: `pip install -e ".[bench]"`; without it only lengen runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from any directory

import contenders  # noqa: E402
import measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECTIONS = (
    "training",
    "eval",
    "generation",
    "data",
    "rope",
    "bias",
    "compile",
    "precision",
    "startup",
)


def peers_available() -> bool:
    try:
        import transformers  # noqa: F401
        import x_transformers  # noqa: F401
    except ImportError:
        return False
    return True


class Report:
    """Lines printed as they come and kept for RESULTS.md."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self("| " + " | ".join(header) + " |")
        self("|" + "---|" * len(header))
        for row in rows:
            self("| " + " | ".join(row) + " |")
        self()


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f}"


def ratio_text(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.2f} (min {pair[1]:.2f})"


def training_section(args, report: Report, with_peers: bool) -> None:
    report("## Training step (forward + backward + AdamW), float32")
    report(
        f"d_model {args.d_model}, {args.n_layer} layers, {args.n_head} heads, batch "
        f"{args.batch}, vocab {args.vocab}; {args.repeats} repeats x {args.calls} timed steps "
        "(median per repeat) after 1 warm-up step. Ratios: lengen / peer and encoding / "
        "lengen NoPE (paired, median over repeats, min). Memory: peak live tensor MiB of one "
        "step (see benchmarks/measure.py)."
    )
    report()
    for length in args.lengths:
        dims = contenders.Dims(
            args.vocab, args.d_model, args.n_layer, args.n_head, max(args.lengths)
        )
        torch.manual_seed(0)
        ids = torch.randint(0, args.vocab, (args.batch, length))
        names = [("lengen", encoding) for encoding in args.encodings]
        if with_peers:
            for encoding in args.encodings:
                names += [peer for peer in contenders.PEERS.get(encoding, []) if peer not in names]
        steps, params, memory = {}, {}, {}
        for library, name in names:
            torch.manual_seed(0)
            model = contenders.build(library, name, dims)
            params[(library, name)] = contenders.parameter_count(model)
            steps[(library, name)] = measure.training_step(
                contenders.as_logits_model(library, model), ids
            )
        times = measure.alternate(steps, args.repeats, args.calls)
        for key, step in steps.items():
            memory[key] = measure.peak_bytes(step)
        report(f"### T = {length}")
        rows = []
        nope = ("lengen", "NoPE")
        for encoding in args.encodings:
            key = ("lengen", encoding)
            versus = [
                f"{peer[0]} {peer[1]}: {ratio_text(measure.paired_ratio(times[key], times[peer]))}"
                for peer in contenders.PEERS.get(encoding, [])
                if peer in times
            ]
            vs_nope = (
                ratio_text(measure.paired_ratio(times[key], times[nope])) if nope in times else "-"
            )
            rows.append(
                [
                    f"lengen {encoding}",
                    f"{params[key]:,}",
                    f"{1e3 * statistics.median(times[key]):.1f}",
                    mib(memory[key]),
                    vs_nope,
                    "; ".join(versus) or "-",
                ]
            )
        for key in names:
            if key[0] != "lengen":
                rows.append(
                    [
                        f"{key[0]} {key[1]}",
                        f"{params[key]:,}",
                        f"{1e3 * statistics.median(times[key]):.1f}",
                        mib(memory[key]),
                        "-",
                        "-",
                    ]
                )
        report.table(
            ["contender", "parameters", "step ms", "peak MiB", "/ lengen NoPE", "lengen / peer"],
            rows,
        )


def eval_section(args, report: Report, with_peers: bool) -> None:
    train = args.eval_train_length
    report(f"## Evaluation forward (no gradients), batch {args.batch}, trained length {train}")
    report("Same model sizes as above; time in ms (median of repeats) and peak live tensor MiB.")
    report()
    names = [("lengen", encoding) for encoding in ("NoPE", "RoPE", "ALiBi", "T5Bias")]
    if with_peers:
        names += [("x-transformers", "RoPE"), ("x-transformers", "ALiBi"), ("x-transformers", "T5")]
    dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, 8 * train)
    models = {}
    for key in names:
        torch.manual_seed(0)
        models[key] = contenders.build(*key, dims)
    rows = []
    for factor in args.eval_factors:
        torch.manual_seed(0)
        ids = torch.randint(0, args.vocab, (args.batch, factor * train))
        calls = {key: measure.forward_only(model, ids) for key, model in models.items()}
        times = measure.alternate(calls, args.repeats, 1)
        for key in names:
            peer = {"RoPE": ("x-transformers", "RoPE"), "ALiBi": ("x-transformers", "ALiBi")}
            peer.update({"T5Bias": ("x-transformers", "T5")})
            versus = "-"
            if key[0] == "lengen" and peer.get(key[1]) in times:
                versus = ratio_text(measure.paired_ratio(times[key], times[peer[key[1]]]))
            rows.append(
                [
                    f"{factor}x ({factor * train})",
                    f"{key[0]} {key[1]}",
                    f"{1e3 * statistics.median(times[key]):.1f}",
                    mib(measure.peak_bytes(calls[key])),
                    versus,
                ]
            )
    report.table(["length", "contender", "forward ms", "peak MiB", "lengen / x-transformers"], rows)


def generation_section(args, report: Report, with_peers: bool) -> None:
    from lengen.data.tasks import collate_examples
    from lengen.module import LengenModule
    from lengen.task import Example

    prompt, new = args.gen_prompt, args.gen_new
    report(f"## Greedy generation: batch {args.batch}, prompt {prompt}, {new} new tokens (RoPE)")
    report("lengen `greedy_generate`; transformers Llama `generate(do_sample=False)`; ")
    report("x-transformers `AutoregressiveWrapper.generate(temperature=0)`. Time in ms.")
    report()
    dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, prompt + new + 1)
    rng = random.Random(0)
    examples = [
        Example(
            prompt=[rng.randrange(4, args.vocab) for _ in range(prompt)],
            target=[rng.randrange(4, args.vocab) for _ in range(new)],
            length=new,
        )
        for _ in range(args.batch)
    ]
    batch = collate_examples(examples)
    prompts = torch.tensor([example.prompt for example in examples])  # (B, P)
    torch.manual_seed(0)
    module = LengenModule(
        contenders.lengen_encoding("RoPE", dims),
        vocab_size=args.vocab,
        n_layer=args.n_layer,
        n_head=args.n_head,
        d_model=args.d_model,
        attention="sdpa",
        metrics=[],
    ).eval()
    calls = {}
    for cached in (True, False):
        label = "cache" if cached else "no cache"
        calls[("lengen", label)] = lambda cached=cached: module.greedy_generate(batch, cached)
    if with_peers:
        from x_transformers import AutoregressiveWrapper

        torch.manual_seed(0)
        llama = contenders.build("transformers", "Llama", dims).eval()
        torch.manual_seed(0)
        wrapper = AutoregressiveWrapper(contenders.build("x-transformers", "RoPE", dims)).eval()
        for cached in (True, False):
            label = "cache" if cached else "no cache"

            def hf(cached=cached):
                with torch.no_grad():
                    return llama.generate(
                        prompts,
                        max_new_tokens=new,
                        min_new_tokens=new,
                        do_sample=False,
                        use_cache=cached,
                        pad_token_id=0,
                    )

            def xt(cached=cached):
                with torch.no_grad():
                    return wrapper.generate(prompts, new, temperature=0.0, cache_kv=cached)

            calls[("transformers Llama", label)] = hf
            calls[("x-transformers RoPE", label)] = xt
    times = measure.alternate(calls, args.repeats, 1)
    rows = []
    for key in calls:
        versus = "-"
        if key[0] == "lengen":
            versus = "; ".join(
                f"{other[0]}: {ratio_text(measure.paired_ratio(times[key], times[other]))}"
                for other in calls
                if other[0] != "lengen" and other[1] == key[1]
            )
        rows.append([key[0], key[1], f"{1e3 * statistics.median(times[key]):.1f}", versus or "-"])
    report.table(["contender", "KV cache", "ms", "lengen / peer"], rows)


def former_collate(examples):
    """The former `collate_examples`: tensors filled row by row (a `torch.tensor` per row)."""
    from lengen.metric import EvalBatch
    from lengen.task import PAD

    sequences = [example.prompt + example.target for example in examples]
    width = max(len(sequence) for sequence in sequences) - 1
    target_width = max(len(example.target) for example in examples)
    input_ids = torch.full((len(examples), width), PAD, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    targets = torch.full((len(examples), target_width), PAD, dtype=torch.long)
    for row, (example, sequence) in enumerate(zip(examples, sequences, strict=True)):
        input_ids[row, : len(sequence) - 1] = torch.tensor(sequence[:-1])
        start = len(example.prompt) - 1
        labels[row, start : start + len(example.target)] = torch.tensor(example.target)
        targets[row, : len(example.target)] = torch.tensor(example.target)
    return EvalBatch(
        input_ids=input_ids,
        labels=labels,
        targets=targets,
        prompt_lengths=torch.tensor([len(example.prompt) for example in examples]),
        target_lengths=torch.tensor([len(example.target) for example in examples]),
        lengths=torch.tensor([example.length for example in examples]),
    )


def data_section(args, report: Report) -> None:
    from lengen.data.tasks import TrainingStream, collate_examples
    from lengen.model import Decoder
    from lengen_plugins.positional_encodings.alibi import ALiBi
    from lengen_plugins.tasks.copy import Copy

    class LinearSearchCopy(Copy):
        """The former code path: `symbols` rebuilt per access, searched per token."""

        def generate(self, length, rng):
            inputs = [rng.choice(self.symbols) for _ in range(length)]
            return inputs, list(inputs)

        def encode(self, symbols):
            return [4 + self.symbols.index(symbol) for symbol in symbols]

    report("## Training-data generation per batch (generate + encode + collate)")
    report(
        "`before`: the former linear search of a rebuilt symbol tuple per token. Collate rows: "
        "`collate_examples` alone on the same examples; `before` fills tensors row by row."
    )
    report()
    rows = []
    settings = [("quickstart Copy(10), lengths 1-16", 10, 1, 16, args.data_batch)]
    settings.append((f"Copy(252), length {args.data_long}", 252, args.data_long, args.data_long, 8))
    quickstart_ms = None
    for label, symbols, low, high, batch_size in settings:
        streams = {
            "now": TrainingStream(Copy(symbols), low, high, 0, batch_size),
            "before": TrainingStream(LinearSearchCopy(symbols), low, high, 0, batch_size),
        }
        assert streams["now"].batch(3).input_ids.equal(streams["before"].batch(3).input_ids)
        counter = iter(range(10**9))  # a new batch index per call: no batch is reused
        calls = {
            name: (lambda stream=stream, counter=counter: stream.batch(next(counter)))
            for name, stream in streams.items()
        }
        times = measure.alternate(calls, args.repeats, args.data_calls)
        now_ms = 1e3 * statistics.median(times["now"])
        if quickstart_ms is None:
            quickstart_ms = now_ms
        rows.append(
            [
                label,
                f"{batch_size}",
                f"{now_ms:.2f}",
                f"{1e3 * statistics.median(times['before']):.2f}",
                ratio_text(measure.paired_ratio(times["now"], times["before"])),
            ]
        )
        # Collation alone, on one fixed set of examples of this setting.
        task, rng = Copy(symbols), random.Random(0)
        examples = [task.make_example(rng.randint(low, high), rng) for _ in range(batch_size)]
        expected, former = collate_examples(examples), former_collate(examples)
        assert all(getattr(expected, f).equal(getattr(former, f)) for f in vars(expected))
        collate_calls = {
            "now": lambda examples=examples: collate_examples(examples),
            "before": lambda examples=examples: former_collate(examples),
        }
        collate_times = measure.alternate(collate_calls, args.repeats, args.data_calls)
        rows.append(
            [
                f"{label}: collate only",
                f"{batch_size}",
                f"{1e3 * statistics.median(collate_times['now']):.2f}",
                f"{1e3 * statistics.median(collate_times['before']):.2f}",
                ratio_text(measure.paired_ratio(collate_times["now"], collate_times["before"])),
            ]
        )
    report.table(["setting", "batch", "now ms", "before ms", "now / before"], rows)
    # The share of a quickstart training step (configs/quickstart.yaml sizes), same run.
    stream = TrainingStream(Copy(10), 1, 16, 0, args.data_batch)
    torch.manual_seed(0)
    model = Decoder(14, ALiBi(), n_layer=2, n_head=4, d_model=64, attention="sdpa")
    step = measure.training_step(model, stream.batch(0).input_ids)
    step_ms = 1e3 * statistics.median(measure.alternate({"step": step}, args.repeats, 3)["step"])
    share = 100 * quickstart_ms / step_ms
    report(
        f"Quickstart step (ALiBi, 2 layers, d_model 64, batch {args.data_batch}, T <= 33): "
        f"{step_ms:.1f} ms; data generation + collation {quickstart_ms:.2f} ms = "
        f"{share:.1f} % of it. Target < 3 %: {'met' if share < 3 else 'not met'}."
    )
    report()


def rope_section(args, report: Report) -> None:
    """RoPE / xPos training steps with the cos/sin tables shared by the layers, and without."""
    from lengen.positional import PositionalEncoding

    report("## Rotary tables: computed once per forward against once per layer and q/k")
    report(
        "`per layer`: `PositionalEncoding.cached_table` replaced by a plain call (the former "
        f"behaviour). Training step, batch {args.batch}, sizes as above; ms and peak MiB."
    )
    report()
    shared = PositionalEncoding.cached_table

    def per_layer(self, key, inputs, compute):
        return compute()

    rows = []
    for length in args.lengths:
        dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, length)
        torch.manual_seed(0)
        ids = torch.randint(0, args.vocab, (args.batch, length))
        for encoding in ("RoPE", "XPos"):
            steps = {}
            for mode in ("once", "per layer"):
                torch.manual_seed(0)
                step = measure.training_step(contenders.lengen_model(encoding, dims), ids)

                def run(step=step, mode=mode) -> None:
                    PositionalEncoding.cached_table = shared if mode == "once" else per_layer
                    try:
                        step()
                    finally:
                        PositionalEncoding.cached_table = shared

                steps[mode] = run
            times = measure.alternate(steps, args.repeats, args.calls)
            memory = {mode: measure.peak_bytes(step) for mode, step in steps.items()}
            rows.append(
                [
                    f"{encoding} T={length}",
                    f"{1e3 * statistics.median(times['once']):.1f}",
                    f"{1e3 * statistics.median(times['per layer']):.1f}",
                    ratio_text(measure.paired_ratio(times["once"], times["per layer"])),
                    f"{mib(memory['once'])} / {mib(memory['per layer'])}",
                ]
            )
    report.table(["setting", "once ms", "per layer ms", "once / per layer", "peak MiB"], rows)


def bias_section(args, report: Report) -> None:
    """Bias encodings on the CPU fast paths against the plain masked SDPA call, and NoPE."""
    from lengen import attention
    from lengen.model import Decoder
    from lengen_plugins.positional_encodings.fire import FIRE

    report("## Bias encodings: CPU fast paths against the plain masked SDPA call")
    report(
        "`fast`: the bias from a distance table (relative encodings) whose gradient the attention "
        "backward reduces straight to the table, FIRE's MLP once per distinct input, the CPU "
        "flash kernels with the unmasked bias (`BiasedCausalAttention`), denormals flushed; "
        "`plain`: the bias built per pair and masked, then SDPA (its math kernel when the bias "
        f"needs a gradient), as before. Training step, batch {args.batch}, sizes as above; ms, "
        "ratios to NoPE (paired median, min), peak MiB."
    )
    report()
    usable, by_distance = attention._cpu_flash_usable, Decoder._by_distance
    head_axis = FIRE._head_axis
    rows = []
    for length in args.lengths:
        dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, length)
        torch.manual_seed(0)
        ids = torch.randint(0, args.vocab, (args.batch, length))
        steps = {}
        for encoding in ["NoPE"] + [name for name in args.bias_encodings if name != "NoPE"]:
            for mode in ("fast", "plain") if encoding != "NoPE" else ("fast",):
                torch.manual_seed(0)
                step = measure.training_step(contenders.lengen_model(encoding, dims), ids)

                def run(step=step, mode=mode) -> None:
                    if mode == "plain":
                        attention._cpu_flash_usable = lambda *args: False
                        Decoder._by_distance = lambda *args: False
                        FIRE._head_axis = lambda *args: None  # its per-head gather, per pair
                    try:
                        step()
                    finally:
                        attention._cpu_flash_usable = usable
                        Decoder._by_distance = by_distance
                        FIRE._head_axis = head_axis

                steps[(encoding, mode)] = run
        times = measure.alternate(steps, args.repeats, args.calls)
        nope = times[("NoPE", "fast")]
        for (encoding, mode), step in steps.items():
            rows.append(
                [
                    f"{encoding} T={length}",
                    mode,
                    f"{1e3 * statistics.median(times[(encoding, mode)]):.1f}",
                    ratio_text(measure.paired_ratio(times[(encoding, mode)], nope)),
                    mib(measure.peak_bytes(step)),
                ]
            )
    report.table(["setting", "path", "step ms", "/ NoPE", "peak MiB"], rows)


def compile_section(args, report: Report) -> None:
    """Training step of `torch.compile(decoder, fullgraph=True)` (inductor) against eager."""
    report("## torch.compile (inductor, fullgraph=True) against eager")
    report(
        f"Training step (forward + backward + AdamW; the optimizer eager), batch {args.batch}, "
        f"T = {args.compile_length}, sizes as above. Compile: wall seconds of the first compiled "
        "step (compilation included); ratios compiled / eager (paired median, min)."
    )
    report()
    dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, args.compile_length)
    torch.manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.compile_length))
    rows = []
    for encoding in args.compile_encodings:
        torch.manual_seed(0)
        eager = contenders.lengen_model(encoding, dims)
        torch.manual_seed(0)
        model = contenders.lengen_model(encoding, dims)
        compiled = torch.compile(model, fullgraph=True)
        steps = {
            "eager": measure.training_step(eager, ids),
            "compiled": measure.training_step(compiled, ids),
        }
        start = time.perf_counter()
        steps["compiled"]()
        compile_s = time.perf_counter() - start
        times = measure.alternate(steps, args.repeats, args.calls)
        rows.append(
            [
                encoding,
                f"{compile_s:.0f}",
                f"{1e3 * statistics.median(times['eager']):.1f}",
                f"{1e3 * statistics.median(times['compiled']):.1f}",
                ratio_text(measure.paired_ratio(times["compiled"], times["eager"])),
            ]
        )
    report.table(["encoding", "compile s", "eager ms", "compiled ms", "compiled / eager"], rows)


def precision_section(args, report: Report) -> None:
    """A bf16-mixed training step (Lightning's CPU autocast) against float32, paired."""
    report("## bf16-mixed against float32 (CPU)")
    report(
        "`bf16-mixed`: forward and loss under `torch.autocast('cpu', torch.bfloat16)` as "
        "Lightning's `--trainer.precision bf16-mixed` does, weights and optimizer in float32. "
        f"Training step, batch {args.batch}, sizes as above; ratios bf16 / float32 (paired)."
    )
    report()
    rows = []
    for length in args.lengths:
        dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, length)
        torch.manual_seed(0)
        ids = torch.randint(0, args.vocab, (args.batch, length))
        steps = {}
        for encoding in args.precision_encodings:
            for precision in ("32-true", "bf16-mixed"):
                torch.manual_seed(0)
                model = contenders.lengen_model(encoding, dims)
                steps[(encoding, precision)] = measure.training_step(
                    model, ids, autocast=torch.bfloat16 if precision == "bf16-mixed" else None
                )
        times = measure.alternate(steps, args.repeats, args.calls)
        for encoding in args.precision_encodings:
            fp32, bf16 = times[(encoding, "32-true")], times[(encoding, "bf16-mixed")]
            rows.append(
                [
                    f"{encoding} T={length}",
                    f"{1e3 * statistics.median(fp32):.1f}",
                    f"{1e3 * statistics.median(bf16):.1f}",
                    ratio_text(measure.paired_ratio(bf16, fp32)),
                ]
            )
    report.table(["setting", "float32 ms", "bf16-mixed ms", "bf16 / float32"], rows)


def startup_section(args, report: Report) -> None:
    """Wall time of each command as a subprocess (median and min of --startup-repeats runs,
    OMP_NUM_THREADS=1), and whether it imports Lightning (one more run, `sys.modules`)."""
    report("## Command start-up (subprocess wall time, seconds)")
    report(
        f"Median and min of {args.startup_repeats} runs each, OMP_NUM_THREADS=1, commands "
        "interleaved. `Lightning`: whether the command has imported it when it ends."
    )
    report()
    lengen = str(Path(sys.executable).with_name("lengen"))
    commands = {
        "lengen --help": ["--help"],
        "lengen plugins": ["plugins"],
        "lengen report --help": ["report", "--help"],
        "lengen heatmap --help": ["heatmap", "--help"],
        "lengen plugins --load": ["plugins", "--load"],
        "lengen fit --help": ["fit", "--help"],
    }
    python = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'import lightning'": [sys.executable, "-c", "import lightning"],
    }
    runs = {label: [lengen, *command] for label, command in commands.items()} | python
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    times: dict[str, list[float]] = {label: [] for label in runs}
    status: dict[str, str] = {}
    for _ in range(args.startup_repeats):
        for label, command in runs.items():
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, cwd=REPO, env=env)
            times[label].append(time.perf_counter() - start)
            status[label] = "ok" if result.returncode == 0 else f"exit {result.returncode}"
    rows = []
    for label in runs:
        imports = "-"
        if label in commands:
            imports = "yes" if imports_lightning(commands[label], env) else "no"
        median = statistics.median(times[label])
        rows.append([label, f"{median:.2f}", f"{min(times[label]):.2f}", imports, status[label]])
    report.table(["command", "median s", "min s", "Lightning", "status"], rows)


def imports_lightning(arguments: list[str], env: dict[str, str]) -> bool:
    """Whether `lengen ARGUMENTS` has imported Lightning when it ends (its `sys.modules`)."""
    code = (
        "import sys\nfrom lengen.cli import main\nsys.argv[0] = 'lengen'\n"
        f"try:\n    main({arguments!r})\nfinally:\n"
        "    print('lightning' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env
    )
    return result.stderr.strip().splitlines()[-1:] == ["True"]


def machine_lines() -> list[str]:
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    versions = []
    for package in ("torch", "lightning", "transformers", "x-transformers"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    return [
        f"- machine: {model}, {cores} cores visible; torch threads {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"- versions: Python {platform.python_version()}, " + ", ".join(versions),
        f"- lengen commit: {commit or 'unknown'} (plus uncommitted changes, if any)",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smallest settings (a smoke)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--encodings", nargs="+", default=list(contenders.LENGEN_ENCODINGS))
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1, help="timed steps per repeat")
    parser.add_argument("--eval-train-length", type=int, default=128)
    parser.add_argument("--eval-factors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--gen-prompt", type=int, default=64)
    parser.add_argument("--gen-new", type=int, default=64)
    parser.add_argument("--data-batch", type=int, default=64)
    parser.add_argument("--data-long", type=int, default=1024)
    parser.add_argument("--data-calls", type=int, default=5)
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument(
        "--bias-encodings", nargs="+", default=["ALiBi", "T5Bias", "FIRE", "KerpleLog"]
    )
    parser.add_argument("--compile-length", type=int, default=256)
    parser.add_argument("--compile-encodings", nargs="+", default=["NoPE", "ALiBi"])
    parser.add_argument("--precision-encodings", nargs="+", default=["NoPE", "ALiBi", "T5Bias"])
    parser.add_argument("--note", default="", help="a line for RESULTS.md (e.g. machine load)")
    parser.add_argument(
        "--append", action="store_true", help="add to --output instead of replacing it"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.d_model, args.n_layer, args.n_head, args.batch = [16], 32, 1, 2, 2
        args.vocab, args.repeats, args.eval_train_length, args.eval_factors = 32, 1, 16, [2]
        args.gen_prompt, args.gen_new, args.data_batch, args.data_long = 4, 4, 8, 32
        args.data_calls, args.startup_repeats = 1, 1
        args.bias_encodings, args.compile_length, args.compile_encodings = ["ALiBi"], 16, []
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; accepted: {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sections = args.sections.split(",")
    with_peers = peers_available()
    report = Report()
    load_before = os.getloadavg()
    start = time.perf_counter()
    report("## Run" if args.append else "# lengen benchmark results")
    report()
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report(f"- command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} {command}`")
    for line in machine_lines():
        report(line)
    if not with_peers:
        report('- peers absent (`pip install -e ".[bench]"`): lengen only')
    if args.note:
        report(f"- note: {args.note}")
    report()
    previous = (
        Path(args.output).read_text() + "\n" if args.append and Path(args.output).exists() else ""
    )

    def write() -> None:  # after every section, so an interrupted run keeps what it measured
        Path(args.output).write_text(previous + "\n".join(report.lines) + "\n")

    runs = {
        "training": lambda: training_section(args, report, with_peers),
        "eval": lambda: eval_section(args, report, with_peers),
        "generation": lambda: generation_section(args, report, with_peers),
        "data": lambda: data_section(args, report),
        "rope": lambda: rope_section(args, report),
        "bias": lambda: bias_section(args, report),
        "compile": lambda: compile_section(args, report),
        "precision": lambda: precision_section(args, report),
        "startup": lambda: startup_section(args, report),
    }
    for section in SECTIONS:
        if section in sections:
            runs[section]()
            write()
    load_after = os.getloadavg()
    report(
        f"Total {time.perf_counter() - start:.0f} s. Load average (1, 5, 15 min) before "
        f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}."
    )
    write()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
