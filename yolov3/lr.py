"""``python -m yolov3.lr --cfg configs/shapes.yaml [--set ...] --out lr.png``: plot a run's learning rate.

Builds the training data loader's length from the config (without reading images) to know the number of
optimizer steps, then draws the schedule — warm-up, decay, restarts — per step, with epoch ticks.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yolov3.config_loading import ConfigError
from yolov3.data.dataset_config import build_dataset
from yolov3.train.config import TrainConfig, load_train_config
from yolov3.train.schedule import schedule_curve


def steps_per_epoch(config: TrainConfig) -> int:
    if config.train.overfit_batches:
        batches = config.train.overfit_batches
    else:
        images = len(build_dataset(config.data.dataset, "train", progress=False))
        batches = images // config.data.batch_size  # the training loader drops the last partial batch
    return max(1, math.ceil(batches / config.train.accumulate))


def plot_schedule(config: TrainConfig, per_epoch: int, path: Path) -> list[float]:
    """Save the learning rate per optimizer step to ``path``; returns the rates."""
    total = per_epoch * config.train.epochs
    rates = [config.optimizer.learning_rate * factor for factor in schedule_curve(total, config.schedule)]
    figure = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(range(total), rates)
    axes.set_xlabel(f"optimizer step ({per_epoch} per epoch, {config.train.epochs} epochs)")
    axes.set_ylabel("learning rate")
    warmup = config.schedule.warmup_steps if config.schedule.warmup != "none" else 0
    axes.set_title(
        f"{config.optimizer.name}, {config.schedule.policy}, warm-up {config.schedule.warmup} ({warmup} steps)"
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.lr", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", type=Path, required=True, help="training config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps-per-epoch", type=int, help="skip reading the dataset; use this many steps")
    parser.add_argument("--out", type=Path, default=Path("lr.png"), help="output PNG (default lr.png)")
    args = parser.parse_args(argv)
    try:
        config = load_train_config(args.cfg, args.overrides)
        per_epoch = args.steps_per_epoch or steps_per_epoch(config)
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rates = plot_schedule(config, per_epoch, args.out)
    print(f"{args.out}: {len(rates)} steps, peak {max(rates):.3g}, final {rates[-1]:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
