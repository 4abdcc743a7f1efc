"""Per-layer pruning sensitivity, and a per-layer sparsity budget derived from it.

:func:`measure_sensitivity` prunes one conv at a time, alone, by magnitude at each level (10%..90% of its
weights by default), measures the model with an ``evaluate`` callable, and restores the conv before the
next measurement. Two measures come ready-made: :func:`loss_proxy` (the YOLO loss on validation batches, in
eval mode: fast) and mAP@0.5 through :func:`yolov3.evaluation.validate.validate` (slower, the real thing).
:func:`measure_global_sensitivity` adds the global curve: all the measured convs pruned together at each level,
the smallest weights over all of them ranked at once (``magnitude_prune(model, level, "global", layers)``),
optionally with a step between pruning and measuring (``adapt``: e.g. a short fine-tuning with the masks held).
:func:`plot_sensitivity` draws the per-layer curves thin and the global ones thick.

The budget rule (:func:`sensitivity_budget`), for a target sparsity T over the measured convs:

1. a layer's *tolerance* t_l is the largest level such that this level and every smaller one degrade the
   measure by at most ``tolerance`` (mAP: an absolute drop; loss: a relative increase over the baseline);
   a layer that tolerates not even the smallest level gets that smallest level, so that every layer shares;
2. the budget is s_l = min(max_sparsity, a * t_l) with the one scale a > 0 (found by bisection) for which
   sum(n_l * s_l) = T * sum(n_l), n_l being the layer's weight count: sensitive layers get proportionally
   less, and the target is met (up to rounding each layer to whole weights).

The budget is written as a YAML :class:`~yolov3.compression.schedules.PruningConfig` (one-shot, per-layer
``layer_sparsity``), usable as ``magnitude_prune(model, load_sparsity_budget(path), scope="layer")`` or
``python -m yolov3.prune oneshot --budget budget.yaml``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from torch import nn
from torch.nn.utils import prune
from tqdm import tqdm

from yolov3.atomic import write_text_atomic
from yolov3.compression.masks import (
    Layers,
    finalize_pruning,
    is_pruned,
    magnitude_prune,
    prunable_layers,
    sparsity_report,
    unwrap,
)
from yolov3.compression.schedules import load_pruning_config
from yolov3.data.collate import Batch
from yolov3.loss.yolo_loss import YoloLoss

logger = logging.getLogger(__name__)

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
Metric = Literal["loss", "map50"]


@dataclass(frozen=True)
class SensitivityRow:
    """The measure with ``layer`` alone pruned to ``level``."""

    layer: str
    parameters: int
    level: float
    value: float


@dataclass(frozen=True)
class GlobalPoint:
    """The measure with every measured conv pruned together to ``level``; ``sparsity`` is the one measured
    (over those convs) on the model that was scored: the level, up to rounding, when the masks were held."""

    level: float
    value: float
    sparsity: float


@dataclass(frozen=True)
class GlobalCurve:
    """All the measured convs (``parameters`` weights) pruned together at each level, after ``finetune_epochs``
    epochs of fine-tuning with the masks held (0: measured right after pruning)."""

    label: str
    parameters: int
    finetune_epochs: int
    points: tuple[GlobalPoint, ...]

    def curve(self) -> list[tuple[float, float]]:
        return [(point.level, point.value) for point in self.points]


def global_label(finetune_epochs: int) -> str:
    """``global``, or ``global, N epochs fine-tuned``: the curve's name in the tables and the plot's legend."""
    if finetune_epochs <= 0:
        return "global"
    return f"global, {finetune_epochs} epoch{'s' if finetune_epochs != 1 else ''} fine-tuned"


@dataclass
class SensitivityResult:
    """Measurements of every layer at every level, the unpruned baseline, and the global curves (if measured).

    The budget reads the per-layer ``rows`` only; ``global_curves`` are for the tables and the plot."""

    metric: Metric
    baseline: float
    levels: tuple[float, ...]
    rows: list[SensitivityRow] = field(default_factory=list)
    global_curves: list[GlobalCurve] = field(default_factory=list)

    @property
    def layers(self) -> list[tuple[str, int]]:
        """``(layer, parameters)`` in measurement order."""
        return list(dict.fromkeys((row.layer, row.parameters) for row in self.rows))

    def curve(self, layer: str) -> list[tuple[float, float]]:
        return [(row.level, row.value) for row in self.rows if row.layer == layer]

    def degradation(self, value: float) -> float:
        """How much worse than the baseline: mAP drop (absolute), or loss increase (relative)."""
        if self.metric == "map50":
            return self.baseline - value
        return (value - self.baseline) / max(abs(self.baseline), 1e-12)

    def format_markdown(self) -> str:
        name = "mAP@0.5" if self.metric == "map50" else "validation loss"
        title = f"{name} with one layer pruned alone (baseline {self.baseline:.4f})"
        if self.global_curves:
            title += "; global: all the layers together, ranked by magnitude over all of them"
        lines = [
            title,
            "",
            "| layer | parameters | " + " | ".join(f"{level:.0%}" for level in self.levels) + " |",
            "| --- | ---: |" + " ---: |" * len(self.levels),
        ]
        for layer, parameters in self.layers:
            values = " | ".join(f"{value:.4f}" for _, value in self.curve(layer))
            lines.append(f"| {layer} | {parameters:,} | {values} |")
        for curve in self.global_curves:
            values = " | ".join(f"{value:.4f}" for _, value in curve.curve())
            lines.append(f"| {curve.label} | {curve.parameters:,} | {values} |")
        return "\n".join(lines) + "\n"

    def format_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["layer", "parameters", "level", self.metric, "degradation"])
        for row in self.rows:
            writer.writerow(
                [row.layer, row.parameters, f"{row.level:g}", f"{row.value:.6f}", f"{self.degradation(row.value):.6f}"]
            )
        for curve in self.global_curves:
            for point in curve.points:
                degradation = self.degradation(point.value)
                fields = [curve.label, curve.parameters, f"{point.level:g}", f"{point.value:.6f}", f"{degradation:.6f}"]
                writer.writerow(fields)
        return buffer.getvalue()


def measure_sensitivity(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    layers: Layers | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    metric: Metric = "loss",
    progress: bool = True,
) -> SensitivityResult:
    """Prune each of ``layers`` (default :func:`prunable_layers`) alone at each level and ``evaluate`` the model.

    Pruning is ``prune.l1_unstructured`` on the dense conv; afterwards the conv gets its weights back, so the
    model ends as it started. ``model`` must be unpruned (finalize a pruned one first).
    """
    levels = _check_levels(model, levels)
    layers = list(layers) if layers is not None else prunable_layers(model)
    result = SensitivityResult(metric, float(evaluate(model)), levels)
    steps = tqdm(total=len(layers) * len(levels), desc="sensitivity", leave=False, disable=not progress)
    for name, conv in layers:
        saved = conv.weight.detach().clone()
        for level in levels:
            prune.l1_unstructured(conv, "weight", amount=level)
            try:
                value = float(evaluate(model))
            finally:
                prune.remove(conv, "weight")
                with torch.no_grad():
                    conv.weight.copy_(saved)
            result.rows.append(SensitivityRow(name, saved.numel(), level, value))
            steps.update()
    steps.close()
    return result


def _check_levels(model: nn.Module, levels: Iterable[float]) -> tuple[float, ...]:
    """``levels`` sorted, after checking them and that ``model`` is unpruned."""
    if is_pruned(model):
        raise ValueError("measure sensitivity on an unpruned (or finalized) model")
    levels = tuple(sorted(float(level) for level in levels))
    if not levels or not all(0.0 < level <= 1.0 for level in levels):
        raise ValueError(f"levels must be in (0, 1], got {levels}")
    return levels


def measure_global_sensitivity(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    layers: Layers | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    adapt: Callable[[nn.Module, float], nn.Module] | None = None,
    finetune_epochs: int = 0,
    progress: bool = True,
) -> GlobalCurve:
    """Prune all of ``layers`` (default :func:`prunable_layers`) together to each level, by global magnitude
    (``magnitude_prune(model, level, "global", layers)``), and ``evaluate`` the model.

    ``adapt(pruned_model, level)``, when given, returns the model to evaluate instead (e.g. a copy fine-tuned
    with the masks held for ``finetune_epochs`` epochs; the number only names the curve). Each point records the
    sparsity of the evaluated model's convs of the same names. Afterwards the masks are removed and the convs get
    their weights back, so ``model`` ends as it started; it must be unpruned.
    """
    levels = _check_levels(model, levels)
    layers = list(layers) if layers is not None else prunable_layers(model)
    saved = [conv.weight.detach().clone() for _, conv in layers]
    points = []
    for level in tqdm(levels, desc=global_label(finetune_epochs), leave=False, disable=not progress):
        magnitude_prune(model, level, "global", layers)
        try:
            scored = adapt(model, level) if adapt is not None else model
            value = float(evaluate(scored))
            modules = dict(unwrap(scored).named_modules())
            sparsity = sparsity_report(scored, [(name, modules[name]) for name, _ in layers]).sparsity
        finally:
            finalize_pruning(model)
            with torch.no_grad():
                for (_, conv), weight in zip(layers, saved, strict=True):
                    conv.weight.copy_(weight)
        logger.info("%s, %g pruned: measure %.4f, sparsity %.4f", global_label(finetune_epochs), level, value, sparsity)
        points.append(GlobalPoint(level, value, sparsity))
    return GlobalCurve(global_label(finetune_epochs), sum(weight.numel() for weight in saved), finetune_epochs,
                       tuple(points))  # fmt: skip


@torch.no_grad()
def loss_proxy(model: nn.Module, batches: Iterable[Batch], criterion: YoloLoss, device: torch.device | str) -> float:
    """The mean YOLO loss of ``model`` (eval mode) over ``batches``: a fast stand-in for mAP."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        images = batch.images.to(device)
        outputs = model(images)
        loss = criterion([output.float() for output in outputs], batch.targets.to(device), tuple(images.shape[2:]))
        total += float(loss.total) * len(batch)
        count += len(batch)
    model.train(was_training)
    return total / max(count, 1)


def layer_tolerance(result: SensitivityResult, layer: str, tolerance: float) -> float:
    """The largest level up to which every measured level of ``layer`` degrades by at most ``tolerance``."""
    tolerated = 0.0
    for level, value in result.curve(layer):
        if result.degradation(value) > tolerance:
            break
        tolerated = level
    return tolerated


def sensitivity_budget(
    result: SensitivityResult, target_sparsity: float, tolerance: float, max_sparsity: float = 0.95
) -> dict[str, float]:
    """Per-layer sparsities that total ``target_sparsity`` over the measured layers (rule in the module docstring)."""
    if not 0.0 <= target_sparsity <= max_sparsity < 1.0:
        raise ValueError(f"0 <= target_sparsity <= max_sparsity < 1 is required, got {target_sparsity}, {max_sparsity}")
    layers = result.layers
    if not layers:
        raise ValueError("no measured layers to budget")
    shares = {name: max(layer_tolerance(result, name, tolerance), result.levels[0]) for name, _ in layers}
    sizes = dict(layers)
    total = sum(sizes.values())

    def overall(scale: float) -> float:
        return sum(sizes[name] * min(max_sparsity, scale * share) for name, share in shares.items()) / total

    low, high = 0.0, max_sparsity / min(shares.values())  # at `high` every layer is at max_sparsity
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if overall(middle) < target_sparsity else (low, middle)
    scale = (low + high) / 2
    return {name: min(max_sparsity, scale * share) for name, share in shares.items()}


def write_budget(path: str | os.PathLike, budget: dict[str, float], target_sparsity: float, note: str = "") -> None:
    """Write ``budget`` as a one-shot, per-layer pruning config (YAML) for ``load_pruning_config``."""
    config = {
        "method": "one_shot",
        "target_sparsity": float(target_sparsity),
        "scope": "layer",
        "layer_sparsity": {name: round(float(value), 6) for name, value in budget.items()},
    }
    header = "".join(f"# {line}\n" for line in note.splitlines())
    write_text_atomic(path, header + yaml.safe_dump(config, sort_keys=False))


def load_sparsity_budget(path: str | os.PathLike) -> dict[str, float]:
    """The ``{conv name: sparsity}`` budget of a YAML written by :func:`write_budget`."""
    return dict(load_pruning_config(path).layer_sparsity)


def plot_sensitivity(result: SensitivityResult, path: str | os.PathLike) -> None:
    """The curves as a PNG (matplotlib Agg): the measure against the fraction of weights pruned.

    One thin line per layer (pruned alone; coloured by depth, first layer dark), one thick line per global curve
    (all the layers together: red and solid without fine-tuning, blue and dashed after it) and the unpruned
    baseline (black, dashed). The legend names the layers when there are at most 12 of them, else a colour bar
    gives their depth. A loss that grows past 10 times its baseline is drawn on a log scale.
    """
    figure = Figure(figsize=(11, 6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    layers = result.layers
    colours = ListedColormap([colormaps["viridis"](index / 255 * 0.9) for index in range(256)])  # no pale yellow
    name_layers = len(layers) <= 12
    for index, (layer, _) in enumerate(layers):
        points = [(0.0, result.baseline), *result.curve(layer)]
        colour = colours(index / max(1, len(layers) - 1))
        axes.plot([level for level, _ in points], [value for _, value in points], color=colour, linewidth=0.8,
                  alpha=0.75, label=layer if name_layers else None)  # fmt: skip
    if layers and not name_layers:
        axes.plot([], [], color=colours(0.5), linewidth=0.8, label=f"one layer alone ({len(layers)} layers, thin)")
        bar = figure.colorbar(ScalarMappable(Normalize(1, len(layers)), colours), ax=axes, pad=0.01, fraction=0.04)
        bar.set_label("layer pruned alone (1 = nearest the input)")
    for curve in result.global_curves:
        finetuned = curve.finetune_epochs > 0
        points = curve.curve() if finetuned else [(0.0, result.baseline), *curve.curve()]  # dense: not fine-tuned
        axes.plot([level for level, _ in points], [value for _, value in points], linewidth=3, marker="o",
                  color="tab:blue" if finetuned else "tab:red", linestyle="--" if finetuned else "-", markersize=4,
                  label=f"{curve.label} (all layers together)", zorder=3)  # fmt: skip
    axes.axhline(result.baseline, color="black", linestyle="--", linewidth=1, label=f"unpruned ({result.baseline:.4f})")
    values = [row.value for row in result.rows] + [value for c in result.global_curves for _, value in c.curve()]
    if result.metric == "loss" and result.baseline > 0 and max(values, default=0.0) > 10 * result.baseline:
        axes.set_yscale("log")
    axes.set_xlabel("fraction of weights pruned (of the one layer, or of all the layers for the global curves)")
    axes.set_ylabel("mAP@0.5" if result.metric == "map50" else "validation loss")
    axes.set_xlim(0.0, 1.0)
    axes.set_title("pruning sensitivity: one layer at a time (thin) and all layers together (thick)")
    axes.grid(alpha=0.3)
    if name_layers:  # many entries: beside the axes
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes.legend(fontsize=9, framealpha=0.9)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
