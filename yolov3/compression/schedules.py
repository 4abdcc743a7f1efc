"""When to prune and how much: the pruning config and its schedules (one-shot, iterative, gradual).

- one-shot: prune to ``target_sparsity`` once, then fine-tune for ``finetune_epochs``;
- iterative: ``rounds`` rounds, each pruning ``rate`` of the remaining weights and fine-tuning for
  ``finetune_epochs``; after round ``r`` the sparsity is ``1 - (1 - rate)^r`` (``rate`` defaults to the one
  that reaches ``target_sparsity`` after the last round);
- gradual (Zhu & Gupta 2017, "To prune, or not to prune"): every ``frequency`` optimizer steps from
  ``start_step`` (t0) to ``end_step`` (t0 + n Δt) the sparsity rises along the cubic

      s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3

  from ``initial_sparsity`` (s_i) to ``target_sparsity`` (s_f): fast at first, while many redundant weights
  remain, and slowly near the end.

A ``PruningConfig`` is read from YAML with :func:`load_pruning_config`; ``layer_sparsity`` (a per-layer budget
from ``python -m yolov3.prune sensitivity``) replaces the uniform target, each layer scaled by the schedule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from yolov3.config_loading import apply_overrides, load_dataclass, load_yaml


def cubic_sparsity(
    step: int, final_sparsity: float, initial_sparsity: float = 0.0, start_step: int = 0, end_step: int = 1000
) -> float:
    """Zhu & Gupta's sparsity at optimizer step ``step``: 0 before ``start_step``, ``final`` from ``end_step``."""
    if step < start_step:
        return 0.0
    progress = min(1.0, (step - start_step) / (end_step - start_step))
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def is_pruning_step(step: int, start_step: int, end_step: int, frequency: int) -> bool:
    """Whether the gradual schedule prunes at ``step``: t0, t0 + Δt, ... up to and including ``end_step``."""
    return start_step <= step <= end_step and ((step - start_step) % frequency == 0 or step == end_step)


def iterative_sparsity(rate: float, rounds: int) -> float:
    """Sparsity after ``rounds`` rounds that each prune ``rate`` of the remaining weights: 1 - (1 - rate)^rounds."""
    return 1.0 - (1.0 - rate) ** rounds


def rate_for_target(target_sparsity: float, rounds: int) -> float:
    """The per-round rate that reaches ``target_sparsity`` after ``rounds`` rounds."""
    return 1.0 - (1.0 - target_sparsity) ** (1.0 / rounds)


@dataclass(frozen=True)
class PruningConfig:
    """What to prune, how much and when (see the module docstring for the three methods).

    ``scope``: rank weights over all prunable convs together (``global``) or prune each conv to the same
    sparsity (``layer``). ``skip``: convs left dense (``first``, ``heads`` and ``fnmatch`` name patterns, see
    :func:`yolov3.compression.masks.prunable_layers`). Sparsities count the prunable convs only.
    """

    method: Literal["one_shot", "iterative", "gradual"] = "gradual"
    target_sparsity: float = 0.8
    scope: Literal["layer", "global"] = "global"
    rate: float | None = None  # iterative: fraction of the remaining weights pruned per round
    rounds: int = 3  # iterative
    initial_sparsity: float = 0.0  # gradual: s_i, reached at start_step
    start_step: int = 0  # gradual: t0 (optimizer steps)
    end_step: int = 1000  # gradual: t0 + n Δt, where target_sparsity is reached
    frequency: int = 100  # gradual: Δt
    skip: tuple[str, ...] = ("first", "heads")
    finetune_epochs: int = 1  # one-shot: epochs after pruning; iterative: epochs per round
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # per-layer budget instead of a uniform target

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_sparsity < 1.0 or not 0.0 <= self.initial_sparsity <= self.target_sparsity:
            raise ValueError(
                f"0 <= initial_sparsity <= target_sparsity < 1 is required, got {self.initial_sparsity}, "
                f"{self.target_sparsity}"
            )
        if self.rate is not None and not 0.0 < self.rate < 1.0:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")
        if self.rounds < 1 or self.frequency < 1 or self.finetune_epochs < 0 or self.start_step < 0:
            raise ValueError("rounds >= 1, frequency >= 1, finetune_epochs >= 0 and start_step >= 0 are required")
        if self.end_step <= self.start_step:
            raise ValueError(f"end_step ({self.end_step}) must come after start_step ({self.start_step})")
        bad = {name: value for name, value in self.layer_sparsity.items() if not 0.0 <= value < 1.0}
        if bad:
            raise ValueError(f"layer_sparsity values must be in [0, 1), got {bad}")

    @property
    def round_rate(self) -> float:
        """Iterative: the fraction of the remaining weights each round prunes."""
        return self.rate if self.rate is not None else rate_for_target(self.target_sparsity, self.rounds)

    @property
    def final_sparsity(self) -> float:
        """The sparsity the method ends at (iterative with an explicit ``rate``: 1 - (1 - rate)^rounds)."""
        if self.method == "iterative":
            return iterative_sparsity(self.round_rate, self.rounds)
        return self.target_sparsity

    def sparsity_at_step(self, step: int) -> float:
        """Gradual: the scheduled sparsity at optimizer step ``step``."""
        return cubic_sparsity(step, self.target_sparsity, self.initial_sparsity, self.start_step, self.end_step)

    def sparsity_after_round(self, round_number: int) -> float:
        """Iterative: the sparsity after ``round_number`` rounds (capped at ``rounds``)."""
        return iterative_sparsity(self.round_rate, min(round_number, self.rounds))

    def is_pruning_step(self, step: int) -> bool:
        return is_pruning_step(step, self.start_step, self.end_step, self.frequency)


def load_pruning_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> PruningConfig:
    """Read a :class:`PruningConfig` from YAML (its keys at the top level), with ``a=b`` overrides."""
    mapping = apply_overrides(load_yaml(path), list(overrides))
    return load_dataclass(PruningConfig, mapping, source=str(path))
