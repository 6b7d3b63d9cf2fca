"""lengen's attention backends on one CUDA GPU: training-step time and peak memory, in one process.

    python benchmarks/gpu.py --output benchmarks/RESULTS_GPU.md

Sections (`--sections`):

- backends: one training step (forward, backward, AdamW) under bf16 autocast (as Lightning's
  "bf16-mixed") for each encoding and length, with lengen's three kernels: "sdpa" (the bias
  materialised and passed to SDPA), "flex" (compiled FlexAttention; attention="auto" picked it
  on CUDA for a score bias until these measurements) and "reference" (plain softmax attention,
  the test oracle); for RoPE also `transformers` Llama (SDPA) at the same sizes. Contenders
  alternate within each repeat; ratios are paired against lengen "reference" (median over
  repeats, min).
- lengths: a run whose batches change length, as the task data modules make them: one training
  step at each of `--length-steps` lengths in turn, ALiBi with "flex" as lengen compiles it now,
  as it did before (`dynamic=False`: a compile per new length, past dynamo's limit of 8 the
  unfused path) and "sdpa". Wall time of the whole sequence (compiles included) and of the steps
  at the last lengths.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from any directory

import contenders  # noqa: E402
import measure  # noqa: E402
from run import Report, ratio_text  # noqa: E402

import lengen.attention  # noqa: E402

BIAS_ENCODINGS = ("ALiBi", "T5Bias", "FIRE", "KerpleLog")


def synchronised(step):
    """A step that returns only when the GPU has finished it (so wall time is GPU time)."""

    def timed() -> None:
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return timed


def peak_mib(step) -> float:
    if not torch.cuda.is_available():
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def backends_section(args, report: Report) -> None:
    report("## Training step by attention backend, bf16 autocast")
    report(
        f"d_model {args.d_model}, {args.n_layer} layers, {args.n_head} heads, vocab {args.vocab}, "
        f"{args.tokens} tokens a batch (batch = tokens / T); AdamW; {args.repeats} repeats x "
        f"{args.calls} timed steps (median per repeat) after {args.warmup} warm-up steps (the "
        "compile included). Ratio: contender / lengen reference, paired. Memory: peak CUDA MiB "
        "allocated during one step above what was allocated before it."
    )
    report()
    for length in args.lengths:
        dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, length)
        torch.manual_seed(0)
        ids = torch.randint(
            0, args.vocab, (max(1, args.tokens // length), length), device=args.device
        )
        report(f"### T = {length}, batch {ids.shape[0]}")
        rows = []
        for encoding in args.encodings:
            torch._dynamo.reset()  # every model compiles afresh, clear of the recompile limit
            backends = (
                ["sdpa", "flex", "reference"]
                if encoding in BIAS_ENCODINGS
                else ["sdpa", "reference"]
            )
            steps = {}
            for backend in backends:
                torch.manual_seed(0)
                model = contenders.lengen_model(encoding, dims, backend).to(args.device)
                steps[f"lengen {backend}"] = synchronised(
                    measure.training_step(model, ids, autocast=torch.bfloat16)
                )
            if encoding == "RoPE" and args.peers:
                torch.manual_seed(0)
                llama = contenders.build("transformers", "Llama", dims).to(args.device)
                steps["transformers Llama"] = synchronised(
                    measure.training_step(
                        contenders.as_logits_model("transformers", llama), ids, torch.bfloat16
                    )
                )
            times = measure.alternate(steps, args.repeats, args.calls, warmup=args.warmup)
            for name, step in steps.items():
                ratio = measure.paired_ratio(times[name], times["lengen reference"])
                rows.append(
                    [
                        encoding,
                        name,
                        f"{1e3 * statistics.median(times[name]):.2f}",
                        f"{peak_mib(step):.0f}",
                        ratio_text(ratio),
                    ]
                )
        report.table(["encoding", "contender", "ms / step", "peak MiB", "/ reference"], rows)


def run_lengths(kernel, model: torch.nn.Module, lengths: list[int], args) -> list[float]:
    """Seconds of one training step at each length in turn, with `kernel` as compiled flex."""
    compiled = lengen.attention._compiled_flex_attention
    lengen.attention._compiled_flex_attention = lambda: kernel
    seconds = []
    try:
        for length in lengths:
            batch = max(1, args.tokens // length)
            ids = torch.randint(0, args.vocab, (batch, length), device=args.device)
            step = synchronised(measure.training_step(model, ids, autocast=torch.bfloat16))
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
            print(f"  T = {length}: {seconds[-1]:.2f} s", flush=True)
    finally:
        lengen.attention._compiled_flex_attention = compiled
    return seconds


def lengths_section(args, report: Report) -> None:
    from torch.nn.attention.flex_attention import flex_attention

    lengths = [args.length_base + 64 * i for i in range(args.length_steps)]
    report("## A run whose batches change length: ALiBi, compiled flex before and after")
    report(
        f"One bf16 training step at each of {len(lengths)} lengths in turn ({lengths[0]}-"
        f"{lengths[-1]}, step 64; {args.tokens} tokens a batch); d_model {args.d_model}, "
        f"{args.n_layer} layers. Total: the whole sequence, compiles included; last 2: the mean "
        "of the last two steps (past dynamo's recompile limit of 8 for the former code)."
    )
    report()
    contenders_ = {
        "sdpa (bias materialised)": ("sdpa", None),
        "flex, compiled as now (dynamic shapes after the 2nd length)": (
            "flex",
            lengen.attention.compile_flex_attention(),
        ),
        "flex, compiled as before (dynamic=False)": (
            "flex",
            torch.compile(flex_attention, dynamic=False),
        ),
    }
    rows = []
    dims = contenders.Dims(args.vocab, args.d_model, args.n_layer, args.n_head, lengths[-1])
    for label, (backend, kernel) in contenders_.items():
        print(label, flush=True)
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = contenders.lengen_model("ALiBi", dims, backend).to(args.device)
        seconds = run_lengths(kernel, model, lengths, args)
        rows.append([label, f"{sum(seconds):.1f}", f"{1e3 * statistics.mean(seconds[-2:]):.1f}"])
        report(f"- {label}: " + ", ".join(f"{s:.2f}" for s in seconds) + " s")
    report()
    report.table(["contender", "total s", "last 2 ms / step"], rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="backends,lengths", help="comma-separated")
    parser.add_argument("--output", default="")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--encodings", nargs="+", default=["NoPE", "RoPE", "ALiBi", "T5Bias"])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--length-base", type=int, default=512)
    parser.add_argument("--length-steps", type=int, default=10)
    parser.add_argument("--no-peers", dest="peers", action="store_false")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU (or --device cpu for a smoke test)")
    report = Report()
    report("# lengen on one GPU")
    machine = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    report(
        f"{machine}, torch {torch.__version__}, Python {platform.python_version()}; "
        + "command: python benchmarks/gpu.py "
        + shlex.join(argv if argv is not None else sys.argv[1:])
    )
    report()
    sections = {"backends": backends_section, "lengths": lengths_section}
    for name in args.sections.split(","):
        sections[name](args, report)
        if args.output:  # after every section, so an interrupted run keeps what it measured
            Path(args.output).write_text("\n".join(report.lines) + "\n")


if __name__ == "__main__":
    main()
