"""``python -m yolov3.lr --cfg configs/shapes.yaml [--set ...] --out lr.png``: plot a run's learning rate.

Builds the training data loader's length from the config (without reading images) to know the number of
optimizer steps, then draws the schedule — warm-up, decay, restarts — per step, with epoch ticks
(:mod:`yolov3.train.schedule_plot`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yolov3.cli.runner import command
from yolov3.train.config import load_train_config
from yolov3.train.schedule_plot import plot_schedule, steps_per_epoch


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.lr", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", type=Path, required=True, help="training config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps-per-epoch", type=int, help="skip reading the dataset; use this many steps")
    parser.add_argument("--out", type=Path, default=Path("lr.png"), help="output PNG (default lr.png)")
    args = parser.parse_args(argv)
    config = load_train_config(args.cfg, args.overrides)
    per_epoch = args.steps_per_epoch or steps_per_epoch(config)
    rates = plot_schedule(config, per_epoch, args.out)
    print(f"{args.out}: {len(rates)} steps, peak {max(rates):.3g}, final {rates[-1]:.3g}")
    return 0
