"""Dense CPU forward latency of YOLOv3 and YOLOv3-tiny before and after structured channel pruning.

For each model at one input size and batch 1, fp32: random weights (Laplace, scaled by fan-in, fixed seed;
speed does not depend on their values), then :func:`yolov3.compression.structured.prune_channels` with the L1
criterion down to ``--flops-target`` of the FLOPs (default 0.5). Both networks are timed as the same class,
:class:`~yolov3.models.Darknet` (the original is "pruned" with ratio 0, which copies it unchanged), under
``torch.inference_mode()``, interleaved per repetition in a rotating order so that background load hits both
alike, with the same thread count. The report gives Darknet's BFLOPs, parameters, median and p90 latency and
the speed-up (original median / pruned median; issue 6 asks for at least 1.5x at half the FLOPs), with the
load average and the CPU time other processes used during the timings. ``--record`` writes it into the
"Compression: structured pruning (issue 6)" section of ``docs/benchmarks.md``, leaving other sections alone.

Usage::

    python bench/structured_speed.py                  # print the report
    python bench/structured_speed.py --record         # ... and record it in docs/benchmarks.md
    python bench/structured_speed.py --models yolov3-tiny --repeats 30 --threads 1 --channel-multiple 8
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import CpuMeter, background_sentence, cpu_name, initialize_convolutions, start_bench, time_interleaved
from docs_section import print_and_record
from yolov3.compression.structured import apply_plan, flops, plan_pruning
from yolov3.models import create_model

logger = logging.getLogger("bench.structured_speed")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOCS = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Compression: structured pruning (issue 6)"
# Hand-written notes below this line inside the section are kept when --record rewrites the section.
NOTES_MARKER = "<!-- notes: kept when bench/structured_speed.py --record rewrites this section -->"
MODELS = {"yolov3": "yolov3", "yolov3-tiny": "yolov3_tiny"}
REQUIRED_SPEEDUP = 1.5
SEED = 0
# Above this many cores of CPU time used by other processes during the timings, the report flags them.


@dataclass(frozen=True)
class ModelResult:
    """The figures of one model, original and pruned."""

    name: str
    bflops: tuple[float, float]
    parameters: tuple[int, int]
    samples: tuple[list[float], list[float]]
    removed_filters: int
    prunable_filters: int
    background_cores: float | None

    @property
    def medians_ms(self) -> tuple[float, float]:
        return statistics.median(self.samples[0]) * 1e3, statistics.median(self.samples[1]) * 1e3

    @property
    def speedup(self) -> float:
        original, pruned = self.medians_ms
        return original / pruned


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--size", type=int, default=416, help="input height and width (default 416)")
    parser.add_argument("--flops-target", type=float, default=0.5, help="fraction of the FLOPs kept (default 0.5)")
    parser.add_argument("--channel-multiple", type=int, default=1, help="round kept channels up to a multiple")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per network (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all)")
    parser.add_argument("--record", action="store_true", help=f"write the report into {DEFAULT_DOCS}")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.repeats < 10 or arguments.warmup < 1 or arguments.threads < 1 or arguments.size % 32:
        parser.error("need --repeats >= 10, --warmup >= 1, --threads >= 1 and --size a multiple of 32")
    if not 0.0 < arguments.flops_target <= 1.0:
        parser.error("--flops-target is the fraction of FLOPs kept, in (0, 1]")
    return arguments


def benchmark_model(name: str, arguments: argparse.Namespace) -> ModelResult:
    torch.manual_seed(SEED)
    model = create_model(MODELS[name]).eval()
    initialize_convolutions(model, SEED, "laplace")
    original = apply_plan(model, plan_pruning(model, 0.0)).eval()  # the same network, as a Darknet
    plan = plan_pruning(model, flops_target=arguments.flops_target, channel_multiple=arguments.channel_multiple)
    pruned = apply_plan(model, plan).eval()
    del model
    image = torch.rand(1, 3, arguments.size, arguments.size, generator=torch.Generator().manual_seed(SEED))
    with torch.inference_mode():
        shapes = [[output.shape for output in network(image)] for network in (original, pruned)]
    if shapes[0] != shapes[1]:
        raise AssertionError(f"{name}: pruning changed the head shapes {shapes[0]} -> {shapes[1]}")

    def runner(network: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return network(image)

        return run

    logger.info("%s: %d warm-up + %d timed repetitions", name, arguments.warmup, arguments.repeats)
    runners = {"original": runner(original), "pruned": runner(pruned)}
    with CpuMeter() as meter:
        samples = time_interleaved(runners, arguments.warmup, arguments.repeats)
    size = arguments.size
    return ModelResult(
        name=name,
        bflops=(flops(original, size), flops(pruned, size)),
        parameters=tuple(sum(p.numel() for p in network.parameters()) for network in (original, pruned)),
        samples=(samples["original"], samples["pruned"]),
        removed_filters=plan.removed,
        prunable_filters=plan.prunable_channels,
        background_cores=meter.background_cores,
    )


def format_table(results: Sequence[ModelResult]) -> str:
    lines = [
        "| model | network | BFLOPs | parameters | median ms | p90 ms | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for index, network in enumerate(("original", "pruned")):
            samples = np.asarray(result.samples[index]) * 1e3
            speedup = "1.00x" if index == 0 else f"**{result.speedup:.2f}x**"
            lines.append(
                f"| {result.name} | {network} | {result.bflops[index]:.2f} | {result.parameters[index]:,} "
                f"| {float(np.median(samples)):.1f} | {float(np.percentile(samples, 90)):.1f} | {speedup} |"
            )
    return "\n".join(lines)


def build_report(
    arguments: argparse.Namespace,
    command: str,
    started: datetime.datetime,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    results: Sequence[ModelResult],
) -> str:
    background_text = background_sentence([(result.name, result.background_cores) for result in results])
    pruning = "; ".join(
        f"{result.name}: {result.removed_filters:,} of {result.prunable_filters:,} prunable filters removed "
        f"({100 * result.removed_filters / result.prunable_filters:.1f}%)"
        for result in results
    )
    lines = [
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores (torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}); Python {platform.python_version()}, torch {torch.__version__}",
        f"- Threads: {arguments.threads} (torch.set_num_threads), the same for both networks",
        f"- Command: `{command}`",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) at start "
        f"{', '.join(f'{value:.2f}' for value in loads[0])} / at end {', '.join(f'{value:.2f}' for value in loads[1])}",
        f"- Background CPU use by other processes during each model's timed runs: {background_text}",
        f"- Input {arguments.size}x{arguments.size}, batch 1, fp32, eager `Darknet` under `torch.inference_mode()`; "
        f"{arguments.warmup} warm-up + {arguments.repeats} timed runs per network, interleaved in rotating order; "
        "random Laplace weights (seed 0)",
        f'- Pruning: `prune_channels(model, flops_target={arguments.flops_target}, criterion="l1", '
        f"channel_multiple={arguments.channel_multiple})`, default floor of 10% of each layer; {pruning}. "
        "Prunable in yolov3: the stem, the inner 1x1 of every residual block, the neck and head convs (the residual "
        "streams and the heads' output convs keep all their channels); in yolov3-tiny every conv but the output convs",
        "",
        format_table(results),
        "",
        "BFLOPs: Darknet's count (2 x conv multiply-adds) at the input size. Speed-up: original median / pruned "
        f"median (issue 6 requires at least {REQUIRED_SPEEDUP}x at about half the FLOPs).",
        "",
    ]
    for result in results:
        verdict = "met" if result.speedup >= REQUIRED_SPEEDUP else "**not met**"
        lines.append(
            f"**{result.name}**: {result.bflops[0]:.2f} -> {result.bflops[1]:.2f} BFLOPs "
            f"({100 * result.bflops[1] / result.bflops[0]:.1f}%), {result.parameters[0]:,} -> "
            f"{result.parameters[1]:,} parameters ({100 * result.parameters[1] / result.parameters[0]:.1f}%); "
            f"median {result.medians_ms[0]:.1f} -> {result.medians_ms[1]:.1f} ms, {result.speedup:.2f}x faster "
            f"(>= {REQUIRED_SPEEDUP}x: {verdict})."
        )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    start = start_bench("structured_speed", argv)
    arguments = parse_arguments(start.argv)
    torch.set_num_threads(arguments.threads)
    load_start = os.getloadavg()
    results = [benchmark_model(name, arguments) for name in arguments.models]
    report = build_report(arguments, start.command, start.started, (load_start, os.getloadavg()), results)
    print_and_record(report, arguments.record, arguments.docs, SECTION_TITLE, NOTES_MARKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
