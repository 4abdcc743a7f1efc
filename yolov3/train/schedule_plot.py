"""The learning rate of a training run per optimizer step, as numbers and as a PNG (``python -m yolov3.lr``).

:func:`steps_per_epoch` counts a run's optimizer steps per epoch from its config (the training split's length,
without reading images); :func:`plot_schedule` draws the schedule (warm-up, decay, restarts) per step.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yolov3.data.dataset_config import build_dataset
from yolov3.train.config import TrainConfig
from yolov3.train.schedule import schedule_curve


def steps_per_epoch(config: TrainConfig) -> int:
    """Optimizer steps per epoch: training batches (the last partial one dropped) over ``train.accumulate``."""
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
