"""Share of a CPU training step spent in the YOLOv3 loss and its target building (issue 5: aim below 5%).

One process times, interleaved per repetition in a rotating order so that background load hits all alike:

* ``training step``: ``model(images)``, the loss, ``backward()`` and an SGD step, in train mode;
* ``loss, forward + backward``: :class:`yolov3.loss.YoloLoss` on the (detached) outputs of that model and
  its backward down to those outputs: the loss's whole cost inside a step;
* ``target building``: :func:`~yolov3.loss.assign_targets` and :func:`~yolov3.loss.pad_boxes_per_image`
  alone (part of the previous row).

Images are random and targets are random boxes (a fixed seed), since the cost does not depend on values.

Usage::

    python bench/loss_share.py                               # yolov3-tiny, 416x416, batch 8
    python bench/loss_share.py --model yolov3 --batch 4 --box-loss ciou --repeats 5
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

import numpy as np
import torch

from common import command_line, cpu_name, time_interleaved
from yolov3.loss import LossConfig, YoloLoss, assign_targets, pad_boxes_per_image
from yolov3.models import create_model

logger = logging.getLogger("bench.loss_share")

SEED = 0
STEP, LOSS, TARGETS = "training step", "loss, forward + backward", "target building"


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov3_tiny", choices=["yolov3_tiny", "yolov3"], help="registered model")
    parser.add_argument("--size", type=int, default=416, help="input height and width (default 416)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--num-classes", type=int, default=80, help="classes (default 80, COCO)")
    parser.add_argument("--boxes-per-image", type=int, default=8, help="random boxes per image (default 8)")
    parser.add_argument("--box-loss", default="darknet", choices=["darknet", "giou", "ciou"])
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    return parser.parse_args(argv)


def random_targets(batch: int, boxes_per_image: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Targets (batch * boxes_per_image, 6): (image, class, cx, cy, w, h), boxes inside the image."""
    count = batch * boxes_per_image
    image_index = torch.arange(batch).repeat_interleave(boxes_per_image).float()  # (N,)
    labels = torch.randint(num_classes, (count,), generator=generator).float()  # (N,)
    sizes = 0.02 + 0.5 * torch.rand(count, 2, generator=generator)  # (N, 2) w, h in 0..1
    centres = sizes / 2 + (1 - sizes) * torch.rand(count, 2, generator=generator)  # (N, 2) cx, cy
    return torch.cat([image_index[:, None], labels[:, None], centres, sizes], dim=1)


def make_runners(arguments: argparse.Namespace) -> dict[str, Callable[[], object]]:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = create_model(arguments.model, num_classes=arguments.num_classes).train()
    loss = YoloLoss(model.head_specs, LossConfig(box_loss=arguments.box_loss))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = torch.rand(arguments.batch, 3, arguments.size, arguments.size, generator=generator)
    targets = random_targets(arguments.batch, arguments.boxes_per_image, arguments.num_classes, generator)
    input_size = (arguments.size, arguments.size)
    with torch.no_grad():
        fixed_outputs = [output.detach() for output in model(images)]
    grid_sizes = [(output.shape[2], output.shape[3]) for output in fixed_outputs]

    def training_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(model(images), targets, input_size).total.backward()
        optimizer.step()

    def loss_forward_backward() -> None:
        outputs = [output.clone().requires_grad_() for output in fixed_outputs]
        loss(outputs, targets, input_size).total.backward()

    def target_building() -> None:
        assign_targets(targets, model.head_specs, grid_sizes, input_size)
        pad_boxes_per_image(targets, arguments.batch, input_size)

    return {STEP: training_step, LOSS: loss_forward_backward, TARGETS: target_building}


def build_report(arguments: argparse.Namespace, command: str, loads: tuple[float, float], samples: dict) -> str:
    step_median = statistics.median(samples[STEP])
    lines = [
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores; "
        f"Python {platform.python_version()}, torch {torch.__version__}; threads {arguments.threads}",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average (1 min) at "
        f"start / end: {loads[0]:.2f} / {loads[1]:.2f}",
        f"- {arguments.model}, {arguments.size}x{arguments.size}, batch {arguments.batch}, "
        f"{arguments.num_classes} classes, {arguments.boxes_per_image} random boxes per image, box loss "
        f"{arguments.box_loss}; {arguments.warmup} warm-up + {arguments.repeats} timed repetitions, interleaved",
        "",
        "| part | median ms | p90 ms | share of a training step |",
        "|---|---:|---:|---:|",
    ]
    for name, values in samples.items():
        median = statistics.median(values)
        p90 = float(np.percentile(np.asarray(values), 90))
        lines.append(f"| {name} | {median * 1e3:.1f} | {p90 * 1e3:.1f} | {100 * median / step_median:.1f}% |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(arguments.threads)
    load_at_start = os.getloadavg()[0]
    runners = make_runners(arguments)
    samples = time_interleaved(runners, arguments.warmup, arguments.repeats, logger)
    command = command_line("bench/loss_share.py", argv)
    print(build_report(arguments, command, (load_at_start, os.getloadavg()[0]), samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
