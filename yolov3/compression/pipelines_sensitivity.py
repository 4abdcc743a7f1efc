"""Per-layer sensitivity of a trained checkpoint, and the sparsity budget it implies, as a library function.

:func:`sensitivity_analysis` is what ``python -m yolov3.prune sensitivity`` runs, callable with a
:class:`SensitivitySettings`: it prunes each prunable conv alone at each level, measures the model (the YOLO
loss on validation batches, fast; or the validation mAP@0.5), then all of them together at each level (global
magnitude ranking), and writes ``sensitivity.md``, ``.csv``, ``.png`` and ``budget.yaml`` (per-layer sparsities
for ``prune_and_finetune``) into ``out``.

With ``finetune_epochs`` > 0, the global curve is measured a second time, each level after that many epochs of
fine-tuning with the masks held (the config's trainer, at ``finetune_lr``; each run in
``out/finetune/level-<level>``): what a short fine-tuning recovers. The per-layer curves stay without
fine-tuning (one run per layer and level would be too costly).
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from yolov3.atomic import write_text_atomic
from yolov3.checkpoint import load_checkpoint, model_from_checkpoint
from yolov3.compression.masks import DEFAULT_SKIP, finalize_pruning, prunable_layers, pruning_masks
from yolov3.compression.pipelines import StartFrom, check_model_spec, finetune
from yolov3.compression.sensitivity import (
    DEFAULT_LEVELS,
    Metric,
    SensitivityResult,
    loss_proxy,
    measure_global_sensitivity,
    measure_sensitivity,
    plot_sensitivity,
    sensitivity_budget,
    write_budget,
)
from yolov3.data.dataset_config import build_dataset
from yolov3.data.loader import build_val_loader
from yolov3.evaluation.dataset_gt import coco_ground_truth
from yolov3.evaluation.validate import validate
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models.yolo_head import model_yolo_heads
from yolov3.train.config import TrainConfig
from yolov3.train.distributed import resolve_device

logger = logging.getLogger(__name__)
FINETUNE_FOLDER = "finetune"  # in ``out``: one fine-tuning run per level, ``level-<level>``


@dataclass(frozen=True)
class SensitivitySettings:
    """``tolerance`` is the allowed degradation per layer: for ``map`` an absolute mAP@0.5 drop (default 0.01),
    for ``loss`` a relative increase (default 0.05). ``max_batches`` measures on the first N validation batches.
    ``finetune_epochs`` > 0 adds the global curve after that many epochs of fine-tuning at each level, at
    ``finetune_lr`` (default: the config's learning rate / 10)."""

    config: TrainConfig
    weights: Path
    out: Path
    metric: Literal["loss", "map"] = "loss"
    levels: tuple[float, ...] = DEFAULT_LEVELS
    target: float = 0.8  # overall sparsity of the budget
    tolerance: float | None = None
    max_sparsity: float = 0.95  # cap on any layer's budget
    max_batches: int | None = None
    skip: tuple[str, ...] = DEFAULT_SKIP
    finetune_epochs: int = 0
    finetune_lr: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0 (0: no fine-tuned curve), got {self.finetune_epochs}")
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ValueError(
                f"finetune_lr must be > 0 (or None: the config's learning rate / 10), got {self.finetune_lr}"
            )


@dataclass
class SensitivityOutcome:
    result: SensitivityResult
    budget: dict[str, float]  # layer name -> sparsity
    tolerance: float
    budget_path: Path


def _evaluator(settings: SensitivitySettings, model: nn.Module) -> Callable[[nn.Module], float]:
    """The measure: loss proxy or mAP@0.5 on (the first ``max_batches`` of) the validation batches."""
    config, device = settings.config, resolve_device(settings.config.device)
    data = config.data
    dataset = build_dataset(data.dataset, "val", for_evaluation=True, progress=settings.progress)
    loader = build_val_loader(dataset, data.augment, data.batch_size, data.workers, data.image_size)
    batches = list(itertools.islice(loader, settings.max_batches))
    head_specs = model_yolo_heads(model)
    if settings.metric == "loss":
        criterion = YoloLoss(head_specs, config.loss)
        return lambda candidate: loss_proxy(candidate, batches, criterion, device)
    ground_truth = coco_ground_truth(dataset)
    kept = {image_id for batch in batches for image_id in batch.image_ids}
    ground_truth["images"] = [image for image in ground_truth["images"] if image["id"] in kept]
    ground_truth["annotations"] = [a for a in ground_truth["annotations"] if a["image_id"] in kept]
    evaluation = config.eval

    def map50(candidate: nn.Module) -> float:
        return validate(candidate, batches, head_specs, ground_truth, conf_threshold=evaluation.conf_threshold,
                        iou_threshold=evaluation.iou_threshold, max_detections=evaluation.max_detections,
                        device=device, progress=False).map50  # fmt: skip

    return map50


def _finetuner(settings: SensitivitySettings) -> Callable[[nn.Module, float], nn.Module]:
    """``adapt`` for the fine-tuned global curve: a pruned model in, its fine-tuned (EMA) copy out, masks held."""
    config = settings.config
    learning_rate = settings.finetune_lr or config.optimizer.learning_rate / 10

    def finetuned(pruned: nn.Module, level: float) -> nn.Module:
        masks = pruning_masks(pruned)
        plain = copy.deepcopy(pruned)
        finalize_pruning(plain)
        run_dir = settings.out / FINETUNE_FOLDER / f"level-{level:g}"
        logger.info("fine-tuning %d epochs at %g sparsity in %s", settings.finetune_epochs, level, run_dir)
        callbacks = [StartFrom(plain.state_dict(), masks)]
        trainer = finetune(config, settings.finetune_epochs, learning_rate, run_dir, callbacks, settings.progress)
        return trainer.eval_model

    return finetuned


def sensitivity_analysis(settings: SensitivitySettings) -> SensitivityOutcome:
    """Measure, derive the budget, and write the tables, the plot and ``budget.yaml`` into ``settings.out``."""
    device = resolve_device(settings.config.device)
    checkpoint = load_checkpoint(settings.weights)
    if settings.finetune_epochs > 0:  # the trainer builds the model from the config: it must be this one
        check_model_spec(settings.weights, checkpoint, settings.config)
    model = model_from_checkpoint(checkpoint).to(device)  # plain: a pruned one's zeros baked in
    evaluate = _evaluator(settings, model)
    metric: Metric = "loss" if settings.metric == "loss" else "map50"
    layers = prunable_layers(model, settings.skip)
    result = measure_sensitivity(model, evaluate, layers, settings.levels, metric, progress=settings.progress)
    curve = measure_global_sensitivity(model, evaluate, layers, settings.levels, progress=settings.progress)
    result.global_curves.append(curve)
    if settings.finetune_epochs > 0:
        curve = measure_global_sensitivity(model, evaluate, layers, settings.levels, _finetuner(settings),
                                           settings.finetune_epochs, progress=settings.progress)  # fmt: skip
        result.global_curves.append(curve)
    tolerance = settings.tolerance if settings.tolerance is not None else (0.05 if metric == "loss" else 0.01)
    budget = sensitivity_budget(result, settings.target, tolerance, settings.max_sparsity)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sensitivity.md", result.format_markdown())
    write_text_atomic(out / "sensitivity.csv", result.format_csv())
    plot_sensitivity(result, out / "sensitivity.png")
    kind = "relative loss increase" if metric == "loss" else "absolute mAP@0.5 drop"
    note = (
        f"Per-layer sparsity budget from {settings.weights} for {settings.target:.2%} overall over the prunable"
        " convs.\n"
        f"Rule: each layer's tolerance is the largest level within a {kind} of {tolerance:g} (at least\n"
        f"{result.levels[0]:g}); budgets are the tolerances times one scale that meets the target, capped at\n"
        f"{settings.max_sparsity:g}. Use: python -m yolov3.prune oneshot --budget <this file> ..."
    )
    write_budget(out / "budget.yaml", budget, settings.target, note)
    return SensitivityOutcome(result, budget, tolerance, out / "budget.yaml")
