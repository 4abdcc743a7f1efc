"""Learning-rate schedules as a factor of the base rate per optimizer step, wrapped in ``LambdaLR``.

A schedule is a warm-up (Darknet's burn-in ``(i / n) ** 4``, linear, exponential, or none) followed by a
decay policy over the remaining steps: Darknet's ``steps``/``scales``, cosine, cosine with warm restarts
(each cycle with its own warm-up, SGDR-style), polynomial, or constant. The factor is a pure function of
the step index, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule; ``step_fractions`` are fractions of the total optimizer steps."""

    policy: Literal["steps", "cosine", "cosine_restarts", "poly", "constant"] = "steps"
    warmup: Literal["burn_in", "linear", "exponential", "none"] = "burn_in"
    warmup_steps: int = 1000
    burn_in_power: float = 4.0  # Darknet's burn-in exponent
    step_fractions: tuple[float, ...] = (0.8, 0.9)  # Darknet's steps=400000,450000 of max_batches=500200
    scales: tuple[float, ...] = (0.1, 0.1)
    min_factor: float = 0.01  # floor of cosine schedules, as a fraction of the base rate
    restart_cycles: int = 3  # cosine_restarts: number of cycles, each `restart_multiplier` times longer
    restart_multiplier: float = 1.0
    restart_warmup_steps: int = 0  # warm-up at the start of every restart
    poly_power: float = 4.0

    def __post_init__(self) -> None:
        if len(self.step_fractions) != len(self.scales):
            raise ValueError(f"step_fractions {self.step_fractions} and scales {self.scales} differ in length")
        if any(not 0.0 < fraction < 1.0 for fraction in self.step_fractions):
            raise ValueError(f"step_fractions must lie in (0, 1), got {self.step_fractions}")
        if self.warmup_steps < 0 or self.restart_cycles < 1 or self.restart_multiplier <= 0:
            raise ValueError("warmup_steps >= 0, restart_cycles >= 1 and restart_multiplier > 0 are required")


def _warmup_factor(kind: str, step: int, length: int, power: float) -> float:
    if kind == "none" or length <= 0 or step >= length:
        return 1.0
    progress = step / length
    if kind == "burn_in":
        return progress**power
    if kind == "linear":
        return progress
    return math.exp(5.0 * (progress - 1.0))  # exponential: from e^-5 up to 1


def _cycle_position(step: int, total: int, config: ScheduleConfig) -> tuple[int, int]:
    """(step within the current cycle, length of that cycle) for cosine with restarts."""
    weights = [config.restart_multiplier**cycle for cycle in range(config.restart_cycles)]
    lengths = [max(1, round(total * weight / sum(weights))) for weight in weights]
    for length in lengths[:-1]:
        if step < length:
            return step, length
        step -= length
    return min(step, lengths[-1]), lengths[-1]


def lr_factor(step: int, total_steps: int, config: ScheduleConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` of ``total_steps``."""
    total_steps = max(1, total_steps)
    warmup = _warmup_factor(config.warmup, step, config.warmup_steps, config.burn_in_power)
    decay_start = min(config.warmup_steps if config.warmup != "none" else 0, total_steps - 1)
    decay_step = max(0, step - decay_start)
    decay_total = max(1, total_steps - decay_start)
    progress = min(1.0, decay_step / decay_total)
    if config.policy == "constant":
        decay = 1.0
    elif config.policy == "steps":
        decay = math.prod(
            scale
            for fraction, scale in zip(config.step_fractions, config.scales, strict=True)
            if step >= fraction * total_steps
        )
    elif config.policy == "poly":
        decay = (1.0 - progress) ** config.poly_power
    elif config.policy == "cosine":
        decay = config.min_factor + (1 - config.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    else:  # cosine_restarts
        position, length = _cycle_position(decay_step, decay_total, config)
        cosine = config.min_factor + (1 - config.min_factor) * 0.5 * (1 + math.cos(math.pi * position / length))
        decay = cosine * _warmup_factor("linear", position, config.restart_warmup_steps, 1.0) if decay_step else cosine
    return warmup * decay


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, config: ScheduleConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))


def schedule_curve(total_steps: int, config: ScheduleConfig) -> list[float]:
    """The factor at every step, for plots."""
    return [lr_factor(step, total_steps, config) for step in range(total_steps)]
