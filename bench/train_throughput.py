"""Training throughput on this machine: images per second, peak memory and the loss's share of a step.

For each model (yolov3-tiny and yolov3 at 416, batch 8, fp32 by default) one process times full training
steps through the library's own :class:`~yolov3.train.step.StepRunner` (forward, :class:`YoloLoss`,
backward, SGD step), and, interleaved with them, the loss alone (forward + backward on detached outputs)
and the target building alone. Peak memory is measured in a fresh child process per model (VmHWM growth
from after the imports to after a few training steps).

Usage::

    python bench/train_throughput.py                       # print the table
    python bench/train_throughput.py --record              # and write it into docs/benchmarks.md
    python bench/train_throughput.py --device cuda --amp fp16 --models yolov3
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from common import command_line, cpu_name, random_targets
from docs_section import record_section
from yolov3.loss import YoloLoss, assign_targets, pad_boxes_per_image
from yolov3.models import create_model
from yolov3.train.optimizer import OptimizerConfig, build_optimizer
from yolov3.train.step import StepRunner

SECTION = "## Training throughput (issue 5)"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
MODELS = {"yolov3-tiny": "yolov3_tiny", "yolov3": "yolov3"}


def make_runners(name: str, arguments: argparse.Namespace) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    device = torch.device(arguments.device)
    model = create_model(MODELS[name]).to(device).train()
    size = arguments.size
    images = torch.rand(arguments.batch, 3, size, size, device=device)
    targets = random_targets(arguments.batch, 8, 80, torch.Generator().manual_seed(0)).to(device)
    criterion = YoloLoss(model.head_specs)
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", learning_rate=1e-4))
    runner = StepRunner(model, criterion, optimizer, amp=arguments.amp, device=device)
    with torch.no_grad():
        outputs = [output.detach() for output in model(images)]
    grids = [(output.shape[2], output.shape[3]) for output in outputs]

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        runner.micro_step(images, targets)
        synchronize()

    def loss() -> None:
        leaves = [output.clone().requires_grad_() for output in outputs]
        criterion(leaves, targets, (size, size)).total.backward()
        synchronize()

    def target_building() -> None:
        assign_targets(targets, model.head_specs, grids, (size, size))
        pad_boxes_per_image(targets, arguments.batch, (size, size))
        synchronize()

    return {"training step": step, "loss, forward + backward": loss, "target building": target_building}


def time_interleaved(runners: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    for runner in runners.values():
        for _ in range(warmup):
            runner()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start = time.perf_counter()
            runners[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def _high_water_mark_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def _reset_high_water_mark() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _peak_child(name: str, arguments: argparse.Namespace, queue: multiprocessing.Queue) -> None:
    torch.set_num_threads(arguments.threads)
    _reset_high_water_mark()
    baseline = _high_water_mark_mb()
    runners = make_runners(name, arguments)
    for _ in range(3):
        runners["training step"]()
    queue.put(_high_water_mark_mb() - baseline)


def peak_memory_mb(name: str, arguments: argparse.Namespace) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_child, args=(name, arguments, queue))
    process.start()
    value = queue.get(timeout=900)
    process.join()
    return value


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--record", action="store_true", help=f"write the table into {DOCS.name}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    load_before = os.getloadavg()[0]
    rows = []
    for name in arguments.models:
        samples = time_interleaved(make_runners(name, arguments), arguments.warmup, arguments.repeats)
        step, loss, targets = (statistics.median(samples[key]) for key in samples)
        memory = float("nan") if arguments.no_memory else peak_memory_mb(name, arguments)
        rows.append(
            f"| {name} | {arguments.size} | {arguments.batch} | {arguments.amp} | {step * 1000:.0f} | "
            f"{arguments.batch / step:.2f} | {memory:.0f} | {loss * 1000:.1f} ({loss / step:.1%}) | "
            f"{targets * 1000:.2f} ({targets / step:.2%}) |"
        )
    device = (
        torch.cuda.get_device_name() if arguments.device == "cuda" else f"{cpu_name()}, {arguments.threads} threads"
    )
    command = command_line("bench/train_throughput.py", argv if argv is not None else sys.argv[1:])
    report = "\n".join(
        [
            SECTION,
            "",
            f"- Machine: {device}; torch {torch.__version__}",
            f"- Command: `{command.strip()}`",
            f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) before / after: "
            f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
            f"- Median of {arguments.repeats} steps after {arguments.warmup} warm-up steps; random images and 8 "
            "random boxes per image (80 classes); SGD; the loss and target-building rows are timed separately, "
            "interleaved with the steps.",
            "",
            "| model | size | batch | AMP | step ms | images/s | peak MB | loss + backward ms (share) | "
            "target building ms (share) |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    print(report)
    if arguments.record:
        record_section(DOCS, SECTION, report.split("\n", 2)[2])  # the body without the title line
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
