"""Training loader throughput beside the training step it must feed, on this CPU.

In one run, on synthetic images written to a temporary folder by :mod:`yolov3.data.shapes_dataset` (PNG,
640x480 by default, read back through the YOLO txt dataset as training would):

* ``loader``: images per second of :func:`yolov3.data.loader.build_train_loader` at a fixed 416 input
  with the default augmentation (mosaic of 4, Affine scale/translate, ColorJitter hue/saturation/exposure,
  horizontal flip, rare grey / CLAHE, letterbox), batch 8, 2 workers, the main process only waiting;
* ``step``: images per second of one training step of ``create_model("yolov3_tiny")`` at batch 8 on
  random tensors: forward, a placeholder loss (mean of squares of every raw head output, summed: the real
  YOLO loss does not exist yet), backward and an SGD step;
* ``fed step``: the two together, the loader's workers preparing batches while the main process trains,
  i.e. what a training loop would see on this machine.

The loader keeps up when its rate exceeds the step's; the report states the ratio. ``--record`` writes the
report into the "Data loader (issue 4)" section of ``docs/benchmarks.md``, leaving other sections alone.

Usage::

    python bench/loader.py                 # print the report
    python bench/loader.py --record        # ... and record it in docs/benchmarks.md
    python bench/loader.py --images 128 --batches 10 --steps 5
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations
import cv2
import torch

from common import cpu_name, endless, start_bench
from docs_section import print_and_record
from yolov3.data.collate import Batch
from yolov3.data.dataset_config import build_dataset, load_dataset_config
from yolov3.data.loader import build_train_loader
from yolov3.data.multiscale import MultiScaleConfig
from yolov3.data.shapes_dataset import generate_shapes_dataset
from yolov3.data.transforms import AugmentConfig
from yolov3.models import create_model

logger = logging.getLogger("bench.loader")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOCS = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Data loader (issue 4)"
MODEL = "yolov3_tiny"
ROUNDS = 2  # blocks of ready-tensor steps and fed steps, alternating


@dataclass(frozen=True)
class Rate:
    """A measured stage: seconds per batch over the timed batches."""

    stage: str
    batch_size: int
    seconds: list[float]

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_second(self) -> float:
        """Images over the total time (batches from two workers arrive unevenly, so not from the median)."""
        return self.batch_size * len(self.seconds) / sum(self.seconds)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/loader.py", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="synthetic training images (default 256)")
    parser.add_argument("--image-height", type=int, default=480)
    parser.add_argument("--image-width", type=int, default=640)
    parser.add_argument("--size", type=int, default=416, help="network input size (default 416)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=24, help="timed loader batches (default 24)")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps of each kind (default 12)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches / steps per block (default 1)")
    parser.add_argument("--record", action="store_true", help="write the report into docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    return parser.parse_args(argv)


def timed_batches(batches: Iterator[Batch], count: int, warmup: int) -> list[float]:
    """Seconds to get each of ``count`` batches from ``batches`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        next(batches)
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        next(batches)
        seconds.append(time.perf_counter() - start)
    return seconds


class TrainingStep:
    """One SGD step of the model on a batch, with a placeholder loss until the YOLO loss exists."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = create_model(MODEL).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)

    def __call__(self, images: torch.Tensor) -> None:
        outputs = self.model(images)  # [(B, A*(5+C), H/s, W/s), ...]
        loss = sum(output.pow(2).mean() for output in outputs)  # placeholder for the YOLO loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def time_steps(step: TrainingStep, batches: Iterator[torch.Tensor], count: int, warmup: int) -> list[float]:
    """Seconds per step (getting the batch included) of ``count`` steps after ``warmup`` untimed ones."""
    seconds = []
    for number in range(warmup + count):
        start = time.perf_counter()
        step(next(batches))
        if number >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def format_table(rates: Sequence[Rate]) -> str:
    lines = ["| stage | batch | images/s | median ms/batch |", "|---|---:|---:|---:|"]
    for rate in rates:
        lines.append(
            f"| {rate.stage} | {rate.batch_size} | {rate.images_per_second:.1f} | {rate.median_seconds * 1e3:.0f} |"
        )
    return "\n".join(lines)


def build_report(
    arguments: argparse.Namespace, command: str, started: datetime.datetime, loads: tuple[float, float], rates: list
) -> str:
    loader, step, fed = rates
    ratio = loader.images_per_second / step.images_per_second
    verdict = "keeps up with" if ratio >= 1 else "does NOT keep up with"
    busy = (
        " **The machine was busy (load above 0.5 per core); treat the rates as indicative.**"
        if max(loads) > 0.5 * (os.cpu_count() or 1)
        else ""
    )
    return "\n".join(
        [
            f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), albumentations "
            f"{albumentations.__version__}, OpenCV {cv2.__version__}",
            f"- Command: `{command}`",
            f"- Date: {started:%Y-%m-%d %H:%M} UTC; load average (1 min) at start / end: "
            f"{loads[0]:.2f} / {loads[1]:.2f}.{busy}",
            f"- Data: {arguments.images} synthetic {arguments.image_width}x{arguments.image_height} PNG images "
            "(yolov3.data.synthetic, textured backgrounds, 1-6 shapes each) read through the YOLO txt dataset",
            f"- Loader: `build_train_loader`, input {arguments.size}x{arguments.size} (multi-scale off), batch "
            f"{arguments.batch_size}, {arguments.workers} workers, default `AugmentConfig` (mosaic p=1, Affine "
            "scale 0.5-1.5 / translate 0.1, ColorJitter hue 0.1 / saturation and exposure 1.5, HorizontalFlip "
            f"0.5, ToGray and CLAHE 0.01, letterbox); {max(arguments.warmup, 2 * arguments.workers + 1)} untimed + "
            f"{arguments.batches} timed batches",
            f"- Step: `create_model('{MODEL}')`, fp32, forward + backward + SGD step at batch {arguments.batch_size}, "
            f"{arguments.size}x{arguments.size}; **placeholder loss** (sum over heads of the mean squared raw "
            f"output) until the YOLO loss exists; {arguments.steps} timed steps on ready tensors and "
            f"{arguments.steps} fed by the loader, in {ROUNDS} alternating blocks (each after {arguments.warmup} "
            "untimed)",
            "",
            format_table(rates),
            "",
            f"The loader alone produces {loader.images_per_second:.1f} images/s, {ratio:.1f}x the "
            f"{step.images_per_second:.1f} images/s the training step consumes: it {verdict} the step. Fed by the "
            f"loader (both sharing the {os.cpu_count()} cores), the step runs at {fed.images_per_second:.1f} "
            f"images/s, {fed.images_per_second / step.images_per_second:.0%} of its rate on ready tensors.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    start = start_bench("loader", argv)
    arguments = parse_arguments(start.argv)
    load_at_start = os.getloadavg()[0]
    batch_size = arguments.batch_size
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as temporary:
        logger.info("writing %d synthetic images to %s", arguments.images, temporary)
        layout = generate_shapes_dataset(
            temporary,
            num_train=arguments.images,
            num_val=0,
            image_size=(arguments.image_height, arguments.image_width),
            formats=("yolo",),
        )
        dataset = build_dataset(load_dataset_config(layout.yolo_yaml), "train")
        fixed = MultiScaleConfig(enabled=False)

        def make_loader() -> torch.utils.data.DataLoader:
            return build_train_loader(dataset, AugmentConfig(), batch_size, arguments.workers, fixed, 0, arguments.size)

        logger.info("timing the loader alone")
        # Untimed first: worker start-up and the batches prefetched meanwhile (prefetch_factor 2 per worker).
        loader_warmup = max(arguments.warmup, 2 * arguments.workers + 1)
        loader_seconds = timed_batches(endless(make_loader()), arguments.batches, loader_warmup)

        # Ready and fed steps alternate in blocks, so that drifting background load hits both alike.
        step = TrainingStep()
        ready = torch.rand(batch_size, 3, arguments.size, arguments.size)
        fed = (batch.images for batch in endless(make_loader()))
        step_seconds, fed_seconds = [], []
        per_block = max(1, arguments.steps // ROUNDS)
        for round_number in range(ROUNDS):
            logger.info("timing the training step, round %d of %d: ready tensors, then fed", round_number + 1, ROUNDS)
            step_seconds += time_steps(step, iter(lambda: ready, None), per_block, arguments.warmup)
            fed_seconds += time_steps(step, fed, per_block, arguments.warmup)

    rates = [
        Rate(
            f"training loader ({arguments.workers} workers, full augmentation incl. mosaic)", batch_size, loader_seconds
        ),
        Rate(f"training step, {MODEL} (placeholder loss, SGD), ready tensors", batch_size, step_seconds),
        Rate(f"training step fed by the loader ({arguments.workers} workers)", batch_size, fed_seconds),
    ]
    report = build_report(arguments, start.command, start.started, (load_at_start, os.getloadavg()[0]), rates)
    print_and_record(report, arguments.record, arguments.docs, SECTION_TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
