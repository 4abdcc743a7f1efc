"""Validation: detect on a validation loader, then score with pycocotools (and VOC AP).

The trainer validates with it every ``eval.every_epochs`` (:class:`EvalConfig`, a training config's ``eval:``
section), and ``python -m yolov3.evaluate --data`` (:mod:`yolov3.evaluation.dataset_run`) runs the same code."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from yolov3.data.collate import Batch
from yolov3.evaluation.coco import CocoReport, evaluate_coco
from yolov3.evaluation.voc import VocReport, evaluate_voc
from yolov3.inference.coco_results import coco_detections
from yolov3.inference.decode import decode_outputs
from yolov3.inference.detection_config import EVALUATION_DETECTION, DetectionConfig
from yolov3.inference.postprocess import detect_rows
from yolov3.inference.region_decode import DarknetHeadSpec
from yolov3.models.yolo_head import YoloHeadSpec, model_yolo_heads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """Validation: how often, and how detections are made (low threshold, as for mAP)."""

    every_epochs: int = 1
    conf_threshold: float = EVALUATION_DETECTION.conf_threshold
    iou_threshold: float = EVALUATION_DETECTION.iou_threshold
    max_detections: int = EVALUATION_DETECTION.max_detections
    metric: Literal["coco", "voc"] = "coco"  # which mAP@0.5 picks best.pt

    def __post_init__(self) -> None:
        _ = self.detection  # DetectionConfig checks the values (its errors name the key)

    @property
    def detection(self) -> DetectionConfig:
        """How validation detects: these thresholds and cap, every class that passes (as for mAP)."""
        return EVALUATION_DETECTION.with_values(
            conf_threshold=self.conf_threshold, iou_threshold=self.iou_threshold, max_detections=self.max_detections
        )


@dataclass
class ValidationData:
    """What validation scores against: letterboxed batches and their COCO ground truth (original pixels)."""

    batches: Iterable[Batch]
    ground_truth: dict[str, Any] = field(repr=False)


@dataclass
class ValidationResult:
    """Scores of one validation pass; ``map50`` is the metric that picks ``best.pt``."""

    coco: CocoReport
    voc: VocReport | None
    map50: float
    detections: list[dict[str, Any]] = field(repr=False)
    sample_images: list[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]] = field(repr=False)

    @property
    def scalars(self) -> dict[str, float]:
        values = {f"coco/{name}": float(value) for name, value in self.coco.stats.items()}
        if self.voc is not None and self.voc.mean_ap is not None:
            values["voc/mAP50"] = float(self.voc.mean_ap)
        values["mAP50"] = self.map50
        return values


@torch.inference_mode()
def validate(
    model: nn.Module,
    batches: Iterable[Batch],
    head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec],
    ground_truth: dict[str, Any],
    *,
    detection: DetectionConfig = EVALUATION_DETECTION,
    conf_threshold: float | None = None,
    iou_threshold: float | None = None,
    max_detections: int | None = None,
    metric: str = "coco",
    device: torch.device | str = "cpu",
    num_sample_images: int = 0,
    progress: bool = True,
) -> ValidationResult:
    """Run ``model`` over ``batches``, map boxes back to original pixels and evaluate against ``ground_truth``.

    Detections are made as ``detection`` says (default: mAP's, every class that passes); ``conf_threshold``,
    ``iou_threshold`` and ``max_detections``, when given, replace its fields."""
    detection = detection.with_values(
        conf_threshold=conf_threshold, iou_threshold=iou_threshold, max_detections=max_detections
    )
    was_training = model.training
    model.eval()
    detections: list[dict[str, Any]] = []
    samples: list[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]] = []
    for batch in tqdm(batches, desc="validate", leave=False, disable=not progress):
        images = batch.images.to(device, non_blocking=True)
        input_size = (images.shape[2], images.shape[3])
        decoded = decode_outputs(model(images), list(head_specs), input_size)
        results = detect_rows(decoded.float(), detection)
        for index, result in enumerate(results):
            if len(samples) < num_sample_images:  # network-input pixels, for TensorBoard images
                truth = batch.targets[batch.targets[:, 0] == index, 1:]
                samples.append((batch.images[index].cpu(), {k: v.cpu() for k, v in result.items()}, truth))
            boxes = batch.letterboxes[index].boxes_to_original(result["boxes"].cpu())
            detections += coco_detections(batch.image_ids[index], {**result, "boxes": boxes})
    model.train(was_training)
    coco = evaluate_coco(ground_truth, detections)
    voc = evaluate_voc(ground_truth, detections) if metric == "voc" else None
    map50 = float(voc.mean_ap or 0.0) if voc is not None else float(coco.stats["AP50"])
    logger.info("validation: mAP@0.5 %.4f, mAP@[.5:.95] %.4f, %d detections", map50, coco.stats["AP"], len(detections))
    return ValidationResult(coco, voc, max(map50, 0.0), detections, samples)


def validate_with(
    model: nn.Module,
    data: ValidationData,
    evaluation: EvalConfig,
    *,
    device: torch.device | str = "cpu",
    num_sample_images: int = 0,
    progress: bool = False,
) -> ValidationResult:
    """:func:`validate` of ``model`` (its own ``head_specs``) on ``data`` with the thresholds and metric of a
    training config's ``eval`` section, as the trainer validates."""
    return validate(
        model, data.batches, model_yolo_heads(model), data.ground_truth, detection=evaluation.detection,
        metric=evaluation.metric, device=device, num_sample_images=num_sample_images, progress=progress,
    )  # fmt: skip
